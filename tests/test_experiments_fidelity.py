"""Fidelity, layer, architecture and control experiments on a tiny configuration (2 images, tiny budgets).

These check shapes, bookkeeping and invariants of dance_book.experiments.fidelity / control, never the
paper's claims.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import dance_book.experiments as E
from dance.enhanced import aggregate_maps
from dance_book.experiments import claims as Cl
from dance_book.experiments import control as C
from dance_book.experiments import architectures as Ar
from dance_book.experiments import fidelity as F
from dance_book.experiments import layers as La
from dance_book.experiments import power as Pw
from dance_book.experiments import scores as Sc

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load


@pytest.fixture(scope="module")
def S(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DANCE_CACHE_DIR", str(tmp_path_factory.mktemp("dance-cache")))
    mp.setattr(F, "POWERED_SCALES", ())  # the claims at these settings' own 2 images (the powered run: below)
    mp.setattr(La, "POWERED_SCALES", ())  # the layer claim likewise
    # 4x4 patches (a quarter of the masks and decoys of CI's 3x3) and 20 Adam steps per decoy round instead of 200
    # (as conftest's tiny): shapes, bookkeeping and invariants hold at any patch size and step budget
    ci = E.settings("ci")
    yield dataclasses.replace(ci, n_fidelity=2, n_small=2, smoothgrad_samples=2, ig_steps=2,
                              architectures=("vgg-shapes", "resnet-shapes"), decoys=dataclasses.replace(ci.decoys, patch_size=4),
                              extra={**ci.extra, "adam_steps": 20})
    mp.undo()


@pytest.fixture(scope="module")
def fid(S):
    return F.fidelity_scores(S)


def test_fidelity_table_shape_and_ranges(S, fid):
    assert set(fid.columns) >= {"model", "layer", "method", "population", "aggregate", "image", "sf", "mass"}
    assert len(fid) == len(E.METHODS) * len(F.FIDELITY_KINDS) * S.n_fidelity
    assert set(fid.population) == set(F.FIDELITY_KINDS)
    assert np.isfinite(fid.sf).all()
    assert ((fid["mass"] >= 0) & (fid["mass"] <= 1)).all()
    # the raw maps carry aggregate "none", every population the range
    assert set(fid[fid.population == "none"]["aggregate"]) == {"none"}
    assert set(fid[fid.population != "none"]["aggregate"]) == {"range"}


def test_scores_bookkeeping(S, fid):
    layer = S.layer(S.main_model)
    r = Sc.scores(S, S.main_model, layer, "gradient", "decoys", S.n_fidelity)
    decoys = E.shared_decoys(S, S.main_model, S.n_fidelity)
    assert r["n_decoys"].tolist() == [len(d) for d in decoys]
    assert set(r["sf"]) == set(Sc.AGGREGATES)
    assert r["heat"]["range"].shape == (min(S.n_fidelity, F.N_SHOW), 64, 64)
    assert float(r["heat"]["range"].min()) >= 0 and float(r["heat"]["range"].max()) <= 1
    # replacement populations have one member per mask (no direction), decoys two
    b = Sc.scores(S, S.main_model, layer, "gradient", "blur", S.n_fidelity)
    assert (2 * b["n_decoys"] >= r["n_decoys"]).all()


def test_smaller_n_slices_the_shared_result(S, fid):
    layer = S.layer(S.main_model)
    full = Sc.scores(S, S.main_model, layer, "smoothgrad", "decoys", S.n_fidelity)
    one = Sc.scores(S, S.main_model, layer, "smoothgrad", "decoys", 1)
    assert one["n"] == 1
    for agg in Sc.AGGREGATES:
        assert torch.equal(one["sf"][agg], full["sf"][agg][:1])


def test_population_maps_match_decoy_enhanced(S):
    # the chapter's one-pass maps reduce to exactly what DecoyEnhanced computes (gradient: deterministic)
    model = E.load_model(S.main_model)
    x = E.load_images(S, 2).images
    target = E.predicted(model, x)
    pops = Sc.population(S, S.main_model, S.layer(S.main_model), "blur", 2, x)
    maps = Sc.population_maps(model, x, target, "gradient", S, pops)
    assert [m.shape[0] for m in maps] == [1 + len(p) for p in pops]
    ours = torch.stack([aggregate_maps(m, "range") for m in maps])
    ref = E.enhanced_maps(model, x, target, "gradient", S, pops)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    # the original's map comes first
    torch.testing.assert_close(torch.stack([m[0] for m in maps]), E.base_maps(model, x, target, "gradient", S),
                               rtol=1e-4, atol=1e-6)


def test_global_rng_and_model_untouched(S):
    model = E.load_model(S.main_model)
    flags = [m.training for m in model.modules()]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    x = E.load_images(S, 1).images
    Sc.population_maps(model, x, E.predicted(model, x), "smoothgrad", S, None, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert flags == [m.training for m in model.modules()]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_layer_sweep_uses_the_main_masks(S):
    layers = ["features.conv1_1", S.layer(S.main_model)]
    ldf = La.layer_scores(S, layers=layers)
    n = La.layer_sweep_size(S)
    assert n == 2
    assert len(ldf) == len(E.METHODS) * (1 + len(layers)) * n
    other = Sc.decoy_population(S, S.main_model, "features.conv1_1", n)
    main = Sc.decoy_population(S, S.main_model, S.layer(S.main_model), n)
    # same mask family at both layers: only the preserved representation differs
    key = lambda d: sorted(tuple(m.flatten().nonzero().flatten().tolist()) for m in d.masks)
    assert key(other[0]) == key(main[0])
    assert all((d.deviation <= d.epsilon).all() for d in other)
    s = La.layer_spread(ldf, "gradient")
    assert s["k"] == len(layers) and s["n"] == n


def test_architectures_and_bad_input(S):
    adf = Ar.architecture_scores(S, methods=["gradient"])
    assert set(adf.model) == set(S.architectures)
    assert len(adf) == len(S.architectures) * 2 * S.n_small
    with pytest.raises(ValueError, match="method"):
        Sc.scores(S, S.main_model, S.layer(S.main_model), "occlusion", "none", 2)
    with pytest.raises(ValueError, match="kind"):
        Sc.scores(S, S.main_model, S.layer(S.main_model), "gradient", "gan", 2)
    with pytest.raises(ValueError, match="n must"):
        Sc.scores(S, S.main_model, S.layer(S.main_model), "gradient", "none", 0)


def test_control_combinations(S, fid):
    cdf = C.control_scores(S, methods=["gradient"])
    combos = cdf[["population", "aggregate"]].drop_duplicates()
    assert len(combos) == 1 + len(C.CONTROL_KINDS) * len(Sc.AGGREGATES)
    vs = C.versus_reference(cdf[cdf.population != "none"])
    assert len(vs) == len(C.CONTROL_KINDS) * len(Sc.AGGREGATES) - 1
    # the control reuses the fidelity chapter's decoy scores
    a = cdf[(cdf.population == "decoys") & (cdf["aggregate"] == "range")].sf.to_numpy()
    b = fid[(fid.method == "gradient") & (fid.population == "decoys")].sf.to_numpy()
    np.testing.assert_array_equal(a, b)


def test_compare_and_layer_spread_by_hand():
    # two layers, three images: layer b = layer a + 1 for every image
    a = np.array([0.0, 2.0, 4.0])
    df = pd.DataFrame({"method": "gradient", "population": "decoys", "image": np.tile(np.arange(3), 2),
                       "layer": ["a"] * 3 + ["b"] * 3, "sf": np.concatenate([a, a + 1])})
    d = F.compare(df, {"layer": "b"}, {"layer": "a"}).iloc[0]
    assert d["mean_diff"] == pytest.approx(1.0) and d["frac_positive"] == 1.0
    s = La.layer_spread(df, "gradient", n_boot=50)
    assert s["range_means"] == pytest.approx(1.0)
    assert s["between_sd"] == pytest.approx(2.0)          # sd of (0, 2, 4)
    assert s["ratio"] == pytest.approx(0.5)
    assert s["within_sd"] == pytest.approx(np.std([0, 1], ddof=1))
    assert np.isnan(s["friedman_p"])                        # Friedman needs three layers
    df3 = pd.concat([df, df[df.layer == "b"].assign(layer="c", sf=a + 5)])
    s3 = La.layer_spread(df3, "gradient", n_boot=50)
    assert s3["kendall_w"] == pytest.approx(1.0)            # every image ranks a < b < c
    t = La.LAYER_RATIO_THRESHOLD
    assert La.layer_insensitive({"ratio_ci_low": 0.1 * t, "ratio_ci_high": 0.9 * t}) is True
    assert La.layer_insensitive({"ratio_ci_low": 1.1 * t, "ratio_ci_high": 3 * t}) is False
    assert La.layer_insensitive({"ratio_ci_low": 0.5 * t, "ratio_ci_high": 2 * t}) is None


def test_claims_structure(S, monkeypatch):
    monkeypatch.setattr(La.zoo, "layers", lambda name: ["features.conv1_1", S.layer(S.main_model)])
    out = F.claims(S) + La.claims(S) + Ar.claims(S) + C.claims(S)
    assert all(isinstance(c, Cl.Claim) and c.paper_claim in Cl.PAPER_CLAIMS for c in out)
    assert {c.chapter for c in out} == {"fidelity.md", "layers.md", "architectures.md", "control.md"}
    for c in out:
        assert c.supports in (True, False, None)
        if c.chapter != "layers.md":  # t-intervals contain their mean; bootstrap ones need not
            assert c.ci_low <= c.value <= c.ci_high


def test_decoy_summary_is_what_the_chapters_computed_from_the_decoys(S, fid):
    """The stored summary (layers and fidelity chapters) equals the numbers taken from the decoys themselves."""
    from dance_book.experiments import scores

    layer = S.layer(S.main_model)
    pops = scores.decoy_population(S, S.main_model, layer, 2)
    got = scores.decoy_summary(S, S.main_model, layer, 2)
    np.testing.assert_array_equal(got["count"], [len(d) for d in pops])
    np.testing.assert_array_equal(got["dropped"], [d.dropped for d in pops])
    for d, move in zip(pops, got["move"]):
        inside = (d.images - d.original).abs().sum(dim=(1, 2, 3)) / (d.masks.sum(dim=(1, 2, 3)) * d.images.shape[1])
        assert move == pytest.approx(float(inside.mean()), rel=1e-6)
        assert move > 0


def test_decoy_family_sensitivity_has_one_patch_masks_and_equal_populations(S):
    one = F.family_scores(S, "gradient", "one patch")
    lattice = F.family_scores(S, "gradient", "lattice")
    patch = S.decoys.patch_size
    assert one["mask_pixels"] == patch * patch and lattice["mask_pixels"] > patch * patch   # one patch per mask
    assert one["n_masks"] == lattice["n_masks"] > 1                                         # subsampled to match
    for r in (one, lattice):
        assert r["solver"] == F.FAMILY_SOLVER and r["sf_none"].shape == r["sf_decoys"].shape == (S.n_fidelity,)
        assert (r["n_decoys"] + r["dropped"] == 2 * r["n_masks"]).all()                   # 2M decoys per image
    np.testing.assert_allclose(one["sf_none"], lattice["sf_none"], rtol=1e-5)             # the same raw maps
    table = F.family_table(S, methods=("gradient",))
    assert list(table.family) == list(F.FAMILIES) and {"hl", "hl_low", "hl_high", "maps"} <= set(table.columns)
    rows = F.family_claims(S)
    assert len(rows) == len(F.FAMILIES) * len(E.METHODS) and not any(r.counts for r in rows)
    assert all(r.interval == "hodges-lehmann" and "line search" in r.claim for r in rows)
    kind = F.family_scores(S, "gradient", "lattice", layer=F.PAPER_KIND_LAYER[S.main_model])   # post-ReLU, pre-pool
    assert kind["n_masks"] == lattice["n_masks"] and kind["mask_pixels"] == lattice["mask_pixels"]   # the same masks
    assert (kind["n_decoys"] + kind["dropped"] == 2 * kind["n_masks"]).all()
    np.testing.assert_allclose(kind["sf_none"], lattice["sf_none"], rtol=1e-5)
    with pytest.raises(ValueError, match="family"):
        F.family_scores(S, "gradient", "two patches")
    with pytest.raises(ValueError, match="method"):
        F.family_scores(S, "saliency", "lattice")


def test_powered_size_follows_the_power_rule_up_to_the_budget(monkeypatch):
    monkeypatch.setattr(F, "POWERED_SCALES", ("ci",))  # the book's (the module's fixture clears it)
    ci = E.settings("ci")
    for claim, m in (("fidelity", 3), ("replacement", 6)):  # Holm over 3 methods, and over 3 methods x 2 fills
        assert F.powered_measures(ci, claim) == m
        needed = Pw.n_needed(1.0, Pw.DECLARATIONS[claim].effect_dz, alpha=Pw.ALPHA / m)
        size = F.powered_size(ci, claim)
        assert size["needed"] == needed and size["powered"] and not size["binds"]
        assert size["n"] == max(ci.n_fidelity, needed) and size["n"] > ci.n_fidelity
    assert F.powered_size(ci, "replacement")["n"] > F.powered_size(ci)["n"]  # more measures, a stricter level
    # the architectures claim: 3 methods on each model, and never below the chapter's own n_small
    arch = F.powered_size(ci, "architectures")
    assert F.powered_measures(ci, "architectures") == 3 * len(ci.architectures)
    assert arch["needed"] == Pw.n_needed(1.0, Pw.DECLARATIONS["architectures"].effect_dz, alpha=Pw.ALPHA / 9)
    assert arch["n"] == arch["needed"] > ci.n_small
    # a budget below the rule's N caps it (and says so), but never below the main run's N
    monkeypatch.setitem(F.POWERED_BUDGET_S, "fidelity", F.POWERED_COST_PER_IMAGE_S["fidelity"] * (ci.n_fidelity + 10))
    size = F.powered_size(ci)
    assert size["binds"] and size["n"] == ci.n_fidelity + 10 < size["needed"]
    monkeypatch.setitem(F.POWERED_BUDGET_S, "fidelity", 1.0)
    assert F.powered_size(ci)["n"] == ci.n_fidelity
    # other scales and the paper-scale smoke run: their own n_fidelity, no powered run
    for s in (E.settings("paper"), dataclasses.replace(ci, extra={"smoke": True})):
        assert F.powered_size(s)["n"] == s.n_fidelity and not F.powered_size(s)["powered"]
    with pytest.raises(ValueError, match="claim"):
        F.powered_size(ci, "attacks")


def test_powered_rule_states_the_size_it_chose(monkeypatch):
    monkeypatch.setattr(F, "POWERED_SCALES", ("ci",))
    ci = E.settings("ci")
    for claim in ("fidelity", "architectures", "control"):
        size = F.powered_size(ci, claim)
        text = F.powered_rule(ci, claim)
        assert text.startswith(f"N = {size['n']} images") and f"the rule asks for {size['needed']}" in text
        assert f"α/{F.powered_measures(ci, claim)} " in text and text.endswith("does not bind)")
    assert "per model" in F.powered_rule(ci, "architectures") and "per model" not in F.powered_rule(ci)
    monkeypatch.setitem(F.POWERED_BUDGET_S, "fidelity", F.POWERED_COST_PER_IMAGE_S["fidelity"] * (ci.n_fidelity + 10))
    assert F.powered_rule(ci).endswith("so it binds)")


def test_the_powered_runs_give_the_counted_rows(S, monkeypatch):
    """With powered runs (here 3 images, the settings' 2 being their pilot), the counted fidelity and
    replacement rows are the powered runs' paired differences and the main run's rows are context."""
    monkeypatch.setattr(F, "POWERED_SCALES", ("ci",))
    monkeypatch.setattr(F, "POWERED_COST_PER_IMAGE_S", {"fidelity": 1.0, "replacement": 1.0, "architectures": 1.0})
    monkeypatch.setattr(F, "POWERED_BUDGET_S", {"fidelity": 3.0, "replacement": 3.0, "architectures": 3.0})
    assert F.powered_size(S)["n"] == F.powered_size(S, "replacement")["n"] == 3
    main = F.fidelity_scores(S)
    rows = [c for c in F.claims(S) if "decoy family" not in c.claim]
    for claim, a, others in (("fidelity", "decoys", ["none"]), ("replacement", F.EQUAL_SIZE_DECOYS, F.REPLACEMENTS)):
        powered = F.powered_scores(S, claim)
        assert set(powered.population) == set(F.POWERED_KINDS[claim]) and sorted(powered.image.unique()) == [0, 1, 2]
        # the pilot's images are the main run's: the same S_F on the first 2
        for kind in F.POWERED_KINDS[claim]:
            x = powered[(powered.population == kind) & (powered.image < 2)].sort_values(["method", "image"]).sf
            y = main[main.population == kind].sort_values(["method", "image"]).sf
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-5, atol=1e-6)
        counted = [c for c in rows if c.paper_claim == claim and c.counts]
        assert len(counted) == 3 * len(others) and all(c.n == 3 and "powered run" in c.measure for c in counted)
        expected = [F.compare(powered[powered.method == m], {"population": a}, {"population": b}).iloc[0]
                    for m in E.METHODS for b in others]
        got = np.array(sorted((c.value, c.ci_low, c.ci_high) for c in counted), dtype=float)
        want = np.array(sorted((d["hl"], d["hl_low"], d["hl_high"]) for d in expected), dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-9)  # at N = 3 the rank interval is [-inf, inf]
        pilot = [c for c in rows if c.paper_claim == claim and not c.counts and "pilot" in c.claim]
        assert len(pilot) == 3 * len(others) and all(c.n == 2 for c in pilot)
    # the architectures claim: every model's own mask family at the powered N counts (the main lattice for the
    # main model, own_family_powered for the others); the main lattice forced onto the others and the chapter's
    # own N = n_small are context
    arch = Ar.claims(S)
    counted = [c for c in arch if c.counts]
    assert len(counted) == 3 * len(S.architectures) and all(c.n == 3 and "powered run" in c.measure for c in counted)
    others = [m for m in S.architectures if m != S.main_model]
    assert all(("own lattice" in c.measure) == any(m in c.claim for m in others) for c in counted)
    own = Ar.own_family_powered(S)
    assert sorted(own.model.unique()) == sorted(others) and (own.masks <= own.masks_own).all()
    shown = Ar.own_family_powered_display(own)
    assert len(shown) == len(own) and list(shown.model) == list(own.model)
    assert all(f"{r.hl:+.2f}" in cell for r, cell in zip(own.itertuples(), shown["S_F decoys − raw, HL [95 % CI]"]))
    pw = F.powered_scores(S, "architectures")
    for r in own.itertuples():
        c = next(c for c in counted if r.model in c.claim and c.claim.startswith(E.METHODS[r.method] + ":"))
        assert (c.value, c.ci_low, c.ci_high) == pytest.approx((r.hl, r.hl_low, r.hl_high), nan_ok=True)
        got = F.family_scores(S, r.method, F.OWN_LATTICE, 3, model_name=r.model, masks=int(r.masks), solver="adam")
        if r.method != "smoothgrad":  # (SmoothGrad's raw map draws its noise with the population's, not alone)
            # the same images as the main-lattice powered run: the raw maps' S_F agree image by image
            raw = pw[(pw.model == r.model) & (pw.method == r.method) & (pw.population == "none")].sort_values("image")
            np.testing.assert_allclose(got["sf_none"], raw.sf.to_numpy(), rtol=1e-5, atol=1e-6, err_msg=r.method)
        assert got["solver"] == "adam" and (got["n_decoys"] <= 2 * r.masks).all()
    forced = [c for c in arch if not c.counts and "main layer's lattice" in c.claim]
    assert len(forced) == 3 * len(others) and all(c.n == 3 for c in forced)
    assert all(c.n == S.n_small for c in arch if not c.counts and "pilot" in c.claim)
    assert len([c for c in arch if not c.counts and "pilot" in c.claim]) == 3 * len(S.architectures)
    # the own-lattice sensitivity rows of every other model are context too
    assert len([c for c in arch if "decoy family" in c.claim and not c.counts]) == 3 * (len(S.architectures) - 1)
    with pytest.raises(ValueError, match="solver"):
        F.family_scores(S, "gradient", F.OWN_LATTICE, 2, solver="sgd")


def test_budgeted_n_plans_from_the_pilot_up_to_the_budget():
    size = Pw.budgeted_n(8239, pilot_n=8, budget_s=1800.0, cost_per_image_s=24.0, powered=True)
    assert size == dict(n=75, needed=8239, affordable=75, binds=True, powered=True, estimate_s=1800.0)
    # a rule below the budget: its N, not bound; never below the pilot's N
    assert Pw.budgeted_n(40, 8, 1800.0, 24.0, True)["n"] == 40 and not Pw.budgeted_n(40, 8, 1800.0, 24.0, True)["binds"]
    assert Pw.budgeted_n(3, 8, 1800.0, 24.0, True)["n"] == 8
    assert Pw.budgeted_n(100, 8, 10.0, 24.0, True)["n"] == 8  # a budget below one image: the pilot
    # no powered run on this scale, or nothing planned: the pilot's N
    assert Pw.budgeted_n(8239, 8, 1800.0, 24.0, False) == dict(n=8, needed=8239, affordable=75, binds=False,
                                                               powered=False, estimate_s=192.0)
    assert Pw.budgeted_n(None, 8, 1800.0, 24.0, True)["n"] == 8
    with pytest.raises(ValueError, match="budget_s"):
        Pw.budgeted_n(10, 8, 0.0, 24.0, True)
    with pytest.raises(TypeError, match="pilot_n"):
        Pw.budgeted_n(10, 8.0, 1800.0, 24.0, True)


def test_the_layer_claims_powered_run_gives_the_counted_rows(S, monkeypatch):
    """With a powered run (here 3 images; the sweep's 2 are its pilot), the counted layer rows are the powered run's
    equivalence rows, the sweep's are context, and N follows the claims page's plan for the pilot, capped by the
    budget."""
    layers = ["features.conv1_1", S.layer(S.main_model)]
    monkeypatch.setattr(La.zoo, "layers", lambda name: list(layers))
    pilot_rows = La.claims(S)  # no powered run on the fixture's settings
    assert all(r.counts == (r.test == "equivalence") for r in pilot_rows) and all(r.n == 2 for r in pilot_rows)
    monkeypatch.setattr(La, "POWERED_SCALES", ("ci",))
    monkeypatch.setattr(La, "POWERED_COST_PER_IMAGE_S", 1.0)
    monkeypatch.setattr(La, "POWERED_BUDGET_S", 3.0)
    size = La.powered_size(S)
    assert size["needed"] == Cl.planned_n(pilot_rows) and size["n"] == 3 and size["powered"]
    assert size["binds"] == (size["needed"] > 3)
    assert La.powered_rule(S).startswith(f"N = 3 images (the rule asks for {size['needed']}")
    rows = La.claims(S)
    counted = [r for r in rows if r.counts]
    assert len(counted) == len(E.METHODS) * (len(layers) - 1)
    assert all(r.n == 3 and "powered run" in r.claim and r.test == "equivalence" for r in counted)
    # the counted rows: each layer on its own mask family against the main layer on its own, equal mask counts
    assert all("own mask family" in r.claim and "own mask lattice" in r.measure for r in counted)
    own = La.own_family_layers(S)
    assert len(own) == len(counted) and (own.masks == np.minimum(own.masks_own, own.masks_main)).all()
    shown = La.own_family_layers_display(own)
    assert list(shown.index) == [name.rsplit(".", 1)[-1] for name in own.layer.unique()]
    assert list(shown.columns) == ["masks", "cover"] + [E.METHODS[m] for m in own.method.unique()]
    np.testing.assert_allclose(sorted(r.value for r in counted), sorted(own.hl), rtol=1e-9)
    for r in own.itertuples():
        at, ref = (F.family_scores(S, r.method, F.OWN_LATTICE, 3, layer=where, masks=int(r.masks), solver="adam")
                   for where in (r.layer, S.layer(S.main_model)))
        assert (at["n_decoys"] <= 2 * r.masks).all() and (ref["n_decoys"] <= 2 * r.masks).all()
        assert r.hl == pytest.approx(F.paired_difference(at["sf_decoys"], ref["sf_decoys"], robust=True)["hl"])
        assert r.margin == pytest.approx(La.LAYER_MARGIN_FRACTION * abs(
            F.paired_difference(ref["sf_decoys"], ref["sf_none"], robust=True)["hl"]))
        if r.method != "smoothgrad":  # the same images: the raw maps agree (SmoothGrad's draw their noise with each population)
            np.testing.assert_allclose(at["sf_none"], ref["sf_none"], rtol=1e-5, atol=1e-6)
    # the main layer's lattice forced onto each layer (the powered sweep) is context
    powered = La.powered_layer_scores(S)
    forced = [r for r in rows if not r.counts and "main layer's lattice" in r.claim and r.test == "equivalence"]
    want = pd.concat([La.layer_equivalence(powered, m, S.layer(S.main_model)) for m in E.METHODS])
    assert len(forced) == len(want) and all(r.n == 3 for r in forced)
    np.testing.assert_allclose(sorted(r.value for r in forced), sorted(want.hl), rtol=1e-9)
    context = [r for r in rows if not r.counts and "pilot of the powered run" in r.claim]
    assert len(context) == len(pilot_rows) and all(r.n == 2 for r in context)
    # the pilot's images are the powered run's first ones
    ldf = La.layer_scores(S)
    first = powered[powered.image < 2].sort_values(["layer", "method", "population", "image"]).sf.to_numpy()
    np.testing.assert_allclose(first, ldf.sort_values(["layer", "method", "population", "image"]).sf.to_numpy(),
                               rtol=1e-5, atol=1e-6)
    # the paper-scale smoke run has no powered run
    assert not La.powered_size(dataclasses.replace(S, extra={**S.extra, "smoke": True}))["powered"]


def test_own_lattice_sensitivity_matches_population_sizes(S):
    """Each other layer or architecture with its own default lattice against the main layer's lattice forced onto
    it: both subsampled to the smaller family's number of masks, so both populations have 2M + 1 maps per image."""
    targets = [("resnet-shapes", S.layer("resnet-shapes"), 2), (S.main_model, "features.conv3_1", 2)]
    table = F.own_family_table(S, targets=targets, methods=["gradient"])
    assert len(table) == 2 and set(table.model) == {"resnet-shapes", S.main_model}
    for r in table.itertuples():
        assert r.masks == min(r.masks_own, r.masks_main) and r.n == 2
        own = F.family_scores(S, "gradient", F.OWN_LATTICE, 2, layer=r.layer, model_name=r.model, masks=r.masks)
        lattice = F.family_scores(S, "gradient", "lattice", 2, layer=r.layer, model_name=r.model, masks=r.masks)
        # equal populations: at most M masks x 2 directions + the image, in both families (none dropped here)
        assert (own["n_decoys"] <= 2 * r.masks).all() and (lattice["n_decoys"] <= 2 * r.masks).all()
        np.testing.assert_array_equal(own["n_decoys"] + own["dropped"], lattice["n_decoys"] + lattice["dropped"])
        # the same raw maps: only the decoys differ
        np.testing.assert_allclose(own["sf_none"], lattice["sf_none"], rtol=1e-6)
    shown = F.own_family_display(table[table.model != S.main_model], by="model")
    assert list(shown.index) == ["resnet-shapes"] and list(shown.columns) == ["masks (own → used)", "covered (own / main)",
                                                                              E.METHODS["gradient"]]
    with pytest.raises(ValueError, match="by"):
        F.own_family_display(table, by="method")
    # the main layer's own lattice is the main lattice: the run leaves it out
    assert all(layer != S.layer(S.main_model) or model != S.main_model
               for model, layer, _ in F.own_family_targets(S))
    with pytest.raises(ValueError, match="masks"):
        F.family_scores(S, "gradient", F.OWN_LATTICE, 2, masks=0)
    with pytest.raises(ValueError, match="family"):
        F.family_scores(S, "gradient", "own")


def test_maps_per_image_counts_the_image_with_its_decoys():
    assert Sc.maps_per_image(np.array([32, 32])) == "33"
    # two populations of the same images (the own family's and the main layer's): one span over both
    assert Sc.maps_per_image(np.array([32, 30]), np.array([26, 32])) == "27–33"


def test_own_family_coverage_splits_the_readings_by_coverage():
    """The layers chapter's coverage paragraph, on a hand-made table: counts per coverage group and the side of
    the different rows."""
    table = pd.DataFrame(dict(layer=["a", "a", "b", "c"], cover=[1.0, 1.0, 0.15, 0.04], masks=[4, 4, 16, 16],
                              masks_own=[4, 4, 100, 484], equivalent=[True, None, False, False], hl=[0.0, 0.1, 0.9, 1.3]))
    text = La.own_family_coverage(table)
    assert text.startswith("At the 1 layers whose own family keeps the whole image covered")
    assert "1 of 2 pairs are equivalent and 0 different" in text
    assert "at the 2 deeper layers, whose many small masks cut to 16 cover 4% to 15% of the image" in text
    assert "0 of 2 are equivalent and 2 different, all with higher S_F than at the main layer" in text
    assert text.endswith("up to 484 masks per image.")
    mixed = table.assign(hl=[0.0, 0.1, 0.9, -1.3])
    assert "2 different, in both directions" in La.own_family_coverage(mixed)
    assert La.own_family_coverage(table[table.cover == 1.0]) == "Every layer's own family covers the whole image."
