"""Train the warp network on synthetic pairs: cached VGG features, supervised + weak loss.

Recipe (docs/model_card.md): images -> held-out split -> a feature bank (``bank.py``: one VGG
pass per view, cached on disk) -> ordered pairs of views with composed ground-truth flows ->
sequence-weighted masked L1 on every intermediate flow + the paper's weak softmax loss on the
final one -> AdamW, warm-up + cosine decay. Seeded; resumable checkpoints; a CSV loss log.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from lwst import storage
from lwst.config import ANALYSIS_SIZE
from lwst.devices import device_problem
from lwst.errors import InputError
from lwst.flow import hole_mask, resize_flow
from lwst.interrupts import ctrl_c_held, named
from lwst.loss_log import LossLog
from lwst.lr_schedule import warmup_cosine, warmup_cosine_factor, warmup_steps
from lwst.safety import BadCheckpointError, first_non_finite, save_atomic
from lwst.vgg import VGG19Features, load_vgg19
from lwst.warp_safety import jacobian_determinant, masked_variance
from lwst.warpnet.bank import (
    FeatureBank,
    cache_image,
    cross_image_pairs,
    gather_images,
    load_bank,
)
from lwst.warpnet.inference import checkpoint_id, read_checkpoint
from lwst.warpnet.model import WarpNet, WarpNetConfig
from lwst.warpnet.recipe import TIERS, TrainConfig
from lwst.warpnet.split import training_files


def sequence_loss(
    flows: Sequence[Tensor], target: Tensor, valid: Tensor, gamma: float
) -> tuple[Tensor, Tensor]:
    """RAFT's sequence loss: masked L1 (analysis-size px) of every intermediate, later ones
    weighted more. Returns (loss, per-intermediate mean end-point error ``(len(flows),)``)."""
    size = target.shape[-1]
    scale = (ANALYSIS_SIZE - 1) / (size - 1)
    valid = valid.float()
    denom = valid.sum().clamp_min(1.0)
    loss = target.new_zeros(())
    epes = []
    last = len(flows) - 1
    for i, flow in enumerate(flows):
        pred = resize_flow(flow, size, size) * scale
        err = (pred - target).abs().sum(1, keepdim=True)
        loss = loss + gamma ** (last - i) * (err * valid).sum() / denom
        epe = (pred - target).detach().norm(dim=1, keepdim=True)
        epes.append((epe * valid).sum() / denom)
    return loss, torch.stack(epes)


def melt_loss(flow: Tensor) -> Tensor:
    """Per item ``(B,)``: the standard deviation of the log local area change of a backward
    field (its own grid's pixels) where it samples inside the grid, differentiably: the training
    twin of `lwst.warp_safety.area_spread`, with ``det`` through a softplus so folded pixels
    (``det <= 0``) are pushed back instead of clamped without a gradient."""
    log_area = torch.log(torch.nn.functional.softplus(jacobian_determinant(flow), beta=10.0)
                         + 1e-3)
    return (masked_variance(log_area, ~hole_mask(flow.detach())) + 1e-8).sqrt()


def pair_weights(bank: FeatureBank, original_content: float) -> Tensor:
    """Sampling weights: ``original_content`` of the mass on pairs whose content is untouched."""
    is_orig = torch.tensor([k.startswith("original->") for k in bank.pair_kind])
    weights = torch.where(
        is_orig,
        original_content / is_orig.sum().clamp_min(1),
        (1 - original_content) / (~is_orig).sum().clamp_min(1),
    )
    return weights.float()


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The share of ``--lr`` each step trains at: warm-up (`warmup_steps`; the shipped recipes'
    100 of 1500-4000 steps are unchanged), then a cosine down to 5% over the remaining steps."""
    warmup = warmup_steps(cfg.warmup, cfg.steps)
    floor = 0.05
    return lambda step: warmup_cosine_factor(
        step, warmup, (step - warmup) / max(cfg.steps - warmup, 1), floor)


class TrainingDivergedError(InputError):
    """The loss became NaN or infinite: the weights would be NaN from this step on (the
    settings', not lwst's, so one line: lower the learning rate)."""


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, after the last completed step was saved where there was one; the
    message says what was kept and how to go on."""


# Settings that define a run's trajectory: resuming with another value would silently train
# something else on the old optimiser state. The rest (steps and until, which extend or stop
# the schedule; device, threads, log, checkpoint_every, the data folders) may change.
RESUME_FIXED = ("batch_size", "lr", "weight_decay", "warmup", "gamma", "weak_weight",
                "original_content", "cross_pairs", "cross_neighbours", "cross_weight",
                "melt_weight", "seed")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: TrainConfig) -> None:
    """Refuse nonsense settings and paths in one line, before minutes of painting and
    encoding (the CLI's and the flow's first step)."""
    def finite(name: str, low: float, high: float = math.inf) -> None:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low <= value <= high):
            span = f"at least {low:g}" if high == math.inf else f"within {low:g}..{high:g}"
            raise InputError(f"{_option(name)} must be {span}, got {value}")

    for name in ("steps", "batch_size", "checkpoint_every", "threads", "cross_neighbours",
                 "paint_size"):
        finite(name, 1)
    for name in ("warmup", "seed", "paint_images"):
        finite(name, 0)
    for name in ("weak_weight", "cross_weight", "melt_weight", "weight_decay"):
        finite(name, 0)
    finite("lr", 0, 1)  # above 1 AdamW overflows float32 weights within steps
    finite("original_content", 0, 1)
    for name in ("until", "max_images"):
        if getattr(cfg, name) is not None:
            finite(name, 1)
    if cfg.refine_steps is not None and min(cfg.refine_steps) < 1:
        raise InputError(f"--refine-steps must be at least 1 each, got {list(cfg.refine_steps)}")
    if not 0.0 <= cfg.cross_pairs < 1.0:
        raise InputError(f"cross_pairs must be in [0, 1) (--cross-pairs), got {cfg.cross_pairs}: "
                         "every batch needs synthetic pairs")
    unknown = [t for t in cfg.tiers if t not in TIERS]
    if unknown or not cfg.tiers:
        raise InputError(f"--tiers must name one or more of {', '.join(TIERS)}, got "
                         f"{' '.join(map(str, cfg.tiers)) or 'none'}")
    check_device(cfg.device)
    _check_paths(cfg)


def _check_paths(cfg: TrainConfig) -> None:
    """The inputs exist and the outputs could be written (none a folder, under a file, or the
    same file as another), checked before any work."""
    if cfg.init and not Path(cfg.init).is_file():
        raise InputError(f"no such checkpoint to fine-tune from (--init): {cfg.init}")
    for source in cfg.images:
        if not Path(source).exists():
            raise InputError(f"--images {source}: no such image folder or manifest")
    if cfg.painted_bank and cfg.paint_images:  # `prepare_bank` paints
        if not cfg.paint_styles:
            raise InputError("--painted-bank needs --paint-styles (the styles to paint "
                             f"{cfg.paint_images} copies with), or --paint-images 0 to train "
                             "on the copies already in it")
        if not Path(cfg.paint_styles).exists():
            raise InputError(f"--paint-styles {cfg.paint_styles}: no such folder or manifest")
    outputs = {"--out": cfg.out, "--export": cfg.export, "--log": cfg.log}
    seen: dict[Path, str] = {}
    for option, name in outputs.items():
        if not name:
            continue
        path = Path(name)
        if path.is_dir():
            raise InputError(f"{option} {name}: is an existing folder, not a file name")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise InputError(f"{option} {name}: {blocker} is a file, not a folder")
        same = seen.setdefault(path.resolve(), option)
        if same != option:
            raise InputError(f"{same} and {option} name the same file, {name}: each needs its "
                             "own")


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has, or one line saying why not."""
    problem = device_problem(device)  # not ``auto``: the trainer runs where it is told
    if problem:
        raise InputError(f"--device {device}: {problem}")


def check_resume(cfg: TrainConfig, state: dict, arch: WarpNetConfig, out: Path) -> None:
    """One line naming every setting that differs from the run being resumed."""
    before = state.get("train_config") or {}
    changed = [f"{_option(k)} {before[k]} -> {getattr(cfg, k)}" for k in RESUME_FIXED
               if k in before and before[k] != getattr(cfg, k)]
    if state.get("model_config") and state["model_config"] != arch.to_dict():
        changed.append("architecture (--refine-steps / --global-relu5)")
    if changed:
        raise InputError(f"{out} was trained with other settings ({'; '.join(changed)}): repeat "
                         "them to resume, or choose another --out to start a new run")


def read_training_state(out: Path) -> dict:
    """The training checkpoint ``--resume`` continues, or one line saying why it cannot be
    resumed (unreadable, or an exported slim checkpoint, which has no optimiser state)."""
    try:
        state = read_checkpoint(out)  # on the CPU: the RNG state must stay there
    except BadCheckpointError as exc:
        raise BadCheckpointError(f"--resume: {exc}: delete it to start over, or choose another "
                                 "--out") from None
    missing = [k for k in ("optimizer", "rng", "step") if k not in state]
    if missing:
        raise InputError(f"--resume: {out} is not a training checkpoint (no {', '.join(missing)}"
                         "; an exported one?): fine-tune from it with --init and another --out")
    return state


def _read_init(cfg: TrainConfig) -> dict | None:
    """``--init``'s checkpoint (training or slim), or one line naming the option."""
    if not cfg.init:
        return None
    try:
        return read_checkpoint(cfg.init)
    except BadCheckpointError as exc:
        raise BadCheckpointError(f"--init: {exc}") from None


def prepare_bank(cfg: TrainConfig, progress: Callable[[str], None] = print) -> None:
    """Paint the requested copies, then encode every training image not cached yet (held-out
    images are skipped). Each image's synthetic views go to ``<stem>.base.pt`` and its painted
    copies (if any) to ``<stem>.painted.pt``, so painting can be added to a cache later."""
    found = gather_images(cfg.images)
    files = training_files(found)
    if not files:
        why = (f"{len(found)} found, all held out for evaluation (docs/model_card.md, Data)"
               if found else "none found (folders: their own "
               f"{' '.join(storage.IMAGE_SUFFIXES)} files; manifests: their content, geometry "
               "and texture columns)")
        raise InputError(f"no training images in {', '.join(map(str, cfg.images))}: {why}")
    if cfg.max_images:
        random.Random(cfg.seed).shuffle(files)
        files = files[: cfg.max_images]
    cache = Path(cfg.cache_dir)
    files = readable_images(files, cache, progress)
    vgg = None
    if cfg.paint_images and cfg.painted_bank:
        vgg = load_vgg19("auto", device=cfg.device)
        paint_training_copies(cfg, files, vgg, progress)
    elif cfg.paint_images:
        progress("no painted bank folder given: training without renderer-painted copies")
    painted = _painted_index(cfg.painted_bank)
    todo = [(f, "base") for f in files if not (cache / f"{f.stem}.base.pt").exists()]
    todo += [(f, "painted") for f in files
             if f.stem in painted and not (cache / f"{f.stem}.painted.pt").exists()]
    progress(f"{len(files)} training images, {len(todo)} records to encode into {cache}")
    if not todo:
        return
    vgg = vgg or load_vgg19("auto", device=cfg.device)
    for i, (path, tag) in enumerate(todo):
        if tag == "base":
            cache_image(path, vgg, cache, seed=cfg.seed, tiers=cfg.tiers)
        else:
            copies = [_read_square(p) for p in painted[path.stem]]
            cache_image(path, vgg, cache, seed=cfg.seed, tiers=(), painted=copies, tag=tag)
        progress(f"encoded {i + 1}/{len(todo)} {path.name} ({tag})")


def readable_images(files: Sequence[Path], cache: Path,
                    progress: Callable[[str], None] = print) -> list[Path]:
    """``files`` without the ones that cannot be decoded, each said in one line: one corrupt
    photo should not stop a training run after minutes of painting and encoding. Images
    already in the cache were read before and are not decoded again."""
    from lwst.image_io import ImageInputError, read_image

    usable = []
    for path in files:
        if not (cache / f"{path.stem}.base.pt").exists():
            try:
                read_image(str(path))
            except ImageInputError as exc:
                progress(f"skipped {str(exc).splitlines()[0]}")
                continue
        usable.append(path)
    if not usable:
        raise InputError(f"no readable training images among {len(files)} (each one skipped "
                         "is named above)")
    return usable


def paint_training_copies(
    cfg: TrainConfig,
    files: Sequence[Path],
    vgg: VGG19Features,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """One renderer-painted copy for each of the first ``cfg.paint_images`` training images
    (seeded order), each with a random *training* style from ``cfg.paint_styles``."""
    from lwst.warpnet.painted import paint_bank, painting_config

    if not (cfg.painted_bank and cfg.paint_styles):
        raise InputError("--paint-images needs --painted-bank (the folder to paint into) and "
                         "--paint-styles (the styles to paint with)")
    styles = training_files(gather_images([cfg.paint_styles]))
    if not styles:
        raise InputError(f"no training styles to paint with under {cfg.paint_styles} "
                         "(held-out ones are skipped)")
    chosen = list(files)
    random.Random(cfg.seed + 1).shuffle(chosen)
    return paint_bank(
        chosen[: cfg.paint_images], styles, Path(cfg.painted_bank), vgg,
        config=painting_config(cfg.paint_renderer), seed=cfg.seed, size=cfg.paint_size,
        progress=progress,
    )


def _painted_index(folder: str | None) -> dict[str, list[Path]]:
    if not folder:
        return {}
    index: dict[str, list[Path]] = {}
    for p in sorted(Path(folder).glob("*__*.png")):
        index.setdefault(p.stem.split("__")[0], []).append(p)
    return index


def _read_square(path: Path) -> Tensor:
    from lwst.correlation import analysis_view
    from lwst.image_io import read_image

    return analysis_view(read_image(str(path)))


def save_checkpoint(
    path: Path,
    model: WarpNet,
    optimiser,
    step: int,
    cfg: TrainConfig,
    rng: torch.Generator,
    fine_tuned_from: str | None = None,
) -> None:
    """Full training state (model, optimiser, step, config, RNG, the id of the weights it was
    fine-tuned from), written atomically."""
    save_atomic(
        {
            "model": model.state_dict(),
            "model_config": model.cfg.to_dict(),
            "optimizer": optimiser.state_dict(),
            "step": step,
            "train_config": asdict(cfg),
            "rng": rng.get_state(),
            "fine_tuned_from": fine_tuned_from,
        },
        path,
    )


def model_config(cfg: TrainConfig, init: dict | None = None) -> WarpNetConfig:
    """The architecture to train: the fine-tuned checkpoint's, or ``cfg.model``; then the
    refinement step counts, which change no weights (they are shared across steps)."""
    arch = dict(init["model_config"]) if init is not None else dict(cfg.model)
    if cfg.refine_steps is not None:
        arch["iters"], arch["fine_iters"] = cfg.refine_steps
    if cfg.global_relu5 is not None:
        arch["global_relu5"] = cfg.global_relu5
    return WarpNetConfig.from_dict(arch)


def load_initial_weights(model: WarpNet, weights: dict[str, Tensor]) -> None:
    """Load a fine-tune's starting weights; the one module an architecture change may add (the
    global stage's relu5_1 mixing weight) keeps its own initial value."""
    expected = model.state_dict()
    odd = next((k for k, v in weights.items()
                if k in expected and tuple(v.shape) != tuple(expected[k].shape)), None)
    if odd is not None:  # load_state_dict's RuntimeError is a multi-line list
        raise InputError(f"--init: its weights do not fit its own architecture ({odd} has "
                         f"shape {tuple(weights[odd].shape)}, expected "
                         f"{tuple(expected[odd].shape)})")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    added = {"global_stage.relu5_mix"}
    if unexpected or set(missing) - added:
        raise InputError(f"--init: its weights do not fit its own architecture (missing "
                         f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]})")


