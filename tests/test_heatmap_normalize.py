"""dance.to_heatmap (paper §4.1) on hand-made maps, and dance.Normalized against manual normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import dance


def _hand_heatmap(a: np.ndarray, q: float = 95.0) -> np.ndarray:
    """Reference written with numpy: |.|, max over channels, clip at the q-th percentile, min-max."""
    m = np.abs(a).max(axis=1)
    out = np.empty_like(m)
    for b in range(m.shape[0]):
        top = np.percentile(m[b], q)  # linear interpolation, like torch.quantile
        low = m[b].min()
        out[b] = 0.0 if top == low else (np.minimum(m[b], top) - low) / (top - low)
    return out


def test_hand_made_map_abs_channel_max_and_winsorising():
    """Channel 0 holds -v, channel 1 holds v/2 with v = 0..19 on a 4x5 grid: abs + channel max give v;
    the 95th percentile of 0..19 is 18 + 0.05 * (19 - 18) = 18.05 (linear interpolation), so the
    heatmap is min(v, 18.05) / 18.05 and only the largest pixel is clipped."""
    v = torch.arange(20, dtype=torch.float32).view(4, 5)
    a = torch.stack([-v, v / 2]).unsqueeze(0)  # [1, 2, 4, 5]
    h = dance.to_heatmap(a)
    assert h.shape == (1, 4, 5)
    expected = torch.minimum(v, torch.tensor(18.05)) / 18.05
    assert torch.allclose(h[0], expected, atol=1e-6)
    assert h[0, 3, 4] == 1.0 and h[0, 3, 3] == pytest.approx(18 / 18.05, abs=1e-6) and h[0, 0, 0] == 0.0


def test_random_maps_match_numpy_reference():
    a = torch.randn(3, 3, 7, 9, dtype=torch.float64)
    h = dance.to_heatmap(a)
    assert h.shape == (3, 7, 9)
    assert float(h.min()) >= 0.0 and float(h.max()) <= 1.0
    assert np.allclose(h.numpy(), _hand_heatmap(a.numpy()), atol=1e-5)
    # Each image is rescaled on its own: its minimum maps to 0 and its clipped top to 1.
    assert torch.equal(h.flatten(1).amin(dim=1), torch.zeros(3))
    assert torch.equal(h.flatten(1).amax(dim=1), torch.ones(3))


def test_percentile_100_is_plain_min_max_and_percentile_is_respected():
    a = torch.rand(2, 1, 6, 6) * 3
    m = a[:, 0]
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    hi = m.flatten(1).amax(1).view(-1, 1, 1)
    assert torch.allclose(dance.to_heatmap(a, percentile=100), (m - lo) / (hi - lo), atol=1e-6)
    assert np.allclose(dance.to_heatmap(a, percentile=50).numpy(), _hand_heatmap(a.numpy(), 50), atol=1e-6)


def test_heatmap_invariances_and_batch_independence():
    a = torch.randn(4, 3, 8, 8)
    h = dance.to_heatmap(a)
    assert torch.allclose(dance.to_heatmap(-a), h)
    assert torch.allclose(dance.to_heatmap(2.5 * a), h, atol=1e-6)
    alone = torch.cat([dance.to_heatmap(a[b:b + 1]) for b in range(4)])
    assert torch.allclose(alone, h)
    assert torch.equal(dance.to_heatmap(a[0]), h[:1])  # [C, H, W] -> [1, H, W]


def test_constant_map_becomes_zeros_not_nan():
    h = dance.to_heatmap(torch.full((2, 3, 5, 5), -0.7))
    assert torch.equal(h, torch.zeros(2, 5, 5))


def test_heatmap_leaves_its_input_alone():
    a = torch.randn(1, 3, 5, 5, requires_grad=True)
    before = a.detach().clone()
    h = dance.to_heatmap(a)
    assert torch.equal(a.detach(), before) and a.grad is None and not h.requires_grad


@pytest.mark.parametrize("bad,exc,match", [
    ([[1.0, 2.0]], TypeError, "attributions"),
    (torch.rand(4, 4), ValueError, "attributions"),
    (torch.rand(1, 1, 1, 4, 4), ValueError, "attributions"),
])
def test_heatmap_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        dance.to_heatmap(bad)


@pytest.mark.parametrize("percentile", [0, -5, 100.5])
def test_heatmap_bad_percentile(percentile):
    with pytest.raises(ValueError, match="percentile"):
        dance.to_heatmap(torch.rand(1, 3, 4, 4), percentile=percentile)


# --------------------------------------------------------------------------------------------
# Normalized
# --------------------------------------------------------------------------------------------

def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_imagenet_statistics():
    assert dance.IMAGENET_MEAN == pytest.approx((0.485, 0.456, 0.406))
    assert dance.IMAGENET_STD == pytest.approx((0.229, 0.224, 0.225))


def test_normalized_equals_manual_normalisation():
    net = _net()
    wrapped = dance.Normalized(net, dance.IMAGENET_MEAN, dance.IMAGENET_STD)
    x = torch.rand(2, 3, 6, 6)
    mean = torch.tensor(dance.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dance.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(wrapped(x), net((x - mean) / std), atol=1e-6)
    # Layer names are kept under the prefix "model.".
    names = dict(wrapped.named_modules())
    assert names["model.0"] is net[0] and names["model.3"] is net[3]
    # No parameters of its own: only the wrapped model's, plus the two buffers.
    assert [n for n, _ in wrapped.named_parameters()] == [f"model.{n}" for n, _ in net.named_parameters()]
    assert {n for n, _ in wrapped.named_buffers()} == {"mean", "std"}


def test_normalized_gradient_is_the_chain_rule():
    """d/dx f((x - m) / s) = f'((x - m) / s) / s, channel by channel."""
    net = _net()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    wrapped = dance.Normalized(net, mean, std)
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    (g_wrapped,) = torch.autograd.grad(wrapped(x)[0, 1], x)
    z = ((x.detach() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).requires_grad_(True)
    (g_inner,) = torch.autograd.grad(net(z)[0, 1], z)
    assert torch.allclose(g_wrapped, g_inner / torch.tensor(std).view(1, 3, 1, 1), atol=1e-6)


def test_normalized_works_with_decoys_by_prefixed_name_or_module():
    net = _net()
    wrapped = dance.Normalized(net, dance.IMAGENET_MEAN, dance.IMAGENET_STD)
    x = torch.rand(3, 6, 6)
    kw = dict(epsilon=0.1, relative=True, solver=dance.Adam(steps=5))
    a = dance.generate_decoys(wrapped, x, "model.1", **kw)
    b = dance.generate_decoys(wrapped, x, net[1], **kw)
    assert a.layer == b.layer == "model.1"
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("args,exc,match", [
    ((nn.Identity(), (0.5, 0.5), (0.2, 0.2, 0.2)), ValueError, "mean and std"),
    ((nn.Identity(), (), ()), ValueError, "mean and std"),
    ((nn.Identity(), (0.5,), (0.0,)), ValueError, "std"),
    ((nn.Identity(), (0.5,), (-1.0,)), ValueError, "std"),
    ((lambda x: x, (0.5,), (0.2,)), TypeError, "model"),
])
def test_normalized_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        dance.Normalized(*args)
