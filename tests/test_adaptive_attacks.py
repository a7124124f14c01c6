"""Tests of the strengthened attacks of dance.attacks (issue 13): adaptive attacks on decoy-enhanced
maps, norm-matched controls, the iterate selection on the label check alone, the 4x4 minimum target
region, and the errors on bad input.

The required comparison: on a small trained CNN, with the same budget, step, iterations and seeds,
the adaptive attack (aimed at the decoy-enhanced map) lowers the DANCE map's top-k mass more than the
transfer attack (aimed at the raw map), both measured the same way: decoys re-optimised for the
returned images, objective on the clean decoy-enhanced map's top-k set.
"""
from __future__ import annotations

import pytest
import torch

from dance import attacks as A
from helpers import snapshot
from test_attacks import make_shapes, train_net

EPS = 8 / 255
ITERATIONS = 10
# The forward-only decoy solver keeps each test within seconds; layer "1" is the first ReLU.
DECOYS = {"layer": "1", "epsilon_decoy": 0.1, "decoy_options": {"relative": True, "solver": "linesearch"}}
EXPLAINERS = {
    "gradient": A.explainer("gradient"),
    "smoothgrad": A.explainer("smoothgrad", n_samples=4, stdev=0.15, seed=0),
    "integrated_gradients": A.explainer("integrated_gradients", n_steps=4),
}


@pytest.fixture(scope="module")
def trained():
    return train_net()


@pytest.fixture(scope="module")
def images():
    return make_shapes(8, seed=2)[0][:4]


# ----------------------------------------------------------------------------------------------
# The adaptive attack beats the transfer attack on the DANCE objective
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(EXPLAINERS))
def test_adaptive_attack_lowers_dance_topk_mass_more_than_the_transfer_attack(trained, images, method):
    fn = EXPLAINERS[method]
    budget = dict(kind="topk", explain=fn, epsilon=EPS, iterations=ITERATIONS, seed=0)
    transfer = A.evaluate_enhanced(trained, A.attack(trained, images, **budget), explain=fn, **DECOYS)
    adaptive = A.adaptive_attack(trained, images, mode="fixed_decoy", **budget, **DECOYS)
    # The same clean decoy-enhanced map, so the same objective before either attack.
    assert torch.allclose(transfer.objective_before, adaptive.objective_before, atol=1e-6)
    # Both move the DANCE map; the adaptive attack moves it further (objective = -top-k mass).
    assert (transfer.objective_after > transfer.objective_before).all()
    assert adaptive.objective_after.mean() > transfer.objective_after.mean()
    assert int((adaptive.objective_after > transfer.objective_after).sum()) >= 3


def test_eot_attack_lowers_dance_topk_mass_more_than_the_transfer_attack(trained, images):
    budget = dict(kind="topk", explain="gradient", epsilon=EPS, iterations=ITERATIONS, seed=0)
    transfer = A.evaluate_enhanced(trained, A.attack(trained, images, **budget), explain="gradient", **DECOYS)
    eot = A.adaptive_attack(trained, images, mode="eot", eot_samples=3, **budget, **DECOYS)
    assert len(eot.extra["shifts"]) == 3 and eot.extra["shifts"][0] == (0, 0)
    assert len(set(eot.extra["shifts"])) == 3
    assert eot.objective_after.mean() > transfer.objective_after.mean()


def test_evaluate_enhanced_measures_the_adaptive_attack_as_the_attack_does(trained, images):
    r = A.adaptive_attack(trained, images, kind="mass_center", iterations=3, **DECOYS)
    again = A.evaluate_enhanced(trained, r, **DECOYS)
    assert torch.allclose(again.objective_after, r.objective_after, atol=1e-5)
    assert torch.allclose(again.perturbed_maps, r.perturbed_maps, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Guarantees: budget, pixel range, label, determinism, nothing the caller passed changes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, options", [("fixed_decoy", {}), ("fixed_decoy", {"refresh_every": 2}),
                                           ("eot", {"eot_shifts": [(0, 0), (1, 2)]})])
def test_adaptive_attack_stays_in_the_ball_and_keeps_the_label(trained, images, mode, options):
    eps = 0.2
    t = torch.tensor([0, 1, 0, 1])
    snap = snapshot(model=trained, inputs=images, target=t, decoy_options=DECOYS["decoy_options"])
    r = A.adaptive_attack(trained, images, t, kind="targeted", mode=mode, epsilon=eps, iterations=4,
                          step_size=eps / 2, **options, **DECOYS)
    snap.assert_unchanged()
    assert (r.linf <= eps + 1e-6).all()
    assert r.inputs.min() >= 0 and r.inputs.max() <= 1
    with torch.no_grad():
        assert torch.equal(trained(r.inputs).argmax(1), r.labels)
    assert torch.equal(r.target, t)
    assert r.extra["region"].sum() >= 16  # the 4x4 minimum target region
    assert len(r.extra["decoys"]) == len(images) and r.extra["mode"] == mode


