"""DecoyEnhanced checked the way Captum checks its own attribution methods.

Captum's test-suite holds every method to the same conventions: a batch gives the maps of its
examples one at a time, every accepted form of ``target`` gives the same maps, extra forward
arguments reach the model, chunking (``internal_batch_size``) changes nothing, the caller's inputs
(values, ``requires_grad``, ``.grad``) are left as they were, and the methods compose with
``NoiseTunnel``. Where DecoyEnhanced does not follow a convention yet, the test is a strict
``xfail`` that names the gap (it fails the day the gap closes, so that the mark is removed).
"""
from __future__ import annotations

import pytest
import torch
from captum.attr import Attribution, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

import dance

DECOYS = {"layer": "3", "epsilon": 0.1, "relative": True, "solver": "linesearch", "seed": 0}
METHODS = {"saliency": (Saliency, {}), "integrated_gradients": (IntegratedGradients, {"n_steps": 8})}


@pytest.fixture(scope="module")
def net(make_model):
    """conftest's tiny VGG-like CNN: 12 x 12 images, 5 classes; layer "3" is its second ReLU."""
    return make_model("vgg")


@pytest.fixture(scope="module")
def images(make_image):
    return make_image(12, seed=7, batch=3)


def explainer(net, method="saliency", **options):
    cls, _ = METHODS[method]
    return dance.DecoyEnhanced(cls(net), **{**DECOYS, **options})


def test_it_is_a_captum_attribution(net):
    sal, ig = explainer(net), explainer(net, "integrated_gradients")
    assert isinstance(sal, Attribution) and sal.forward_func is net
    assert not sal.has_convergence_delta()
    # It multiplies by the inputs exactly when its base method does (Captum's flag for IG-like methods).
    assert (sal.multiplies_by_inputs, ig.multiplies_by_inputs) == (False, True)


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_gives_the_maps_of_its_examples_one_at_a_time(net, images, method):
    e = explainer(net, method)
    kwargs = METHODS[method][1]
    target = torch.tensor([0, 3, 1])
    batched = e.attribute(images, target=target, **kwargs)
    single = torch.cat([e.attribute(images[i:i + 1], target=int(target[i]), **kwargs) for i in range(3)])
    assert batched.shape == images.shape
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_every_accepted_target_form_gives_the_same_maps(net, images):
    e = explainer(net)
    reference = e.attribute(images, target=2)
    for target in (torch.tensor(2), torch.tensor([2, 2, 2]), torch.tensor([2, 2, 2], dtype=torch.int32)):
        torch.testing.assert_close(e.attribute(images, target=target), reference)
    # Per-example targets pick each example's class.
    mixed = e.attribute(images, target=torch.tensor([2, 0, 2]))
    torch.testing.assert_close(mixed[[0, 2]], reference[[0, 2]])
    torch.testing.assert_close(mixed[1:2], e.attribute(images[1:2], target=0))


def test_a_list_of_ints_is_a_target(net, images):
    e = explainer(net)
    torch.testing.assert_close(e.attribute(images, target=[2, 0, 2]),
                               e.attribute(images, target=torch.tensor([2, 0, 2])))


def test_tuple_targets_index_the_output_as_in_captum(net, images):
    """Captum reads a tuple as an index into the output after the batch axis: ``(k,)`` is class k
    for every image, and a list of 1-tuples gives one class per image."""
    e = explainer(net)
    torch.testing.assert_close(e.attribute(images, target=(2,)), e.attribute(images, target=2))
    torch.testing.assert_close(e.attribute(images, target=[(2,), (0,), (2,)]),
                               e.attribute(images, target=torch.tensor([2, 0, 2])))
    # The same forms, given to Captum itself, select the same logits.
    sal = Saliency(net)
    torch.testing.assert_close(sal.attribute(images, target=[(2,), (0,), (2,)]),
                               sal.attribute(images, target=[2, 0, 2]))


@pytest.mark.parametrize("target, error, match", [
    ([2, 0], ValueError, "one class per image"),
    ([2, 0, 1.0], TypeError, r"target\[2\]"),
    ([2, 0, True], TypeError, r"target\[2\]"),
    ((2, 0, 2), ValueError, "tuple"),
    ([(2, 0), (0, 1), (1, 1)], ValueError, "tuple"),
    ([2, 0, 5], ValueError, r"target must be in \[0, 4\]"),
])
def test_bad_list_and_tuple_targets_are_refused_with_the_reason(net, images, target, error, match):
    with pytest.raises(error, match=match):
        explainer(net).attribute(images, target=target)


class _Shifted(nn.Module):
    """A model with an extra forward argument: ``net(x) + shift``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, shift):
        return self.net(x) + shift


def test_additional_forward_args_reach_the_model(net, images):
    shifted = dance.DecoyEnhanced(Saliency(_Shifted(net)), **{**DECOYS, "layer": "net.3"})
    got = shifted.attribute(images, target=1, additional_forward_args=(torch.zeros(3, 5),))
    torch.testing.assert_close(got, explainer(net).attribute(images, target=1))


class _Gated(nn.Module):
    """A model whose extra forward argument scales the input per image: ``net(x * gate[:, None, None, None])``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, gate, offset=0.0):
        return self.net(x * gate[:, None, None, None]) + offset


