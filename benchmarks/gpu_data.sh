#!/usr/bin/env bash
# The data subset benchmarks/gpu_check.sh carries to the device machine (it has no ../shared):
# every held-out photo and style (what the benchmarks measure on) and 64 training photos and 32
# styles (what the training steps read), each scaled to at most 512 px, into .gpu_data/.
# Usage: benchmarks/gpu_data.sh [DATA [OUT]]   DATA: $LWST_DATA, else ../shared/data; OUT: .gpu_data
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
DATA=${1:-${LWST_DATA:-../shared/data}}; DEST=${2:-.gpu_data}
[ -d "$DATA/photos" ] || { echo "data folder not found: $DATA/photos (set LWST_DATA or pass it \
as the first argument; see docs/benchmarks.md, 'Data')" >&2; exit 2; }
.venv/bin/python - "$DATA" "$DEST" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from lwst.storage import list_images
from lwst.warpnet.split import is_held_out
data, out = Path(sys.argv[1]), Path(sys.argv[2])
for kind, train in (("photos", 64), ("styles", 32)):
    (out / kind).mkdir(parents=True, exist_ok=True)
    files = sorted(Path(f) for f in list_images(data / kind, recursive=False))
    held = [f for f in files if is_held_out(f.name)]
    chosen = held + [f for f in files if not is_held_out(f.name)][:train]
    for f in chosen:
        image = Image.open(f).convert("RGB")
        image.thumbnail((512, 512))
        # the same file name: the held-out split is a hash of it
        image.save(out / kind / f.name, **({"quality": 92} if f.suffix.lower() == ".jpg" else {}))
    print(kind, len(held), "held out +", len(chosen) - len(held), "training")
PY
du -sh "$DEST"
