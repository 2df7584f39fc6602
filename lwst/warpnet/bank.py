"""A disk cache of VGG features for synthetic pairs, so that training runs no VGG at all.

VGG forwards dominate the cost of a training step on a CPU (seconds per 256x256 image on a
shared 2-core machine). Each training image is encoded once, and a few warped, re-textured
variants of it (``synthetic.make_pair``) are encoded once each. Training then draws *ordered
pairs of views of the same image* (original or variant as content, another as exemplar): the
ground truth between two variants is composed from their own flows (one inverted numerically),
so V variants give (V + 1) V pairs from V + 1 forwards. The features are exactly what inference
computes (VGG of the real warped, re-textured image at 256x256); nothing is approximated in
feature space.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from lwst import storage
from lwst.config import ANALYSIS_SIZE
from lwst.correlation import analysis_view, normalised_features
from lwst.errors import InputError
from lwst.failures import first_line
from lwst.flow import base_grid, pixel_to_normalised, resize_flow
from lwst.image_io import read_image
from lwst.manifest import PATH_COLUMNS, ManifestError, base_location, read_table, resolve_path
from lwst.safety import save_atomic
from lwst.vgg import VGG19Features
from lwst.warpnet.recipe import DEFAULT_TIERS
from lwst.warpnet.synthetic import make_pair

FEATURE_TAP = "relu4_1"  # 32x32 at 256; the global stage pools it to 16x16 (see model.py)
FINE_TAP = "relu3_1"  # 64x64 at 256: the fine stage places edges with it (see model.py)
TOP_TAP = "relu5_1"  # 16x16 at 256: optionally matched by the global stage (see model.py)
TARGET_SIZE = 64  # ground-truth flows and valid masks are kept at 64x64 (flows are smooth)
RECORD_KEYS = ("name", "features", "flow", "kinds")  # what `load_bank` needs of a record


def image_seed(name: str, seed: int) -> int:
    """Per-image seed that does not depend on the order images are processed in."""
    return (zlib.crc32(name.encode()) + 7919 * seed) % (2**31)


def encode(vgg: VGG19Features, images: Tensor) -> tuple[Tensor, Tensor]:
    """L2-normalised relu4_1 ``(B, 512, S/8, S/8)`` and relu3_1 ``(B, 256, S/4, S/4)`` features
    of ``(B, 3, S, S)`` images (one VGG pass: relu3_1 is on the way to relu4_1)."""
    feats = encode_taps(vgg, images, top=False)
    return feats[FEATURE_TAP], feats[FINE_TAP]


def encode_taps(vgg: VGG19Features, images: Tensor, top: bool = True) -> dict[str, Tensor]:
    """`encode`'s maps by tap name, plus relu5_1 ``(B, 512, S/16, S/16)`` with ``top`` (the same
    VGG pass, three convolutions further)."""
    taps = (FINE_TAP, FEATURE_TAP, TOP_TAP) if top else (FINE_TAP, FEATURE_TAP)
    with torch.no_grad():
        return normalised_features(vgg, images.to(vgg.mean), taps)


def coarse_flow(flow: Tensor) -> Tensor:
    """Flow ``(B, 2, S, S)`` at the analysis size -> ``TARGET_SIZE`` grid, still in S-px units."""
    size = flow.shape[-1]
    return resize_flow(flow, TARGET_SIZE, TARGET_SIZE) * ((size - 1) / (TARGET_SIZE - 1))


def cache_image(
    path: Path,
    vgg: VGG19Features,
    out_dir: Path,
    seed: int = 0,
    tiers: Sequence[str] = DEFAULT_TIERS,
    painted: Sequence[Tensor] = (),
    tag: str = "base",
) -> Path:
    """Encode an image and its variants into ``out_dir/<stem>.<tag>.pt``.

    View 0 is the image itself (zero flow); views 1.. are ``make_pair`` exemplars of ``tiers``,
    then one artistic exemplar per painted copy (``(1, 3, 256, 256)`` renderings of this image).
    """
    out = out_dir / f"{path.stem}.{tag}.pt"
    image = analysis_view(read_image(str(path)), ANALYSIS_SIZE)
    generator = torch.Generator().manual_seed(image_seed(f"{path.name}.{tag}", seed))
    pairs = [make_pair(image, generator, tier) for tier in tiers]
    pairs += [make_pair(image, generator, "artistic", painted=p) for p in painted]
    views = torch.cat([image] + [p.exemplar for p in pairs])
    flows = torch.cat([torch.zeros_like(pairs[0].flow)] + [p.flow for p in pairs])
    feats = encode_taps(vgg, views)
    record = {
        "name": path.name,
        "features": feats[FEATURE_TAP].to(torch.float16).cpu(),
        "fine_features": feats[FINE_TAP].to(torch.float16).cpu(),
        "top_features": feats[TOP_TAP].to(torch.float16).cpu(),
        "flow": coarse_flow(flows).cpu(),
        "kinds": ["original", *tiers] + ["painted"] * len(painted),
    }
    save_atomic(record, out)
    return out


def _sample(field: Tensor, points: Tensor, size: int = ANALYSIS_SIZE) -> Tensor:
    """Bilinearly sample ``field (B, C, h, w)`` at ``points (B, 2, H, W)`` given in S-px units."""
    grid = pixel_to_normalised(points.permute(0, 2, 3, 1), size, size)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)


def relative_flow(flow_a: Tensor, flow_b: Tensor, iters: int = 20) -> tuple[Tensor, Tensor]:
    """Ground truth between two views of one image, both given by backward flows from it.

    View v shows ``image(x + f_v(x))``. The flow F with ``view_b(x) = view_a(x + F(x))`` solves
    ``z + f_a(z) = x + f_b(x)`` for ``z = x + F(x)`` (fixed-point iteration; the random warps
    are contractions away from their extremes). Inputs and outputs ``(B, 2, h, w)`` on the same
    grid, S-px units; ``valid (B, 1, h, w)`` marks x whose answer lies inside view a and was
    solved to a quarter pixel.
    """
    _, _, h, _ = flow_b.shape
    x = base_grid(h, h, flow_b.device, flow_b.dtype, span=(ANALYSIS_SIZE, ANALYSIS_SIZE))
    target = x + flow_b
    z = target.clone()
    for _ in range(iters):
        z = target - _sample(flow_a, z)
    residual = (z + _sample(flow_a, z) - target).norm(dim=1, keepdim=True)
    inside = lambda p: ((p > -0.5) & (p < ANALYSIS_SIZE - 0.5)).all(1, keepdim=True)  # noqa: E731
    valid = inside(target) & inside(z) & (residual < 0.25)
    return z - x, valid


@dataclass
class FeatureBank:
    """Every cached view in memory, and every ordered pair of views of the same image."""

    features: Tensor  # (N, 512, 32, 32) float16 relu4_1, all views of all images
    fine: Tensor | None  # (N, 256, 64, 64) float16 relu3_1 (None: an old cache without it)
    pair_content: Tensor  # (P,) view index of each pair's content side
    pair_exemplar: Tensor  # (P,) view index of each pair's exemplar side
    flow: Tensor  # (P, 2, 64, 64) ground truth in 256-px units
    valid: Tensor  # (P, 1, 64, 64) bool
    pair_kind: list[str]  # "<content kind>-><exemplar kind>"
    names: list[str]
    view_source: Tensor | None = None  # (N,) index into ``images`` of each view's source image
    view_kind: list[str] = field(default_factory=list)  # "original", a tier, or "painted"
    images: list[str] = field(default_factory=list)  # distinct image names (base + painted)
    top: Tensor | None = None  # (N, 512, 16, 16) float16 relu5_1 (None: a cache without it)

    def __len__(self) -> int:
        return self.pair_content.numel()

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """Float32 features and targets for the pairs in ``index``."""
        batch = self._features(self.pair_content[index], self.pair_exemplar[index])
        batch.update(flow=self.flow[index], valid=self.valid[index])
        return batch

    def cross_batch(self, content: Tensor, exemplar: Tensor) -> dict[str, Tensor]:
        """Features of views of *different* images: no ground truth (``valid`` all False), so
        only the weak loss trains on them."""
        batch = self._features(content, exemplar)
        n = content.numel()
        batch["flow"] = self.flow.new_zeros((n, *self.flow.shape[1:]))
        batch["valid"] = self.valid.new_zeros((n, *self.valid.shape[1:]))
        return batch

    def _features(self, content: Tensor, exemplar: Tensor) -> dict[str, Tensor]:
        feats = {"content": self.features[content].float(),
                 "exemplar": self.features[exemplar].float()}
        if self.fine is not None:
            feats["content_fine"] = self.fine[content].float()
            feats["exemplar_fine"] = self.fine[exemplar].float()
        if self.top is not None:
            feats["content_top"] = self.top[content].float()
            feats["exemplar_top"] = self.top[exemplar].float()
        return feats


def cross_image_pairs(bank: FeatureBank, neighbours: int = 8) -> tuple[Tensor, Tensor]:
    """(content view, exemplar view) pairs across images, for the paper's weak supervision.

    The product's real pairs are a photo and a *different* picture of the same kind of thing (a
    face and a painted face), which synthetic pairs of one image never show. Every untouched
    image is paired with the ``neighbours`` views of other images (untouched or painted, never
    the synthetic warps) nearest to it by mean relu4_1 feature: a cheap stand-in for "the same
    kind of subject" that needs no labels.
    """
    if bank.view_source is None:
        raise ValueError("this bank has no per-view image index (load it with load_bank)")
    if len(bank.images) < 2:
        raise InputError(f"--cross-pairs needs at least two training images, the bank has "
                         f"{len(bank.images)}")
    first_original: dict[int, int] = {}  # painted records repeat the untouched view: keep one
    for i, kind in enumerate(bank.view_kind):
        if kind == "original":
            first_original.setdefault(int(bank.view_source[i]), i)
    content = torch.tensor(sorted(first_original.values()))
    painted = [i for i, kind in enumerate(bank.view_kind) if kind == "painted"]
    pool = torch.cat([content, torch.tensor(painted, dtype=torch.long)])
    # Chunked: the float32 copy of every view's features at once would be gigabytes.
    descriptor = torch.cat([c.float().mean((2, 3)) for c in bank.features.split(256)])
    descriptor = F.normalize(descriptor, dim=1)
    similarity = descriptor[content] @ descriptor[pool].T
    same = bank.view_source[content][:, None] == bank.view_source[pool][None, :]
    similarity[same] = -2.0
    k = min(neighbours, pool.numel() - 1)
    nearest = similarity.topk(k, dim=1).indices
    return content.repeat_interleave(k), pool[nearest.flatten()]


def _read_record(file: Path) -> dict:
    """One cache record, memory-mapped, or one line naming it: a torn or foreign ``.pt`` in
    the cache folder (a checkpoint saved there) must not end a run in a traceback."""
    try:
        # mmap: the records stay file-backed until concatenated, so loading does not hold two
        # copies of the bank in anonymous memory (2x the RSS for a 7 GB cache).
        rec = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...
        # torch's first sentence when it is short; its long ones are advice about torch.save.
        reason = first_line(exc).split(". ")[0]
        reason = type(exc).__name__ if len(reason) > 80 else f"{type(exc).__name__}: {reason}"
        raise InputError(f"feature cache record {file}: not readable, torn or not a torch file "
                         f"({reason}): delete it (a run without --no-build-cache encodes its "
                         "image again)") from None
    if not isinstance(rec, dict) or any(k not in rec for k in RECORD_KEYS):
        raise InputError(f"feature cache record {file}: not a cache record (no "
                         f"{', '.join(RECORD_KEYS)} entries): is --cache-dir the feature cache "
                         "folder? Move other files out of it")
    return rec


def load_bank(cache_dir: Path, exclude_held_out: bool = True) -> FeatureBank:
    """Gather every ``<stem>.<tag>.pt`` under ``cache_dir`` and enumerate the ordered pairs."""
    from lwst.warpnet.split import is_held_out

    feats, fines, tops, flows, valids, cont, exem, kinds, names = ([] for _ in range(9))
    view_source, view_kind, images = [], [], {}
    offset = 0
    for file in sorted(cache_dir.glob("*.pt")):
        rec = _read_record(file)
        if exclude_held_out and is_held_out(rec["name"]):
            continue
        names.append(rec["name"])
        n = rec["flow"].shape[0]
        view_source += [images.setdefault(rec["name"], len(images))] * n
        view_kind += list(rec["kinds"])
        a_idx, b_idx = zip(*[(a, b) for a in range(n) for b in range(n) if a != b], strict=True)
        a_t, b_t = torch.tensor(a_idx), torch.tensor(b_idx)
        flow, valid = relative_flow(rec["flow"][a_t], rec["flow"][b_t])
        feats.append(rec["features"])
        fines.append(rec.get("fine_features"))
        tops.append(rec.get("top_features"))
        flows.append(flow)
        valids.append(valid)
        cont.append(a_t + offset)
        exem.append(b_t + offset)
        kinds += [
            f"{rec['kinds'][a]}->{rec['kinds'][b]}" for a, b in zip(a_idx, b_idx, strict=True)
        ]
        offset += n
    if not names:
        raise InputError(f"no cached views under {cache_dir}: encode training images into it "
                         "first (lwst train-warp without --no-build-cache)")
    return FeatureBank(
        torch.cat(feats),
        None if any(f is None for f in fines) else torch.cat(fines),
        torch.cat(cont),
        torch.cat(exem),
        torch.cat(flows),
        torch.cat(valids),
        kinds,
        names,
        torch.tensor(view_source),
        view_kind,
        list(images),
        None if any(t is None for t in tops) else torch.cat(tops),
    )


def read_training_manifest(src: Path) -> pd.DataFrame:
    """A training manifest, read as `lwst run` reads one (`lwst.manifest.read_table`: CSV,
    Parquet or JSON Lines by suffix, cells as text), or one line saying it cannot be read."""
    try:
        return read_table(str(src))
    except ManifestError as exc:
        raise InputError(f"{src}: not a readable manifest ({'; '.join(exc.problems)[:160]})"
                         ) from None


def manifest_images(table: pd.DataFrame, src: Path) -> list[Path]:
    """The image files a manifest's content, geometry and texture columns name, resolved as
    `lwst run` resolves them: stripped, relative to the manifest's folder (`base_location`,
    `resolve_path`). Training reads local files: a URI is refused in one line."""
    base = base_location(str(src))
    files: list[Path] = []
    for column in (c for c in PATH_COLUMNS if c in table):
        for value in table[column]:
            entry = str(value).strip() if value is not None else ""  # as `validate_table`
            if not entry:
                continue
            path = resolve_path(entry, base)
            if not storage.is_local(path):
                raise InputError(f"{src}: {entry} is not a local file (training reads local "
                                 "images only)")
            files.append(storage.local_path(path))
    return files


def gather_images(sources: Sequence[str | Path]) -> list[Path]:
    """Image files from folders (their own files, `lwst.storage.list_images`) and manifests
    (CSV/Parquet/JSONL columns, `manifest_images`), for training."""
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += map(Path, storage.list_images(src, recursive=False))
            continue
        if not src.exists():
            raise InputError(f"{src}: no such folder or manifest")
        if src.suffix.lower() in storage.IMAGE_SUFFIXES:
            raise InputError(f"{src} is an image: expected a folder of images or a manifest "
                             "(CSV/Parquet/JSONL)")
        table = read_training_manifest(src)
        if not any(c in table for c in PATH_COLUMNS):
            raise InputError(f"{src}: no content, geometry or texture column (columns: "
                             f"{', '.join(map(str, table.columns)) or 'none'})")
        files += manifest_images(table, src)
    return sorted(set(files))