@dataclass
class TrainingPairs:
    """What batches are drawn from: the bank, its pairs' sampling weights, the cross-image
    candidates (None without cross pairs) and how many of a batch's items are synthetic."""

    bank: FeatureBank
    weights: Tensor
    cross: tuple[Tensor, Tensor] | None
    synthetic: int  # each batch's first items; its cross pairs follow

    @classmethod
    def of(cls, bank: FeatureBank, cfg: TrainConfig) -> TrainingPairs:
        n_cross = round(cfg.cross_pairs * cfg.batch_size)
        cross = cross_image_pairs(bank, cfg.cross_neighbours) if n_cross else None
        return cls(bank, pair_weights(bank, cfg.original_content), cross,
                   cfg.batch_size - n_cross)


@dataclass
class TrainingRun:
    """One run's network, optimiser, schedule and sampling RNG, and the steps it has done."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    model: WarpNet
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    rng: torch.Generator
    start: int  # the step it started (or resumed) at
    done: int  # completed steps: what a checkpoint (and Ctrl-C) saves
    fine_tuned_from: str | None

    def update(self) -> None:
        """Apply the step's gradients (refusing weights that became NaN or infinite), count
        the step done and set the next one's learning rate."""
        self.optimiser.step()
        if first_non_finite(dict(self.model.named_parameters())) is not None:
            raise_diverged(self.done + 1, "weights NaN or infinite after the update", self.out)
        self.done += 1
        self.schedule.step()

    def save(self) -> None:
        save_checkpoint(self.out, self.model, self.optimiser, self.done, self.cfg, self.rng,
                        self.fine_tuned_from)


