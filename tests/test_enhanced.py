"""dance.DecoyEnhanced: closed forms on linear models, composition with Captum and plain callables
(aggregates recomputed by hand from the returned decoys), batching, determinism, and that the
caller's tensors and model are left as they were."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

import dance

from helpers import FAST

LAYER = "3"  # the second conv block's ReLU of the conftest VGG-ish model
DECOYS = dict(epsilon=0.1, relative=True, **FAST)


def _linear(seed: int = 0, size: int = 8, classes: int = 4) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


def _population(x: torch.Tensor, d) -> torch.Tensor:
    """``{x} ∪ decoys`` for one image ``x [C, H, W]``."""
    return torch.cat([x.unsqueeze(0), d.images])


def _by_hand(maps: torch.Tensor, how: str) -> torch.Tensor:
    if how == "range":
        return maps.max(dim=0).values - maps.min(dim=0).values
    if how == "mean":
        return maps.mean(dim=0)
    return maps.var(dim=0, unbiased=False).sqrt()


# --------------------------------------------------------------------------------------------
# Closed forms on a linear model
# --------------------------------------------------------------------------------------------

def test_linear_model_gradient_is_constant_so_its_range_is_zero(make_image):
    """grad_x W x = W[target] everywhere: Saliency (signed) returns the weights, every decoy has the
    same gradient, so the decoy-enhanced range is 0, the mean is W[target] and the std is 0."""
    net = _linear()
    X = make_image(8, batch=2)
    target = torch.tensor([1, 3])
    weights = net[1].weight.detach().view(4, 3, 8, 8)[target]
    assert torch.equal(Saliency(net).attribute(X, target=target, abs=False), weights)

    explainer = dance.DecoyEnhanced(Saliency(net), layer="1", **DECOYS)
    Z, decoys = explainer.attribute(X, target, return_decoys=True)
    assert all(len(d) > 0 for d in decoys)
    assert torch.allclose(Z, torch.zeros_like(Z), atol=1e-7)
    for how, expected in (("mean", weights), ("std", torch.zeros_like(weights))):
        other = dance.DecoyEnhanced(Saliency(net), layer="1", aggregate=how, **DECOYS)
        assert torch.allclose(other.attribute(X, target, decoys=decoys), expected, atol=1e-6)


def test_linear_model_integrated_gradients_range_is_weight_times_pixel_range(make_image):
    """IG of a linear model with baseline 0 is x * W[target], so its range over the population is
    |W[target]| * (max_i x_i - min_i x_i), pixel by pixel."""
    net = _linear(1)
    X = make_image(8, batch=2, seed=1)
    target = torch.tensor([0, 2])
    explainer = dance.DecoyEnhanced(IntegratedGradients(net), layer="1", **DECOYS)
    Z, decoys = explainer.attribute(X, target, return_decoys=True, n_steps=4)
    weights = net[1].weight.detach().view(4, 3, 8, 8)[target]
    for b, d in enumerate(decoys):
        pop = _population(X[b], d)
        expected = weights[b].abs() * (pop.max(dim=0).values - pop.min(dim=0).values)
        assert torch.allclose(Z[b], expected, atol=1e-5)
        assert float(expected.max()) > 0  # the decoys did move some pixels


# --------------------------------------------------------------------------------------------
# Composition: each aggregate recomputed by hand from the returned decoys
# --------------------------------------------------------------------------------------------

def _gradient_callable(model):
    calls = {"grad_enabled": []}

    def grad(inputs, target):
        calls["grad_enabled"].append(torch.is_grad_enabled())
        inputs = inputs.detach().requires_grad_(True)
        out = model(inputs).gather(1, target.view(-1, 1)).sum()
        return torch.autograd.grad(out, inputs)[0]
    return grad, calls


BASES = ["saliency", "integrated_gradients", "callable"]


def _base(name, model):
    if name == "saliency":
        return Saliency(model), {}, {"abs": False}
    if name == "integrated_gradients":
        return IntegratedGradients(model), {"n_steps": 5}, {"n_steps": 5}
    fn, _ = _gradient_callable(model)
    return fn, {}, {}


@pytest.mark.parametrize("base", BASES)
def test_aggregates_equal_hand_computation_over_the_population(base, make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=2, seed=5)
    target = torch.tensor([1, 4])
    attribution, kwargs, hand_kwargs = _base(base, net)
    model_kw = {"model": net} if base == "callable" else {}
    explainer = dance.DecoyEnhanced(attribution, layer=LAYER, **model_kw, **DECOYS)
    Z, decoys = explainer.attribute(X, target, return_decoys=True, **kwargs)
    assert Z.shape == X.shape and len(decoys) == 2
    fn = attribution.attribute if hasattr(attribution, "attribute") else attribution
    for how in dance.AGGREGATES:
        if how == "range":
            maps = Z
        else:
            maps = dance.DecoyEnhanced(attribution, layer=LAYER, aggregate=how, **model_kw, **DECOYS) \
                .attribute(X, target, decoys=decoys, **kwargs)
        for b, d in enumerate(decoys):
            assert len(d) > 0 and torch.equal(d.original, X[b:b + 1])
            pop = _population(X[b], d)
            signed = fn(pop.clone(), target=target[b:b + 1].expand(pop.shape[0]), **hand_kwargs).detach()
            assert torch.allclose(maps[b], _by_hand(signed, how), rtol=1e-4, atol=1e-6), (base, how, b)
        if how == "range":
            assert float(maps.min()) >= 0 and float(maps.max()) > 0


def test_noise_tunnel_aggregates_equal_hand_computation(make_model, make_image):
    """NoiseTunnel(Saliency) with independent noise (common_noise=False, the paper-literal reading):
    with the same global seed and the same rows, our own call draws the same noise, so every
    aggregate matches the hand computation (common noise: tests/test_common_noise.py)."""
    net = make_model("vgg", 1)
    X = make_image(12, batch=2, seed=6)
    target = torch.tensor([0, 3])
    nt = NoiseTunnel(Saliency(net))
    nt_kw = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.1)
    decoys = dance.DecoyEnhanced(nt, layer=LAYER, **DECOYS).decoys(X)
    rows = torch.cat([_population(X[b], d) for b, d in enumerate(decoys)])
    sizes = [1 + len(d) for d in decoys]
    row_target = torch.cat([target[b:b + 1].expand(n) for b, n in enumerate(sizes)])
    torch.manual_seed(7)
    signed = nt.attribute(rows.clone(), target=row_target, abs=False, **nt_kw).detach().split(sizes)
    for how in dance.AGGREGATES:
        explainer = dance.DecoyEnhanced(nt, layer=LAYER, aggregate=how, common_noise=False, **DECOYS)
        torch.manual_seed(7)
        maps = explainer.attribute(X, target, decoys=decoys, **nt_kw)
        for b in range(2):
            assert torch.allclose(maps[b], _by_hand(signed[b], how), rtol=1e-4, atol=1e-6), how


def test_noise_tunnel_is_seeded_by_the_caller(make_model, make_image):
    net = make_model("vgg", 1)
    X = make_image(12, batch=1, seed=6)
    explainer = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), layer=LAYER, **DECOYS)
    kw = dict(nt_type="smoothgrad", nt_samples=2, stdevs=0.2)
    maps = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        maps.append(explainer.attribute(X, 2, **kw))
    assert torch.equal(maps[0], maps[1])
    assert not torch.allclose(maps[0], maps[2])


def test_callable_is_called_with_gradients_enabled_even_under_no_grad(make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=1)
    fn, calls = _gradient_callable(net)
    explainer = dance.DecoyEnhanced(fn, model=net, layer=LAYER, **DECOYS)
    outside = explainer.attribute(X, 1)
    with torch.no_grad():
        inside = explainer.attribute(X, 1)
    assert calls["grad_enabled"] and all(calls["grad_enabled"])
    assert torch.equal(outside, inside)


def test_saliency_is_signed_unless_abs_is_passed(make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=1)
    decoys = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **DECOYS).decoys(X)
    mean = dance.DecoyEnhanced(Saliency(net), layer=LAYER, aggregate="mean", **DECOYS)
    signed = mean.attribute(X, 0, decoys=decoys)
    absolute = mean.attribute(X, 0, decoys=decoys, abs=True)
    assert float(signed.min()) < 0
    assert float(absolute.min()) >= 0


def test_decoy_options_are_forwarded(make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=1)
    _, decoys = dance.DecoyEnhanced(Saliency(net), layer=LAYER, n_masks=2, directions=(1,), **DECOYS) \
        .attribute(X, 0, return_decoys=True)
    assert len(decoys[0]) + decoys[0].dropped == 2
    assert set(decoys[0].signs.tolist()) <= {1}


# --------------------------------------------------------------------------------------------
# Batching and determinism
# --------------------------------------------------------------------------------------------

def test_batched_over_images_equals_per_image(make_model, make_image):
    net = make_model("bn", 2)
    X = make_image(12, batch=3, seed=2)
    target = torch.tensor([0, 2, 4])
    explainer = dance.DecoyEnhanced(Saliency(net), layer="5", **DECOYS)
    together = explainer.attribute(X, target)
    alone = torch.cat([explainer.attribute(X[b:b + 1], int(target[b])) for b in range(3)])
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-6)
    assert float(together.abs().max()) > 0


@pytest.mark.parametrize("batch_size", [1, 5, 7])
def test_batch_size_chunks_the_base_attribution(batch_size, make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=2, seed=3)
    target = torch.tensor([1, 2])
    fn, _ = _gradient_callable(net)
    seen = []

    def counting(inputs, target):
        seen.append(inputs.shape[0])
        return fn(inputs, target)

    explainer = dance.DecoyEnhanced(counting, model=net, layer=LAYER, **DECOYS)
    whole, decoys = explainer.attribute(X, target, return_decoys=True)
    rows = sum(1 + len(d) for d in decoys)
    assert seen == [rows]
    seen.clear()
    chunked = explainer.attribute(X, target, decoys=decoys, batch_size=batch_size)
    assert len(seen) == math.ceil(rows / batch_size)
    assert max(seen) <= batch_size and sum(seen) == rows
    assert torch.allclose(whole, chunked, rtol=1e-4, atol=1e-6)


def test_int_target_equals_tensor_target(make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=2)
    explainer = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **DECOYS)
    decoys = explainer.decoys(X)
    a = explainer.attribute(X, 3, decoys=decoys)
    b = explainer.attribute(X, torch.tensor([3, 3]), decoys=decoys)
    c = explainer.attribute(X, torch.tensor(3), decoys=decoys)
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("base", ["saliency", "integrated_gradients"])
def test_same_seed_identical_maps(base, make_model, make_image):
    X = make_image(12, batch=2, seed=4)
    results = []
    for _ in range(2):
        net = make_model("vgg", 4)
        attribution, kwargs, _ = _base(base, net)
        explainer = dance.DecoyEnhanced(attribution, layer=LAYER, seed=5, **DECOYS)
        results.append(explainer.attribute(X, torch.tensor([0, 1]), return_decoys=True, **kwargs))
    (za, da), (zb, db) = results
    assert torch.equal(za, zb)
    for a, b in zip(da, db):
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)


def test_single_image_without_batch_dimension(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12)
    explainer = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **DECOYS)
    assert torch.equal(explainer.attribute(x, 1), explainer.attribute(x.unsqueeze(0), 1))


# --------------------------------------------------------------------------------------------
# The caller's objects are left untouched
# --------------------------------------------------------------------------------------------

def _snapshot(model):
    return (copy.deepcopy(model.state_dict()), [(n, m.training) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def _assert_model_unchanged(model, snapshot):
    state, flags, requires = snapshot
    now = model.state_dict()
    assert state.keys() == now.keys()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert [(n, m.training) for n, m in model.named_modules()] == flags
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == requires
    assert all(p.grad is None for p in model.parameters())


def _calls(model, x):
    """One call of each public entry point on ``x`` (a single image or a batch of one)."""
    yield lambda: dance.generate_decoys(model, x, "4", **DECOYS)
    yield lambda: dance.DecoyEnhanced(Saliency(model), layer="4", **DECOYS).attribute(x, 1)
    yield lambda: dance.DecoyEnhanced(IntegratedGradients(model), layer="4", **DECOYS).attribute(x, 1, n_steps=3)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["generate_decoys", "saliency", "integrated_gradients"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_inputs_and_their_grad_are_untouched(which, requires_grad, make_model, make_image):
    net = make_model("dropout_bn")
    x = make_image(12, batch=1).requires_grad_(requires_grad)
    if requires_grad:
        x.grad = torch.full_like(x, 0.5)
    before = x.detach().clone()
    snapshot = _snapshot(net)
    list(_calls(net, x))[which]()
    assert torch.equal(x.detach(), before)
    assert x.requires_grad is requires_grad and x.is_leaf
    if requires_grad:
        assert torch.equal(x.grad, torch.full_like(x, 0.5))
    else:
        assert x.grad is None
    _assert_model_unchanged(net, snapshot)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["generate_decoys", "saliency", "integrated_gradients"])
def test_train_mode_model_is_evaluated_in_eval_mode_and_restored(which, make_model, make_image):
    """A model in train mode (dropout, batch norm) gives the eval-mode result, its running
    statistics are not updated, and every submodule's flag (here a mixed pattern) comes back."""
    x = make_image(12, batch=1, seed=8)
    reference = list(_calls(make_model("dropout_bn", 3), x))[which]()
    net = make_model("dropout_bn", 3).train()
    net[1].eval()  # a mixed pattern of flags must come back exactly
    snapshot = _snapshot(net)
    result = list(_calls(net, x))[which]()
    _assert_model_unchanged(net, snapshot)
    assert net.training and not net[1].training and net[5].training
    if which == 0:
        assert torch.equal(result.images, reference.images)
    else:
        assert torch.equal(result, reference)


