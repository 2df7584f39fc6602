"""lwst's texture renderer against ``pastiche`` (issue 2 item 9): style distance per second.

For each content/texture pair, both programs run as the user would run them, each in a fresh
process on the same machine, same images, same output size:

    pastiche --size 256 --num-steps 150 --seed 0 --device cpu -c C -s T -o P.png
    lwst stylize --content C --texture T --size 256 --seed 0 --device cpu --quiet --out L.png

(``--runner api``, the default, runs lwst as ``python bench_vs_pastiche.py --lwst-child ...``,
which calls ``lwst.stylize.stylize_files`` exactly as ``lwst stylize`` does, in its own fresh
process; ``--runner cli`` runs the installed ``lwst`` command itself.)

The two are interleaved (pastiche first on even pairs, lwst first on odd ones) so that a change
of load on a shared machine hits both alike. Measured per run: wall seconds of the whole command
(start-up, model load and image I/O included), CPU seconds and peak RSS of the child
(``os.wait4``). Then both output PNGs are reloaded from disk and scored with one yardstick,
``lwst.losses.gram_distance`` (relative Gram error to the exemplar over relu1_1..relu5_1, lower
is closer), plus ``content_distance`` (relative relu4_2 error to the content at that size).

    .venv/bin/python benchmarks/bench_vs_pastiche.py --size 256 --steps 150 --out /tmp/vs_pastiche

Prints a markdown table for ``docs/benchmarks.md``; ``--json`` keeps the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir, scratch_folder

from lwst.image_io import read_image
from lwst.losses import content_distance, gram_distance
from lwst.vgg import load_vgg19

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root()
# (content, texture): photos and artworks of the project's data folder (not shipped).
DEFAULT_PAIRS = (
    ("photos/ns_tubingen.jpg", "styles/ns_shipwreck.jpg"),
    ("photos/ns_golden_gate.jpg", "styles/ns_the_scream.jpg"),
    ("photos/skimage_chelsea.jpg", "styles/gnst_vg_wheat_field.jpg"),
    ("photos/ns_brad_pitt.jpg", "styles/adain_picasso_self_portrait.jpg"),
)


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` in a fresh process: wall and CPU seconds, peak RSS (MiB), exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
    }


def lwst_child(spec: dict) -> None:
    """What ``lwst stylize --content C --texture T --size S --seed 0 --device cpu`` runs."""
    from dataclasses import replace

    from lwst.config import StylizeConfig, with_overrides
    from lwst.item import Item
    from lwst.item_files import item_outputs
    from lwst.stylize import stylize_files

    overrides = {"size": spec["size"], "seed": 0, "device": "cpu"}
    words = spec["overrides"].split()
    for flag, value in zip(words[::2], words[1::2], strict=True):
        overrides[flag.lstrip("-").replace("-", "_")] = value
    config = with_overrides(StylizeConfig(), overrides)
    out = Path(spec["out"])
    # No geometry, so no warp: the image is the one file written.
    outputs = replace(item_outputs(str(out.parent), out.stem), image=str(out))
    stylize_files(Item(out.stem, spec["content"], None, spec["texture"], config, outputs))


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--size", type=int, default=256, help="output size, px (both tools)")
    parser.add_argument("--steps", type=int, default=150, help="pastiche --num-steps")
    parser.add_argument("--pairs", type=int, default=len(DEFAULT_PAIRS),
                        help="first N of DEFAULT_PAIRS")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep both tools' PNGs here (default: a temporary folder, removed "
                        "at the end)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for both children (default: inherited)")
    parser.add_argument("--lwst-args", default="",
                        help="extra options for lwst stylize (default: none)")
    parser.add_argument("--runner", choices=("api", "cli"), default="api",
                        help="api: lwst in a Python child process; cli: the lwst command")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the rows here (default: not kept)")
    parser.add_argument("--lwst-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lwst_child:
        lwst_child(json.loads(args.lwst_child))
        return
    require_dir(args.data)
    with scratch_folder(args.out, "lwst-vs-pastiche-") as args.out:
        compare(args)


def compare(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    pastiche = _bin("pastiche")
    lwst = _bin("lwst") if args.runner == "cli" else None
    rows = []
    for i, (content_rel, texture_rel) in enumerate(DEFAULT_PAIRS[: args.pairs]):
        content, texture = args.data / content_rel, args.data / texture_rel
        name = f"{Path(content_rel).stem}__{Path(texture_rel).stem}"
        out_p = args.out / f"{name}__pastiche.png"
        out_l = args.out / f"{name}__lwst.png"
        runs = {
            "pastiche": [pastiche, "--size", str(args.size), "--num-steps", str(args.steps),
                         "--seed", "0", "--device", "cpu", "--no-verbose",
                         "-c", str(content), "-s", str(texture), "-o", str(out_p)],
            "lwst": [lwst, "stylize", "--content", str(content), "--texture", str(texture),
                     "--size", str(args.size), "--seed", "0", "--device", "cpu", "--quiet",
                     "--out", str(out_l), *args.lwst_args.split()] if lwst else
                    [sys.executable, __file__, "--lwst-child", json.dumps({
                        "content": str(content), "texture": str(texture), "out": str(out_l),
                        "size": args.size, "overrides": args.lwst_args})],
        }
        order = ["pastiche", "lwst"] if i % 2 == 0 else ["lwst", "pastiche"]
        row: dict = {"pair": name}
        for which in order:
            row[which] = timed(runs[which], env)
            print(f"{name} {which}: {row[which]}", file=sys.stderr, flush=True)
        rows.append(row)

    # One yardstick, computed identically on both PNGs reloaded from disk.
    vgg = load_vgg19("pastiche")
    for row, (content_rel, texture_rel) in zip(rows, DEFAULT_PAIRS, strict=False):
        exemplar = read_image(args.data / texture_rel)
        for which in ("pastiche", "lwst"):
            image = read_image(args.out / f"{row['pair']}__{which}.png")
            content = read_image(args.data / content_rel, max(image.shape[-2:]))
            row[which]["gram"] = gram_distance(vgg, image, exemplar)
            row[which]["content"] = content_distance(vgg, image, content)
        row["content_gram"] = gram_distance(vgg, read_image(args.data / content_rel, args.size),
                                            exemplar)

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {env.get('OMP_NUM_THREADS', 'default')}, size {args.size}, "
          f"pastiche {args.steps} steps\n")
    print("| pair | Gram dist. content | Gram dist. pastiche | Gram dist. lwst | content dist. "
          "pastiche / lwst | wall s pastiche / lwst | CPU s pastiche / lwst | peak RSS MiB "
          "pastiche / lwst |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, q = r["pastiche"], r["lwst"]
        print(f"| {r['pair']} | {r['content_gram']:.3f} | {p['gram']:.4f} | {q['gram']:.4f} | "
              f"{p['content']:.3f} / {q['content']:.3f} | {p['wall_s']:.1f} / {q['wall_s']:.1f} | "
              f"{p['cpu_s']:.1f} / {q['cpu_s']:.1f} | {p['peak_rss_mib']:.0f} / "
              f"{q['peak_rss_mib']:.0f} |")
    wins = sum(r["lwst"]["gram"] < r["pastiche"]["gram"] and
               r["lwst"]["wall_s"] <= r["pastiche"]["wall_s"] for r in rows)
    print(f"\nlwst lower Gram distance in no more wall time: {wins}/{len(rows)} pairs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