@dataclass
class Start:
    """Where a run starts, read and checked before any painting or encoding: ``--init``'s
    checkpoint, the training checkpoint ``--resume`` continues (None: a new run) and the
    architecture to train."""

    init: dict | None
    state: dict | None
    arch: WarpNetConfig

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state is not None else 0


def starting_point(cfg: TrainConfig) -> Start:
    """`check_config`, then every check that needs a checkpoint read but no image: an
    existing ``--out`` without ``--resume``, ``--init`` and the resumed checkpoint readable,
    the resumed run's settings repeated."""
    check_config(cfg)
    out = Path(cfg.out)
    if out.exists() and not cfg.resume:
        raise InputError(f"{out} already holds a training checkpoint: pass --resume to continue "
                         "it, or choose another --out (or delete it) to start over")
    init = _read_init(cfg)
    state = read_training_state(out) if cfg.resume and out.exists() else None
    arch = model_config(cfg, init)
    if state is not None:
        check_resume(cfg, state, arch, out)
    return Start(init, state, arch)


def last_step(cfg: TrainConfig) -> int:
    """The step a run ends at: ``--until``, or ``--steps`` (the schedule's length)."""
    return min(cfg.steps, cfg.until or cfg.steps)


def prepare(cfg: TrainConfig, progress: Callable[[str], None] = print,
            start: Start | None = None) -> tuple[TrainingRun, TrainingPairs]:
    """Check the settings (unless ``start`` says they were), build (``build_cache``) and load
    the bank, then set up the run: from scratch, from ``--init``'s weights, or resumed from
    ``cfg.out``."""
    start = start or starting_point(cfg)
    torch.set_num_threads(cfg.threads)
    if cfg.build_cache:
        prepare_bank(cfg, progress)
    bank = load_bank(Path(cfg.cache_dir))
    progress(f"bank: {len(bank.images)} images in {len(bank.names)} records, "
             f"{bank.features.shape[0]} views, {len(bank)} pairs")
    run = _start_run(cfg, Path(cfg.out), bank, start, progress)
    pairs = TrainingPairs.of(bank, cfg)
    n_cross = cfg.batch_size - pairs.synthetic
    if pairs.cross is not None:
        progress(f"cross-image pairs: {n_cross} of {cfg.batch_size} per batch, "
                 f"from {pairs.cross[0].numel()} candidates")
    elif cfg.cross_pairs:
        progress(f"cross_pairs {cfg.cross_pairs} is under one pair of a batch of "
                 f"{cfg.batch_size}: training on synthetic pairs only")
    return run, pairs


