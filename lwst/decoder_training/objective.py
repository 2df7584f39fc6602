"""The training objective of either decoder kind (docs/method.md, "Feed-forward rendering
details"), over the run's cached crop bank.

- ``wct``: invert reluL_1. Loss = relative pixel error + ``feature_weight`` x relative feature
  error at reluL_1 of the decoded image (lambda = 1). "Relative" = squared error divided by the
  target's mean square, so both terms are unit-free and lambda = 1 means what it says for every
  level (VGG's Caffe-scale features are hundreds of times larger than [0, 1] pixels).
- ``adain``: decode the AdaIN target ``t`` of a (content, style) pair. Loss = relative content
  error ``||f(g(t)) - t||^2 / ||t||^2`` + ``style_weight`` x the sum over relu1_1..relu4_1 of the
  relative error of channel means and standard deviations to the style's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lwst.decoder_training.config import DecoderTrainConfig
from lwst.decoder_training.data import ImageSet, as_float, crop_bank, encode_bank
from lwst.decoders import Decoder, level_tap
from lwst.feature_transforms import adain, mean_std
from lwst.vgg import STYLE_LAYERS, VGG19Features

ADAIN_STYLE_LAYERS = STYLE_LAYERS[:4]  # relu1_1 .. relu4_1


def _relative(x: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(x, target) / target.pow(2).mean().clamp_min(1e-12)


class Objective:
    """The loss of one training step, given cached inputs for a batch of bank indices."""

    def __init__(self, config: DecoderTrainConfig, vgg: VGG19Features, device: torch.device,
                 images: ImageSet, styles: ImageSet | None, warn: Callable[[str], None]):
        self.config, self.vgg, self.device = config, vgg, device
        self.crops, self.skipped = crop_bank(images, "images", config, config.seed, warn)
        self.tap = level_tap(config.level)
        self.features = encode_bank(vgg, self.crops, [self.tap], device)[self.tap]
        if styles is not None:  # adain
            style_crops, skipped = crop_bank(styles, "styles", config, config.seed + 1, warn)
            self.skipped += skipped
            feats = encode_bank(vgg, style_crops, ADAIN_STYLE_LAYERS, device)
            self.style_stats = {t: mean_std(f.float()) for t, f in feats.items()}
            self.style_feat = feats[self.tap]
        self.size = len(self.crops)

    def __call__(self, decoder: Decoder, step: int) -> tuple[Tensor, dict[str, float]]:
        """The loss of step ``step`` (its batch is seeded by the step: a resume draws the same
        batches) and its parts, by name, for the loss log."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randint(0, self.size, (config.batch_size,), generator=generator)
        fc = self.features[idx].to(self.device).float()
        if config.kind == "wct":
            return self._wct(decoder, idx, fc)
        sidx = torch.randint(0, len(self.style_feat), (config.batch_size,), generator=generator)
        return self._adain(decoder, sidx, fc)

    def _wct(self, decoder: Decoder, idx: Tensor, fc: Tensor) -> tuple[Tensor, dict[str, float]]:
        target_img = as_float(self.crops[idx], self.device)
        out = decoder(fc)
        rec = self.vgg(out, [self.tap])[self.tap]
        pixel = _relative(out.float(), target_img)
        feature = _relative(rec.float(), fc)
        loss = pixel + self.config.feature_weight * feature
        return loss, {"pixel": float(pixel.detach()), "feature": float(feature.detach())}

    def _adain(self, decoder: Decoder, sidx: Tensor,
               fc: Tensor) -> tuple[Tensor, dict[str, float]]:
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
        loss = content + self.config.style_weight * style
        return loss, {"content": float(content.detach()), "style": float(style.detach())}
