"""Tests of dance.metrics: hand-checkable cases, invariants, and cross-checks with Captum,
scikit-image, SciPy, Pillow and (when installed) Quantus."""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from dance import metrics as M
from dance import to_heatmap


# ----------------------------------------------------------------------------------------------
# A tiny trained model: 3x16x16 noise images with a filled square (class 0) or a plus (class 1)
# ----------------------------------------------------------------------------------------------

def make_shapes(n: int, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.25 * torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    boxes = torch.zeros(n, 4, dtype=torch.long)
    plus = torch.zeros(5, 5, dtype=torch.bool)
    plus[2, :] = True
    plus[:, 2] = True
    for i in range(n):
        r, c = (int(v) for v in torch.randint(0, size - 5, (2,), generator=g))
        colour = (0.6 + 0.4 * torch.rand(3, generator=g)).view(3, 1, 1)
        shape = torch.ones(5, 5, dtype=torch.bool) if y[i] == 0 else plus
        x[i, :, r:r + 5, c:c + 5] = torch.where(shape, colour, x[i, :, r:r + 5, c:c + 5])
        boxes[i] = torch.tensor([c, r, c + 5, r + 5])
    return x, y, boxes


def make_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 2))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    x, y, _ = make_shapes(512, seed=0)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(120):
        i = torch.randint(0, 512, (64,))
        loss = nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    return net


def linear_model(weights, bias=0.0) -> nn.Module:
    """Class-0 logit = w . x + bias, class-1 logit = 0."""
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    lin = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = w
        lin.bias.zero_()
        lin.bias[0] = bias
    return nn.Sequential(nn.Flatten(), lin).eval()


def saliency(model):
    from captum.attr import Saliency
    sal = Saliency(model)
    return lambda x, t: sal.attribute(x, target=t, abs=False)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

def test_every_metric_states_direction_and_reference():
    assert len(M.REGISTRY) >= 19
    for name, info in M.REGISTRY.items():
        assert info.direction in ("higher", "lower"), name
        assert info.reference, name
        assert getattr(M, name) is info.function
        assert info.function.direction == info.direction
    table = M.summary()
    assert list(table.columns) == ["metric", "direction", "reference", "bibkey", "paper_settings"]
    assert set(table.metric) == set(M.REGISTRY)
    assert M.fidelity.direction == "lower" and M.faithfulness_correlation.direction == "higher"


# ----------------------------------------------------------------------------------------------
# Fidelity S_F
# ----------------------------------------------------------------------------------------------

def test_fidelity_by_hand():
    model = linear_model([2.0, -1.0, 0.5, 3.0])
    x = torch.tensor([[[[1.0, 0.5], [0.2, 0.8]]]])
    h = torch.tensor([[[1.0, 0.0], [0.5, 0.25]]])  # a heatmap already in [0, 1]
    w = torch.tensor([2.0, -1.0, 0.5, 3.0])
    z_e = float((h.flatten() * x.flatten() * w).sum())
    z_m = float((h.mean() * x.flatten() * w).sum())
    logp = lambda z: z - math.log(math.exp(z) + 1.0)  # log softmax of [z, 0] at class 0
    expected = -(logp(z_e) - logp(z_m))
    got = M.fidelity(model, x, h, target=0)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_fidelity_of_a_uniform_map_is_zero_and_a_good_map_is_negative():
    model = linear_model([0.0, 0.0, 5.0, 0.0])  # only pixel (1, 0) matters
    x = torch.ones(1, 1, 2, 2)
    uniform = torch.ones(1, 2, 2)  # the paper's trivial case E = 1
    assert float(M.fidelity(model, x, uniform)) == pytest.approx(0.0, abs=1e-6)
    good = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    bad = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    assert float(M.fidelity(model, x, good)) < 0 < float(M.fidelity(model, x, bad))


def test_fidelity_uses_predicted_class_and_broadcasts_over_channels(trained):
    x, _, _ = make_shapes(4, seed=3)
    a = saliency(trained)(x, trained(x).argmax(1))
    pred = trained(x).argmax(1)
    assert torch.allclose(M.fidelity(trained, x, a), M.fidelity(trained, x, a, pred))
    # a [B, C, H, W] attribution is the same as its heatmap passed as [B, H, W]
    assert torch.allclose(M.fidelity(trained, x, a), M.fidelity(trained, x, to_heatmap(a)))
    with pytest.raises(ValueError, match="one \\[H, W\\] map per image"):
        M.fidelity(trained, x, a[:, :, :8])


