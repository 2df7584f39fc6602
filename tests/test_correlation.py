"""Correlation volumes and the shared alignment objective."""

import torch

from lwst.correlation import (
    global_correlation,
    l2_normalise,
    local_correlation,
    softmax_alignment_loss,
    warp_features,
)


def features(seed=0, shape=(1, 16, 12, 12)):
    return l2_normalise(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))


def test_local_correlation_matches_direct_dot_products():
    a, b = features(0), features(1)
    corr = local_correlation(a, b, radius=2)
    assert corr.shape == (1, 25, 12, 12)
    # offset (dy, dx) = (1, -2) is window index (1 + 2) * 5 + (-2 + 2) = 15
    y, x = 5, 6
    torch.testing.assert_close(corr[0, 15, y, x], (a[0, :, y, x] * b[0, :, y + 1, x - 2]).sum())
    assert corr[0, 12].sub((a * b).sum(1)[0]).abs().max() < 1e-6  # centre = same place
    assert corr[0, :, 0, 0].view(5, 5)[0, 0] == 0  # outside is zero-padded


def test_global_correlation_is_normalised_over_content_cells():
    exemplar, content = features(0, (2, 8, 4, 5)), features(1, (2, 8, 3, 3))
    corr = global_correlation(exemplar, content)
    assert corr.shape == (2, 9, 4, 5)
    torch.testing.assert_close(corr.pow(2).sum(1), torch.ones(2, 4, 5))


def test_alignment_loss_is_lowest_at_the_true_warp():
    content = features(3, (1, 32, 16, 16))
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 2.0
    exemplar = warp_features(content, flow)
    valid = (slice(None), slice(None), slice(2, -2), slice(2, -4))
    aligned = softmax_alignment_loss(warp_features(content, flow)[valid], exemplar[valid])
    unaligned = softmax_alignment_loss(content[valid], exemplar[valid])
    assert float(aligned) < float(unaligned) - 1.0


def test_before_after_in_one_pass_equals_two_alignment_losses() -> None:
    from lwst.correlation import alignment_loss, alignment_loss_before_after
    from lwst.vgg import load_vgg19

    torch.manual_seed(0)
    vgg = load_vgg19("random")
    content, exemplar = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    flow = 3 * torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        before, after = alignment_loss_before_after(vgg, content, exemplar, flow)
        assert torch.allclose(before, alignment_loss(vgg, content, exemplar), atol=1e-6)
        assert torch.allclose(after, alignment_loss(vgg, content, exemplar, flow), atol=1e-6)
        assert not torch.allclose(before, after)
