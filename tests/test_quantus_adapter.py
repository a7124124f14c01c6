"""dance.quantus.explain: Quantus metrics evaluate decoy-enhanced maps of a shipped model.

Quantus (test-only, installed without its dependencies) calls the adapter as its ``explain_func``;
where ``dance.metrics`` has the same metric, both must give the same numbers on the same maps:

* ``RelevanceMassAccuracy`` and ``dance.metrics.mass_in_mask`` (share of the map's mass inside the
  object's mask) and ``PointingGame`` and ``dance.metrics.pointing_game``: deterministic, equal;
* ``MaxSensitivity`` and ``dance.metrics.max_sensitivity(normalize="relative")`` (Yeh et al.'s
  Definition 2.1 with Quantus's relative Frobenius distance): both draw random points of an
  L-infinity ball, so Quantus is handed a ``perturb_func`` that yields dance's points, and the two
  estimates must then agree;
* ``FaithfulnessCorrelation`` (Bhatt et al.: subsets set to a black baseline) has no counterpart
  in ``dance.metrics``, whose ``faithfulness_correlation`` is Yeh et al.'s variant with random signed
  perturbations: its scores are checked for range, for seeded reproducibility, and against the
  same metric fed the explainer's maps directly (``a_batch=``).
"""
from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from captum.attr import NoiseTunnel, Saliency

import dance
import dance.quantus
from dance.metrics import linf_ball_samples, mass_in_mask, max_sensitivity, pointing_game
from dance_book import data, zoo

# An early layer of the shipped VGG keeps the decoys few (32 per image) and the tests fast.
LAYER = "features.relu2_1"
DECOYS = {"layer": LAYER, "epsilon": 0.1, "relative": True, "solver": "linesearch", "seed": 0}
EXPLAIN = {"method": Saliency, **DECOYS}


@pytest.fixture(scope="module")
def shapes():
    """The shipped CI-scale VGG and three of its shapes images with their object masks."""
    model = zoo.load("vgg-shapes").eval()
    images = data.shapes(3, seed=0)
    return model, images.images, images.labels, images.masks


@pytest.fixture(scope="module")
def reference(shapes):
    """DecoyEnhanced's own maps of the images, channels summed (Quantus's default layout)."""
    model, x, y, _ = shapes
    maps = dance.DecoyEnhanced(Saliency(model), **DECOYS).attribute(x, target=y)
    return maps.sum(dim=1, keepdim=True).numpy()


def test_adapter_returns_the_explainers_maps_in_quantus_layout(shapes, reference):
    model, x, y, _ = shapes
    a = dance.quantus.explain(model, x.numpy(), y.numpy(), **EXPLAIN)
    assert a.dtype == np.float32 and a.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(a, reference, rtol=1e-5, atol=1e-7)
    # Tensors, lists and the captum name are accepted; the channels can be kept or dropped.
    full = dance.quantus.explain(model, x, y.tolist(), **{**EXPLAIN, "method": "Saliency"}, reduce_axes=())
    assert full.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(full.sum(axis=1, keepdims=True), reference, rtol=1e-5, atol=1e-6)
    flat = dance.quantus.explain(model, x[:1].numpy(), int(y[0]), **EXPLAIN, keepdims=False)
    np.testing.assert_allclose(flat, reference[:1, 0], rtol=1e-5, atol=1e-7)


def test_adapter_explains_the_model_it_is_given(shapes):
    """A metric may hand over a changed copy (MPRT randomises layers): its maps, not the original's."""
    model, x, y, _ = shapes
    copy = zoo.load("vgg-shapes").eval()
    with torch.no_grad():
        copy.classifier.fc1.weight.mul_(-1.0)
    a = dance.quantus.explain(model, x[:1].numpy(), y[:1].numpy(), **EXPLAIN)
    b = dance.quantus.explain(copy, x[:1].numpy(), y[:1].numpy(), **EXPLAIN)
    c = dance.DecoyEnhanced(Saliency(copy), **DECOYS).attribute(x[:1], target=y[:1]).sum(1, keepdim=True)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, c.numpy(), rtol=1e-5, atol=1e-7)


def test_adapter_takes_factories_and_attribute_kwargs(shapes):
    model, x, y, _ = shapes
    smooth = {**DECOYS, "method": lambda m: NoiseTunnel(Saliency(m)),
              "attribute_kwargs": {"nt_type": "smoothgrad", "nt_samples": 2, "stdevs": 0.05}}
    torch.manual_seed(0)  # the noisy copies come from torch's global generator
    a = dance.quantus.explain(model, x[:1].numpy(), y[:1].numpy(), **smooth)
    torch.manual_seed(0)
    ref = dance.DecoyEnhanced(NoiseTunnel(Saliency(model)), **DECOYS).attribute(
        x[:1], target=y[:1], nt_type="smoothgrad", nt_samples=2, stdevs=0.05)
    assert a.shape == (1, 1, 64, 64)
    np.testing.assert_allclose(a, ref.sum(dim=1, keepdim=True).numpy(), rtol=1e-5, atol=1e-7)


def test_relevance_mass_accuracy_matches_mass_in_mask(shapes, reference):
    model, x, y, s = shapes
    metric = quantus.RelevanceMassAccuracy(abs=True, normalise=True, disable_warnings=True)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, s_batch=s.numpy(),
                    explain_func=dance.quantus.explain, explain_func_kwargs=EXPLAIN, device="cpu")
    ours = mass_in_mask(torch.from_numpy(reference[:, 0]), s)
    assert len(scores) == 3 and all(0.0 < v < 1.0 for v in scores)
    np.testing.assert_allclose(scores, ours.numpy(), rtol=1e-6)