def test_fidelity_with_a_target_runs_one_batched_forward_pass(trained):
    # With a target, S_F needs only the masked images (E * x and mean(E) * x) in one batch; without one, a
    # forward pass of the images themselves first predicts the class.
    x, _, _ = make_shapes(3, seed=4)
    a = saliency(trained)(x, trained(x).argmax(1))
    pred = trained(x).argmax(1)
    sizes = []
    handle = trained.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        with_target = M.fidelity(trained, x, a, pred)
        assert sizes == [2 * len(x)]
        sizes.clear()
        without = M.fidelity(trained, x, a)
        assert sizes == [len(x), 2 * len(x)]
    finally:
        handle.remove()
    assert torch.equal(with_target, without)
    with pytest.raises(ValueError):
        M.fidelity(trained, x, a, torch.tensor([0, 1, 99]))  # a class the model does not have


# ----------------------------------------------------------------------------------------------
# Sensitivity S_S and Yeh et al.
# ----------------------------------------------------------------------------------------------

def test_sensitivity_known_pair():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = x.clone()
    x_hat[0] += 0.5  # ||x - x_hat|| = 1
    x_hat[1, 0, 0, 0] = 2.0  # ||x - x_hat|| = 2
    e = torch.zeros(2, 2, 2)
    e_hat = torch.zeros(2, 2, 2)
    e_hat[0] = 0.25  # ||e - e_hat|| = 0.5
    e_hat[1, 1, 1] = 1.0  # ||e - e_hat|| = 1
    assert M.sensitivity(e, e_hat, x, x_hat).tolist() == pytest.approx([0.5, 0.5])
    raw = M.sensitivity(3 * e.unsqueeze(1), 3 * e_hat.unsqueeze(1), x, x_hat, heatmap=False)
    assert raw.tolist() == pytest.approx([1.5, 1.5])
    assert torch.isnan(M.sensitivity(e, e, x, x)).all()  # 0 / 0
    assert torch.isinf(M.sensitivity(e, e_hat, x, x)).all()  # the map moved without any perturbation


def test_yeh_sensitivity_zero_for_a_linear_model_and_scale_free():
    model = linear_model(torch.randn(16))
    x = torch.rand(3, 1, 4, 4)
    explain = saliency(model)
    assert torch.allclose(M.max_sensitivity(explain, x, 0, n_samples=8), torch.zeros(3), atol=1e-6)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(64, 2))
    e1 = saliency(net)
    e5 = lambda xx, t: 5.0 * e1(xx, t)
    s1 = M.max_sensitivity(e1, x, 0, radius=0.2, n_samples=8)
    assert (s1 > 0).all()
    # "unit" normalisation: rescaling the explanation changes nothing
    assert torch.allclose(s1, M.max_sensitivity(e5, x, 0, radius=0.2, n_samples=8), rtol=1e-5)
    # unnormalised distances scale with it
    raw1 = M.max_sensitivity(e1, x, 0, radius=0.2, n_samples=8, normalize=None)
    raw5 = M.max_sensitivity(e5, x, 0, radius=0.2, n_samples=8, normalize=None)
    assert torch.allclose(5 * raw1, raw5, rtol=1e-5)


def test_yeh_sensitivity_seeded_batched_and_avg_below_max(trained):
    x, _, _ = make_shapes(3, seed=4)
    explain = saliency(trained)
    d_all = M.sampled_sensitivities(explain, x, 0, n_samples=6, seed=1)
    d_chunked = M.sampled_sensitivities(explain, x, 0, n_samples=6, seed=1, batch_size=4)
    assert d_all.shape == (3, 6)
    assert torch.allclose(d_all, d_chunked, atol=1e-6)
    assert not torch.allclose(d_all, M.sampled_sensitivities(explain, x, 0, n_samples=6, seed=2))
    smax = M.max_sensitivity(explain, x, 0, n_samples=6, seed=1)
    savg = M.avg_sensitivity(explain, x, 0, n_samples=6, seed=1)
    assert torch.equal(smax, d_all.amax(1)) and (savg <= smax + 1e-7).all()
    samples = M.linf_ball_samples(x, 0.1, 6, seed=1)
    assert samples.shape == (6,) + tuple(x.shape)
    assert ((samples - x).abs() <= 0.1 + 1e-7).all()
    assert samples.min() < 0  # the ball leaves [0, 1] near dark pixels ...
    clipped = M.linf_ball_samples(x, 0.1, 6, seed=1, clamp=(0.0, 1.0))
    assert clipped.min() >= 0 and clipped.max() <= 1  # ... unless clipped, the metrics' default
    assert torch.equal(clipped, samples.clamp(0, 1))