def _start_run(cfg: TrainConfig, out: Path, bank: FeatureBank, start: Start,
               progress: Callable[[str], None]) -> TrainingRun:
    """The network (architecture, ``--init`` weights), optimiser, schedule and RNG, at step 0
    or at the step of the checkpoint ``out`` that ``--resume`` continues."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    init, state, arch = start.init, start.state, start.arch
    if arch.global_relu5 and bank.top is None:
        raise InputError(f"the cache {cfg.cache_dir} has no relu5_1 features (written before "
                         "they were cached): encode it again into a new --cache-dir")
    cfg.model = arch.to_dict()  # what was trained, recorded in checkpoints
    model = WarpNet(arch).to(device)
    fine_tuned_from = None
    if init is not None:
        load_initial_weights(model, init["model"])
        fine_tuned_from = checkpoint_id(Path(cfg.init))
        progress(f"fine-tuning from {cfg.init} (trained {init.get('step', '?')} steps)")
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = torch.Generator().manual_seed(cfg.seed)
    if state is not None:
        if cfg.init:
            progress(f"resuming {out}: --init {cfg.init} is not applied again (the run started "
                     f"from {state.get('fine_tuned_from') or 'its own initial weights'})")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        # The run's own record: the --init file may have been replaced since (by --export).
        fine_tuned_from = state.get("fine_tuned_from", fine_tuned_from)
        progress(f"resumed from {out} at step {start.step}")
    schedule = warmup_cosine(optimiser, cfg.lr, lr_factor(cfg), start.step)
    return TrainingRun(cfg, out, device, model, optimiser, schedule, rng, start.step,
                       start.step, fine_tuned_from)


def _open_log(cfg: TrainConfig, start: int) -> LossLog | None:
    """The run's CSV loss log (``--log``), its rows past ``start`` dropped; None without one."""
    if not cfg.log:
        return None
    Path(cfg.log).parent.mkdir(parents=True, exist_ok=True)
    return LossLog(Path(cfg.log), start)


