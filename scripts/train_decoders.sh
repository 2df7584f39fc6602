#!/usr/bin/env bash
# The shipped decoders' recipe (docs/decoder_card.md): the `lwst train-decoder` commands behind
# the shipped files, one CPU thread each, several at once, every run time-boxed (--max-seconds: the
# cosine schedule ends with the box; the loss log records the steps reached). A second command
# on the same --out resumes from its .state with a larger box (a warm restart of the schedule).
# The AdaIN decoder starts from the first WCT relu4_1 decoder (same architecture), so it only
# has to learn the style statistics (the shipped one was run to 2400 s, then resumed to 6000 s).
# Re-running continues every unfinished decoder.
# Usage: scripts/train_decoders.sh [DATA_DIR] [OUT_DIR] [extra train-decoder options...]
# The extra options go last on every run, so they win over the recipe's own (argparse keeps the
# last): e.g. `--device cuda`, `--max-seconds 20000` or `--steps 5000` for every run.
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/decoders}
shift $(( $# > 2 ? 2 : $# )) || true
EXTRA=("$@")
LWST=${LWST:-lwst}
mkdir -p "$OUT"
train() {
  "$LWST" train-decoder --images "$DATA/photos" --threads 1 --seed 0 --steps 100000 "$@" \
    ${EXTRA[@]+"${EXTRA[@]}"}
}
wct() { train --kind wct --level "$1" --crop "$2" --max-seconds "$3" --out "$OUT/decoder_wct$1.pt"; }
(
  wct 4 96 1500
  cp "$OUT/decoder_wct4.pt" "$OUT/decoder_wct4_first.pt"
  train --kind adain --styles "$DATA/styles" --crop 96 --style-weight 1 \
    --init "$OUT/decoder_wct4_first.pt" --max-seconds 6000 --out "$OUT/decoder_adain.pt" &
  wct 4 96 2400 &
  wait
  wct 4 96 7800      # resumed on 2026-12-03 (a warm restart of the schedule at 31 %)
) > "$OUT/chain_a.log" 2>&1 &
(
  wct 5 128 1500
  wct 3 96 800
  wct 5 128 2700
  wct 5 128 8100     # resumed on 2026-12-03 (warm restart at 33 %)
) > "$OUT/chain_b.log" 2>&1 &
(
  wct 1 64 300
  wct 2 64 600
  wct 1 64 600
) > "$OUT/chain_c.log" 2>&1 &
wait
# 2026-12-06: relu4_1 and relu5_1 continued from the files above on a CPU with native bfloat16
# (AMX; --precision auto autocasts there): a fresh optimiser and schedule, larger crops, one
# hour each, both at once. Their outputs replace decoder_wct4.pt / decoder_wct5.pt.
more() { train --kind wct --level "$1" --crop "$2" --max-seconds 3600 --precision auto \
  --init "$OUT/decoder_wct$1.pt" --out "$OUT/continued/decoder_wct$1.pt"; }
more 5 192 > "$OUT/chain_d5.log" 2>&1 &
more 4 128 > "$OUT/chain_d4.log" 2>&1 &
wait
# 2026-12-06, second session: both continued again from the files above (fresh optimiser and
# schedule, seed 1), relu5_1 for 6000 s at 192 px and relu4_1 for 4200 s at 160 px, both at once.
again() { train --kind wct --level "$1" --crop "$2" --max-seconds "$3" --precision auto --seed 1 \
  --init "$OUT/continued/decoder_wct$1.pt" --out "$OUT/continued2/decoder_wct$1.pt"; }
again 5 192 6000 > "$OUT/chain_e5.log" 2>&1 &
again 4 160 4200 > "$OUT/chain_e4.log" 2>&1 &
wait
# 2026-12-06, tenth session: the AdaIN decoder continued from chain a's file for 4800 s at 128 px
# in bfloat16 (fresh optimiser and schedule, seed 1); a 160 px twin tied and was not shipped.
train --kind adain --styles "$DATA/styles" --crop 128 --style-weight 1 --max-seconds 4800 \
  --precision auto --seed 1 --init "$OUT/decoder_adain.pt" \
  --out "$OUT/continued_adain/decoder_adain.pt" > "$OUT/chain_f.log" 2>&1