def test_yeh_sensitivity_of_decoy_enhanced_maps(trained):
    """The metrics take any explain(inputs, target), e.g. a DecoyEnhanced's .attribute."""
    import dance
    from captum.attr import Saliency

    x, _, _ = make_shapes(2, seed=11)
    de = dance.DecoyEnhanced(Saliency(trained), layer="0", epsilon=0.1, relative=True)
    s = M.max_sensitivity(de.attribute, x, trained(x).argmax(1), radius=0.05, n_samples=2)
    assert s.shape == (2,) and torch.isfinite(s).all() and (s >= 0).all()


def test_max_sensitivity_matches_captum_sensitivity_max(trained):
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    x, _, _ = make_shapes(3, seed=5)
    n, r = 7, 0.05
    samples = M.linf_ball_samples(x, r, n, seed=3)  # [n, B, C, H, W], not clipped (as Captum)
    # Captum perturbs inputs.repeat_interleave(n): image-major order
    captum_layout = samples.transpose(0, 1).reshape((-1,) + tuple(x.shape[1:]))
    ours = M.max_sensitivity(saliency(trained), x, 1, radius=r, n_samples=n, seed=3, normalize="relative",
                             clamp=None)
    theirs = sensitivity_max(Saliency(trained).attribute, x, perturb_func=lambda inp: captum_layout,
                             n_perturb_samples=n, target=1, abs=False)
    assert torch.allclose(ours, theirs.flatten(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Faithfulness correlation (Yeh et al. §4)
# ----------------------------------------------------------------------------------------------

def test_faithfulness_correlation_exact_for_linear_model():
    w = torch.randn(16)
    model = linear_model(w)
    x = torch.rand(2, 1, 4, 4)
    grad = w.view(1, 1, 4, 4).expand(2, 1, 4, 4)
    r = M.faithfulness_correlation(model, x, grad, 0, subset_size=5, n_subsets=40)
    assert r.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    r_neg = M.faithfulness_correlation(model, x, -grad, 0, subset_size=5, n_subsets=40)
    assert r_neg.tolist() == pytest.approx([-1.0, -1.0], abs=1e-6)
    # independent of the forward batch size, dependent on the seed
    noise = torch.rand(2, 1, 4, 4)
    r_a = M.faithfulness_correlation(model, x, noise, 0, subset_size=5, n_subsets=40, batch_size=7)
    r_b = M.faithfulness_correlation(model, x, noise, 0, subset_size=5, n_subsets=40, batch_size=None)
    r_c = M.faithfulness_correlation(model, x, noise, 0, subset_size=5, n_subsets=40, seed=1)
    assert torch.allclose(r_a, r_b, atol=1e-9) and not torch.allclose(r_a, r_c)
    with pytest.raises(ValueError, match="subset_size"):
        M.faithfulness_correlation(model, x, grad, 0, subset_size=17)


def test_faithfulness_correlation_batch_size_invariance(trained):
    x, _, _ = make_shapes(2, seed=6)
    a = saliency(trained)(x, trained(x).argmax(1))
    r1 = M.faithfulness_correlation(trained, x, a, subset_size=100, n_subsets=30, batch_size=8)
    r2 = M.faithfulness_correlation(trained, x, a, subset_size=100, n_subsets=30, batch_size=None)
    assert torch.allclose(r1, r2, atol=1e-6)
    assert ((r1 > -1) & (r1 < 1)).all()


# ----------------------------------------------------------------------------------------------
# SCAAT measures
# ----------------------------------------------------------------------------------------------

def test_entropy_of_known_maps():
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0
    quarters = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]).repeat(4).view(1, 4, 4)
    const = torch.full((1, 4, 4), 0.5)
    maps = torch.cat([half, quarters, const])
    assert M.saliency_entropy(maps).tolist() == pytest.approx([1.0, 2.0, 0.0])
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 2, 3] = 1.0
    uniform = torch.full((1, 4, 4), 0.3)
    d = M.saliency_entropy(torch.cat([one_hot, uniform]), kind="distribution")
    assert d.tolist() == pytest.approx([0.0, math.log(16)])
    assert M.saliency_entropy(uniform, kind="distribution", base=2).tolist() == pytest.approx([4.0])


