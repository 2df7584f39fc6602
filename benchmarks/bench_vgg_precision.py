"""VGG-19 warp features in float32 against bfloat16: time and agreement (``--warp-precision``).

Every warp estimator starts with the two VGG passes (content and exemplar at 256x256, up to
relu4_1, relu3_1 on the way; ``lwst.warpnet.bank.encode``); on a CPU they are most of the learned
network's time. This measures those passes per pair in both precisions, on held-out photos, and
how far the bfloat16 features point from the float32 ones (cosine per cell, after the
L2-normalisation every estimator applies).

    .venv/bin/python benchmarks/bench_vgg_precision.py --threads 1 2
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir

from lwst.correlation import analysis_view
from lwst.image_io import read_image
from lwst.storage import list_images
from lwst.vgg import at_dtype, load_vgg19, native_bfloat16
from lwst.warpnet.bank import encode
from lwst.warpnet.split import held_out_files

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--data", type=Path, default=data_root() / "photos",
                        help="photos (held-out ones used; $LWST_DATA/photos when set)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of held-out photos")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per pair (median)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch CPU thread counts, one measurement each")
    args = parser.parse_args()
    require_dir(args.data)
    files = held_out_files(list_images(args.data, recursive=False))
    images = [analysis_view(read_image(str(f))) for f in files[: 2 * args.pairs]]
    pairs = [torch.cat(images[i : i + 2]) for i in range(0, len(images) - 1, 2)]
    full = load_vgg19("auto")
    half = at_dtype(full, torch.bfloat16)
    print(f"bfloat16 native here: {native_bfloat16('cpu')}; {len(pairs)} pairs of held-out photos")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, vgg in (("float32", full), ("bfloat16", half)):
            encode(vgg, pairs[0])  # warm-up
            medians = []
            for views in pairs:
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    encode(vgg, views)
                    times.append(time.perf_counter() - started)
                medians.append(sorted(times)[len(times) // 2])
            print(f"| {threads} | {name} | {sum(medians) / len(medians):.3f} |", flush=True)
    worst = {"relu4_1": 1.0, "relu3_1": 1.0}
    mean = {"relu4_1": 0.0, "relu3_1": 0.0}
    for views in pairs:
        for tap, a, b in zip(("relu4_1", "relu3_1"), encode(full, views), encode(half, views),
                             strict=True):
            cosine = (a * b.float()).sum(1)
            worst[tap] = min(worst[tap], float(cosine.min()))
            mean[tap] += float(cosine.mean()) / len(pairs)
    for tap in mean:
        print(f"{tap}: cosine bfloat16 vs float32, mean {mean[tap]:.5f}, "
              f"worst cell {worst[tap]:.4f}")


if __name__ == "__main__":
    main()