@pytest.mark.parametrize("select", A.SELECTIONS)
def test_label_check_is_honoured_when_iterates_change_the_label(trained, images, select):
    # A budget of 0.8 with steps of 0.8 / 3: the walk leaves the label behind for some images (measured).
    kw = dict(kind="mass_center", epsilon=0.8, iterations=6, step_size=0.8 / 3, select=select)
    for r in (A.attack(trained, images, **kw), A.adaptive_attack(trained, images, **kw, **DECOYS)):
        with torch.no_grad():
            assert torch.equal(trained(r.inputs).argmax(1), r.labels)
        if select == "label":
            assert (r.iteration < 6).any()  # the last iterate changed the label for some image
        assert (r.linf <= 0.8 + 1e-6).all()


def test_adaptive_attack_is_seeded(trained, images):
    kw = dict(mode="eot", eot_samples=2, iterations=2, **DECOYS)
    a = A.adaptive_attack(trained, images, seed=3, **kw)
    b = A.adaptive_attack(trained, images, seed=3, **kw)
    assert torch.equal(a.inputs, b.inputs) and a.extra["shifts"] == b.extra["shifts"]
    shifts = {tuple(A.adaptive_attack(trained, images[:1], seed=s, **kw).extra["shifts"]) for s in range(4)}
    assert len(shifts) > 1  # the seed draws the EOT mask offsets


# ----------------------------------------------------------------------------------------------
# Norm-matched controls
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def topk_result(trained, images):
    return A.attack(trained, images, kind="topk", epsilon=EPS, iterations=ITERATIONS)


