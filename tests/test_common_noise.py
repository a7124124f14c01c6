"""Common random numbers for SmoothGrad-like base methods in ``dance.DecoyEnhanced`` (issue 12, §1).

With independent noise every member of a population (the image and each decoy) gets its own
SmoothGrad noise, so the range over the population also measures Monte-Carlo noise. With common
noise (the default for a Captum ``NoiseTunnel``) the image and each decoy get the same draws.
"""
from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import dance
from dance.enhanced import NT_TYPES, noise_tunnel_reduce
from helpers import snapshot

NT = dict(nt_type="smoothgrad", nt_samples=5, stdevs=0.2)


def _population(image: torch.Tensor, decoy_images: torch.Tensor) -> dance.Decoys:
    """A hand-made population of ``image [C, H, W]``: the decoys are given images (no optimisation)."""
    n = decoy_images.shape[0]
    return dance.Decoys(images=decoy_images, masks=torch.ones(n, 1, *image.shape[1:], dtype=torch.bool),
                        signs=torch.ones(n, dtype=torch.long), deviation=torch.zeros(n), movement=torch.zeros(n),
                        epsilon=0.0, layer="0", original=image[None].clone())


def _copies(x: torch.Tensor, n: int = 4):
    """Populations whose decoys are exact copies of their image."""
    return [_population(x[b], x[b:b + 1].repeat(n, 1, 1, 1)) for b in range(x.shape[0])]


def _perturbed(x: torch.Tensor, n: int = 4, seed: int = 5):
    """Populations whose decoys differ from the image by a small, fixed perturbation."""
    g = torch.Generator().manual_seed(seed)
    return [_population(x[b], (x[b:b + 1] + 0.05 * torch.randn(n, *x.shape[1:], generator=g)).clamp(0, 1))
            for b in range(x.shape[0])]


def test_common_noise_is_the_default_for_noise_tunnel_only(make_model):
    net = make_model("vgg")
    assert dance.DecoyEnhanced(NoiseTunnel(Saliency(net))).common_noise is True
    assert dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), common_noise=False).common_noise is False
    assert dance.DecoyEnhanced(Saliency(net)).common_noise is False
    assert dance.DecoyEnhanced(IntegratedGradients(net)).common_noise is False


def test_identical_decoys_give_a_zero_range_with_common_noise_only(make_model, make_image):
    """(a) Decoys that equal the image: with common noise every member is the same noisy copy, so
    the range is exactly 0; with independent noise it is the Monte-Carlo noise of SmoothGrad."""
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=1)
    pops = _copies(x)
    common = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)))
    torch.manual_seed(0)
    maps = common.attribute(x, target=1, decoys=pops, **NT)
    assert torch.count_nonzero(maps) == 0
    independent = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), common_noise=False)
    torch.manual_seed(0)
    noisy = independent.attribute(x, target=1, decoys=pops, **NT)
    assert float(noisy.amax()) > 0.1 * float(common.population_maps(x, 1, decoys=pops, **NT)[0].abs().amax())


def test_an_image_alone_equals_the_image_in_a_batch(make_model, make_image):
    """(b) An image's map does not depend on the other images of its call (nor on the chunking)."""
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=2)
    pops = _perturbed(x)
    target = torch.tensor([1, 3])
    seeded = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), noise_seed=11)
    both = seeded.attribute(x, target=target, decoys=pops, batch_size=3, **NT)
    for b in range(2):
        alone = seeded.attribute(x[b:b + 1], target=target[b:b + 1], decoys=pops[b:b + 1], **NT)
        torch.testing.assert_close(alone[0], both[b], rtol=1e-5, atol=1e-7)
    # Unseeded, the draws come from torch's global generator, once per call: the same state, the same maps.
    unseeded = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)))
    torch.manual_seed(4)
    both = unseeded.attribute(x, target=target, decoys=pops, **NT)
    torch.manual_seed(4)
    second = unseeded.attribute(x[1:], target=target[1:], decoys=pops[1:], **NT)
    torch.testing.assert_close(second[0], both[1], rtol=1e-5, atol=1e-7)


def test_noise_seed_makes_calls_deterministic(make_model, make_image):
    net = make_model("vgg")
    x = make_image(12, batch=1, seed=3)
    pops = _perturbed(x)
    maps = []
    for seed in (1, 1, 2):
        torch.manual_seed(100 + len(maps))  # the global state does not matter with a noise_seed
        maps.append(dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), noise_seed=seed).attribute(
            x, 0, decoys=pops, **NT))
    assert torch.equal(maps[0], maps[1])
    assert not torch.allclose(maps[0], maps[2])


class _FixedNoise:
    """Replaces Captum's NoiseTunnel noise with given draws, shared by every row of a call, in Captum's
    layout (each row's draws together), consuming the draws in order across ``nt_samples_batch_size``
    partitions."""

    def __init__(self, noise: torch.Tensor):
        self.noise, self.used = noise, 0

    def __call__(self, input: torch.Tensor, stdev: float, n: int) -> torch.Tensor:
        draws = self.noise[self.used:self.used + n]
        self.used += n
        return input.repeat_interleave(n, dim=0) + draws.repeat(input.shape[0], 1, 1, 1)


@pytest.mark.parametrize("nt_type", NT_TYPES)
@pytest.mark.parametrize("options", [dict(nt_samples=5, stdevs=0.2), dict(nt_samples=5, stdevs=(0.3,)),
                                     dict(nt_samples=5, stdevs=0.2, nt_samples_batch_size=2)])