def test_decoys_do_not_alias_the_callers_tensor(make_model, make_image):
    """The returned Decoys own their tensors: changing x afterwards does not change them."""
    net = make_model("vgg")
    x = make_image(8)
    d = dance.generate_decoys(net, x, "1", epsilon=0.1, relative=True, solver=dance.Adam(steps=3))
    original, images = d.original.clone(), d.images.clone()
    x.mul_(0.5)
    assert torch.equal(d.original, original) and torch.equal(d.images, images)


def test_input_requiring_grad_raises_no_warning(make_model, make_image):
    net = make_model("vgg")
    x = make_image(8).requires_grad_(True)
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch warns once per process otherwise: the test must not depend on order
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dance.generate_decoys(net, x, "1", epsilon=0.1, relative=True, solver=dance.Adam(steps=2))
    finally:
        torch.set_warn_always(always)


def test_frozen_parameters_stay_frozen(make_model, make_image):
    net = make_model("vgg")
    for p in net.parameters():
        p.requires_grad_(False)
    snapshot = _snapshot(net)
    Z = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **DECOYS).attribute(make_image(12, batch=1), 0)
    assert float(Z.abs().max()) > 0
    _assert_model_unchanged(net, snapshot)


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------

def test_cuda_maps_match_cpu(cuda_only, make_model, make_image):
    X = make_image(12, batch=2)
    net = make_model("vgg")
    cpu = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **DECOYS)
    gpu_net = make_model("vgg").to(cuda_only)
    gpu = dance.DecoyEnhanced(Saliency(gpu_net), layer=LAYER, **DECOYS)
    Zg, decoys = gpu.attribute(X.to(cuda_only), 1, return_decoys=True)
    assert Zg.device.type == "cuda" and all(d.images.device.type == "cuda" for d in decoys)
    # Same decoys on both devices: the maps then agree up to float error.
    Zc = cpu.attribute(X, 1, decoys=[d.to("cpu") for d in decoys])
    assert torch.allclose(Zg.cpu(), Zc, rtol=1e-3, atol=1e-5)