@pytest.mark.parametrize("control", A.CONTROLS)
def test_norm_matched_controls_have_the_attacks_norms(trained, topk_result, control):
    r = topk_result
    assert r.success.all()
    inputs_before = r.inputs.clone()
    c = A.norm_matched_control(trained, r, control=control, seed=1)
    assert torch.equal(r.inputs, inputs_before)  # the attack's result is not touched
    assert c.kind == f"matched_{control}" and c.success.all()
    assert torch.allclose(c.l2, r.l2, rtol=0, atol=1e-5)
    assert torch.allclose(c.linf, r.linf, rtol=0, atol=1e-6)
    d, d_attack = c.inputs - c.original, r.inputs - r.original
    rows = {"sign": d.numel() // d.shape[0], "permute_all": d.numel() // d.shape[0]}.get(control, d.shape[2] * d.shape[3])
    # The same magnitudes: per image (per channel for permute_channel), the sorted |delta| agree.
    assert torch.allclose(d.abs().reshape(-1, rows).sort(dim=1).values,
                          d_attack.abs().reshape(-1, rows).sort(dim=1).values, atol=1e-6)
    if control == "sign":
        assert torch.allclose(d.abs(), d_attack.abs(), atol=1e-6)  # positions kept, signs drawn
        flipped = (d * d_attack < 0).float().sum() / (d_attack != 0).float().sum()
        assert 0.3 < flipped < 0.6
    else:
        assert (d.abs() - d_attack.abs()).abs().max() > 1e-3  # positions moved
    assert c.inputs.min() >= 0 and c.inputs.max() <= 1
    with torch.no_grad():
        assert torch.equal(trained(c.inputs).argmax(1), r.labels)
    assert torch.isnan(c.objective_after).all()
    assert torch.allclose(c.map_change, c.sensitivity * c.l2, rtol=1e-4)


def test_map_change_is_the_numerator_of_sensitivity(topk_result):
    r = topk_result
    assert r.map_change is not None
    assert torch.allclose(r.map_change, r.sensitivity * r.l2, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Strengthened transfer attacks: selection on the label alone, the 4x4 region, explainer options
# ----------------------------------------------------------------------------------------------

def test_select_label_returns_the_last_iterate_that_keeps_the_label(trained, images):
    kw = dict(kind="topk", epsilon=2 / 255, iterations=6, step_size=1 / 255)
    by_objective = A.attack(trained, images, **kw)
    by_label = A.attack(trained, images, select="label", **kw)
    with torch.no_grad():
        assert torch.equal(trained(by_label.inputs).argmax(1), by_label.labels)
    # A 2/255 budget keeps every label here, so the last iterate is returned for every image ...
    assert (by_label.iteration == 6).all()
    assert by_label.extra["select"] == "label" and by_objective.extra["select"] == "objective"
    # ... and the objective rule, which picks the best iterate, scores at least as high.
    assert (by_objective.objective_after >= by_label.objective_after - 1e-7).all()


@pytest.mark.parametrize("kind", ["topk", "targeted", "random"])
def test_attack_selections_equals_one_attack_per_rule(trained, images, kind):
    # A budget at which the label flips on some iterates, so the two rules return different images.
    kw = dict(kind=kind, explain="gradient", epsilon=0.3, iterations=8, step_size=0.06, seed=1)
    snap = snapshot(model=trained, inputs=images)
    both = A.attack_selections(trained, images, **kw)
    snap.assert_unchanged()
    assert list(both) == list(A.SELECTIONS)
    for rule in A.SELECTIONS:
        alone = A.attack(trained, images, select=rule, **kw)
        assert both[rule].extra["select"] == rule
        assert torch.equal(both[rule].inputs, alone.inputs) and torch.equal(both[rule].iteration, alone.iteration)
        assert torch.allclose(both[rule].sensitivity.nan_to_num(-1), alone.sensitivity.nan_to_num(-1))
        assert torch.allclose(both[rule].objective_after.nan_to_num(-1), alone.objective_after.nan_to_num(-1))
    if kind != "random":
        assert not torch.equal(both["objective"].iteration, both["label"].iteration)
    assert list(A.attack_selections(trained, images[:1], selects=["label"], **kw)) == ["label"]


def test_attack_selections_bad_input(trained, images):
    with pytest.raises(TypeError, match="selects"):
        A.attack_selections(trained, images[:1], selects="label")
    with pytest.raises(TypeError, match="selects"):
        A.attack_selections(trained, images[:1], selects=[])
    with pytest.raises(ValueError, match="selects"):
        A.attack_selections(trained, images[:1], selects=["best"])


def test_default_target_region_is_at_least_4x4():
    assert A.TARGET_MIN_SIDE == 4
    assert A.target_region(64, 64).sum() == 16  # 4/224 of 64 rounds to 1 pixel
    assert A.target_region(64, 64)[-4:, -4:].all()
    assert A.target_region(448, 448).sum() == 64  # the fraction takes over on larger images
    assert A.target_region(3, 3).sum() == 9  # never larger than the image
    assert A.target_region(64, 64, min_side=1).sum() == 1


def test_targeted_attack_uses_the_4x4_region(trained, images):
    r = A.attack(trained, images[:2], kind="targeted", iterations=1)
    assert r.extra["region"].sum() == 16


def test_explainer_takes_sample_and_step_counts_and_refuses_unknown_options(trained, images):
    sg = A.explainer("smoothgrad", n_samples=3)
    assert torch.allclose(sg(trained, images[:2], 0), A.smoothgrad(trained, images[:2], 0, n_samples=3))
    ig = A.explainer("integrated_gradients", n_steps=5, method="riemann_left")
    assert torch.allclose(ig(trained, images[:2], 0),
                          A.integrated_gradients(trained, images[:2], 0, n_steps=5, method="riemann_left"))
    with pytest.raises(TypeError, match="n_sample.*valid.*n_samples"):
        A.explainer("smoothgrad", n_sample=3)
    with pytest.raises(TypeError, match="n_samples"):
        A.explainer("integrated_gradients", n_samples=3)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def test_adaptive_attack_bad_input(trained, images):
    x = images[:1]
    with pytest.raises(ValueError, match="control"):
        A.adaptive_attack(trained, x, kind="random", **DECOYS)
    with pytest.raises(ValueError, match="mode"):
        A.adaptive_attack(trained, x, mode="through_solver", **DECOYS)
    with pytest.raises(ValueError, match="select"):
        A.adaptive_attack(trained, x, select="best", **DECOYS)
    with pytest.raises(ValueError, match="epsilon_decoy"):
        A.adaptive_attack(trained, x, layer="1", epsilon_decoy=0)
    with pytest.raises(TypeError, match="epsilon_decoy"):
        A.adaptive_attack(trained, x, layer="1")
    with pytest.raises(ValueError, match="layer"):
        A.adaptive_attack(trained, x, layer="nope", epsilon_decoy=0.1)
    with pytest.raises(TypeError, match="unknown decoy option.*patch_sise"):
        A.adaptive_attack(trained, x, layer="1", epsilon_decoy=0.1, decoy_options={"patch_sise": 3})
    with pytest.raises(TypeError, match="decoy_options"):
        A.adaptive_attack(trained, x, layer="1", epsilon_decoy=0.1, decoy_options="linesearch")
    with pytest.raises(ValueError, match="refresh_every"):
        A.adaptive_attack(trained, x, refresh_every=0, **DECOYS)
    with pytest.raises(ValueError, match="eot_samples"):
        A.adaptive_attack(trained, x, mode="eot", eot_samples=10, **DECOYS)
    with pytest.raises(TypeError, match="eot_shifts"):
        A.adaptive_attack(trained, x, mode="eot", eot_shifts=[(0.5, 1)], **DECOYS)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        A.adaptive_attack(trained, x * 3, **DECOYS)
    with pytest.raises(ValueError, match="aggregate"):
        A.adaptive_attack(trained, x, aggregate="median", **DECOYS)
    with pytest.raises(ValueError, match="select"):
        A.attack(trained, x, select="best")
    with pytest.raises(ValueError, match="min_side"):
        A.target_region(16, 16, min_side=0)


def test_controls_and_evaluation_bad_input(trained, topk_result):
    with pytest.raises(TypeError, match="AttackResult"):
        A.norm_matched_control(trained, topk_result.inputs)
    with pytest.raises(ValueError, match="control"):
        A.norm_matched_control(trained, topk_result, control="flip")
    with pytest.raises(ValueError, match="tries"):
        A.norm_matched_control(trained, topk_result, tries=0)
    with pytest.raises(TypeError, match="AttackResult"):
        A.evaluate_enhanced(trained, topk_result.inputs, **DECOYS)
    with pytest.raises(ValueError, match="same shape"):
        A.map_change(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))


# ----------------------------------------------------------------------------------------------
# Reusing the clean images' decoys (clean_decoys=): the same result, one optimisation fewer
# ----------------------------------------------------------------------------------------------

def _clean_decoys(model, images):
    from dance.decoys import DecoyConfig, generate_decoys_batch
    options = dict(DECOYS["decoy_options"], progress=False)
    return generate_decoys_batch(model, images, DECOYS["layer"], DecoyConfig(epsilon=DECOYS["epsilon_decoy"], **options))


def test_given_clean_decoys_give_the_same_result_without_optimising_them_again(trained, images, topk_result,
                                                                              monkeypatch):
    clean = _clean_decoys(trained, topk_result.original)
    before = [d.images.clone() for d in clean]
    own = A.evaluate_enhanced(trained, topk_result, **DECOYS)
    reused = A.evaluate_enhanced(trained, topk_result, clean_decoys=clean, **DECOYS)
    torch.testing.assert_close(reused.original_maps, own.original_maps)
    torch.testing.assert_close(reused.perturbed_maps, own.perturbed_maps)
    assert reused.extra["clean_decoys"] is not own.extra["clean_decoys"]
    assert all(torch.equal(d.images, b) for d, b in zip(clean, before))  # the caller's decoys are unchanged
    # Counted: with the clean decoys given, only the attacked images' decoys are optimised.
    import dance.decoys as D
    calls = []
    real = D.generate_decoys_batch
    monkeypatch.setattr(D, "generate_decoys_batch", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    A.evaluate_enhanced(trained, topk_result, clean_decoys=clean, **DECOYS)
    A.adaptive_attack(trained, topk_result.original, iterations=2, clean_decoys=clean, **DECOYS)
    assert len(calls) == 2  # evaluate_enhanced: the attacked images; adaptive_attack: the returned images
    fixed = A.adaptive_attack(trained, topk_result.original, iterations=2, **DECOYS)
    given = A.adaptive_attack(trained, topk_result.original, iterations=2, clean_decoys=clean, **DECOYS)
    torch.testing.assert_close(given.inputs, fixed.inputs)
    torch.testing.assert_close(given.objective_after, fixed.objective_after)


def test_clean_decoys_of_other_images_or_layers_are_refused(trained, images, topk_result):
    clean = _clean_decoys(trained, topk_result.original)
    with pytest.raises(ValueError, match="another image"):
        A.evaluate_enhanced(trained, topk_result, clean_decoys=clean[::-1], **DECOYS)
    with pytest.raises(ValueError, match="entries for"):
        A.adaptive_attack(trained, topk_result.original, clean_decoys=clean[:1], **DECOYS)
    with pytest.raises(TypeError, match="list of dance.Decoys"):
        A.evaluate_enhanced(trained, topk_result, clean_decoys=[d.images for d in clean], **DECOYS)
    with pytest.raises(ValueError, match="layer"):
        A.evaluate_enhanced(trained, topk_result, clean_decoys=clean, **dict(DECOYS, layer="0"))
