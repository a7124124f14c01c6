"""Tiny runs of the attacks, sanity and localization experiments: shapes, invariants, caching.

The settings are the CI settings with 2 images and 8x8 patches (few decoys), and every result
goes to a fresh cache directory. Paper claims are not tested here; the chapters report them.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import dance_book.experiments as E
from dance_book.experiments import claims as Cl
from dance_book.experiments import localization as Lc
from dance_book.experiments import attacks as R
from dance_book.experiments import sanity as Sa
from dance.metrics.sanity import randomize_, parameter_layers

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load


@pytest.fixture(scope="module")
def study(tiny):
    return R.attack_study(tiny, methods=("gradient", "smoothgrad"))


def test_attack_runs_respect_the_attack_constraints(tiny, study):
    runs, table = study
    eps = R.attack_settings(tiny).epsilon
    assert len(table) == 2 * len(R.ATTACKS)
    for (kind, method), r in runs.items():
        assert r["n"] == 2 and r["k"] >= 1
        assert np.all(r["linf"] <= eps + 1e-6)          # inside the L_inf ball
        assert np.all(r["label_kept"])                  # the predicted class is kept
        for key in ("ss_raw", "ss_dance", "topk_raw", "topk_dance", "spearman_raw", "shift_dance"):
            assert r[key].shape == (2,)
        ok = r["success"]
        assert np.all(np.isfinite(r["ss_raw"][ok])) and np.all(r["ss_raw"][ok] >= 0)
        assert np.all((r["topk_raw"] >= 0) & (r["topk_raw"] <= 1))
        ex = r["examples"]
        assert ex["attacked"].shape == (2, 3, 64, 64)
        assert ex["raw"].shape == ex["dance"].shape == (2, 64, 64)
        assert float(ex["dance"].min()) >= 0 and float(ex["dance"].max()) <= 1


def test_attack_table_is_the_paired_difference_of_the_runs(study):
    runs, table = study
    for row in table.itertuples():
        r = runs[(row.attack, row.method)]
        assert row.diff_mean == pytest.approx(float(np.mean(r["ss_dance"] - r["ss_raw"])), rel=1e-6)
        assert row.diff_ci_low <= row.diff_mean <= row.diff_ci_high
    excess = R.excess_table(runs)
    assert len(excess) == 2 * 3  # three aimed attacks per method
    r, c = runs[("topk", "gradient")], runs[("random", "gradient")]
    row = excess[(excess.attack == "topk") & (excess.method == "gradient")].iloc[0]
    assert row.excess_raw == pytest.approx(float(np.mean(r["ss_raw"] - c["ss_raw"])), rel=1e-6)


def test_random_control_does_not_depend_on_the_method(study):
    runs, _ = study
    a, b = runs[("random", "gradient")], runs[("random", "smoothgrad")]
    assert torch.equal(a["examples"]["attacked"], b["examples"]["attacked"])


def test_attack_run_is_cached(tiny, study, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(R._attacks, "attack", boom)
    monkeypatch.setattr(R, "optimised_quietly", boom)
    r = R.attack_run(tiny, "topk", "gradient")
    assert np.array_equal(r["ss_raw"], study[0][("topk", "gradient")]["ss_raw"])


def test_bad_arguments_are_named(tiny):
    with pytest.raises(ValueError, match="kind"):
        R.attack_run(tiny, "nope", "gradient")
    with pytest.raises(ValueError, match="methods"):
        R.attack_run(tiny, "topk", "lrp")
    with pytest.raises(ValueError, match="n must be"):
        R.attack_run(tiny, "topk", "gradient", n=0)
    with pytest.raises(ValueError, match="kinds"):
        R.attack_study(tiny, kinds=("topk", "nope"))
    with pytest.raises(ValueError, match="top-k attack only"):
        R.attack_run(tiny, "targeted", "gradient", k_share=0.05)
    with pytest.raises(ValueError, match="k_share"):
        R.attack_run(tiny, "topk", "gradient", k_share=1.5)


def test_decoy_family_run_attacks_the_main_runs_images_with_populations_of_equal_size(tiny, study):
    runs, _ = study
    fam = R.family_attack_run(tiny)
    main = runs[R.FAMILY_ATTACK]
    # the main run's attacked images and raw maps: the families differ in the decoy-enhanced map only
    np.testing.assert_allclose(fam["ss_raw"], main["ss_raw"], rtol=1e-6, atol=1e-9)
    one, lattice = fam["one patch"], fam["lattice"]
    if one["dropped"].sum() == lattice["dropped"].sum() == 0:
        assert np.array_equal(one["n_decoys"], lattice["n_decoys"])  # 2M decoys each: equal populations
    assert one["mask_pixels"] < lattice["mask_pixels"]  # one patch per mask against a lattice of patches
    table = R.family_attack_table(fam)
    assert list(table.family) == ["one patch", "lattice"] and set(table.solver) == {"linesearch"}
    np.testing.assert_allclose(table.diff_mean, [np.mean(one["ss_dance"] - fam["ss_raw"]),
                                                 np.mean(lattice["ss_dance"] - fam["ss_raw"])])
    rows = R.family_claims(tiny)
    assert len(rows) == 2 and not any(c.counts for c in rows) and all("line search" in c.claim for c in rows)


def test_k_sweep_reuses_the_paper_k_and_attacks_the_declared_shares(tiny, study):
    ks = R.k_sweep(tiny, shares=(0.02, R.K_SHARES[-1]))
    assert list(ks.paper) == [False, True]
    assert list(ks.k) == [round(0.02 * 64 * 64), study[0][("topk", "gradient")]["k"]]
    paper = ks[ks.paper].iloc[0]
    r = study[0][("topk", "gradient")]  # the paper's share is the main run itself
    assert paper.ss_raw == pytest.approx(float(np.mean(r["ss_raw"])), rel=1e-9)
    assert (ks.diff_ci_low <= ks.diff_mean).all() and (ks.diff_mean <= ks.diff_ci_high).all()


def test_decoy_fingerprint_sees_exactly_the_layers_up_to_the_decoy_layer(tiny):
    model = E.load_model(tiny.main_model)
    layer = tiny.layer(tiny.main_model)
    top, bottom = parameter_layers(model)[0], parameter_layers(model)[-1]
    above, below = copy.deepcopy(model), copy.deepcopy(model)
    randomize_(dict(above.named_modules())[top], 1)
    randomize_(dict(below.named_modules())[bottom], 1)
    assert Sa._fingerprint(above, layer) == Sa._fingerprint(model, layer)
    assert Sa._fingerprint(below, layer) != Sa._fingerprint(model, layer)
    memo = Sa.DecoyMemo(tiny, layer)
    x = E.load_images(tiny, 1).images
    first = memo(model, x)
    assert memo(above, x) is first and memo.optimisations == 1
    memo(below, x)
    assert memo.optimisations == 2
    assert Sa.check_decoy_memo(tiny) == 0.0


def test_sanity_run_shapes_and_reuse(tiny, monkeypatch):
    # a fresh process memo: another module's sanity runs (same settings) would already hold the decoys
    monkeypatch.setattr(Sa, "_SANITY_MEMOS", {})
    raw = Sa.sanity_run(tiny, "gradient", 2, enhanced=False)
    enh = Sa.sanity_run(tiny, "gradient", 2, enhanced=True)
    model = E.load_model(tiny.main_model)
    steps = len(parameter_layers(model))
    for r in (raw, enh):
        assert r["layers"][0] == "original" and len(r["layers"]) == steps + 1
        assert r["ssim"].shape == r["spearman"].shape == (steps + 1, 2)
        assert np.allclose(r["ssim"][0], 1.0) and np.allclose(r["spearman"][0], 1.0)
        assert r["maps"].shape[:2] == (steps + 1, 2)
    assert raw["optimisations"] == 0
    # vgg-shapes: only randomising conv2_1 (the decoy layer) and conv1_1 changes the decoys
    assert enh["optimisations"] == 2
    _, frame = Sa.sanity_study(tiny, 2, ("gradient",))
    assert len(frame) == 2 * (steps + 1) * 2


def test_localization_run(tiny):
    run = Lc.localization_run(tiny)
    data = E.load_images(tiny, 2)
    b = data.boxes
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / (64 * 64)).numpy()
    # the whole-image box contains the object's box, so its IoU is the box's share of the image
    assert np.allclose(run["whole_image_iou"], area)
    for p in Lc.PROJECTIONS:
        for v in Lc.VARIANTS:
            for th in Lc.THRESHOLDS:
                iou = run["iou"][p][v][th]
                assert iou.shape == (2,) and np.all((iou >= 0) & (iou <= 1))
                assert np.all((run["area"][p][v][th] > 0) & (run["area"][p][v][th] <= 1))
    table = Lc.accuracy_table(run)
    assert list(table.index) == list(Lc.VARIANTS.values()) + ["Whole-image box"]
    assert table.iloc[:, 1:4].isin([0.0, 0.5, 1.0]).all().all()  # accuracies of 2 images
    cmp = Lc.comparisons(run, "unclipped")
    assert set(cmp.comparison) == {f"{Lc.VARIANTS[v]} - {Lc.VARIANTS[r]}" for v, r in Lc.COMPARISONS}
    with pytest.raises(ValueError, match="projection"):
        Lc.accuracy_table(run, "nope")


def test_localization_counts_only_populations_of_equal_size(tiny):
    """Issue 12: a range over 2M + 1 maps against one over M + 1 compares population size as well as the
    fill. The counted comparisons are one decoy per mask against the blurry decoys' M + 1 maps."""
    run = Lc.localization_run(tiny)
    decoys = E.shared_decoys(tiny, tiny.main_model, tiny.n_fidelity)
    assert np.array_equal(run["maps"]["decoys"], [1 + len(d) for d in decoys])  # the paper's 2M + 1
    assert np.array_equal(run["maps"]["decoys_m"], run["maps"]["blur"])       # M + 1 each
    assert np.all(run["maps"]["decoys_m"] < run["maps"]["decoys"])
    assert np.all(run["maps"]["gradient"] == 1)
    cmp = Lc.comparisons(run)
    for row in cmp[cmp.counted].itertuples():
        assert row.comparison in {f"{Lc.VARIANTS[v]} - Gradient" for v in ("decoys_m", "blur")}
    sizes = {v: Lc.maps_label(run["maps"][v]) for v in Lc.COUNTED}
    assert len(set(sizes.values())) == 1
    rows = Lc.claims(tiny)
    counted = [c for c in rows if c.counts]
    assert len(counted) == 2 * len(Lc.THRESHOLDS)
    assert not any("2M + 1" in c.claim for c in counted) and all("M + 1" in c.claim for c in counted)
    assert [c for c in rows if not c.counts] and all("2M + 1" in c.claim for c in rows if not c.counts)
    table = Lc.accuracy_table(run)
    assert table.loc[Lc.VARIANTS["decoys_m"], "maps per image"] == f"M + 1 = {sizes['decoys_m']}"