def train(cfg: TrainConfig, progress: Callable[[str], None] = print) -> Path:
    """Run (or resume) training, then write ``cfg.export`` if set; returns the checkpoint path.

    Every check that needs no image comes first (`starting_point`). A resumed run already at
    its last step trains nothing and builds no cache. Ctrl-C saves the last completed step and
    raises `TrainingStopped`, whose message says what was kept."""
    start = starting_point(cfg)
    out, last, step = Path(cfg.out), last_step(cfg), start.step
    if start.state is not None and start.step >= last:
        progress(f"nothing to train: {out} is at step {start.step} (--steps {cfg.steps}"
                 f"{f', --until {cfg.until}' if cfg.until else ''}); a larger --steps or "
                 "--until trains it on")
    else:
        try:
            run, pairs = prepare(cfg, progress, start)
        except KeyboardInterrupt:
            raise TrainingStopped(named(_stopped_before_training(cfg, start))) from None
        log = _open_log(cfg, run.start)
        try:
            _train_steps(run, pairs, log, progress)
        finally:
            if log:
                log.close()
        step = run.done
    done = f"done: {out} at step {step}"
    if cfg.export:
        export_checkpoint(out, cfg.export)
        done += f"; exported {cfg.export}"
    progress(done)
    return out


def _stopped_before_training(cfg: TrainConfig, start: Start) -> str:
    """What a Ctrl-C while painting, encoding or loading the bank kept."""
    if start.state is not None:
        return (f"stopped before training; {cfg.out} is unchanged at step {start.step}: the "
                "same command continues")
    encoded = " (the feature cache keeps what was encoded)" if cfg.build_cache else ""
    return (f"stopped before the first step; nothing was saved{encoded}: the same command "
            "starts over")


