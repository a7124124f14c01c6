"""The book's DANCE-SmoothGrad noise switch and its noise-only control (issue 12, §1).

``Settings.smoothgrad_noise``: ``"common"`` (default) shares SmoothGrad's draws between an image and
its decoys, ``"independent"`` is the paper-literal reading. :func:`noise_only_control` is the range
over as many SmoothGrad draws of the image alone, no decoys.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from captum.attr import Saliency

import dance
import dance_book.experiments as E
from dance_book.experiments import scores as Sc
from helpers import snapshot

S = dataclasses.replace(E.CI, smoothgrad_samples=3, smoothgrad_std=0.2)


def _copies(x: torch.Tensor, n: int = 3):
    """Populations whose decoys are exact copies of their image."""
    return [dance.Decoys(images=x[b:b + 1].repeat(n, 1, 1, 1), masks=torch.ones(n, 1, *x.shape[2:], dtype=torch.bool),
                         signs=torch.ones(n, dtype=torch.long), deviation=torch.zeros(n), movement=torch.zeros(n),
                         epsilon=0.0, layer="0", original=x[b:b + 1].clone()) for b in range(x.shape[0])]


def _by_hand(model, image, target, draws, seed):
    """The range over ``draws`` SmoothGrad maps of ``image [C, H, W]``, noise from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(draws):
        noise = torch.randn(S.smoothgrad_samples, *image.shape, generator=g) * S.smoothgrad_std
        rows = (image[None] + noise).requires_grad_(True)
        grads = Saliency(model).attribute(rows, target=target, abs=False)
        maps.append(grads.mean(dim=0))
    maps = torch.stack(maps)
    return maps.amax(0) - maps.amin(0)


def test_common_noise_is_the_default_and_in_every_cache_key():
    assert E.CI.smoothgrad_noise == "common" and E.PAPER.smoothgrad_noise == "common" and E.CI.common_noise
    independent = dataclasses.replace(E.CI, smoothgrad_noise="independent")
    assert not independent.common_noise
    # every cached result's config holds repr(settings), so the two readings never share an entry
    assert "smoothgrad_noise='independent'" in repr(independent) and repr(independent) != repr(E.CI)
    with pytest.raises(ValueError, match="smoothgrad_noise must be one of"):
        dataclasses.replace(E.CI, smoothgrad_noise="shared")


def test_noise_only_control_equals_the_hand_computation(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=1)
    target = torch.tensor([1, 4])
    control = E.noise_only_control(net, x, target, S, draws=[5, 4], seed=3, batch_size=2)
    assert control.shape == x.shape
    for b, draws in enumerate((5, 4)):
        torch.testing.assert_close(control[b], _by_hand(net, x[b], int(target[b]), draws, 3), rtol=1e-5, atol=1e-7)
    # an image alone, or with another image and another chunking: the same control
    alone = E.noise_only_control(net, x[1:], target[1:], S, draws=4, seed=3)
    torch.testing.assert_close(alone[0], control[1], rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(E.noise_only_control(net, x, target, S, draws=1)) == 0


def test_control_draw_zero_is_the_image_map_in_dance_smoothgrad(make_model, make_image):
    """With common noise and the same seed, the image's own member of the population is draw 0."""
    net = make_model("vgg")
    x = make_image(12, batch=1, seed=2)
    target = torch.tensor([2])
    pops = _copies(x, n=2)
    maps = Sc.population_maps(net, x, target, "smoothgrad", S, pops, seed=5)
    first = E.noise_only_control(net, x, target, S, draws=1, seed=5, aggregate="mean")
    torch.testing.assert_close(maps[0][0], first[0], rtol=1e-5, atol=1e-7)


def test_the_switch_reaches_the_book_maps(make_model, make_image):
    """Decoys that equal the image: DANCE-SmoothGrad is 0 with common noise; with independent noise it is
    the noise-only range (both are ranges over independent draws of the same image)."""
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=4)
    target = torch.tensor([0, 3])
    pops = _copies(x)
    common = E.enhanced_maps(net, x, target, "smoothgrad", S, pops, seed=1)
    assert torch.count_nonzero(common) == 0
    assert all(torch.count_nonzero(aggregate) == 0 for aggregate in
               [dance.aggregate_maps(m) for m in Sc.population_maps(net, x, target, "smoothgrad", S, pops, seed=1)])
    independent = dataclasses.replace(S, smoothgrad_noise="independent")
    noisy = E.enhanced_maps(net, x, target, "smoothgrad", independent, pops, seed=1)
    control = E.noise_only_control(net, x, target, S, draws=1 + len(pops[0]), seed=1)
    assert float(noisy.mean()) > 0.3 * float(control.mean()) > 0
    explainer, _ = E.enhanced_explainer(net, "smoothgrad", S, seed=9)
    assert explainer.common_noise and explainer.noise_seed == 9
    assert not E.enhanced_explainer(net, "smoothgrad", independent)[0].common_noise
    assert not E.enhanced_explainer(net, "gradient", S)[0].common_noise


@pytest.mark.parametrize("kwargs, words", [
    (dict(draws=0), "draws must be a positive integer"),
    (dict(draws=[2]), r"draws must be an int or one count per image \(2\)"),
    (dict(draws=2.0), "draws must be a positive integer"),
    (dict(draws=2, aggregate="max"), "aggregate must be one of"),
    (dict(draws=2, batch_size=0), "batch_size must be a positive integer"),
])
def test_noise_only_control_rejects_bad_arguments(make_model, make_image, kwargs, words):
    net = make_model("vgg")
    x = make_image(12, batch=2)
    with pytest.raises((ValueError, TypeError), match=words):
        E.noise_only_control(net, x, torch.tensor([0, 1]), S, **kwargs)


def test_noise_only_control_changes_nothing_it_is_given(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=6)
    target = torch.tensor([1, 2])
    snap = snapshot(model=net, inputs=x, target=target)
    E.noise_only_control(net, x, target, S, draws=3)
    snap.assert_unchanged()
