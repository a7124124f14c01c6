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
        R.yeh_differences(run, "infidelity")


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
    correct = {d: {t: rng.random(500) < 0.95 for t in R.TRAININGS} for d in R.DATASETS}
    monkeypatch.setattr(R, "accuracy_run", lambda settings=None: correct)
    rows = R.claims(None)
    keys = {r.paper_claim for r in rows}
    assert keys == {"scaat", "yeh"} and keys <= set(Cl.PAPER_CLAIMS) and keys <= set(Pw.DECLARATIONS)
    assert sum(r.paper_claim == "yeh" for r in rows) == 4
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