def test_decoy_enhanced_is_a_captum_attribution_that_noise_tunnel_wraps(make_model, make_image):
    from captum.attr import Attribution, NoiseTunnel

    net = make_model("vgg")
    x = 0.1 + 0.8 * make_image(12, batch=2)  # the noisy copies must stay in [0, 1], as DANCE requires
    explainer = dance.DecoyEnhanced(Saliency(net), layer="3", epsilon=0.1, relative=True, solver="linesearch")
    assert isinstance(explainer, Attribution) and explainer.forward_func is net
    assert not explainer.has_convergence_delta()
    smooth = NoiseTunnel(explainer).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.01, target=0)
    assert smooth.shape == x.shape and torch.isfinite(smooth).all()
    # With no noise, NoiseTunnel's average of one sample is the decoy-enhanced map itself
    same = NoiseTunnel(explainer).attribute(x, nt_type="smoothgrad", nt_samples=1, stdevs=0.0, target=0)
    torch.testing.assert_close(same, explainer.attribute(x, target=0))


def test_population_maps_are_the_unreduced_maps_attribute_reduces(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=2)
    explainer = dance.DecoyEnhanced(Saliency(net), layer="3", epsilon=0.1, relative=True, solver="linesearch")
    decoys = explainer.decoys(x)
    pops = explainer.population_maps(x, 0, decoys=decoys)
    assert [p.shape[0] for p in pops] == [1 + len(d) for d in decoys]
    maps = explainer.attribute(x, 0, decoys=decoys)
    for b in range(2):
        torch.testing.assert_close(maps[b], dance.aggregate_maps(pops[b]))
    # the first map of each population is the image's own map
    torch.testing.assert_close(torch.stack([p[0] for p in pops]), Saliency(net).attribute(x.clone(), 0, abs=False))