def test_pointing_game_matches_dance(shapes, reference):
    model, x, y, s = shapes
    metric = quantus.PointingGame(abs=True, normalise=True, disable_warnings=True)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, s_batch=s.numpy(),
                    explain_func=dance.quantus.explain, explain_func_kwargs=EXPLAIN)
    ours = pointing_game(torch.from_numpy(reference[:, 0]), s)
    np.testing.assert_array_equal(np.asarray(scores, dtype=float), ours.numpy())


def test_max_sensitivity_matches_dance_on_the_same_points(shapes):
    model, x, y, _ = shapes
    x, y = x[:2], y[:2]
    radius, n = 0.05, 3
    points = linf_ball_samples(x, radius, n, seed=0, clamp=(0.0, 1.0))  # [n, B, C, H, W]
    calls = []

    def dance_points(arr, indices, **_bounds):
        """Quantus's perturbation step, returning dance's samples in turn (clipped to [0, 1])."""
        np.testing.assert_array_equal(arr, x.flatten(1).numpy())
        calls.append(1)
        return points[len(calls) - 1].flatten(1).numpy()

    metric = quantus.MaxSensitivity(nr_samples=n, lower_bound=radius, perturb_func=dance_points,
                                    abs=False, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                    explain_func=dance.quantus.explain, explain_func_kwargs=EXPLAIN)
    assert len(calls) == n

    def explain(inputs, target):
        return torch.from_numpy(dance.quantus.explain(model, inputs, target, **EXPLAIN))

    ours = max_sensitivity(explain, x, y, radius=radius, n_samples=n, normalize="relative", seed=0,
                           clamp=(0.0, 1.0), batch_size=x.shape[0])  # one sample's batch per call, as Quantus
    assert np.isfinite(theirs).all() and all(v > 0 for v in theirs)
    np.testing.assert_allclose(theirs, ours.numpy(), rtol=1e-4)


def test_faithfulness_correlation_runs_on_decoy_enhanced_maps(shapes, reference):
    model, x, y, _ = shapes
    settings = dict(nr_runs=40, subset_size=256, perturb_baseline="black", abs=False, normalise=True,
                    return_aggregate=False, disable_warnings=True)
    np.random.seed(0)
    via_adapter = quantus.FaithfulnessCorrelation(**settings)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
        explain_func=dance.quantus.explain, explain_func_kwargs=EXPLAIN)
    np.random.seed(0)  # the subsets come from NumPy's global generator
    given = quantus.FaithfulnessCorrelation(**settings)(
        model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=reference)
    assert len(via_adapter) == 3 and all(-1.0 <= v <= 1.0 for v in via_adapter)
    np.testing.assert_allclose(via_adapter, given, rtol=1e-6)


def test_inputs_outside_the_pixel_range_are_rejected_with_the_fix(shapes):
    model, x, y, _ = shapes
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dance.quantus.explain(model, x[:1].numpy() + 0.5, y[:1].numpy(), **EXPLAIN)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layer": None}, TypeError, "layer="),
    ({"epsilon": None}, TypeError, "epsilon"),
    ({"method": "NoSuchMethod"}, ValueError, "captum.attr"),
    ({"method": 3}, TypeError, "method"),
    ({"reduce_axes": (0,)}, ValueError, "batch axis"),
    ({"channel_first": False}, ValueError, "channel-first"),
    ({"device": "meta"}, ValueError, "device"),
])
def test_bad_options_name_the_argument(shapes, kwargs, error, match):
    model, x, y, _ = shapes
    with pytest.raises(error, match=match):
        dance.quantus.explain(model, x[:1].numpy(), y[:1].numpy(), **{**EXPLAIN, **kwargs})


def test_bad_inputs_and_targets_name_the_argument(shapes):
    model, x, y, _ = shapes
    with pytest.raises(TypeError, match="inputs"):
        dance.quantus.explain(model, (x[:1].numpy() * 255).astype(np.uint8), y[:1].numpy(), **EXPLAIN)
    with pytest.raises(ValueError, match="channel-first"):
        dance.quantus.explain(model, x[0].numpy(), y[:1].numpy(), **EXPLAIN)
    with pytest.raises(ValueError, match="one class per image"):
        dance.quantus.explain(model, x[:2].numpy(), [0, 1, 2], **EXPLAIN)
    with pytest.raises(TypeError, match="instance"):
        dance.quantus.explain(model, x[:1].numpy(), y[:1].numpy(), **{**EXPLAIN, "method": Saliency(model)})
    with pytest.raises(TypeError, match="nn.Module"):
        dance.quantus.explain(lambda t: t, x[:1].numpy(), y[:1].numpy(), **EXPLAIN)


def test_the_callers_arrays_and_model_are_left_unchanged(shapes):
    model, x, y, _ = shapes
    inputs, targets = x[:1].numpy().copy(), y[:1].numpy().copy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        dance.quantus.explain(model, inputs, targets, **EXPLAIN)
        assert model.training  # eval during the call, the caller's flag afterwards
    finally:
        model.eval()
    np.testing.assert_array_equal(inputs, x[:1].numpy())
    np.testing.assert_array_equal(targets, y[:1].numpy())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(dance.quantus, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
