#!/usr/bin/env bash
# The shipped decoders' recipe (docs/decoder_card.md): six `lwst train-decoder` runs in three
# chains of one CPU thread each. Every run is time-boxed (--max-seconds: the cosine schedule
# ends with the box; the loss log records the steps reached). The AdaIN decoder starts from
# the WCT relu4_1 decoder (same architecture), so it only has to learn the style statistics.
# Resumable: re-running continues every unfinished decoder from its .state file.
# Usage: scripts/train_decoders.sh [DATA_DIR] [OUT_DIR] [extra train-decoder options...]
set -uo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/decoders}
shift $(( $# > 2 ? 2 : $# )) || true
LWST=${LWST:-lwst}
mkdir -p "$OUT"
train() { "$LWST" train-decoder --images "$DATA/photos" --threads 1 --seed 0 --steps 100000 "$@"; }
(
  train --kind wct --level 4 --crop 96 --max-seconds 1500 --out "$OUT/decoder_wct4.pt" "$@" &&
  train --kind adain --styles "$DATA/styles" --crop 96 --style-weight 1 \
    --init "$OUT/decoder_wct4.pt" --max-seconds 2400 --out "$OUT/decoder_adain.pt" "$@"
) > "$OUT/chain_a.log" 2>&1 &
(
  train --kind wct --level 5 --crop 128 --max-seconds 1500 --out "$OUT/decoder_wct5.pt" "$@"
  train --kind wct --level 3 --crop 96 --max-seconds 800 --out "$OUT/decoder_wct3.pt" "$@"
) > "$OUT/chain_b.log" 2>&1 &
(
  train --kind wct --level 1 --crop 64 --max-seconds 300 --out "$OUT/decoder_wct1.pt" "$@"
  train --kind wct --level 2 --crop 64 --max-seconds 600 --out "$OUT/decoder_wct2.pt" "$@"
) > "$OUT/chain_c.log" 2>&1 &
wait