def _stopped(run: TrainingRun) -> str:
    """What a Ctrl-C during training kept, and how to go on."""
    if not run.done:
        return "stopped before the first step; nothing was saved: the same command starts over"
    kept = "saved" if run.done > run.start else "unchanged"
    again = "the same command" if run.cfg.resume else "the same command with --resume"
    return f"stopped at step {run.done}; the checkpoint {run.out} is {kept}: {again} continues"


def _train_steps(run: TrainingRun, pairs: TrainingPairs, log: LossLog | None,
                 progress: Callable[[str], None]) -> None:
    """Train to ``until`` (or ``steps``), checkpointing every ``checkpoint_every`` steps and at
    the end; Ctrl-C saves the last completed step, then raises `TrainingStopped`."""
    cfg = run.cfg
    started = time.perf_counter() - (log.last("seconds") if log else 0.0)
    run.model.train()
    last = last_step(cfg)
    try:
        for step in range(run.start, last):
            if cfg.refresh_bank_every and step > run.start and step % cfg.refresh_bank_every == 0:
                pairs = TrainingPairs.of(load_bank(Path(cfg.cache_dir)), cfg)
                progress(f"bank refreshed: {len(pairs.bank.images)} images, "
                         f"{len(pairs.bank)} pairs")
            lr = run.optimiser.param_groups[0]["lr"]
            terms = batch_loss(run.model, pairs.bank, pairs.weights, pairs.cross, run.rng, cfg,
                               pairs.synthetic, run.device)
            if not torch.isfinite(terms.loss):
                raise_diverged(step + 1, f"loss {terms.loss.item()}", run.out)
            run.optimiser.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
            with ctrl_c_held():  # the weights, ``done``, the log and the checkpoint agree
                run.update()
                if log:
                    log.write(log_row(run.done, terms, lr, time.perf_counter() - started,
                                      len(pairs.bank), run.model.cfg))
                if run.done % cfg.checkpoint_every == 0 or run.done == last:
                    run.save()
                    progress(f"step {run.done}: loss {terms.loss.item():.3f}, "
                             f"EPE final {terms.epes[-1].item():.2f} px")
    except KeyboardInterrupt:
        if run.done > run.start:
            with ctrl_c_held():
                run.save()
        raise TrainingStopped(named(_stopped(run))) from None


