"""Bad input to generate_decoys and DecoyEnhanced: a ValueError/TypeError naming the argument.

Each case is checked on both entry points where it applies; the message must name the argument
(and, for layers, list valid names) so that the caller knows what to fix. Nothing is optimised
before the check fires, so these tests are fast.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from captum.attr import Saliency
from torch import nn

import dance

LAYER = "3"
OK = dict(epsilon=0.1, relative=True, solver=dance.Adam(steps=2))


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
        ).eval()


@pytest.fixture
def x():
    return torch.rand(3, 8, 8)


def _decoys(net, image, **kw):
    return dance.generate_decoys(net, image, kw.pop("layer", LAYER), **{**OK, **kw})


def _enhanced(net, images, target=0, **kw):
    layer = kw.pop("layer", LAYER)
    return dance.DecoyEnhanced(Saliency(net), layer=layer, **{**OK, **kw}).attribute(images, target)


# (id, image transform, exception, pattern naming the argument). The transform takes a good
# [3, 8, 8] image; the pattern gets "x" for generate_decoys and "inputs" for DecoyEnhanced.
IMAGE_CASES = [
    ("rank-2", lambda x: x[0], ValueError, "{arg} must have shape"),
    ("rank-5", lambda x: x[None, None], ValueError, "{arg} must have shape"),
    ("channels", lambda x: x[:1], ValueError, "{arg} has 1 channels.*expects 3"),
    ("int-dtype", lambda x: (x * 255).to(torch.uint8), TypeError, "{arg} must be a floating-point"),
    ("long-dtype", lambda x: (x * 255).long(), TypeError, "{arg} must be a floating-point"),
    ("above-1", lambda x: x * 2 + 0.01, ValueError, r"{arg} must hold pixel values in \[0, 1\]"),
    ("below-0", lambda x: x - 0.5, ValueError, r"{arg} must hold pixel values in \[0, 1\]"),
    ("nan", lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("nan"))), ValueError, "{arg}.*NaN"),
    ("inf", lambda x: x.index_put((torch.tensor([1]),), torch.tensor(float("inf"))), ValueError, "{arg}.*Inf"),
    ("not-a-tensor", lambda x: x.tolist(), TypeError, "{arg} must be a torch.Tensor"),
    ("empty", lambda x: x[:, :0], ValueError, "{arg} must not be empty"),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_generate_decoys(case, net, x):
    _, transform, exc, pattern = case
    with pytest.raises(exc, match=pattern.format(arg="x")):
        _decoys(net, transform(x))


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_decoy_enhanced(case, net, x):
    _, transform, exc, pattern = case
    bad = transform(x)
    if isinstance(bad, torch.Tensor) and bad.dim() == 3 and case[0] != "channels":
        bad = bad.unsqueeze(0)
    with pytest.raises(exc, match=pattern.format(arg="inputs")):
        _enhanced(net, bad)


def test_batch_of_two_to_generate_decoys(net, x):
    with pytest.raises(ValueError, match="x must be one image.*batch of 2"):
        _decoys(net, torch.stack([x, x]))


def test_unknown_layer_lists_valid_names(net, x):
    for call in (lambda: _decoys(net, x, layer="features.99"),
                 lambda: dance.DecoyEnhanced(Saliency(net), layer="features.99", **OK)):
        with pytest.raises(ValueError, match="layer 'features.99'") as info:
            call()
        listed = re.findall(r"'([^']*)'", str(info.value).split("include", 1)[1])
        assert listed and set(listed) <= {n for n, _ in net.named_modules() if n}


def test_layer_of_another_model_or_wrong_type(net, x):
    with pytest.raises(ValueError, match="layer"):
        _decoys(net, x, layer=nn.ReLU())
    with pytest.raises(ValueError, match="layer"):
        _decoys(net, x, layer=net)  # the model itself is not a layer
    with pytest.raises(TypeError, match="layer must be"):
        _decoys(net, x, layer=3)


@pytest.mark.parametrize("epsilon,exc", [(0.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                         (float("inf"), ValueError), ("0.1", TypeError), (None, TypeError)])
def test_bad_epsilon(epsilon, exc, net, x):
    with pytest.raises(exc, match="epsilon"):
        _decoys(net, x, epsilon=epsilon)
    with pytest.raises(exc, match="epsilon"):
        dance.DecoyEnhanced(Saliency(net), layer=LAYER, epsilon=epsilon)


def test_tiny_positive_epsilon_is_accepted(net, x):
    # Not bad input: it only makes every decoy infeasible (reported, see test_decoys).
    with pytest.warns(RuntimeWarning, match="dropped"):
        d = _decoys(net, x, epsilon=1e-12, relative=False, solver=dance.Adam(steps=2, max_doublings=0))
    assert len(d) == 0 and d.dropped > 0


def _cover(n=2, size=8):
    m = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        m[i, 0, i::n] = True
    return m


@pytest.mark.parametrize("masks,exc,match", [
    (_cover()[:, :, :4], ValueError, r"masks must have shape \[N, 1, 8, 8\]"),
    (_cover().expand(2, 3, 8, 8), ValueError, r"masks must have shape"),
    (_cover()[:0], ValueError, r"masks must have shape"),
    (_cover()[:, 0, 0], ValueError, r"masks must have shape"),
    (_cover()[:1], ValueError, r"masks leave 32 pixel\(s\) uncovered"),
    (_cover().float() * 2, ValueError, "masks must be boolean"),
    (_cover().tolist(), TypeError, "masks must be a tensor"),
])
def test_bad_masks(masks, exc, match, net, x):
    with pytest.raises(exc, match=match):
        _decoys(net, x, masks=masks)
    with pytest.raises(exc, match=match):
        _enhanced(net, x.unsqueeze(0), masks=masks)


@pytest.mark.parametrize("target,exc,match", [
    (5, ValueError, r"target must be in \[0, 4\]"),
    (-1, ValueError, r"target must be in \[0, 4\]"),
    (torch.tensor([0, 7]), ValueError, r"target must be in \[0, 4\]"),
    (1.0, TypeError, "target must be an int, a list of ints or a LongTensor"),
    ([0, 1, 2], ValueError, "target"),  # a list of ints is one class per image: B=2 needs two
    ((0, 1), ValueError, "target is a tuple"),  # Captum's tuple indexes output axes; a classifier has one
    (True, TypeError, "target"),
    (torch.tensor([0.0, 1.0]), TypeError, "target must be an int or a LongTensor"),
    (torch.tensor(1.0), TypeError, "target must be an int or a LongTensor"),
    (torch.tensor([0, 1, 2]), ValueError, "target must be an int or a LongTensor of length B=2"),
    (torch.tensor([[0, 1]]), ValueError, "target must be an int or a LongTensor of length B=2"),
    (None, TypeError, "target"),
])
def test_bad_target(target, exc, match, net):
    with pytest.raises(exc, match=match):
        _enhanced(net, torch.rand(2, 3, 8, 8), target=target)


def test_bad_aggregate(net):
    for aggregate in ("max", "Range", None):
        with pytest.raises(ValueError, match="aggregate must be one of"):
            dance.DecoyEnhanced(Saliency(net), layer=LAYER, epsilon=0.1, aggregate=aggregate)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        dance.aggregate_maps(torch.rand(3, 1, 2, 2), "median")


def test_unknown_decoy_option_is_named(net):
    with pytest.raises(TypeError, match=r"unknown decoy option\(s\) \['patchsize'\]"):
        dance.DecoyEnhanced(Saliency(net), layer=LAYER, epsilon=0.1, patchsize=3)


def test_plain_callable_needs_model(net):
    with pytest.raises(TypeError, match="model is required"):
        dance.DecoyEnhanced(lambda inputs, target: inputs, layer=LAYER, epsilon=0.1)


def test_attribution_of_wrong_kind(net):
    with pytest.raises(TypeError, match="attribution must be"):
        dance.DecoyEnhanced(42, layer=LAYER, epsilon=0.1, model=net)
    with pytest.raises(TypeError, match="forward_func"):
        dance.DecoyEnhanced(Saliency(lambda t: net(t)), layer=LAYER, epsilon=0.1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        dance.DecoyEnhanced(lambda inputs, target: inputs, layer=LAYER, epsilon=0.1, model="net")


def test_attribution_returning_the_wrong_shape(net):
    explainer = dance.DecoyEnhanced(lambda inputs, target: inputs.sum(dim=1), model=net, layer=LAYER, **OK)
    with pytest.raises(ValueError, match="the attribution must return a tensor of the inputs' shape"):
        explainer.attribute(torch.rand(1, 3, 8, 8), 0)


def test_model_not_a_module(x):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        dance.generate_decoys(lambda t: t, x, LAYER, epsilon=0.1)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"patch_size": 0}, ValueError, "patch_size"),
    ({"patch_size": 2.5}, TypeError, "patch_size"),
    ({"patch_size": 9}, ValueError, "patch_size"),
    ({"stride": 0}, ValueError, "stride"),
    ({"directions": (2,)}, ValueError, "directions"),
    ({"directions": ()}, ValueError, "directions"),
    ({"directions": (1, 1)}, ValueError, "directions"),
    ({"directions": 1}, TypeError, "directions"),
    ({"n_masks": 0}, ValueError, "n_masks"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"relative": 1}, TypeError, "relative"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"steps": 0}, ValueError, "steps"),
    ({"c": -1.0}, ValueError, "c must"),
    ({"tau_decay": 1.5}, ValueError, "tau_decay"),
    ({"spacing": "far"}, TypeError, "spacing"),
])
def test_bad_decoy_options(kwargs, exc, match, net, x):
    adam = {k: v for k, v in kwargs.items() if k in dance.Adam.__dataclass_fields__}
    with pytest.raises(exc, match=match):
        if adam:  # solver settings are validated by their solver object
            _decoys(net, x, solver=dance.Adam(**adam))
        else:
            _decoys(net, x, **kwargs)


def test_bad_batch_size_and_decoys_for_attribute(net):
    explainer = dance.DecoyEnhanced(Saliency(net), layer=LAYER, **OK)
    X = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="batch_size"):
        explainer.attribute(X, 0, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        explainer.attribute(X, 0, batch_size=2.0)
    decoys = explainer.decoys(X[:1])
    with pytest.raises(ValueError, match="decoys must be a list of 2 Decoys"):
        explainer.attribute(X, 0, decoys=decoys)
    with pytest.raises(ValueError, match="decoys must be a list of 2 Decoys"):
        explainer.attribute(X, 0, decoys=[decoys[0], "not decoys"])


def test_relative_epsilon_with_dead_layer(x):
    dead = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 2)).eval()
    with torch.no_grad():
        dead[0].weight.zero_()
        dead[0].bias.fill_(-1.0)
    with pytest.raises(ValueError, match="relative epsilon.*absolute epsilon"):
        dance.generate_decoys(dead, x, "1", epsilon=0.1, relative=True)


def test_bad_input_leaves_caller_objects_alone(net, x):
    """A refused call changes nothing either."""
    net = copy.deepcopy(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    bad = (x * 2).requires_grad_(True)
    with pytest.raises(ValueError):
        _decoys(net, bad)
    assert net.training and all(m.training for m in net.modules())
    assert bad.grad is None and bad.requires_grad
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
