"""The remedies chapter's experiment code (``dance_book.experiments.remedies``) and the shipped remedy weights."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dance_book import zoo
from dance_book.experiments import claims as Cl
from dance_book.experiments import power as Pw
from dance_book.experiments import remedies as R
from dance_book.experiments.maps import METHODS


# ----------------------------------------------------------------------------- shipped weights

@pytest.mark.parametrize("name", list(R.DATASETS.values()))
@pytest.mark.parametrize("training", ["adversarial", "scaat"])
def test_shipped_remedy_weights_match_their_records_and_load(name, training):
    stem = zoo.weights_stem(name, training)
    rec = json.loads((zoo.WEIGHTS_DIR / f"{stem}.json").read_text())
    path = zoo.WEIGHTS_DIR / f"{stem}.pt"
    assert zoo.file_sha256(path) == rec["sha256"] and path.stat().st_size == rec["file_bytes"] <= 2_000_000
    assert rec["training"]["remedy"] == training and rec["training"]["seed"] == 0
    assert 0 < rec["heldout_accuracy"] <= 1 and rec["training"]["seconds"] > 0
    # a shorter run than the zoo's configuration says so, and its command retrains it
    if rec["training"]["epochs"] != zoo.ZOO[name]["epochs"]:
        assert "fewer" in rec["training"]["note"] and f"--epochs {rec['training']['epochs']}" in rec["command"]
    assert rec["command"].endswith(f"--training {training}")
    model = zoo.load(name, training=training)
    assert model.trained_with == training and not any(p.requires_grad for p in model.parameters())


def test_train_command_carries_overrides():
    assert zoo.train_command("vgg-shapes") == "python -m dance_book.zoo train vgg-shapes"
    assert (zoo.train_command("vgg-shapes", "scaat", epochs=4, n_train=2000, seed=None)
            == "python -m dance_book.zoo train vgg-shapes --epochs 4 --n-train 2000 --training scaat")


def test_train_checks_epsilon_and_init(tmp_path):
    with pytest.raises(ValueError, match="epsilon applies to training='adversarial'"):
        zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=8, training="scaat", epsilon=0.05)
    with pytest.raises(ValueError, match="epsilon must be"):
        zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=8, training="adversarial", epsilon=2.0)
    with pytest.raises(ValueError, match="init must be"):
        zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=8, training="scaat", init="imagenet")
    with pytest.raises(ValueError, match="fine-tunes the regular model"):
        zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=8, init="regular")
    assert not list(tmp_path.iterdir())  # nothing written


def test_train_fine_tunes_the_regular_weights_and_records_it(tmp_path):
    rec = zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=16, training="adversarial", epsilon=0.05,
                    init="regular", log=lambda s: None)
    regular = zoo.record("vgg-digits")
    assert rec["training"]["init"] == {"from": "regular", "weights": "vgg-digits.pt", "sha256": regular["sha256"]}
    assert rec["training"]["remedy_settings"]["epsilon"] == 0.05
    assert rec["training"]["remedy_settings"]["step_size"] == pytest.approx(0.025)
    assert rec["command"].endswith("--epsilon 0.05 --init regular --training adversarial")
    # one short epoch from the regular weights keeps most of the regular model's accuracy; from random weights it is
    # at chance
    assert rec["heldout_accuracy"] > 0.5


# ----------------------------------------------------------------------------- sample sizes

def test_sample_sizes_follow_the_power_rule_and_the_budget():
    sizes = R.sample_sizes()
    needed = Pw.n_needed(1.0, Pw.DECLARATIONS["yeh"].effect_dz, alpha=Pw.ALPHA / 4)
    assert sizes["yeh"]["needed"] == needed
    cfg = R.REMEDY_SETTINGS
    assert sizes["yeh"]["affordable"] == int(cfg.budget_s["yeh"] // R.COST_PER_IMAGE["yeh"])
    assert sizes["yeh"]["n"] == max(cfg.n_min, min(needed, sizes["yeh"]["affordable"]))
    assert sizes["yeh"]["binds"] == (sizes["yeh"]["n"] < needed)
    # the SCAAT claim has more measures, so Holm asks a stricter level and more images
    assert sizes["scaat-shapes"]["needed"] > needed


# ----------------------------------------------------------------------------- tables (synthetic runs)

def _scaat_run(rng, n=12, shift=-0.5):
    run = {"n": n, "seconds": {}}
    for training in ("regular", "scaat"):
        s = shift if training == "scaat" else 0.0
        run[training] = {m: {"entropy": 5 + s + 0.1 * rng.standard_normal(n), "size": 2 + s + 0.1 * rng.standard_normal(n),
                             "aopc_lerf": 0.01 + (0.005 * s) + 0.001 * rng.standard_normal(n),
                             "aopc_morf": 0.3 + 0.01 * rng.standard_normal(n)} for m in METHODS}
    return run


def test_scaat_differences_read_the_poster_direction():
    rng = np.random.default_rng(0)
    runs = {"shapes": _scaat_run(rng), "digits": _scaat_run(rng, shift=0.5)}
    d = R.scaat_differences(runs, n_boot=200)
    assert len(d) == len(runs) * len(METHODS) * len(R.SCAAT_MEASURES)
    direct = d[d.test == "direction"]
    assert direct[direct["data set"] == "shapes"].supports.eq(True).all()  # SCAAT lower: supports
    assert direct[direct["data set"] == "digits"].supports.eq(False).all()  # SCAAT higher: contradicts
    ratio = d[(d.test == "other") & (d["data set"] == "shapes")].iloc[0]
    # the lerf of SCAAT is lower with the same morf: its ratio is higher, and the ratio of ratios exceeds 1
    assert ratio["difference"] > 1 and ratio["supports"] == True and ratio["null"] == 1.0  # noqa: E712
    table = R.scaat_table(runs)
    assert table.shape == (len(runs) * len(R.SCAAT_MEASURES), 2 * len(METHODS))
    m = runs["shapes"]["regular"]["gradient"]
    assert table.loc[("shapes", R.SCAAT_MEASURES["aopc_lerf"][0]), ("Gradient", "Regular")] == pytest.approx(
        1000 * m["aopc_lerf"].mean())


def test_an_aopc_ratio_with_a_non_positive_lerf_is_not_read():
    rng = np.random.default_rng(3)
    run = _scaat_run(rng)
    for m in METHODS:  # removing the "least relevant" pixels raises the probability on average
        run["scaat"][m]["aopc_lerf"] = -0.01 + 0.001 * rng.standard_normal(run["n"])
    d = R.scaat_differences({"digits": run}, n_boot=100)
    ratio = d[d.measure == "aopc_rel"]
    assert (~ratio.defined).all() and ratio.supports.isna().all()
    assert d[d.measure != "aopc_rel"].defined.all()


def test_bootstrap_ratio_checks_its_arrays():
    r = R.bootstrap_ratio([4.0, 6.0], [1.0, 1.0], [2.0, 2.0], [1.0, 1.0], n_boot=50)
    assert (r["ratio_a"], r["ratio_b"], r["a_over_b"]) == (5.0, 2.0, 2.5) and r["ci_low"] <= 2.5 <= r["ci_high"]
    with pytest.raises(ValueError, match="one length"):
        R.bootstrap_ratio([1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 2.0])


def test_yeh_differences_and_table():
    rng = np.random.default_rng(1)
    n = 10
    run = {"n": n}
    for training, scale in (("regular", 1.0), ("adversarial", 0.5)):
        run[training] = {m: {"max": scale * (0.4 if m.endswith("_sg") else 0.9) + 0.01 * rng.standard_normal(n),
                             "mean": np.full(n, 0.5), "faithfulness": np.full(n, 0.7)} for m in R.YEH_METHODS}
    d = R.yeh_differences(run).set_index("comparison")
    assert (d["ci_high"] < 0).all() and d.loc["smoothing, Gradient", "difference"] == pytest.approx(
        run["regular"]["gradient_sg"]["max"].mean() - run["regular"]["gradient"]["max"].mean())
    assert R.yeh_table(run).loc["IG-SG", ("Adversarial (PGD)", "faithfulness")] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="measure must be"):
        R.yeh_differences(run, "fidelity")


def test_four_table_and_differences():
    n = 6
    run = {"n": n}
    for i, cond in enumerate(("raw", "dance", "scaat")):
        run[cond] = {k: np.full(n, 1.0 + i) + np.arange(n) * 0.01 for k in R.FOUR_MEASURES}
        run[cond]["seconds"] = 3.0 * (i + 1)
    run["dance"]["max_sens"] = np.full(n, np.nan)  # not measured for DANCE maps
    table = R.four_table(run, {"regular": 10.0, "scaat": 20.0})
    assert list(table.index) == [R.CONDITIONS[c][0] for c in ("raw", "dance", "scaat")]
    assert table["explanation s / image"].tolist() == [0.5, 1.0, 1.5] and table["training s"].tolist() == [10, 10, 20]
    assert np.isnan(table.loc[R.CONDITIONS["dance"][0], "max-sensitivity"])
    d = R.four_differences(run)
    assert set(d.condition) == {"dance", "scaat"} and "max-sensitivity" not in set(d[d.condition == "dance"].measure)
    row = d[(d.condition == "scaat") & (d.measure == "entropy (bits)")].iloc[0]
    assert row.difference == pytest.approx(2.0) and row.reading == "worse"
    with pytest.raises(ValueError, match="baseline must be"):
        R.four_differences(run, baseline="yeh")


def test_claims_rows_are_valid_claims(monkeypatch):
    rng = np.random.default_rng(2)
    monkeypatch.setattr(R, "scaat_run", lambda settings, dataset, n=None: _scaat_run(rng))
    n = 8
    yeh = {"n": n}
    for training in ("regular", "adversarial"):
        yeh[training] = {m: {"max": 0.5 + 0.05 * rng.standard_normal(n), "mean": np.zeros(n), "faithfulness": np.zeros(n)}
                         for m in R.YEH_METHODS}
    monkeypatch.setattr(R, "yeh_run", lambda settings, n=None: yeh)
    infid = {t: {"n": n, **{m: {"infidelity": (0.5 if m.endswith("_sg") else 1.0) + 0.01 * rng.standard_normal(n)}
                             for m in R.YEH_METHODS}} for t in ("regular", "adversarial")}
    monkeypatch.setattr(R, "infidelity_run", lambda settings, training, n=None: infid[training])
    correct = {d: {t: rng.random(500) < 0.95 for t in R.TRAININGS} for d in R.DATASETS}
    monkeypatch.setattr(R, "accuracy_run", lambda settings=None: correct)
    rows = R.claims(None)
    keys = {r.paper_claim for r in rows}
    assert keys == {"scaat", "yeh", "yeh-infidelity"} and keys <= set(Cl.PAPER_CLAIMS) and keys <= set(Pw.DECLARATIONS)
    assert sum(r.paper_claim == "yeh" for r in rows) == 4
    inf = {r.claim.split(" lowers")[0]: r for r in rows if r.paper_claim == "yeh-infidelity"}
    assert len(inf) == 2 and sum(r.paper_claim == "yeh-infidelity" for r in rows) == 4
    # smoothing halves the synthetic infidelity: the smoothing rows support the claim, adversarial training (the
    # same synthetic numbers for both models) does not
    smooth = [r for r in rows if r.paper_claim == "yeh-infidelity" and r.claim.startswith("smoothing")]
    assert all(r.supports is True and r.value == pytest.approx(-0.5, abs=0.05) for r in smooth)
    assert sum(r.test == "equivalence" for r in rows) == len(R.DATASETS)
    assert all(r.counts for r in rows)  # every AOPC_lerf mean of the synthetic runs is positive
    table = Cl.frame(rows)  # the claims page's own checks and readings
    assert set(table.reading) <= set(Cl.READINGS)


# ----------------------------------------------------------------------------- Captum cross-check (real model, cheap)

def test_max_sensitivity_matches_captum_on_the_same_points():
    out = R.captum_crosscheck(n=2, n_samples=3)
    assert out["book"] > 0 and out["max_abs_difference"] <= 1e-5 * max(1.0, out["captum"])


# ----------------------------------------------------------------------------- the runs, tiny (real models)

@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setenv("DANCE_CACHE", "off")


def test_runs_on_a_few_images(no_cache):
    from dataclasses import replace

    from dance_book.experiments.settings import CI

    cfg = replace(R.REMEDY_SETTINGS, yeh_samples=2, sens_samples=2, faith_subsets=10, dance_on_scaat=False)
    scaat = R.scaat_run(CI, "digits", n=3)
    assert scaat["n"] == 3 and set(scaat["regular"]) == set(METHODS)
    for measure in ("entropy", "size", "aopc_lerf", "aopc_morf"):
        assert scaat["scaat"]["gradient"][measure].shape == (3,)
    assert (scaat["regular"]["gradient"]["entropy"] <= 8).all()  # bits of an 8-bit histogram
    yeh = R.yeh_run(CI, n=2, cfg=cfg)
    for training in ("regular", "adversarial"):
        for method in R.YEH_METHODS:
            r = yeh[training][method]
            assert r["max"].shape == (2,) and (r["max"] >= r["mean"] - 1e-6).all() and (r["max"] <= 2 + 1e-6).all()
    four = R.four_run(CI, n=1, cfg=cfg)
    assert "dance_scaat" not in four and set(four) >= {"raw", "dance", "scaat", "adversarial", "yeh"}
    assert np.isnan(four["dance"]["max_sens"]).all() and np.isfinite(four["raw"]["max_sens"]).all()
    assert 0 <= four["dance"]["mass"][0] <= 1 and four["dance"]["example"].shape == four["image"].shape


def test_remedy_results_are_the_ci_stores_at_every_scale(monkeypatch):
    """The remedies' models are zoo models: at paper scale their results are read (and keyed) as at CI scale."""
    from dance_book.experiments import remedies as Rm
    seen = []
    monkeypatch.setenv("DANCE_SCALE", "paper")
    monkeypatch.setattr(Rm, "cached", lambda name, config, compute: seen.append((name, os.environ["DANCE_SCALE"])))
    Rm._cached_at_ci("remedies-scaat", {}, lambda: None)
    assert seen == [("remedies-scaat", "ci")]
    assert os.environ["DANCE_SCALE"] == "paper"  # restored afterwards