def test_decoys_of_other_images_or_in_another_order_are_refused(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=2)
    explainer = dance.DecoyEnhanced(Saliency(net), layer="3", epsilon=0.1, relative=True, solver="linesearch")
    decoys = explainer.decoys(x)
    with pytest.raises(ValueError, match=r"decoys\[0\] were made for another image"):
        explainer.attribute(x, 0, decoys=decoys[::-1])
    with pytest.raises(ValueError, match="another image"):
        explainer.attribute(x.flip(0), 0, decoys=decoys)


def test_a_population_only_explainer_needs_decoys_per_call(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=1)
    decoys = dance.generate_decoys_batch(net, x, "3", dance.DecoyConfig(epsilon=0.1, relative=True,
                                                                          solver="linesearch"))
    reducer = dance.DecoyEnhanced(Saliency(net))
    assert reducer.attribute(x, 0, decoys=decoys).shape == x.shape
    with pytest.raises(ValueError, match="pass decoys="):
        reducer.attribute(x, 0)
    with pytest.raises(TypeError, match="go together"):
        dance.DecoyEnhanced(Saliency(net), layer="3")


def test_per_image_ig_baselines_are_expanded_to_each_population(make_model, make_image):
    from captum.attr import IntegratedGradients

    net = make_model("vgg")
    x = make_image(12, batch=2)
    base = torch.stack([torch.zeros_like(x[0]), torch.full_like(x[0], 0.5)])
    explainer = dance.DecoyEnhanced(IntegratedGradients(net), layer="3", epsilon=0.1, relative=True,
                                    solver="linesearch")
    decoys = explainer.decoys(x)
    both = explainer.attribute(x, 0, decoys=decoys, baselines=base, n_steps=4)
    alone = torch.cat([explainer.attribute(x[b:b + 1], 0, decoys=decoys[b:b + 1], baselines=base[b:b + 1], n_steps=4)
                       for b in range(2)])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="baselines must hold one entry per image"):
        explainer.attribute(x, 0, decoys=decoys, baselines=torch.zeros(3, *x.shape[1:]), n_steps=4)