def raise_diverged(step: int, what: str, out: Path) -> None:
    """Stop before a non-finite loss or weights reach a checkpoint (the network would load,
    run, and return NaN fields)."""
    kept = f"the last checkpoint in {out} is kept" if out.exists() else "no checkpoint was written"
    raise TrainingDivergedError(f"training diverged at step {step} ({what}): {kept}; lower --lr "
                                "or the loss weights")


class LossTerms(NamedTuple):
    """One batch's training loss and the figures the log records."""

    loss: Tensor
    flow_loss: Tensor
    weak: Tensor
    epes: Tensor
    cross_weak: float | None
    cross_melt: float | None


def batch_loss(model: WarpNet, bank: FeatureBank, weights: Tensor, cross, rng: torch.Generator,
               cfg: TrainConfig, synthetic: int, device: torch.device) -> LossTerms:
    """Draw a batch (``synthetic`` pairs, then the cross-image ones) and compute its loss."""
    n_cross = cfg.batch_size - synthetic
    index = torch.multinomial(weights, synthetic, replacement=True, generator=rng)
    batch = bank.batch(index)
    if cross is not None:
        pick = torch.randint(cross[0].numel(), (n_cross,), generator=rng)
        extra = bank.cross_batch(cross[0][pick], cross[1][pick])
        batch = {k: torch.cat([batch[k], extra[k]]) for k in batch}
    batch = {k: v.to(device) for k, v in batch.items()}
    flows = model(batch["content"], batch["exemplar"],
                  batch.get("content_fine"), batch.get("exemplar_fine"),
                  content_top=batch.get("content_top"), exemplar_top=batch.get("exemplar_top"))
    # Cross-image items have no valid pixels, so only synthetic ones enter the flow loss.
    flow_loss, epes = sequence_loss(flows, batch["flow"], batch["valid"], cfg.gamma)
    weak_items = model.alignment_loss(batch["content"], batch["exemplar"], flows[-1])
    cross_weak = weak_items[synthetic:].mean().item() if n_cross else None
    item_weight = torch.full_like(weak_items, cfg.weak_weight)
    item_weight[synthetic:] = cfg.cross_weight
    loss = flow_loss + (item_weight * weak_items).mean()
    cross_melt = None
    if n_cross and cfg.melt_weight:
        melts = melt_loss(flows[-1][synthetic:].float())
        cross_melt = melts.mean().item()
        loss = loss + cfg.melt_weight * melts.sum() / cfg.batch_size
    return LossTerms(loss, flow_loss, weak_items.mean(), epes, cross_weak, cross_melt)


def log_row(step: int, terms: LossTerms, lr: float, seconds: float, pairs: int,
            arch: WarpNetConfig) -> dict[str, object]:
    """The loss log's row of one step, by column (their order is the log's): the end-point
    error of each of ``arch``'s intermediate flows, from the affine one to the last fine one."""
    stages = ["affine", "global", *[f"iter{i + 1}" for i in range(arch.iters)],
              *[f"fine{i + 1}" for i in range(arch.fine_iters)]]
    return {"step": step, "loss": f"{terms.loss.item():.4f}",
            "flow_loss": f"{terms.flow_loss.item():.4f}", "weak_loss": f"{terms.weak.item():.4f}",
            **{f"epe_{n}": f"{e:.3f}" for n, e in zip(stages, terms.epes.tolist(), strict=True)},
            "lr": f"{lr:.2e}", "seconds": f"{seconds:.1f}", "pairs": pairs,
            "cross_weak_loss": "" if terms.cross_weak is None else f"{terms.cross_weak:.4f}",
            "cross_melt": "" if terms.cross_melt is None else f"{terms.cross_melt:.4f}"}




def export_checkpoint(train_checkpoint: str | Path, out: str | Path, note: str = "") -> Path:
    """Strip a training checkpoint to what inference needs (weights + configs), float32. The
    default ``note`` names the network a fine-tune started from."""
    state = read_checkpoint(train_checkpoint)
    origin = state.get("fine_tuned_from")
    note = note or (f"fine-tuned from {origin}" if origin else "")
    slim = {
        "model": {k: v.float() for k, v in state["model"].items()},
        "model_config": WarpNetConfig.from_dict(state["model_config"]).to_dict(),
        "step": state["step"],
        "train_config": state["train_config"],
        "note": note,
    }
    out = Path(out)
    save_atomic(slim, out)
    return out