def test_claims_have_the_agreed_keys(tiny, monkeypatch):
    monkeypatch.setitem(Sa.SANITY_N, "ci", 2)
    monkeypatch.setitem(Sa.FLOOR_N_CAP, "ci", 2)
    # the strong-attack rows are checked for these keys in test_experiments_strong.py, on the runs that file
    # computes anyway; here R.claims only has to hand them on (a marked stand-in row)
    strong = dataclasses.replace(Lc.claims(tiny)[0], claim="strong stand-in")
    monkeypatch.setattr(R, "strong_claims", lambda settings: [strong] if settings is tiny else [])
    attack_rows = R.claims(tiny)
    assert attack_rows[-1] is strong and strong not in attack_rows[:-1]
    # localization: cached above; robustness: the tiny attack study for all methods and attacks
    for c in Lc.claims(tiny) + attack_rows[:-1] + Sa.claims(tiny):
        assert isinstance(c, Cl.Claim) and c.paper_claim in Cl.PAPER_CLAIMS
        assert c.supports in (True, False, None)
        assert isinstance(c.value, float)


def _study_table(ratios, ctrl_ratio=0.9, ci_high=-0.1):
    """A hand-made attack-study table: every aimed case with the given decoys/raw ratio."""
    import pandas as pd

    rows = []
    for kind in ("topk", "targeted", "mass_center", "random"):
        for method in E.METHODS:
            ratio = ctrl_ratio if kind == "random" else ratios[(kind, method)]
            rows.append(dict(attack=kind, method=method, success=1.0, dropped=0, ratio_mean=ratio,
                             diff_ci_high=ci_high if ratio < 1 else 0.2, ss_raw_mean=2.0 if kind != "random" else 1.0,
                             topk_raw=0.3, topk_dance=0.6))
    return pd.DataFrame(rows)