def test_a_layer_typo_on_a_wrapped_model_suggests_the_close_names(make_model):
    wrapped = dance.Normalized(make_model("vgg"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(ValueError) as info:
        dance.DecoyEnhanced(Saliency(wrapped), layer="model.3x", epsilon=0.1)
    assert "model.3" in str(info.value)
    with pytest.raises(ValueError, match=r"model\.3"):
        dance.DecoyEnhanced(Saliency(wrapped), layer="3", epsilon=0.1)  # the wrapper's prefix left out


@pytest.mark.parametrize("solver", ["adam", "linesearch"])
def test_an_images_decoys_do_not_depend_on_its_batch(solver, make_model, make_image):
    # Bit for bit: the solver's discrete decisions (feasibility, best iterate, freezing) must not
    # see the other images' rows, whose presence changes the last bits of a batched forward pass.
    net = make_model("vgg")
    X = make_image(12, batch=4, seed=5)
    cfg = dance.DecoyConfig(epsilon=0.1, relative=True, solver=solver if solver == "linesearch" else
                            dance.Adam(steps=40), batch_size=7)
    alone = dance.generate_decoys_batch(net, X[2:3], "3", cfg)[0]
    for batch in (X[1:3], X, X.flip(0)):
        index = next(i for i in range(batch.shape[0]) if torch.equal(batch[i], X[2]))
        d = dance.generate_decoys_batch(net, batch, "3", cfg)[index]
        assert torch.equal(d.images, alone.images) and torch.equal(d.deviation, alone.deviation)


def test_an_images_map_does_not_depend_on_its_batch(make_model, make_image):
    net = make_model("vgg")
    X = make_image(12, batch=3, seed=6)
    explainer = dance.DecoyEnhanced(Saliency(net), layer="3", epsilon=0.1, relative=True, solver=dance.Adam(steps=40))
    together = explainer.attribute(X, 1)
    for b in range(3):
        # the base method's batch may still round differently: maps agree to float precision
        torch.testing.assert_close(together[b:b + 1], explainer.attribute(X[b:b + 1], 1), rtol=1e-5, atol=1e-7)