# ----------------------------------------------------------------------------- second round: infidelity, curve, attacks

def test_round_two_sizes_follow_the_power_rule_and_the_budget():
    sizes = R.round_two_sizes()
    ext = R.ROUND_TWO
    needed = Pw.n_needed(1.0, Pw.DECLARATIONS["yeh"].effect_dz, alpha=Pw.ALPHA / len(R.YEH_COMPARISONS))
    assert sizes["infidelity"]["needed"] == needed
    assert sizes["infidelity"]["n"] == max(R.REMEDY_SETTINGS.n_min, min(
        needed, int(ext.budget_s["infidelity"] // R.ROUND_TWO_COST["infidelity"])))
    # four remedies against the plain gradient, each on S_F and S_S under every attack: Holm over 16
    fam = (len(R.ATTACK_CONDITIONS) - 1) * (1 + len(ext.attack_kinds))
    assert fam == 16 and sizes["attack"]["needed"] == Pw.n_needed(1.0, Pw.DECLARATIONS["attacks"].effect_dz,
                                                                  alpha=Pw.ALPHA / fam)
    assert sizes["attack"]["binds"] == (sizes["attack"]["n"] < sizes["attack"]["needed"])
    assert sizes["dance_sens"]["n"] == ext.dance_sens_n and sizes["dance_sens"]["binds"]
    # the first round's settings, which key its stored results, are not touched by the second round
    assert "infid" not in repr(R.REMEDY_SETTINGS)


def test_noisy_baseline_is_the_papers_perturbation():
    import torch

    x = torch.rand(3, 1, 5, 5)
    i, x0 = R.noisy_baseline(0.2, torch.Generator().manual_seed(0))(x)
    assert torch.allclose(x - i, x0) and x0.min() >= 0 and x0.max() <= 1
    # a black image plus clipped noise: about half the pixels are exactly black (negative noise clipped)
    assert 0.3 < float((x0 == 0).float().mean()) < 0.7 and float(x0.max()) < 0.2 * 6
    j, y0 = R.noisy_baseline(0.2, torch.Generator().manual_seed(0))((x,))  # Captum's tuple form, same draws
    assert torch.equal(y0[0], x0) and torch.equal(j[0], i)
    with pytest.raises(ValueError, match="sigma must be"):
        R.noisy_baseline(0.0, torch.Generator())


def test_infidelity_is_zero_for_a_linear_models_gradient():
    """For a linear model the gradient predicts every perturbation's effect exactly: infidelity 0 (Captum's
    implementation, through the chapter's wrapper); a map unrelated to the model is unfaithful."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, t = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    grad = model[1].weight.detach()[t].view(4, 1, 4, 4)
    before = x.clone()
    exact = R.infidelity_of(model, x, t, grad)
    other = R.infidelity_of(model, x, t, torch.rand(4, 1, 4, 4))
    assert torch.equal(x, before) and exact.shape == (4,)
    assert float(exact.abs().max()) < 1e-6 and float(other.min()) > 1e-4
    # normalised: rescaling the map does not change infidelity
    assert torch.allclose(R.infidelity_of(model, x, t, 5.0 * grad), exact, atol=1e-6)
    with pytest.raises(ValueError, match="maps must have the inputs' shape"):
        R.infidelity_of(model, x, t, grad[:, 0])


def test_infidelity_differences_pair_the_comparisons():
    rng = np.random.default_rng(4)
    n = 9
    runs = {t: {m: {"infidelity": (0.2 if m.endswith("_sg") else 0.6) + 0.01 * rng.standard_normal(n)}
                for m in R.YEH_METHODS} for t in ("regular", "adversarial")}
    d = R.yeh_infidelity_differences(runs).set_index("comparison")
    assert d.loc["smoothing, Gradient", "difference"] == pytest.approx(
        float(np.mean(runs["regular"]["gradient_sg"]["infidelity"] - runs["regular"]["gradient"]["infidelity"])))
    assert d.loc["smoothing, IG", "ci_high"] < 0 and d.loc["adversarial training, IG", "ci_low"] < 0 < d.loc[
        "adversarial training, IG", "ci_high"]
    yeh = {t: {m: {"max": np.ones(n), "mean": np.ones(n), "faithfulness": np.ones(n)} for m in R.YEH_METHODS}
           for t in ("regular", "adversarial")}
    table = R.yeh_table(yeh, runs)
    assert table.loc["Gradient-SG", ("Regular", "infidelity")] == pytest.approx(
        float(np.mean(runs["regular"]["gradient_sg"]["infidelity"])))
    assert ("Regular", "infidelity") not in R.yeh_table(yeh).columns


def test_curve_table_reads_the_paired_accuracy():
    q = np.array([0.0, 0.5, 1.0])
    reg = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    sca = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    tab = R.curve_table({"q": q, "regular": {"correct": reg}, "scaat": {"correct": sca}, "n": 4}).set_index("q")
    assert tab.loc[0.5, "regular %"] == 25.0 and tab.loc[0.5, "SCAAT %"] == 75.0
    assert tab.loc[0.5, "difference"] == pytest.approx(50.0) and tab.loc[0.5, "n"] == 4
    assert tab.loc[0.0, "difference"] == 0.0


def test_remedy_attack_table_reads_each_remedy_against_the_plain_gradient():
    n = 8
    ramp = np.arange(n) * 0.01
    study = {"sf": {"raw": 1.0 + ramp, "dance": 0.5 + ramp, "yeh": 1.5 + ramp},
             "ss": {"topk": {"raw": 4.0 + ramp, "dance": 2.0 + ramp * 2, "yeh": 4.0 + ramp[::-1]}}}
    t = R.remedy_attack_table(study).set_index(["condition", "measure"])
    assert t.loc[("dance", "S_F"), "reading"] == "better" and t.loc[("yeh", "S_F"), "reading"] == "worse"
    assert t.loc[("dance", "S_S, Top-k"), "difference"] == pytest.approx(float(np.mean(-2.0 + ramp)))
    assert pd_isna(t.loc[("raw", "S_F"), "difference"]) and t.loc[("raw", "S_F"), "mean"] == pytest.approx(1.035)
    with pytest.raises(ValueError, match="baseline must be"):
        R.remedy_attack_table(study, baseline="scaat")


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_second_round_runs_on_a_few_images(no_cache):
    from dataclasses import replace

    import torch

    from dance_book.experiments.settings import CI

    ext = replace(R.ROUND_TWO, infid_samples=8, curve_q=(0.0, 1.0))
    inf = R.infidelity_run(CI, "adversarial", n=2, ext=ext)
    assert set(inf) >= set(R.YEH_METHODS) and all(inf[m]["infidelity"].shape == (2,) for m in R.YEH_METHODS)
    assert all((inf[m]["infidelity"] >= 0).all() for m in R.YEH_METHODS)
    with pytest.raises(ValueError, match="training must be 'regular' or 'adversarial'"):
        R.infidelity_run(CI, "scaat", n=2, ext=ext)
    curve = R.robustness_curve_run(CI, "digits", n=6, ext=ext)
    data = R.remedy_images(CI, "digits", 6)
    for training in ("regular", "scaat"):
        model = R.remedy_model("digits", training)
        with torch.no_grad():
            clean = (model(data.images).argmax(1) == data.labels).numpy()
        # q = 0 attacks no pixel: the clean accuracy; q = 1 is unrestricted PGD: never more correct than clean
        assert curve[training]["correct"].shape == (2, 6) and (curve[training]["correct"][0] == clean).all()
        assert curve[training]["correct"][1].sum() <= clean.sum()
    att = R.remedy_attack_run(CI, "scaat", "topk", n=2, ext=ext)
    assert att["scaat"]["ss"].shape == (2,) and (att["scaat"]["ss"] >= 0).all() and "raw" not in att
    clean_run = R.clean_remedy_run(CI, "scaat", n=2, ext=ext)
    assert clean_run["scaat"]["heat"].shape[0] == 2 and np.isfinite(clean_run["scaat"]["sf"]).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        R.remedy_attack_run(CI, "scaat", "bogus", n=2, ext=ext)
    cfg = replace(R.REMEDY_SETTINGS, sens_samples=2)
    ds = R.dance_sensitivity_run(CI, n=1, cfg=cfg, ext=ext)
    assert ds["max_sens"].shape == ds["raw_max_sens"].shape == (1,) and ds["seconds"] > 0
    assert 0 < ds["max_sens"][0] <= 2 + 1e-6 and 0 < ds["raw_max_sens"][0] <= 2 + 1e-6