def test_attack_summary_reads_verdicts_and_the_control_from_the_table():
    import pandas as pd

    cases = [(k, m) for k in ("topk", "targeted", "mass_center") for m in E.METHODS]
    runs = {("topk", "gradient"): {"k": 7}}
    excess = pd.DataFrame([dict(attack=k, method=m, excess_raw=1.0, excess_dance=0.5, diff_ci_low=-0.3,
                                diff_ci_high=-0.1) for k, m in cases])
    same = R.summarize(runs, _study_table({c: 0.8 for c in cases}), excess)
    assert same.verdict == "all" and same.n_lower == same.n_cases == 9
    assert same.control_similar and same.rel_min == pytest.approx(0.8 / 0.9)
    assert same.strength_min == same.strength_max == 2.0 and same.k == 7
    assert same.excess_share_min == same.excess_share_max == 0.5 and same.n_excess_lower == 9
    # One case where decoys do not help, and reductions far from the control's
    mixed = {c: 0.3 for c in cases}
    mixed[("targeted", "smoothgrad")] = 1.2
    some = R.summarize(runs, _study_table(mixed), excess)
    assert some.verdict == "some" and some.n_lower == 8 and not some.control_similar
    none = R.summarize(runs, _study_table({c: 1.1 for c in cases}), excess)
    assert none.verdict == "none" and none.n_lower == 0


