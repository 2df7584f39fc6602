#!/bin/bash
# `lwst run` throughput at 512 px, learned warp: the rows of docs/benchmarks.md's table, one
# invocation each (each measured flow run on a fresh temporary Prefect server).
cd "$(dirname "$0")/.."
OUT=benchmarks/results/throughput_512_learned_adain_cpu.jsonl
: > $OUT
B() { label=$1; shift; .venv/bin/python benchmarks/bench_throughput.py --repeat 8 "$@" 2>&1 | grep '^{' | while read -r line; do echo "{\"label\": \"$label\", ${line:1}" >> $OUT; echo "$label $line"; done; }
O='"size": 512, "warp_method": "learned"'
B "defaults, adain" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\"}"
B "adain, warp_precision auto" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"warp_precision\": \"auto\"}"
B "adain, no losses" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"measure_losses\": false}"
B "adain, render_precision float32" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"render_precision\": \"float32\"}"
B "adain, warp_views 1" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"warp_views\": 1}"
B "adain, warp_views 2" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"warp_views\": 2}"
B "adain, warp_views 4" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"warp_views\": 4}"
B "adain, warp_field fitted" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\", \"warp_field\": \"fitted\"}"
B "wct" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"wct\"}"
B "adain, dask" --runners dask --workers 2 --overrides "{$O, \"renderer\": \"adain\"}"
B "defaults, adain (again)" --runners threads --workers 1 --overrides "{$O, \"renderer\": \"adain\"}"
