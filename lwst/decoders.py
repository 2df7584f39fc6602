"""Decoders that invert lwst's VGG-19 at one tap (reluL_1), for the feed-forward renderers.

Architecture: the mirror image of VGG-19 up to reluL_1 (as in Li et al. 2017 and
pytorch-AdaIN's ``decoder``), with reflection-padded 3x3 convolutions, ReLU and nearest
upsampling, but with every hidden layer ``width`` times as wide as VGG's. ``width = 0.5``
(the shipped one) costs a quarter of the full decoder's convolutions and a quarter of its
bytes (docs/decoder_card.md measures the trade).

Checkpoints hold tensors, numbers and strings only and are read with
``torch.load(weights_only=True)``: naming a checkpoint never runs code from it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lwst.errors import InputError
from lwst.safety import BadCheckpointError, load_weights_only, save_atomic

# Channels and convolutions of VGG-19's five blocks.
VGG_CHANNELS = (64, 128, 256, 512, 512)
VGG_CONVS = (2, 2, 4, 4, 4)
LEVELS = (1, 2, 3, 4, 5)
KINDS = ("wct", "adain")
FORMAT = "lwst-decoder-1"


def level_tap(level: int) -> str:
    return f"relu{level}_1"


class DecoderCheckpointError(InputError):
    """A decoder checkpoint that is missing, corrupt or does not fit (one-line message)."""


class Decoder(nn.Module):
    """``(B, C_L, H / 2^(L-1), W / 2^(L-1))`` reluL_1 features -> ``(B, 3, H, W)`` RGB image.

    The output is not clamped: callers clamp to [0, 1] for images and leave it free in training
    so the pixel loss has gradients everywhere.
    """

    def __init__(self, level: int, width: float = 0.5) -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"decoder level must be one of {LEVELS}, got {level}")
        self.level = level
        self.width = float(width)

        def hidden(block: int) -> int:
            return max(8, round(VGG_CHANNELS[block - 1] * width))

        layers: list[nn.Module] = []
        channels = VGG_CHANNELS[level - 1]

        def conv(cin: int, cout: int, relu: bool = True) -> None:
            layers.extend([nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)])
            if relu:  # in place: it rewrites a fresh convolution output (as VGG's do)
                layers.append(nn.ReLU(inplace=True))

        for block in range(level, 1, -1):
            # Mirror block `block`: its remaining convolutions, then down to the block below.
            refine = 0 if block == level else VGG_CONVS[block - 1] - 1
            for _ in range(refine):
                conv(channels, channels)
            conv(channels, hidden(block - 1))
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            channels = hidden(block - 1)
        if level > 1:
            conv(channels, channels)
        conv(channels, 3, relu=False)
        self.net = nn.Sequential(*layers)
        # VGG's Caffe-scale features are O(10-1000): training sets this to 1 / their RMS so
        # the first convolution starts in a sane range (a one-conv relu1_1 decoder barely
        # moves otherwise). Stored with the weights.
        self.register_buffer("input_scale", torch.ones(()))
        # NHWC convolutions: 27 % faster at 512 px on an AVX2 CPU's oneDNN (docs/benchmarks.md).
        self.to(memory_format=torch.channels_last)

    def forward(self, features: Tensor) -> Tensor:
        x = (features * self.input_scale).contiguous(memory_format=torch.channels_last)
        return self.net(x).contiguous()  # callers get the usual NCHW layout


@dataclass
class DecoderInfo:
    """What a checkpoint says about its decoder (kept in the metadata of outputs)."""

    kind: str
    level: int
    width: float
    vgg_weights: str
    decoder_id: str
    note: str = ""


def decoder_id(state: dict[str, Tensor]) -> str:
    """A short content hash of the weights: names the decoder in metadata and the model card."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def save_decoder(decoder: Decoder, path: str | Path, kind: str, vgg_weights: str,
                 note: str = "") -> str:
    """Write a float16, weights-only checkpoint; returns the decoder id."""
    if kind not in KINDS:
        raise ValueError(f"decoder kind must be one of {KINDS}, got {kind!r}")
    state = {k: v.detach().to(torch.float16).cpu() for k, v in decoder.state_dict().items()}
    ident = decoder_id(state)
    payload = {"format": FORMAT, "kind": kind, "level": decoder.level, "width": decoder.width,
               "vgg_weights": vgg_weights, "id": ident, "note": note, "state_dict": state}
    save_atomic(payload, path)
    return ident