def test_entropy_matches_scikit_image():
    from skimage.measure import shannon_entropy

    maps = torch.rand(3, 20, 20) ** 3
    q = M.to_uint8(maps).numpy()
    ours = M.saliency_entropy(maps)
    assert ours.tolist() == pytest.approx([shannon_entropy(m) for m in q], abs=1e-9)


def test_saliency_size_is_a_png_of_the_8bit_map():
    from PIL import Image

    maps = torch.cat([torch.zeros(1, 32, 32), torch.rand(1, 32, 32)])
    sizes = M.saliency_size(maps)
    assert sizes.dtype == torch.int64 and sizes[0] < sizes[1]
    buf = io.BytesIO()
    Image.fromarray(M.to_uint8(maps)[1].numpy(), mode="L").save(buf, format="PNG", compress_level=9)
    assert int(sizes[1]) == len(buf.getvalue())
    # round trip: the bytes decode to the quantised map
    decoded = np.array(Image.open(io.BytesIO(buf.getvalue())))
    assert np.array_equal(decoded, M.to_uint8(maps)[1].numpy())
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        M.saliency_size(2 * torch.rand(1, 4, 4) + 1)


def test_aopc_by_hand_on_a_linear_model():
    # logit_0 = 4 x00 + 3 x01 + 2 x10 + 1 x11 on an all-ones image; attributions = contributions
    model = linear_model([4.0, 3.0, 2.0, 1.0])
    x = torch.ones(1, 1, 2, 2)
    a = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    kw = dict(target=0, step=1, n_steps=2, output="logit")
    assert float(M.aopc(model, x, a, order="morf", **kw)) == pytest.approx((0 + 4 + 7) / 3)
    assert float(M.aopc(model, x, a, order="lerf", **kw)) == pytest.approx((0 + 1 + 3) / 3)
    assert float(M.aopc_morf(model, x, a, **kw)) == pytest.approx(11 / 3)
    assert float(M.aopc_lerf(model, x, a, **kw)) == pytest.approx(4 / 3)
    assert float(M.aopc_rel(model, x, a, **kw)) == pytest.approx(11 / 4)
    # a baseline of 0.5 halves each drop
    assert float(M.aopc(model, x, a, order="morf", baseline=0.5, **kw)) == pytest.approx(11 / 6)
    with pytest.raises(ValueError, match="exceeds"):
        M.aopc(model, x, a, step=2, n_steps=3)


def test_aopc_patches_by_hand():
    w = torch.zeros(4, 4)
    w[:2, 2:] = 1.0  # only the top-right 2x2 patch matters, total weight 4
    model = linear_model(w)
    x = torch.ones(1, 1, 4, 4)
    a = w.view(1, 1, 4, 4)
    kw = dict(target=0, patch_size=2, step=1, n_steps=2, output="logit")
    assert float(M.aopc(model, x, a, order="morf", **kw)) == pytest.approx((0 + 4 + 4) / 3)
    assert float(M.aopc(model, x, a, order="lerf", **kw)) == pytest.approx(0.0)


