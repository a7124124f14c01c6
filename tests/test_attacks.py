"""Tests of dance.attacks: differentiable explanations equal Captum's, the attacks keep their
guarantees (budget, pixel range, label), and each attack moves the map more than the random
control on a small trained CNN."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dance import attacks as A
from dance import metrics as M


def make_shapes(n: int, size: int = 16, seed: int = 0):
    """3x16x16 noise images with a filled square (class 0) or a plus sign (class 1)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.25 * torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    plus = torch.zeros(5, 5, dtype=torch.bool)
    plus[2, :] = True
    plus[:, 2] = True
    for i in range(n):
        r, c = (int(v) for v in torch.randint(0, size - 5, (2,), generator=g))
        colour = (0.6 + 0.4 * torch.rand(3, generator=g)).view(3, 1, 1)
        shape = torch.ones(5, 5, dtype=torch.bool) if y[i] == 0 else plus
        x[i, :, r:r + 5, c:c + 5] = torch.where(shape, colour, x[i, :, r:r + 5, c:c + 5])
    return x, y


def make_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 2))


def train_net() -> nn.Module:
    """The small CNN of these tests, trained on the shapes task with fixed seeds (eval mode, no gradients left)."""
    torch.manual_seed(0)
    x, y = make_shapes(512, seed=0)
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


@pytest.fixture(scope="module")
def trained():
    net = train_net()
    xt, yt = make_shapes(200, seed=1)
    assert (net(xt).argmax(1) == yt).float().mean() > 0.9  # the task is learned
    return net


@pytest.fixture(scope="module")
def images():
    return make_shapes(8, seed=2)[0]


# ----------------------------------------------------------------------------------------------
# Differentiable explanations = Captum
# ----------------------------------------------------------------------------------------------

def test_gradient_matches_captum_saliency(trained, images):
    from captum.attr import Saliency

    t = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    ref = Saliency(trained).attribute(images, target=t, abs=False)
    assert torch.allclose(A.gradient(trained, images, t), ref, atol=1e-6)


def test_smoothgrad_matches_captum_noise_tunnel(trained, images):
    from captum.attr import NoiseTunnel, Saliency

    x = images[:3]
    torch.manual_seed(5)  # Captum draws the noise from the global RNG
    ref = NoiseTunnel(Saliency(trained)).attribute(x, nt_type="smoothgrad", nt_samples=6, stdevs=0.2,
                                                   target=1, abs=False)
    ours = A.smoothgrad(trained, x, 1, n_samples=6, stdev=0.2, seed=5)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("method", A.IG_METHODS)
def test_integrated_gradients_matches_captum(trained, images, method):
    from captum.attr import IntegratedGradients

    x = images[:3]
    ref = IntegratedGradients(trained).attribute(x, baselines=0.1, target=0, n_steps=12, method=method)
    ours = A.integrated_gradients(trained, x, 0, baseline=0.1, n_steps=12, method=method)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_explanations_are_differentiable_on_the_softplus_copy(trained, images):
    sp = A.softplus_copy(trained, beta=10.0)
    x = images[:2].clone().requires_grad_(True)
    for name in A.EXPLAINERS:
        fn = A.explainer(name, **({"n_steps": 4} if name == "integrated_gradients" else {}))
        e = fn(sp, x, 0, create_graph=True)
        g = torch.autograd.grad(e.abs().sum(), x)[0]
        assert g.abs().sum() > 0, name
    # on the ReLU network the gradient map is piecewise constant: its input gradient vanishes
    e = A.gradient(trained, x, 0, create_graph=True)
    if e.requires_grad:
        g = torch.autograd.grad(e.abs().sum(), x, allow_unused=True)[0]
        assert g is None or g.abs().max() == 0


def test_explanations_leave_inputs_and_model_alone(trained, images):
    x = images[:2].clone()
    before = copy.deepcopy(trained.state_dict())
    for fn in A.EXPLAINERS.values():
        fn(trained, x, 0)
    assert not x.requires_grad and x.grad is None
    assert all(p.grad is None for p in trained.parameters())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())


def test_softplus_copy(trained):
    sp = A.softplus_copy(trained, beta=7.0)
    kinds = [type(m) for m in sp]
    assert kinds.count(nn.Softplus) == 2 and nn.ReLU not in kinds
    assert [type(m) for m in trained].count(nn.ReLU) == 2  # original untouched
    assert all(not p.requires_grad for p in sp.parameters())
    assert all(p.requires_grad for p in trained.parameters())
    with pytest.warns(UserWarning, match="no nn.ReLU"):
        A.softplus_copy(nn.Sequential(nn.Linear(2, 2)))


def test_softplus_copy_shares_the_weights_and_copies_the_buffers():
    # the weights are frozen views (no 0.5 GB copy of a VGG16 per attack); buffers, which a forward pass in
    # train mode updates, are the copy's own
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    stats = net[1].running_mean.clone()
    sp = A.softplus_copy(net)
    for p, q in zip(net.parameters(), sp.parameters()):
        assert q.data_ptr() == p.data_ptr() and not q.requires_grad and p.requires_grad
    assert sp[1].running_mean.data_ptr() != net[1].running_mean.data_ptr()
    sp(torch.rand(2, 3, 6, 6))
    assert torch.equal(net[1].running_mean, stats) and not torch.equal(sp[1].running_mean, stats)
    assert sp.training and isinstance(sp[2], nn.Softplus)