def shipped_decoder_path(kind: str, level: int) -> Path:
    """Where the decoder shipped with lwst lives (``lwst/checkpoints``)."""
    name = "decoder_adain.pt" if kind == "adain" else f"decoder_wct{level}.pt"
    return Path(str(importlib.resources.files("lwst") / "checkpoints" / name))


def decoder_path(kind: str, level: int, decoder_dir: str | Path | None = None) -> Path:
    """The ``kind`` decoder's file: the shipped one, or the same file name in ``decoder_dir``
    (``--decoder-dir``: a folder of decoder_adain.pt / decoder_wct1..5.pt)."""
    shipped = shipped_decoder_path(kind, level)
    return Path(decoder_dir) / shipped.name if decoder_dir else shipped


def state_misfit(expected: dict[str, Tensor], given: dict[str, Tensor]) -> str | None:
    """The first way ``given`` weights do not fit a model's ``expected`` state dict, in one
    phrase naming the tensor (a missing one, a wrong shape, an unknown one), or None.
    ``load_state_dict``'s own message is a multi-line list whose first line names nothing."""
    for name, tensor in expected.items():
        if name not in given:
            return f"missing {name}"
        if tuple(given[name].shape) != tuple(tensor.shape):
            return (f"{name} has shape {tuple(given[name].shape)}, "
                    f"expected {tuple(tensor.shape)}")
    unknown = [name for name in given if name not in expected]
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        return f"unexpected tensor {unknown[0]}{more}"
    return None


def load_decoder(path: str | Path, kind: str | None, level: int,
                 device: str | torch.device = "cpu") -> tuple[Decoder, DecoderInfo]:
    """Read a decoder checkpoint safely and check it is the ``kind`` (None: either) decoder
    for ``level``.

    Raises `DecoderCheckpointError` with one line naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise DecoderCheckpointError(f"decoder checkpoint {path}: no such file")
    try:
        payload = load_weights_only(path, "decoder checkpoint")
    except BadCheckpointError as exc:
        raise DecoderCheckpointError(f"{exc} (not a readable lwst decoder)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DecoderCheckpointError(f"decoder checkpoint {path}: not an lwst decoder file")
    if (kind is not None and payload.get("kind") != kind) or payload.get("level") != level:
        raise DecoderCheckpointError(
            f"decoder checkpoint {path}: holds the {payload.get('kind')} relu"
            f"{payload.get('level')}_1 decoder, expected {kind} relu{level}_1")
    decoder = Decoder(level, float(payload.get("width", 0.5)))
    try:
        weights = {k: v.float() for k, v in payload["state_dict"].items()}
        weights.setdefault("input_scale", torch.ones(()))  # files written before it existed
        misfit = state_misfit(decoder.state_dict(), weights)
        if misfit:
            raise DecoderCheckpointError(
                f"decoder checkpoint {path}: weights do not fit the {kind or payload.get('kind')}"
                f" relu{level}_1 decoder of width {decoder.width:g} ({misfit})")
        decoder.load_state_dict(weights)
    except (RuntimeError, KeyError, AttributeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DecoderCheckpointError(
            f"decoder checkpoint {path}: weights do not fit ({reason[:200]})") from None
    decoder.requires_grad_(False).eval().to(device)
    info = DecoderInfo(kind=str(payload.get("kind")), level=level, width=decoder.width,
                       vgg_weights=str(payload.get("vgg_weights", "")),
                       decoder_id=str(payload.get("id", "")), note=str(payload.get("note", "")))
    return decoder, info
