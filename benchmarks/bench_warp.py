"""Warp benchmark (issue 4 item 4, issue 2 item 9): end-point error and speed of every estimator.

Synthetic pairs at 256 px from images held out of warp-network training
(``lwst.warpnet.split.is_held_out``), in three tiers (``lwst.warpnet.synthetic.make_pair``):
geometry only, geometry + photometric change, geometry + artistic change. For each method:
mean end-point error in pixels over valid pixels (backward convention), and seconds per pair.
Then the cost of the whole warp stage (``--stage-method``: the optimisation estimator by
default, or the learned network) at 256 and 512 px output: seconds and peak memory, each size in
a fresh process so the peak belongs to that run alone.

    .venv/bin/python benchmarks/bench_warp.py --pairs 10 --sheet /tmp/bench_warp_pairs.png

Prints a markdown table to paste into ``docs/benchmarks.md``; ``--json`` keeps the raw numbers
and, under ``models``, the network they measured (its ``warpnet-`` id, views and checkpoint).
The sheet shows photos from the data folder that may not be redistributed: keep it out of git.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import data_root, make_parser, require_dir
from torch import Tensor
from torchvision.utils import make_grid, save_image

from lwst.config import ANALYSIS_SIZE, MAX_WARP_VIEWS, WARP_PRECISIONS, WarpConfig
from lwst.correlation import analysis_view
from lwst.estimators.dis import dis_flow
from lwst.estimators.optim import optimise_warp
from lwst.estimators.parametric_fit import fit_parametric_warp
from lwst.flow import end_point_error, resize_flow, warp_image
from lwst.image_io import read_image
from lwst.storage import list_images
from lwst.stylize import warp_content
from lwst.vgg import VGG19Features, at_dtype, feature_dtype, load_vgg19
from lwst.warping import estimate_warp
from lwst.warpnet.split import held_out_files
from lwst.warpnet.synthetic import TIERS, make_pair

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = data_root() / "photos"
METHODS = ("identity", "dis", "affine", "tps", "optim", "learned", "learned-single")
Estimator = Callable[[Tensor, Tensor], Tensor]


def learned_estimator(vgg: VGG19Features, checkpoint: str | None, verify: bool = True,
                      views: int = 1) -> tuple[Estimator | None, str]:
    """The warp network's estimator when it can run here, else ``None`` and the reason.
    ``verify=False`` is the ablation without the matched-affine second start."""
    try:
        from lwst.warpnet.inference import predict_warp

        probe = torch.rand(1, 3, ANALYSIS_SIZE, ANALYSIS_SIZE, dtype=vgg.mean.dtype,
                           device=vgg.mean.device)
        _, warpnet_id = predict_warp(probe, probe, vgg, checkpoint=checkpoint)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported as such
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return (lambda c, e: predict_warp(c, e, vgg, checkpoint, verify, views=views)[0]), str(
        warpnet_id)


def estimators(vgg: VGG19Features, config: WarpConfig, methods: list[str], checkpoint: str | None,
               optim_sweep: list[int] = (), views: int = 1
               ) -> tuple[dict[str, Estimator], dict[str, str]]:
    """Name -> ``f(content256, exemplar256) -> flow (1, 2, 256, 256)`` for the requested methods;
    ``optim_sweep`` adds ``optim-N`` (N Adam steps) rows, to place the network on optim's
    accuracy/time curve. Also name -> note for the learned rows: the network's id when it runs,
    else why it was skipped."""
    table: dict[str, Estimator] = {
        "identity": lambda c, e: torch.zeros(1, 2, *c.shape[-2:], dtype=c.dtype, device=c.device),
        "dis": dis_flow,
        "affine": lambda c, e: fit_parametric_warp(c, e, vgg, "affine"),
        "tps": lambda c, e: fit_parametric_warp(c, e, vgg, "tps"),
        "optim": lambda c, e: optimise_warp(c, e, vgg, config, seed=0),
    }
    chosen = {m: table[m] for m in methods if m in table}
    notes: dict[str, str] = {}
    for steps in optim_sweep:
        swept = WarpConfig(method="optim", optim_steps=steps, precision=config.precision)
        chosen[f"optim-{steps}"] = (lambda s: lambda c, e: optimise_warp(c, e, vgg, s, seed=0))(
            swept)
    for name in ("learned", "learned-single"):
        if name in methods:
            learned, note = learned_estimator(vgg, checkpoint, verify=name == "learned",
                                              views=views)
            notes[name] = note
            if learned is None:
                print(f"{name} network skipped: {note}")
            else:
                print(f"{name} network: {note}")
                chosen[name] = learned
    return chosen, notes


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epe(args: argparse.Namespace) -> tuple[dict, str | None]:
    """EPE and seconds per method and tier over ``args.pairs`` pairs per tier, and the id of the
    warp network behind the learned rows (None: no learned row ran)."""
    device = torch.device(args.device)
    # Every VGG-based method matches features at the same precision (the library's rule).
    vgg = load_vgg19(args.vgg_weights, device=device)
    vgg = at_dtype(vgg, feature_dtype(args.precision, device))
    config = WarpConfig(method="optim", optim_steps=args.optim_steps, precision=args.precision)
    methods, notes = estimators(vgg, config, args.methods, args.checkpoint, args.optim_sweep,
                                args.warp_views)
    warpnet_id = next((notes[m] for m in ("learned", "learned-single") if m in methods), None)
    images = list_images(args.data, recursive=False)
    files = held_out_files(images)
    if not files:
        raise SystemExit(f"no held-out images under {args.data}")
    print(f"{len(files)} held-out images; {args.pairs} pairs per tier; methods {list(methods)}")
    epe = {m: {t: [] for t in args.tiers} for m in methods}
    seconds = {m: [] for m in methods}
    sheet: list[Tensor] = []
    for tier_index, tier in enumerate(args.tiers):
        for i in range(args.pairs):
            path = files[i % len(files)]
            image = analysis_view(read_image(str(path))).to(device)
            generator = torch.Generator().manual_seed(args.seed * 1000 + tier_index * 100 + i)
            pair = make_pair(image.cpu(), generator, tier)
            content, exemplar = pair.content.to(device), pair.exemplar.to(device)
            flow, valid = pair.flow.to(device), pair.valid.to(device)
            row = [content, exemplar]
            for name, estimate in methods.items():
                synchronise(device)
                started = time.perf_counter()
                with torch.inference_mode(not name.startswith("optim")):
                    pred = estimate(content, exemplar)
                synchronise(device)
                seconds[name].append(time.perf_counter() - started)
                epe[name][tier].append(float(end_point_error(pred.float(), flow, valid)[0]))
                row.append(warp_image(content, pred.to(content.dtype)))
            if i == 0:
                sheet.append(torch.cat(row))
            print(f"{tier:11s} {i:2d} {path.name:38s} "
                  + " ".join(f"{m}={epe[m][tier][-1]:6.2f}" for m in methods), flush=True)
    if args.sheet:
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(torch.cat(sheet).cpu(), nrow=len(methods) + 2, padding=2), args.sheet)
    setup = {"pairs": args.pairs, "tiers": args.tiers, "seed": args.seed,
             "files": [p.name for p in files[: args.pairs]]}
    return {"epe": epe, "seconds": seconds, "setup": setup}, warpnet_id


def merge_baseline(results: dict, path: str) -> dict:
    """Add the rows of an earlier ``--json`` run on the very same pairs for methods not rerun
    now (e.g. the slow optimisation estimator when only the network changed)."""
    earlier = json.loads(Path(path).read_text())["results"]
    if earlier.get("setup") != results["setup"]:
        raise SystemExit(f"{path} was measured on other pairs: {earlier.get('setup')}")
    for method in earlier["epe"]:
        if method not in results["epe"]:
            results["epe"][method] = earlier["epe"][method]
            results["seconds"][method] = earlier["seconds"][method]
            print(f"{method}: rows from {path}")
    return results


def _memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_memory() -> None:
    """Start ``VmHWM`` afresh (Linux >= 4.0), so the peak belongs to the warp stage alone."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _warp_stage(size: int, config: WarpConfig, device: str, weights: str, threads: int,
                queue: mp.Queue) -> None:
    """One full warp stage (estimate at 256, upsample, warp, inpaint) at ``size`` output."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vgg = load_vgg19(weights, device=torch.device(device))
    content = analysis_view(read_image(str(ROOT / "examples" / "sailboat.jpg")), size).to(device)
    exemplar = analysis_view(read_image(str(ROOT / "examples" / "face.jpg")), size).to(device)
    base_rss = _memory_mib("VmRSS")
    _reset_peak_memory()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    estimate = estimate_warp(content, exemplar, config, vgg)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    estimated = time.perf_counter() - started
    flow = resize_flow(estimate.flow, size, size)
    warped = warp_content(content, flow).image
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - started
    peak = _memory_mib("VmHWM")
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    queue.put({"size": size, "method": config.method, "seconds_estimate": estimated,
               "seconds_total": total,
               "rss_before_mib": base_rss, "rss_peak_mib": peak, "gpu_peak_mib": gpu,
               "loss_before": estimate.loss_before, "loss_after": estimate.loss_after,
               "warpnet_id": estimate.warpnet_id,
               "shape": list(warped.shape)})


def run_cost(args: argparse.Namespace) -> list[dict]:
    """The warp stage's cost per output size, each in a fresh process; a size whose process
    dies (out of memory, no device) is reported and skipped, the others still measured."""
    context = mp.get_context("spawn")
    if args.stage_method == "optim":
        config = WarpConfig(method="optim", optim_steps=args.optim_steps)
    else:  # the network as the product runs it (precision, views, checkpoint as given here)
        config = WarpConfig(method="learned", checkpoint=args.checkpoint,
                            precision=args.precision, views=args.warp_views)
    results = []
    for size in args.sizes:
        queue = context.Queue()
        proc = context.Process(
            target=_warp_stage,
            args=(size, config, args.device, args.vgg_weights, args.threads, queue),
        )
        proc.start()
        row = None
        while row is None:
            try:
                row = queue.get(timeout=5)
            except Exception:  # noqa: BLE001 - queue.Empty: is the child still alive?
                if not proc.is_alive():
                    break
        proc.join()
        if row is None:
            print(f"warp stage at {size} px failed (exit code {proc.exitcode}); skipped",
                  flush=True)
            continue
        results.append(row)
        print(json.dumps(results[-1]), flush=True)
    return results


def markdown(results: dict, cost: list[dict], args: argparse.Namespace) -> str:
    epe, seconds = results["epe"], results["seconds"]

    def mean(values: list[float]) -> float:
        return sum(values) / max(len(values), 1)

    overall = {m: mean([v for t in args.tiers for v in epe[m][t]]) for m in epe}
    tiers = " | ".join(f"EPE {t}" for t in args.tiers)
    head = f"| method | {tiers} | EPE overall | s / pair |"
    lines = [head, "|" + "---|" * (len(args.tiers) + 3)]
    for m in epe:
        cells = " | ".join(f"{mean(epe[m][t]):.2f}" for t in args.tiers)
        lines.append(f"| {m} | {cells} | {overall[m]:.2f} | {mean(seconds[m]):.2f} |")
    if "learned" in epe:
        lines.append("")
        if "identity" in epe:
            ratio = overall["learned"] / overall["identity"]
            lines.append(f"learned / identity overall EPE: {ratio:.3f} (target <= 0.25)")
        if "dis" in epe and "artistic" in args.tiers:
            ratio = mean(epe["learned"]["artistic"]) / mean(epe["dis"]["artistic"])
            lines.append(f"learned / DIS artistic EPE: {ratio:.3f} (target <= 0.5)")
        if "optim" in epe:
            speedup = mean(seconds["optim"]) / mean(seconds["learned"])
            lines.append(f"optim / learned seconds: {speedup:.1f}x (target >= 20x) at EPE "
                         f"{overall['learned']:.2f} (learned) vs {overall['optim']:.2f} (optim)")
    if cost:
        lines += ["", "| output px | estimate s | warp stage s | peak RSS MiB (after VGG load) |",
                  "|---|---|---|---|"]
        for c in cost:
            lines.append(f"| {c['size']} | {c['seconds_estimate']:.1f} | {c['seconds_total']:.1f} "
                         f"| {c['rss_peak_mib']:.0f} ({c['rss_before_mib']:.0f}) |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="photos (held-out ones used; $LWST_DATA/photos when set)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--pairs", type=int, default=10, help="pairs per tier")
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS,
                        help="synthetic pair tiers")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="estimators measured for EPE and seconds per pair")
    parser.add_argument("--optim-steps", type=int, default=WarpConfig().optim_steps,
                        help="Adam steps of the optimisation estimator")
    parser.add_argument("--optim-sweep", nargs="*", type=int, default=[],
                        help="also run optim with these step counts (rows optim-N; default: "
                        "none)")
    parser.add_argument("--precision", default=WarpConfig().precision, choices=WARP_PRECISIONS,
                        help="VGG feature precision for every method (default: the library's)")
    parser.add_argument("--checkpoint", default=None,
                        help="warp network (default: the shipped one)")
    parser.add_argument("--warp-views", type=int, default=1, choices=range(1, MAX_WARP_VIEWS + 1),
                        help="learned rows: symmetric views voted over (1: the network alone; "
                        "the product's default is WarpConfig().views)")
    parser.add_argument("--sizes", nargs="*", type=int, default=[256, 512],
                        help="output sizes for the warp-stage cost (none: skip)")
    parser.add_argument("--stage-method", default="optim", choices=("optim", "learned"),
                        help="estimator whose whole warp stage --sizes measures (learned: with "
                        "--precision, --warp-views and --checkpoint)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--vgg-weights", default="auto", help="VGG19 weights (lwst.vgg.load_vgg19)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic pairs' seed")
    parser.add_argument("--sheet", default=None,
                        help="PNG of the first pair per tier, every method (not for the repo; "
                        "default: none)")
    parser.add_argument("--json", default=None, help="write raw numbers here (default: not kept)")
    parser.add_argument("--baseline", default=None,
                        help="an earlier --json run on the same pairs: its other methods' rows "
                             "join the table (seconds then come from another run; default: none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pairs > 0:
        require_dir(args.data)
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, VGG features in "
          f"{feature_dtype(args.precision, args.device)}")
    results, warpnet_id = run_epe(args) if args.pairs > 0 else ({"epe": {}, "seconds": {}}, None)
    if args.baseline and args.pairs > 0:
        results = merge_baseline(results, args.baseline)
    cost = run_cost(args) if args.sizes else []
    warpnet_id = warpnet_id or next((c["warpnet_id"] for c in cost if c.get("warpnet_id")), None)
    table = markdown(results, cost, args)
    print(table)
    if args.json:
        write_json(args, results, cost, warpnet_id)


def write_json(args: argparse.Namespace, results: dict, cost: list[dict],
               warpnet_id: str | None) -> None:
    """The raw numbers, the machine, and the network they measured: ``models`` sits beside
    ``machine``, not in ``results["setup"]`` (which ``merge_baseline`` compares, and which names
    the pairs only), so that a file can be tied to the table citing it."""
    machine = {"threads": torch.get_num_threads(), "device": args.device,
               "precision": str(feature_dtype(args.precision, args.device)),
               "torch": torch.__version__, "load_average": os.getloadavg()}
    models = {"learned": warpnet_id, "views": args.warp_views, "checkpoint": args.checkpoint}
    Path(args.json).write_text(json.dumps(
        {"results": results, "cost": cost, "machine": machine, "models": models}, indent=1))


if __name__ == "__main__":
    main()
