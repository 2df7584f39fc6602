"""Texture rendering ``R``: multi-scale Gatys (docs/method.md, "Texture rendering").

`render_texture` is three steps, each its own function:

- **colour**: with ``preserve_color`` the optimisation runs on luminance (`luminance_inputs`)
  and the result is recombined with the content's chroma (`with_chroma`);
- **the pyramid schedule** (`pyramid_schedule`): which levels fit the image and how many
  iterations each gets. The content is decomposed by kornia's Gaussian pyramid
  (``build_pyramid``: 5x5 Gaussian blur, then halve). The coarsest level starts from its content
  (or seeded noise); every finer level starts from the upsampled solution below plus the
  content's own band-pass detail at that level (`upsample_solution`, the Laplacian-pyramid
  residual), so a finer level begins sharp and spends its iterations on fine texture only.
  Coarse levels are cheap (a quarter of the pixels per level down) and fix the large-scale
  texture; the output level only needs a short polish, which is where the speed comes from;
- **one level's optimisation** (`optimise_level`) of the Gatys objective
  (`lwst.losses.GatysObjective`) against the exemplar resized by the level's scale (so brush
  strokes keep their size relative to the image).

The VGG passes of the optimisation run in bfloat16 autocast where ``precision`` says so (``auto``:
where the hardware has it natively; `lwst.losses.GatysObjective`): about 1.5x faster per item
on such a CPU, the same yardstick figures (docs/benchmarks.md, "gatys in bfloat16").

Pixels are optimised directly and clamped to [0, 1] after every step. Measured against
optimising unconstrained and clamping once at the end (tubingen / shipwreck, 256 px, schedule
60/40/20): Gram distance to the exemplar 0.020 vs 0.032 at the same content distance, so the
per-step clamp stays.

Colour preservation is *luminance-only transfer* (Gatys et al. 2017, "Controlling perceptual
factors"): the optimisation runs on one luminance channel (content's Y, exemplar's Y matched to
the content's mean and standard deviation) and the result's Y is recombined with the content's
chroma (YIQ). Chosen over histogram-matching the exemplar because it keeps the content's colours
by construction (the chroma channels are copied, not approximated), and it is free: nothing
else changes in the optimisation.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.config import OPTIMIZERS, RenderConfig
from lwst.errors import InputError
from lwst.image_io import resize_longest
from lwst.kornia_ops import build_pyramid
from lwst.losses import GatysObjective
from lwst.vgg import VGG19Features, feature_dtype

ProgressFn = Callable[[str, int, int], None]

MIN_LEVEL_SIDE = 16  # no pyramid level with a shorter side (VGG's relu5_1 is side / 16) ...
MIN_LEVEL_LONG_SIDE = 32  # ... or a shorter long side
MIN_STYLE_SIDE = 16  # the exemplar is never resized below this for a coarse level
PROGRESS_STAGE = "render"
LBFGS_HISTORY = 100

# RGB <-> YIQ (NTSC); Y is the luminance used for colour preservation.
# Not kornia.color's YUV (same Y): its 3-decimal inverse round-trips colours only to ~8e-4 and
# shifts ~3% of uint8 output values; this exact inverse gives the content's chroma back intact.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(repr=False)
class RenderResult:
    """What the texture stage made (`render_texture`, `lwst.renderers.render`).

    - ``image``: ``(1, 3, H, W)`` in [0, 1], on the content's device and in its dtype;
    - ``history``: one dict per pyramid level, coarsest first, from `render_texture`: its size,
      iterations, seconds and the losses of every step (empty in `lwst.renderers.render`'s
      results, so in `lwst.stylize.stylize`'s);
    - ``content_loss``, ``style_loss``: the normalised losses at the output level, evaluated on
      the returned image (before colour recombination); ``total_loss`` their weighted sum (NaN
      where not measured);
    - ``seconds``: wall time of the stage.
    """

    image: Tensor
    history: list[dict] = field(default_factory=list)
    content_loss: float = float("nan")
    style_loss: float = float("nan")
    total_loss: float = float("nan")
    seconds: float = 0.0

    def __repr__(self) -> str:
        """One line (the default printed every step's losses of every level)."""
        levels = f", history={len(self.history)} levels" if self.history else ""
        return (f"RenderResult(image={tensor_summary(self.image)}{levels}, "
                f"content_loss={self.content_loss:.4g}, style_loss={self.style_loss:.4g}, "
                f"total_loss={self.total_loss:.4g}, seconds={self.seconds:.2f})")


def tensor_summary(tensor: Tensor | None) -> str:
    """``float32[1, 3, 256, 256] cpu``: a tensor in a result's repr, without its values."""
    if tensor is None:
        return "None"
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype}[{', '.join(map(str, tensor.shape))}] {tensor.device}"


class PyramidLevel(NamedTuple):
    """One level of the coarse-to-fine schedule: its size and its optimizer steps."""

    height: int
    width: int
    iterations: int


def rgb_to_yiq(image: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", _YIQ_TO_RGB.to(image), image)


def luminance_inputs(contents: Tensor, exemplars: list[Tensor]) -> tuple[Tensor, list[Tensor],
                                                                          Tensor]:
    """Colour preservation's inputs: the contents' luminance ``(B, 1, H, W)``, each exemplar's
    luminance matched to its content's mean and std, and the contents' chroma (YIQ's I, Q)."""
    yiq = rgb_to_yiq(contents)
    luma, chroma = yiq[:, :1], yiq[:, 1:]
    matched = []
    for i, exemplar in enumerate(exemplars):
        ex_y = rgb_to_yiq(exemplar)[:, :1]
        ex_y = (ex_y - ex_y.mean()) / ex_y.std().clamp_min(1e-6)
        matched.append((ex_y * luma[i].std() + luma[i].mean()).clamp(0.0, 1.0))
    return luma.clamp(0.0, 1.0), matched, chroma


def with_chroma(luma: Tensor, chroma: Tensor) -> Tensor:
    """Colour preservation's output: RGB in [0, 1] from a rendered luminance ``(B, 1, H, W)``
    and the content's chroma ``(B, 2, H, W)`` (`luminance_inputs`)."""
    return yiq_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0.0, 1.0)


def pyramid_schedule(height: int, width: int, config: RenderConfig) -> list[PyramidLevel]:
    """The levels to solve for a ``height x width`` output, coarsest first.

    Each level halves the one above (floor, as kornia's ``pyrdown``); as many of
    ``config.levels`` as keep both sides >= `MIN_LEVEL_SIDE` and the long side >=
    `MIN_LEVEL_LONG_SIDE`. ``config.iterations`` is aligned by its *finest* end: an image too
    small for all levels skips the coarsest entries, and a short list repeats its first entry.
    """
    sizes = [(height, width)]
    while len(sizes) < config.levels:
        h, w = sizes[-1][0] // 2, sizes[-1][1] // 2
        if min(h, w) < MIN_LEVEL_SIDE or max(h, w) < MIN_LEVEL_LONG_SIDE:
            break
        sizes.append((h, w))
    its = [int(i) for i in config.iterations]
    n = len(sizes)
    its = its[len(its) - n:] if len(its) >= n else [its[0]] * (n - len(its)) + its
    return [PyramidLevel(h, w, i) for (h, w), i in zip(reversed(sizes), its, strict=True)]


def upsample_solution(solution: Tensor, below: Tensor, target: Tensor) -> Tensor:
    """A finer level's start: the coarser ``solution`` upsampled to ``target``'s size plus the
    content's own detail band there (``target`` minus its coarser pyramid level ``below``
    upsampled), clamped to [0, 1]."""
    size = target.shape[-2:]
    detail = target - F.interpolate(below, size=size, mode="bilinear", align_corners=False)
    upsampled = F.interpolate(solution, size=size, mode="bilinear", align_corners=False)
    return (upsampled + detail).clamp(0.0, 1.0)


def _make_optimizer(param: Tensor, config: RenderConfig) -> torch.optim.Optimizer:
    if config.optimizer == "lbfgs":
        # One function evaluation per step() call (max_iter=1, no line search): the curvature
        # history lives in the optimizer state across calls, and every evaluation is recorded.
        return torch.optim.LBFGS(
            [param], lr=1.0, max_iter=1, history_size=LBFGS_HISTORY,
            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=None,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam([param], lr=config.learning_rate)
    raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")


def optimise_level(
    start: Tensor,
    objective: GatysObjective,
    iterations: int,
    config: RenderConfig,
    on_step: Callable[[], None] | None = None,
) -> tuple[Tensor, dict[str, list[float]]]:
    """Minimise ``objective`` over the pixels of ``start`` for ``iterations`` optimizer steps
    (``config.optimizer``), clamping to [0, 1] after every step.

    Returns the solution (detached, ``start``'s shape) and the losses of every evaluation
    (``content_loss``, ``style_loss``, ``total_loss``: one per step). ``on_step()`` is called
    after each step. A non-finite loss raises `FloatingPointError`.
    """
    param = start.detach().clone().requires_grad_(True)
    optimizer = _make_optimizer(param, config)
    losses: dict[str, list[float]] = {"content_loss": [], "style_loss": [], "total_loss": []}

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        c, s, total = objective(param)
        total.backward()
        for key, value in zip(losses, (c, s, total), strict=True):
            losses[key].append(float(value.detach()))
        return total

    for step in range(iterations):
        if config.optimizer == "lbfgs":
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        with torch.no_grad():
            param.clamp_(0.0, 1.0)
        if on_step:
            on_step()
        if not math.isfinite(losses["total_loss"][-1]):
            raise FloatingPointError(
                f"render diverged at step {step + 1} of {iterations} "
                f"(loss {losses['total_loss'][-1]})")
    return param.detach(), losses


def render_texture(
    content: Tensor,
    exemplar: Tensor,
    config: RenderConfig,
    vgg: VGG19Features,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Paint ``content`` (the warped content, ``(1, 3, H, W)`` in [0, 1]) with a texture.

    Runs on the VGG's device and dtype; the result comes back on ``content``'s device and dtype.
    ``progress(stage, done, total)`` is called after every iteration (``stage`` = ``"render"``,
    ``done``/``total`` counted over all levels). Seeded: the same inputs, config and seed give the
    same image on the same machine.

    Works under the caller's ``torch.no_grad()`` / ``torch.inference_mode()`` (an eval loop, a
    notebook): the optimisation needs gradients, so it runs with them re-enabled and outside
    inference mode, on copies of inputs made inside it (`grad_ready`).
    """
    if config.optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if any(t.dim() != 4 or tuple(t.shape[:2]) != (1, 3) for t in (content, exemplar)):
        raise ValueError("render_texture expects (1, 3, H, W) content and exemplar tensors")
    with torch.inference_mode(False), torch.enable_grad():
        return _render_texture(content, exemplar, config, grad_ready(vgg), seed, progress)


def grad_ready(vgg: VGG19Features) -> VGG19Features:
    """``vgg``, or a copy of it with normal tensors where it was built under
    ``torch.inference_mode()``: the gradient through it to the pixels needs its weights, and
    inference tensors cannot be saved for backward. The copy is made per call (the cached
    model stays as it was); `lwst.vgg.load_vgg19` building outside inference mode avoids it."""
    tensors = (*vgg.parameters(), *vgg.buffers())
    if not any(t.is_inference() for t in tensors):
        return vgg
    with torch.inference_mode(False):
        return copy.deepcopy(vgg)


def _render_texture(content: Tensor, exemplar: Tensor, config: RenderConfig,
                    vgg: VGG19Features, seed: int, progress: ProgressFn | None) -> RenderResult:
    """`render_texture`'s work, with gradients enabled and outside inference mode; the
    ``clamp`` below makes normal tensors of inputs created in inference mode."""
    started = time.perf_counter()
    out_device, out_dtype = content.device, content.dtype
    device, dtype = vgg.mean.device, vgg.mean.dtype
    content = content.detach().to(device=device, dtype=dtype).clamp(0.0, 1.0)
    exemplar = exemplar.detach().to(device=device, dtype=dtype).clamp(0.0, 1.0)
    height, width = content.shape[-2:]
    style_side = int(config.style_size or max(height, width))
    chroma = None
    if config.preserve_color:
        content, (exemplar,), chroma = luminance_inputs(content, [exemplar])

    # The optimisation's VGG passes in bfloat16 autocast where ``precision`` asks for it (auto:
    # where native); a float64 VGG (exact comparisons) is never rounded.
    compute = feature_dtype(config.precision, device)
    autocast = compute if dtype == torch.float32 and compute != dtype else None
    schedule = pyramid_schedule(height, width, config)
    pyramid = build_pyramid(content, len(schedule), border_type="reflect")[::-1]
    total_steps = sum(level.iterations for level in schedule)
    done = 0
    if progress:
        progress(PROGRESS_STAGE, 0, total_steps)

    def on_step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(PROGRESS_STAGE, done, total_steps)

    history: list[dict] = []
    current: Tensor | None = None
    objective: GatysObjective | None = None
    for index, (level, target) in enumerate(zip(schedule, pyramid, strict=True)):
        level_started = time.perf_counter()
        scale = max(level.height, level.width) / max(height, width)
        ex_level = resize_longest(exemplar, max(MIN_STYLE_SIDE, round(style_side * scale)))
        objective = GatysObjective(vgg, target, ex_level.clamp(0.0, 1.0),
                                   config.content_weight, config.style_weight, autocast)
        if current is not None:
            current = upsample_solution(current, pyramid[index - 1], target)
        elif config.init == "noise":
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
            current = torch.rand(target.shape, generator=generator).to(device=device, dtype=dtype)
        else:
            current = target.clone()
        current, losses = optimise_level(current, objective, level.iterations, config, on_step)
        history.append({
            "level": index,
            "height": level.height,
            "width": level.width,
            "iterations": level.iterations,
            **losses,
            "seconds": time.perf_counter() - level_started,
        })

    assert current is not None and objective is not None
    with torch.no_grad():
        c, s, total = objective(current)
        image = current.clamp(0.0, 1.0) if chroma is None else with_chroma(current, chroma)
    return RenderResult(
        image=image.to(device=out_device, dtype=out_dtype),
        history=history,
        content_loss=float(c),
        style_loss=float(s),
        total_loss=float(total),
        seconds=time.perf_counter() - started,
    )