def test_aopc_on_trained_model_prefers_the_gradient_map_to_its_reverse(trained):
    x, y, _ = make_shapes(6, seed=7)
    a = saliency(trained)(x, trained(x).argmax(1))
    morf = M.aopc_morf(trained, x, a, step=8, n_steps=10)
    lerf = M.aopc_lerf(trained, x, a, step=8, n_steps=10)
    assert morf.shape == lerf.shape == (6,)
    # MoRF of a map equals LeRF of its order-reversed map (ties aside): a consistency identity
    rev = -a.abs().amax(1)
    rev = rev - rev.min()
    assert torch.allclose(M.aopc_morf(trained, x, rev, step=8, n_steps=10), lerf, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Localization
# ----------------------------------------------------------------------------------------------

def test_iou_of_known_boxes():
    pred = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4], [1, 1, 3, 3]])
    gt = torch.tensor([[2, 0, 6, 4], [0, 0, 4, 4], [4, 4, 8, 8], [0, 0, 4, 4]])
    assert M.box_iou(pred, gt).tolist() == pytest.approx([8 / 24, 1.0, 0.0, 4 / 16])
    # several ground-truth boxes: the best one counts; lists may have different lengths
    gts = [torch.tensor([[4, 4, 8, 8], [0, 0, 4, 2]]), torch.tensor([[0, 0, 4, 4]]),
           torch.tensor([[0, 0, 1, 1]]), torch.tensor([[1, 1, 3, 3], [9, 9, 10, 10]])]
    assert M.box_iou(pred, gts).tolist() == pytest.approx([0.5, 1.0, 1 / 16, 1.0])


def test_thresholds_and_boxes_by_hand():
    h = torch.ones(1, 4, 4)
    h[0, 1, 1] = 10.0
    h[0, 1, 2] = h[0, 2, 1] = h[0, 3, 3] = 5.0  # total 10 + 15 + 12 = 37, mean 2.3125
    value = M.threshold_mask(h, "value", 0.25)  # >= 2.5: the 10 and the 5s
    assert value.sum() == 4
    assert M.saliency_box(h, "value", 0.25).tolist() == [[1, 1, 4, 4]]
    assert M.saliency_box(h, "mean", 0.25).tolist() == [[0, 0, 4, 4]]  # >= 0.578: everything
    assert M.saliency_box(h, "mean", 2.0).tolist() == [[1, 1, 4, 4]]  # >= 4.625
    assert M.threshold_mask(h, "energy", 0.25).sum() == 1  # 10 >= 9.25 already
    assert M.saliency_box(h, "energy", 0.25).tolist() == [[1, 1, 2, 2]]
    assert M.threshold_mask(h, "energy", 0.5).sum() == 4  # 10 + 5 + 5 >= 18.5; tied 5s all kept
    assert M.threshold_mask(h, "energy", 1.0).all()
    assert M.tightest_box(torch.zeros(1, 3, 3, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="method"):
        M.threshold_mask(h, "otsu")
    with pytest.raises(ValueError, match="alpha"):
        M.threshold_mask(h, "value", 1.5)


def test_localization_success_and_masks():
    h = torch.zeros(2, 8, 8)
    h[0, 2:6, 2:6] = 1.0
    h[1, 0, 0] = 1.0
    gt = torch.tensor([[2, 2, 6, 7], [4, 4, 8, 8]])
    assert M.localization_iou(h, gt).tolist() == pytest.approx([16 / 20, 0.0])
    assert M.localization_success(h, gt).tolist() == [True, False]
    mask = M.box_mask(gt, 8, 8)
    assert mask.shape == (2, 8, 8) and mask[0].sum() == 20 and mask[1].sum() == 16
    assert M.mass_in_mask(h, mask).tolist() == pytest.approx([1.0, 0.0])
    assert M.pointing_game(h, mask).tolist() == [1.0, 0.0]
    assert M.pointing_game(h, mask, tolerance=6).tolist() == [1.0, 1.0]  # (0,0) to (4,4): 5.66 px
    assert M.pointing_game(h, mask, tolerance=5).tolist() == [1.0, 0.0]
    empty = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert torch.isnan(M.pointing_game(h, empty)).all() and torch.isnan(M.mass_in_mask(h, empty)).all()


def test_localization_on_trained_model_runs_on_attributions(trained):
    x, _, boxes = make_shapes(8, seed=8)
    a = saliency(trained)(x, trained(x).argmax(1))
    for method in M.localization.METHODS:
        iou = M.localization_iou(a, boxes, method=method)
        assert iou.shape == (8,) and ((iou >= 0) & (iou <= 1)).all()
    share = M.mass_in_mask(a, M.box_mask(boxes, 16, 16))
    assert ((share >= 0) & (share <= 1)).all()


# ----------------------------------------------------------------------------------------------
# Map similarity
# ----------------------------------------------------------------------------------------------

def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    a = torch.randint(0, 4, (3, 6, 6)).float()  # many ties
    b = torch.rand(3, 6, 6)
    ours = M.spearman(a, b)
    ref = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0] for i in range(3)]
    assert ours.tolist() == pytest.approx(ref, abs=1e-12)
    assert torch.isnan(M.spearman(torch.ones(1, 3, 3), torch.rand(1, 3, 3))).all()