# ----------------------------------------------------------------------------------------------
# Guarantees
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", A.ATTACKS)
@pytest.mark.parametrize("explain", ["gradient", "smoothgrad", "integrated_gradients"])
def test_attack_guarantees(trained, images, kind, explain):
    fn = A.explainer(explain, **({"n_steps": 8} if explain == "integrated_gradients" else
                                 {"n_samples": 4} if explain == "smoothgrad" else {}))
    x = images[:4].clone()
    before = copy.deepcopy(trained.state_dict())
    eps = 6 / 255
    r = A.attack(trained, x, kind=kind, explain=fn, epsilon=eps, iterations=6)
    assert torch.equal(x, images[:4]) and not x.requires_grad
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(p.grad is None for p in trained.parameters()) and not trained.training
    assert (r.linf <= eps + 1e-6).all()
    assert r.inputs.min() >= 0 and r.inputs.max() <= 1
    with torch.no_grad():
        assert torch.equal(trained(r.inputs).argmax(1), r.labels)
        assert torch.equal(r.labels, trained(x).argmax(1))
    assert r.success.shape == r.topk_intersection.shape == r.spearman.shape == (4,)
    assert torch.equal(r.inputs[~r.success], x[~r.success])
    assert (r.iteration[r.success] >= 1).all()
    if kind != "random":  # the returned iterate never scores worse than the clean image
        assert (r.objective_after >= r.objective_before).all()


def test_random_control_uses_the_full_budget(trained, images):
    r = A.random_sign_attack(trained, images, epsilon=0.02, seed=3)
    assert r.success.all()
    inside = (images > 0.02) & (images < 0.98)  # no clamping there
    assert torch.allclose((r.inputs - images).abs()[inside], torch.full_like(images[inside], 0.02), atol=1e-6)
    r2 = A.random_sign_attack(trained, images, epsilon=0.02, seed=3)
    assert torch.equal(r.inputs, r2.inputs)


def test_batched_attack_equals_one_image_at_a_time(trained, images):
    both = A.topk_attack(trained, images[:2], epsilon=4 / 255, iterations=4)
    for i in range(2):
        one = A.topk_attack(trained, images[i:i + 1], epsilon=4 / 255, iterations=4)
        assert torch.allclose(one.inputs[0], both.inputs[i], atol=1e-6)


def test_measures_are_those_of_dance_metrics(trained, images):
    r = A.mass_center_attack(trained, images[:3], epsilon=4 / 255, iterations=4)
    e0 = A.gradient(trained, images[:3], r.target)
    e1 = A.gradient(trained, r.inputs, r.target)
    assert torch.allclose(r.original_maps, e0.abs().sum(1))
    assert torch.allclose(r.spearman, M.spearman(r.original_maps, r.perturbed_maps))
    assert torch.allclose(r.sensitivity, M.sensitivity(e0, e1, images[:3], r.inputs), equal_nan=True)
    assert torch.allclose(r.center_shift, M.center_shift(e0.abs().sum(1), e1.abs().sum(1)))
    assert r.k == round(5000 / 224 ** 2 * 256)


# ----------------------------------------------------------------------------------------------
# Each attack moves the map more than the random control (fixed seeds, measured on 8 images)
# ----------------------------------------------------------------------------------------------

def _region_share(maps, region):
    return (maps * region).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))


@pytest.mark.parametrize("explain", ["gradient", "smoothgrad"])
def test_attacks_beat_the_random_control(trained, images, explain):
    fn = A.explainer(explain, **({"n_samples": 4} if explain == "smoothgrad" else {}))
    opts = dict(explain=fn, epsilon=8 / 255, iterations=10)
    rand = A.random_sign_attack(trained, images, **opts)
    topk = A.topk_attack(trained, images, **opts)
    mass = A.mass_center_attack(trained, images, **opts)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[12:, 12:] = True
    targ = A.targeted_attack(trained, images, region=region, **opts)
    assert topk.topk_intersection.mean() < rand.topk_intersection.mean()
    assert topk.spearman.mean() < rand.spearman.mean()
    assert mass.center_shift.mean() > rand.center_shift.mean()
    gain = _region_share(targ.perturbed_maps, region) - _region_share(targ.original_maps, region)
    gain_rand = _region_share(rand.perturbed_maps, region) - _region_share(rand.original_maps, region)
    assert gain.mean() > gain_rand.mean()
    for r in (topk, mass, targ):
        assert r.sensitivity.nanmean() > rand.sensitivity.nanmean()


# ----------------------------------------------------------------------------------------------
# Generic explainers and argument checks
# ----------------------------------------------------------------------------------------------

def test_generic_differentiable_callable(trained, images):
    def grad_times_input(model, x, target, create_graph=False):
        return x * A.gradient(model, x, target, create_graph=create_graph)

    r = A.topk_attack(trained, images[:2], explain=grad_times_input, epsilon=4 / 255, iterations=3)
    assert (r.linf <= 4 / 255 + 1e-6).all()

    def frozen(model, x, target):  # not differentiable in x
        return A.gradient(model, x, target).detach()

    with pytest.raises(ValueError, match="differentiabl"):
        A.topk_attack(trained, images[:2], explain=frozen, iterations=1)


def test_bad_arguments(trained, images):
    with pytest.raises(ValueError, match="kind"):
        A.attack(trained, images, kind="pgd")
    with pytest.raises(ValueError, match="epsilon"):
        A.attack(trained, images, epsilon=0)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        A.attack(trained, images * 3)
    with pytest.raises(ValueError, match="k must be"):
        A.attack(trained, images, k=10_000)
    with pytest.raises(ValueError, match="region box"):
        A.attack(trained, images, kind="targeted", region=(10, 10, 30, 30))
    with pytest.raises(ValueError, match="explainer name"):
        A.explainer("lrp")
    assert A.target_region(224, 224).sum() == 16  # the paper's 4x4 at 224x224
    assert A.target_region(16, 16).sum() == 16  # at least 4x4 pixels (the paper's absolute size)
    assert A.target_region(16, 16, min_side=1).sum() == 1  # the pure fraction 4/224 of the side
