"""Correlation volumes and the shared alignment objective."""

import pytest
import torch
import torch.nn.functional as F

from lwst.correlation import (
    NORM_EPS,
    CorrelationVolume,
    global_correlation,
    local_correlation,
    softmax_alignment_loss,
    warp_features,
    window_softmax_loss,
)
from lwst.flow import warp_image


def features(seed=0, shape=(1, 16, 12, 12)):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(shape, generator=g), dim=1, eps=NORM_EPS)


def test_local_correlation_matches_direct_dot_products():
    a, b = features(0), features(1)
    corr = local_correlation(a, b, radius=2)
    assert corr.shape == (1, 25, 12, 12)
    # offset (dy, dx) = (1, -2) is window index (1 + 2) * 5 + (-2 + 2) = 15
    y, x = 5, 6
    torch.testing.assert_close(corr[0, 15, y, x], (a[0, :, y, x] * b[0, :, y + 1, x - 2]).sum())
    assert corr[0, 12].sub((a * b).sum(1)[0]).abs().max() < 1e-6  # centre = same place
    assert corr[0, :, 0, 0].view(5, 5)[0, 0] == 0  # outside is zero-padded


def _offset_by_offset(target, source, radius):
    padded = torch.nn.functional.pad(source, (radius,) * 4)
    h, w = target.shape[-2:]
    return torch.stack([(target * padded[:, :, dy : dy + h, dx : dx + w]).sum(1)
                        for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)], 1)


@pytest.mark.parametrize(("shape", "radius"), [((2, 16, 9, 13), 4), ((3, 5, 6, 4), 1)])
def test_local_correlation_and_its_gradients_equal_offset_by_offset_products(shape, radius):
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    fast, slow = local_correlation(a, b, radius), _offset_by_offset(a, b, radius)
    torch.testing.assert_close(fast, slow)
    weights = torch.randn(slow.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((fast * weights).sum(), (a, b))
    for got, want in zip(grads, torch.autograd.grad((slow * weights).sum(), (a, b)), strict=True):
        torch.testing.assert_close(got, want)


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


def _volume_case(batch: int = 2, channels: int = 16, size: int = 12):
    exemplar = features(10, (batch, channels, size, size))
    content = features(11, (batch, channels, size, size))
    return exemplar, content, CorrelationVolume(exemplar, content, radius=2)


def test_volume_at_zero_flow_is_the_local_correlation():
    exemplar, content, volume = _volume_case()
    zero = torch.zeros(2, 2, 12, 12)
    torch.testing.assert_close(volume(zero), local_correlation(exemplar, content, radius=2),
                               atol=1e-5, rtol=0)


def test_volume_at_a_constant_flow_is_the_local_correlation_of_the_warped_content():
    exemplar, content, volume = _volume_case()
    flow = torch.zeros(2, 2, 12, 12)
    flow[0, 0], flow[0, 1], flow[1, 0], flow[1, 1] = 1.3, -0.6, -2.0, 0.25
    ours = volume.lookup(flow)
    library = local_correlation(exemplar, warp_features(content, flow), radius=2)
    inner = (..., slice(5, -5), slice(5, -5))  # away from where either reads outside
    torch.testing.assert_close(ours[inner], library[inner], atol=1e-5, rtol=0)


def test_lookup_reads_the_content_sampled_at_flow_plus_offset():
    """Any flow: window entry (dy, dx) at x is <exemplar(x), content(x + flow(x) + (dx, dy))>,
    content bilinearly sampled with zeros outside (what warping the content would give)."""
    exemplar, content, volume = _volume_case()
    flow = 2.5 * torch.randn(2, 2, 12, 12, generator=torch.Generator().manual_seed(4))
    ours = volume.lookup(flow, radius=1)
    assert ours.shape == (2, 9, 12, 12)
    n = 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = flow + torch.tensor([dx, dy], dtype=flow.dtype).view(1, 2, 1, 1)
            want = (exemplar * warp_image(content, shifted)).sum(1)
            torch.testing.assert_close(ours[:, n], want, atol=1e-5, rtol=0)
            n += 1


def test_lookup_of_several_flows_per_item_equals_one_lookup_each():
    exemplar, content, volume = _volume_case()
    flows = 3 * torch.randn(6, 2, 12, 12, generator=torch.Generator().manual_seed(3))
    together = volume(flows)  # 3 flows per item, item-major
    for i in range(6):
        one = CorrelationVolume(exemplar[i // 3 : i // 3 + 1], content[i // 3 : i // 3 + 1], 2)
        torch.testing.assert_close(together[i : i + 1], one(flows[i : i + 1]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="flows for a volume of 2 items"):
        volume(flows[:5])


def test_similarity_and_the_weak_loss_read_from_the_volume():
    exemplar, content, volume = _volume_case()
    assert volume.similarity.shape == (2, 144, 144)
    e, c = 3 * 12 + 4, 7 * 12 + 1  # exemplar cell (3, 4), content cell (7, 1)
    torch.testing.assert_close(volume.similarity[1, e, c], (exemplar[1, :, 3, 4]
                                                            * content[1, :, 7, 1]).sum())
    weak = window_softmax_loss(volume(torch.zeros(2, 2, 12, 12)))
    torch.testing.assert_close(weak, softmax_alignment_loss(content, exemplar, radius=2),
                               atol=1e-5, rtol=0)