def test_topk_center_and_ssim():
    a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    b = torch.tensor([[[4.0, 1.0], [2.0, 3.0]]])
    assert M.topk_intersection(a, b, 2).tolist() == [0.5]
    assert M.topk_intersection(a, b, 4).tolist() == [1.0]
    m = torch.zeros(1, 3, 5)
    m[0, 0, 0] = m[0, 2, 4] = 1.0
    assert M.center_of_mass(m).tolist() == [[1.0, 2.0]]
    assert torch.isnan(M.center_of_mass(torch.zeros(1, 2, 2))).all()
    from skimage.metrics import structural_similarity

    p, q = torch.rand(2, 12, 12), torch.rand(2, 12, 12)
    ref = [structural_similarity(p[i].numpy().astype(np.float64), q[i].numpy().astype(np.float64), data_range=1.0)
           for i in range(2)]
    assert M.ssim(p, q).tolist() == pytest.approx(ref)
    with pytest.raises(ValueError, match="at least 7x7"):
        M.ssim(torch.rand(1, 5, 5), torch.rand(1, 5, 5))


# ----------------------------------------------------------------------------------------------
# Sanity check (cascading randomisation)
# ----------------------------------------------------------------------------------------------

def test_cascading_randomization_leaves_the_model_untouched(trained):
    from captum.attr import Saliency

    x, _, _ = make_shapes(4, seed=9)
    before = copy.deepcopy(trained.state_dict())
    x_before = x.clone()
    r = M.cascading_randomization(trained, lambda m: Saliency(m).attribute, x)
    assert r.layers == ["original", "7", "3", "0"]
    assert r.maps.shape == (4, 4, 16, 16) and r.ssim.shape == r.spearman.shape == (4, 4)
    assert torch.allclose(r.ssim[0], torch.ones(4, dtype=torch.float64))
    assert torch.allclose(r.spearman[0], torch.ones(4, dtype=torch.float64))
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trained.training is False and all(p.grad is None for p in trained.parameters())
    assert torch.equal(x, x_before)
    # deterministic for a seed; a 3-argument explainer and a Captum class work the same way
    r2 = M.cascading_randomization(trained, lambda m, xx, t: Saliency(m).attribute(xx, target=t), x)
    r3 = M.cascading_randomization(trained, Saliency, x)
    assert torch.allclose(r.spearman, r2.spearman) and torch.allclose(r.ssim, r3.ssim)
    assert len(r.to_frame()) == 16


def test_cascading_randomization_explains_only_the_steps_asked_for(trained):
    # the same cascade (layers, seeds, last model), explained at steps 1 and 3 only: those maps equal the full
    # run's rows, and the explainer is called once per explained step (plus the trained model's map)
    from captum.attr import Saliency

    x, _, _ = make_shapes(3, seed=9)
    full = M.cascading_randomization(trained, Saliency, x, seed=4)
    calls = []

    def counting(m):
        def explain(xx, t):
            calls.append(1)
            return Saliency(m).attribute(xx, target=t)
        return explain

    some = M.cascading_randomization(trained, counting, x, seed=4, steps=[3, 1])
    assert some.layers == ["original", "7", "0"] and len(calls) == 3
    assert torch.equal(some.maps, full.maps[[0, 1, 3]]) and torch.equal(some.ssim, full.ssim[[0, 1, 3]])
    with pytest.raises(ValueError, match="steps"):
        M.cascading_randomization(trained, Saliency, x, steps=[0])
    with pytest.raises(ValueError, match="steps"):
        M.cascading_randomization(trained, Saliency, x, steps=[])
    with pytest.raises(TypeError, match="steps"):
        M.cascading_randomization(trained, Saliency, x, steps=[1.0])


def test_cascading_randomization_keeps_training_mode():
    from captum.attr import Saliency

    net = make_net().train()
    M.cascading_randomization(net, Saliency, torch.rand(2, 3, 16, 16), 0, layers=["7"])
    assert net.training is True
    with pytest.raises(ValueError, match="not in model.named_modules"):
        M.cascading_randomization(net, Saliency, torch.rand(2, 3, 16, 16), 0, layers=["nope"])


