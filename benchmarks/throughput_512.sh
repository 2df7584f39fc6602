#!/bin/bash
# `lwst run` throughput at 512 px, learned warp: the rows of docs/benchmarks.md's table, one
# invocation each (each measured flow run on a fresh temporary Prefect server).
# Settings (environment):
#   OUT     JSON-lines file the rows are appended to; default a new dated file,
#           benchmarks/results/throughput_512_<UTC date>_cpu.jsonl. Rows are only ever appended:
#           the committed files (throughput_512_learned_adain_cpu.jsonl, whose rows the doc
#           quotes) are never truncated; pass one of them as OUT only to add rows to it.
#   REPEAT  bench_throughput.py --repeat (each manifest item listed this many times); default 8,
#           as recorded. REPEAT=1 SIZE=128 is a quick check of the script itself.
#   SIZE    output size; default 512.
#   ONLY    run only the rows whose label contains this text (e.g. ONLY=wct); default all 11.
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-benchmarks/results/throughput_512_$(date -u +%Y%m%d)_cpu.jsonl}
REPEAT=${REPEAT:-8}; SIZE=${SIZE:-512}; ONLY=${ONLY:-}
echo "appending to $OUT" >&2
failed=0
B() {
  local label=$1; shift
  case "$label" in *"$ONLY"*) ;; *) return;; esac
  .venv/bin/python benchmarks/bench_throughput.py --repeat "$REPEAT" "$@" 2>&1 | grep '^{' |
    while read -r line; do echo "{\"label\": \"$label\", ${line:1}" >> "$OUT"; echo "$label $line"; done
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "$label: bench_throughput.py failed" >&2; failed=1; }
}
O="\"size\": $SIZE, \"warp_method\": \"learned\""
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
exit $failed
