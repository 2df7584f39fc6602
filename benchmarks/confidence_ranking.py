"""How well `lwst.warp_guard.warp_confidence` ranks failures, from recorded per-pair signals.

Reads the rows `bench_warp_safety.py --warp-fallback none --json` and `real_pairs.py
--warp-fallback none --json` write (each pair's gain, cos_after, cos_ceiling, raw folds and
ambiguity) and scores the shipped confidence beside the one it replaced (2026-12-03:
``clip(gain / 0.06) x max(0, 1 - raw_folds / 0.25) x (1 - ambiguity / 2)``): Spearman rank
correlation with the EPE of the network's own field per tier and pooled (negative = failures
ranked low), the area under the ROC curve of "EPE > 5 px" for a low confidence, and, on the
real pairs, Spearman with the alignment gain. Rows recorded before `area_spread` existed score
the melt term as 1 (no melt).

    .venv/bin/python benchmarks/confidence_ranking.py \
        --synthetic benchmarks/results/warp_safety_seed{2,3,4}_p12_nofallback_cpu.json \
        --real benchmarks/results/real_pairs_nofallback_cpu.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from _common import make_parser

from lwst.warp_guard import warp_confidence

TIERS = ("geometry", "photometric", "artistic")
FAILURE_PX = 5.0


def previous(row: dict) -> float:
    gain_term = min(max((row["cos_after"] - row["cos_before"]) / 0.06, 0.0), 1.0)
    return gain_term * max(0.0, 1.0 - row["raw_fold"] / 0.25) * (1.0 - 0.5 * row["ambiguity"])


def shipped(row: dict, melt: bool = True) -> float:
    return warp_confidence(row["cos_after"] - row["cos_before"], row["raw_fold"],
                           row["ambiguity"], row["cos_after"] / row["cos_ceiling"],
                           (row.get("area_spread") or 0.0) if melt else 0.0)


def without_melt(row: dict) -> float:
    """The confidence until 2026-12-06 (eighth session): the shipped one without its melt term."""
    return shipped(row, melt=False)


def spearman(a: list[float], b: list[float]) -> float:
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def auc_low_is_failure(scores: list[float], failed: list[bool]) -> float:
    bad = [s for s, f in zip(scores, failed, strict=True) if f]
    good = [s for s, f in zip(scores, failed, strict=True) if not f]
    if not bad or not good:
        return float("nan")
    wins = sum((b < g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(bad) * len(good))


def load(path: Path) -> list[dict]:
    rows = json.loads(path.read_text())["rows"]
    for row in rows:
        row.setdefault("raw_fold", row.get("fold_raw"))
    return rows


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--synthetic", type=Path, nargs="+", required=True,
                        help="bench_warp_safety.py --warp-fallback none --json files")
    parser.add_argument("--real", type=Path,
                        help="a real_pairs.py --warp-fallback none --json file (default: none)")
    args = parser.parse_args()
    scores: dict[str, Callable[[dict], float]] = {
        "2026-12-03": previous, "no melt term": without_melt, "now": shipped}
    print("| pairs | confidence | geometry | photometric | artistic | pooled | AUC (EPE > 5 px) "
          "| failures: confidence (EPE) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for path in args.synthetic:
        rows = load(path)
        for name, score in scores.items():
            tiers = [spearman([score(r) for r in rows if r["tier"] == t],
                              [r["epe_raw"] for r in rows if r["tier"] == t]) for t in TIERS]
            values, epe = [score(r) for r in rows], [r["epe_raw"] for r in rows]
            failures = ", ".join(f"{score(r):.2f} ({r['epe_raw']:.1f} px)"
                                 for r in sorted(rows, key=lambda r: -r["epe_raw"])
                                 if r["epe_raw"] > FAILURE_PX)
            print(f"| {path.stem} | {name} | " + " | ".join(f"{t:+.2f}" for t in tiers)
                  + f" | {spearman(values, epe):+.2f} | "
                  f"{auc_low_is_failure(values, [e > FAILURE_PX for e in epe]):.2f} | {failures} |")
    if args.real:
        rows = load(args.real)
        gains = [r["after"] - r["before"] for r in rows]
        for name, score in scores.items():
            print(f"real pairs ({len(rows)}), {name}: Spearman with the gain "
                  f"{spearman([score(r) for r in rows], gains):+.2f}")


if __name__ == "__main__":
    main()