def test_the_localization_claims_powered_run_gives_the_counted_rows(tiny, monkeypatch):
    """With a powered run (here 3 images; the chapter's 2 are its pilot), the counted rows are the powered run's, the
    chapter's run is context, and N follows the claims page's plan for the pilot, capped by the budget."""
    pilot_rows = Lc.claims(tiny)  # the fixture clears the powered scales
    monkeypatch.setattr(Lc, "POWERED_SCALES", ("ci",))
    monkeypatch.setattr(Lc, "POWERED_COST_PER_IMAGE_S", 1.0)
    monkeypatch.setattr(Lc, "POWERED_BUDGET_S", 3.0)
    size = Lc.powered_size(tiny)
    assert size["needed"] == Cl.planned_n(pilot_rows) and size["powered"]
    assert size["needed"] > 3 and size["n"] == 3 and size["binds"]  # two images plan a large N; the budget buys 3
    assert size["n"] == 3 and Lc.powered_rule(tiny).startswith("N = 3 images")
    rows = Lc.claims(tiny)
    counted = [r for r in rows if r.counts]
    assert len(counted) == len([r for r in pilot_rows if r.counts]) and all(r.n == 3 and "powered run" in r.claim
                                                                              for r in counted)
    context = [r for r in rows if "pilot of the powered run" in r.claim]
    assert len(context) == len(pilot_rows) and not any(r.counts for r in context)
    run, pilot = Lc.powered_run(tiny), Lc.localization_run(tiny)
    # the pilot's images are the powered run's first ones
    for v in Lc.VARIANTS:
        np.testing.assert_allclose(run["mass"]["paper"][v][:2], pilot["mass"]["paper"][v], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n must"):
        Lc.localization_run(tiny, 0)