def test_reduction_equals_captum_noise_tunnel_for_the_same_noise(make_model, make_image, monkeypatch, nt_type,
                                                                 options):
    """(c) With the draws fixed, the maps of the image and each decoy are Captum's NoiseTunnel maps."""
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=4)
    pops = _perturbed(x, n=3)
    target = torch.tensor([2, 0])
    explainer = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), noise_seed=7)
    sigma = options["stdevs"][0] if isinstance(options["stdevs"], tuple) else options["stdevs"]
    noise = explainer.draw_noise(x, options["nt_samples"], sigma)
    # the documented draw: stdevs * randn(nt_samples, C, H, W) from a CPU generator seeded with noise_seed
    torch.testing.assert_close(noise, sigma * torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(7)))
    ours = explainer.population_maps(x, target, decoys=pops, batch_size=2, nt_type=nt_type, **options)
    for b in range(2):
        rows = torch.cat([x[b:b + 1], pops[b].images])
        monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(_FixedNoise(noise)))
        theirs = NoiseTunnel(Saliency(net)).attribute(rows.clone(), target=int(target[b]), abs=False,
                                                      nt_type=nt_type, **options).detach()
        torch.testing.assert_close(ours[b], theirs, rtol=1e-5, atol=1e-7)
    # and the decoy-enhanced map is the range of those maps
    maps = explainer.attribute(x, target, decoys=pops, nt_type=nt_type, **options)
    torch.testing.assert_close(maps, torch.stack([dance.aggregate_maps(m) for m in ours]))


def test_noise_tunnel_reduce_matches_captum_formulas():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(3, 6, 2, 4, 4, generator=g)
    torch.testing.assert_close(noise_tunnel_reduce(samples), samples.mean(1))
    torch.testing.assert_close(noise_tunnel_reduce(samples, "smoothgrad_sq"), (samples ** 2).mean(1))
    torch.testing.assert_close(noise_tunnel_reduce(samples, "vargrad"), samples.var(1, unbiased=False),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(noise_tunnel_reduce(samples.movedim(1, 0), dim=0), samples.mean(1))


@pytest.mark.parametrize("build, error, words", [
    (dict(common_noise="yes"), TypeError, "common_noise must be True, False or None"),
    (dict(common_noise=1), TypeError, "common_noise must be True, False or None"),
    (dict(common_noise=False, noise_seed=3), ValueError, "noise_seed seeds the common noise"),
    (dict(noise_seed=-1), ValueError, "noise_seed must be >= 0"),
    (dict(noise_seed=1.5), TypeError, "noise_seed must be an int"),
])
def test_bad_options_of_the_explainer(make_model, build, error, words):
    """(d) Bad values name the option and the fix."""
    net = make_model("vgg")
    with pytest.raises(error, match=words):
        dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), **build)


def test_common_noise_needs_one_noise_tunnel(make_model):
    net = make_model("vgg")
    with pytest.raises(ValueError, match=r"common_noise=True .* wrap it, NoiseTunnel\(Saliency\(model\)\)"):
        dance.DecoyEnhanced(Saliency(net), common_noise=True)
    with pytest.raises(ValueError, match="not a NoiseTunnel inside a NoiseTunnel: pass common_noise=False"):
        dance.DecoyEnhanced(NoiseTunnel(NoiseTunnel(Saliency(net))))
    with pytest.raises(ValueError, match="noise_seed seeds the common noise"):
        dance.DecoyEnhanced(Saliency(net), noise_seed=0)
    dance.DecoyEnhanced(NoiseTunnel(NoiseTunnel(Saliency(net))), common_noise=False)  # allowed: Captum as it is


@pytest.mark.parametrize("call, error, words", [
    (dict(nt_type="smooth"), ValueError, "nt_type must be one of"),
    (dict(nt_samples=0), ValueError, "nt_samples must be >= 1"),
    (dict(nt_samples=2.0), TypeError, "nt_samples must be an int"),
    (dict(nt_samples_batch_size=0), ValueError, "nt_samples_batch_size must be >= 1"),
    (dict(stdevs=-0.1), ValueError, "stdevs .* must be >= 0"),
    (dict(stdevs="0.1"), TypeError, "stdevs must be a number"),
    (dict(stdevs=(0.1, 0.2)), ValueError, "stdevs must be one number, or a tuple of one"),
    (dict(draw_baseline_from_distrib=True), ValueError,
     r"draw_baseline_from_distrib=True .* DecoyEnhanced\(\.\.\., common_noise=False\)"),
])
def test_bad_noise_tunnel_options_of_a_call(make_model, make_image, call, error, words):
    net = make_model("vgg")
    x = make_image(12, batch=1)
    explainer = dance.DecoyEnhanced(NoiseTunnel(Saliency(net)), noise_seed=0)
    with pytest.raises(error, match=words):
        explainer.attribute(x, 0, decoys=_perturbed(x, n=2), **{**NT, **call})


def test_nothing_the_caller_passed_changes(make_model, make_image):
    """(e) The model, images, decoys, target, keywords and the global random state are untouched."""
    net = make_model("vgg")
    x = make_image(12, batch=2, seed=6)
    pops = _perturbed(x, n=2)
    target = torch.tensor([1, 2])
    kwargs = dict(nt_type="vargrad", nt_samples=3, stdevs=(0.1,), nt_samples_batch_size=2)
    attribution = NoiseTunnel(Saliency(net))
    explainer = dance.DecoyEnhanced(attribution, noise_seed=2)
    snap = snapshot(model=net, inputs=x, decoys=pops, target=target, kwargs=kwargs)
    explainer.attribute(x, target, decoys=pops, batch_size=2, **kwargs)
    explainer.population_maps(x, target, decoys=pops, **kwargs)
    snap.assert_unchanged()
    assert explainer.common_noise and explainer.noise_seed == 2 and explainer.attribution is attribution