@pytest.mark.parametrize("method", METHODS)
def test_per_image_forward_args_reach_every_member_of_each_population(net, images, method):
    """Each image's entry of a per-image argument goes with it, its decoys, and (for IG) every
    step of every decoy, in the decoy optimisation and the base method alike; a shared argument
    (a float) is passed as it is. Checked against each image alone with its argument bound."""
    cls, kwargs = METHODS[method]
    gate = torch.tensor([1.0, 0.5, 0.8])
    options = {**DECOYS, "layer": "net.3"}
    e = dance.DecoyEnhanced(cls(_Gated(net)), **options)
    got, decoys = e.attribute(images, target=torch.tensor([1, 0, 4]), additional_forward_args=(gate, 0.25),
                              return_decoys=True, **kwargs)
    for b, t in enumerate([1, 0, 4]):
        alone = dance.DecoyEnhanced(cls(_Bound(net, float(gate[b]))), **options)
        want, want_decoys = alone.attribute(images[b:b + 1], target=t, return_decoys=True, **kwargs)
        torch.testing.assert_close(decoys[b].images, want_decoys[0].images)
        torch.testing.assert_close(got[b:b + 1], want, rtol=1e-5, atol=1e-6)
    # Chunked base attribution: the per-row arguments are cut with the rows.
    torch.testing.assert_close(e.attribute(images, target=torch.tensor([1, 0, 4]), additional_forward_args=(gate, 0.25),
                                           batch_size=4, **kwargs), got, rtol=1e-5, atol=1e-6)


class _Bound(nn.Module):
    def __init__(self, net, gate):
        super().__init__()
        self.net, self.gate = net, gate

    def forward(self, x):
        return self.net(x * self.gate) + 0.25


def test_generate_decoys_takes_additional_forward_args(net, images):
    got = dance.generate_decoys(_Gated(net), images[0], "net.3", epsilon=0.1, relative=True, solver="linesearch",
                                additional_forward_args=(torch.tensor([0.5]),))
    want = dance.generate_decoys(_Bound(net, 0.5), images[0], "net.3", epsilon=0.1, relative=True, solver="linesearch")
    torch.testing.assert_close(got.images, want.images)


def test_chunking_changes_nothing(net, images):
    """``batch_size`` (DecoyEnhanced's chunks) and IG's own ``internal_batch_size`` leave the maps as they are."""
    sal = explainer(net)
    whole = sal.attribute(images, target=1)
    for batch_size in (1, 5, 1000):
        torch.testing.assert_close(sal.attribute(images, target=1, batch_size=batch_size), whole,
                                   rtol=1e-5, atol=1e-6)
    ig = explainer(net, "integrated_gradients")
    whole = ig.attribute(images, target=1, n_steps=8)
    population = sum(p.shape[0] for p in ig.population_maps(images[:1], target=1, n_steps=8))
    # Captum needs internal_batch_size >= the examples per call: one decoy population at a time.
    chunked = ig.attribute(images, target=1, n_steps=8, batch_size=population, internal_batch_size=population * 3)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_the_inputs_and_the_models_gradients_are_left_untouched(net, images, requires_grad):
    x = images.clone().requires_grad_(requires_grad)
    before = x.detach().clone()
    maps = explainer(net).attribute(x, target=1)
    assert torch.equal(x.detach(), before)
    assert x.requires_grad == requires_grad and x.grad is None
    assert not maps.requires_grad and maps.grad_fn is None
    assert all(p.grad is None for p in net.parameters())


def test_decoys_returned_by_one_call_are_reused_by_the_next(net, images):
    e = explainer(net)
    maps, decoys = e.attribute(images, target=1, return_decoys=True)
    ig = dance.DecoyEnhanced(IntegratedGradients(net))  # no decoys of its own: takes them per call
    torch.testing.assert_close(e.attribute(images, target=1, decoys=decoys), maps)
    assert ig.attribute(images, target=1, decoys=decoys, n_steps=8).shape == images.shape


@pytest.mark.parametrize("nt_type, reduce", [
    ("smoothgrad", lambda m: m),
    ("smoothgrad_sq", lambda m: m * m),
    ("vargrad", lambda m: torch.zeros_like(m)),
])
def test_noise_tunnel_around_decoy_enhanced_without_noise(net, images, nt_type, reduce):
    """With zero noise every copy is the image itself: NoiseTunnel's statistics of one map."""
    e = explainer(net)
    tunnel = NoiseTunnel(e)
    got = tunnel.attribute(images, nt_type=nt_type, nt_samples=3, stdevs=0.0, target=torch.tensor([1, 0, 4]))
    torch.testing.assert_close(got, reduce(e.attribute(images, target=torch.tensor([1, 0, 4]))),
                               rtol=1e-5, atol=1e-6)


def test_noise_tunnel_around_decoy_enhanced_with_noise(net, images):
    """Noisy copies get their own decoys; the copies must stay in [0, 1], as every input of dance."""
    inside = 0.3 + 0.4 * images  # pixels in [0.3, 0.7]: noise of std 0.01 stays in range
    e = explainer(net)
    torch.manual_seed(0)
    noisy = NoiseTunnel(e).attribute(inside, nt_type="smoothgrad", nt_samples=2, stdevs=0.01, target=1)
    assert noisy.shape == inside.shape and torch.isfinite(noisy).all()
    assert not torch.allclose(noisy, e.attribute(inside, target=1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NoiseTunnel(e).attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.5, target=1)