# ----------------------------------------------------------------------------------------------
# Argument checks and devices
# ----------------------------------------------------------------------------------------------

def test_bad_arguments_are_named():
    model = linear_model(torch.ones(4))
    with pytest.raises(ValueError, match="inputs must have shape"):
        M.fidelity(model, torch.rand(1, 2, 2), torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="target must have one class per image"):
        M.fidelity(model, torch.rand(2, 1, 2, 2), torch.rand(2, 2, 2), target=[0, 1, 0])
    with pytest.raises(ValueError, match="non-negative"):
        M.saliency_entropy(-torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="normalize"):
        M.max_sensitivity(saliency(model), torch.rand(1, 1, 2, 2), 0, normalize="l1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_agree_on_cuda(trained):
    x, _, boxes = make_shapes(4, seed=10)
    a = saliency(trained)(x, trained(x).argmax(1))
    net = copy.deepcopy(trained).cuda()
    xc, ac = x.cuda(), a.cuda()
    checks = [
        (M.fidelity(trained, x, a), M.fidelity(net, xc, ac)),
        (M.saliency_entropy(a), M.saliency_entropy(ac)),
        (M.saliency_size(a), M.saliency_size(ac)),
        (M.aopc_morf(trained, x, a, step=8, n_steps=5), M.aopc_morf(net, xc, ac, step=8, n_steps=5)),
        (M.localization_iou(a, boxes), M.localization_iou(ac, boxes.cuda())),
        (M.max_sensitivity(saliency(trained), x, 0, n_samples=4),
         M.max_sensitivity(saliency(net), xc, 0, n_samples=4)),
    ]
    for cpu, gpu in checks:
        assert gpu.device.type == "cuda"
        assert torch.allclose(cpu.double(), gpu.cpu().double(), atol=1e-4, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# Quantus cross-checks (test-only dependency)
# ----------------------------------------------------------------------------------------------

def _quantus():
    quantus = pytest.importorskip("quantus")
    import warnings
    warnings.filterwarnings("ignore", module="quantus")
    return quantus


def test_quantus_complexity_pointing_game_and_mass():
    quantus = _quantus()
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 8, 8, generator=g)
    s = torch.rand(4, 8, 8, generator=g) > 0.5
    s[0] = False
    s[0, 0, 0] = True
    a[1, 3, 3] = 2.0
    s[1, 3, 3] = True  # a sure hit
    kw = dict(model=None, x_batch=a.unsqueeze(1).numpy(), y_batch=np.zeros(4, dtype=int),
              a_batch=a.unsqueeze(1).numpy())
    opts = dict(normalise=False, abs=False, disable_warnings=True)
    q_ent = quantus.Complexity(**opts)(s_batch=None, **kw)
    q_pg = quantus.PointingGame(**opts)(s_batch=s.unsqueeze(1).float().numpy(), **kw)
    q_mass = quantus.RelevanceMassAccuracy(**opts)(s_batch=s.unsqueeze(1).float().numpy(), **kw)
    assert M.saliency_entropy(a, kind="distribution").tolist() == pytest.approx(
        [float(v) for v in q_ent], abs=1e-5)
    assert M.pointing_game(a, s).tolist() == [float(v) for v in q_pg]
    assert M.mass_in_mask(a, s).tolist() == pytest.approx([float(v) for v in q_mass], abs=1e-6)


# ----------------------------------------------------------------------------------------------
# The Example sections of the docstrings are tests too
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["dance.decoys", "dance.enhanced", "dance.heatmap", "dance.normalize",
                                    "dance.metrics.fidelity", "dance.metrics.sensitivity", "dance.metrics.faithfulness",
                                    "dance.metrics.scaat", "dance.metrics.localization", "dance.metrics.similarity",
                                    "dance.metrics.sanity", "dance.attacks"])
def test_docstring_examples_exist_and_are_collected(module):
    # pytest runs every example (--doctest-modules over dance/ and dance_book/, pyproject.toml);
    # here: the core modules do have examples, and the configuration still collects them.
    import doctest
    import importlib
    import tomllib
    from pathlib import Path

    tests = doctest.DocTestFinder().find(importlib.import_module(module))
    assert sum(len(t.examples) for t in tests) > 0
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    options = config["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"] and {"dance", "dance_book"} <= set(options["testpaths"])
