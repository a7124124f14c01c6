"""Tiny runs of the attacks chapter's strong-attack study (issue 13): the declared strength, both
iterate selections from one walk, the evaluated SmoothGrad / IG budgets in the attack directions,
norm-matched controls, Yeh's smoothing at equal compute, the tables and the claims rows."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dance
from dance_book.experiments import attacks as R
from dance_book.experiments import claims as Cl
from dance_book.experiments.inputs import clean_decoys
from dance_book.experiments.stats import paired_difference

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load

STEPS = 3  # the tiny runs' steps (the declared CI strength is checked on the settings themselves)


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setitem(R.STRONG_SETTINGS, "ci", dataclasses.replace(R.STRONG_SETTINGS["ci"], iterations=STEPS,
                                                                     kinds=("topk",)))


@pytest.fixture
def recorded(monkeypatch):
    """The explainers the strong runs hand to attack_selections."""
    seen = []
    real = R._attacks.attack_selections

    def spy(*args, **kwargs):
        seen.append(kwargs["explain"])
        return real(*args, **kwargs)

    monkeypatch.setattr(R._attacks, "attack_selections", spy)
    return seen


def test_declared_strength_is_ghorbanis():
    cfg = R.STRONG_SETTINGS["ci"]
    assert cfg.iterations >= 100 and cfg.step_size <= cfg.epsilon / 10 + 1e-12
    assert cfg.epsilon == pytest.approx(8 / 255)
    assert set(cfg.kinds) >= {"topk", "targeted"} and "random" not in cfg.kinds
    assert dance.attacks.TARGET_MIN_SIDE >= 4 and dance.attacks.target_region(64, 64).sum() >= 16
    assert set(cfg.controls) == {"sign", "permute_all"}
    # the main run's stored configuration is untouched
    assert R.ATTACK_SETTINGS["ci"] == R.AttackSettings(iterations=5, attack_smoothgrad_samples=4, attack_ig_steps=8)


def test_sample_sizes_follow_the_power_rule_and_the_cap(tiny):
    sizes = R.strong_sample_sizes(tiny)
    for method, s in sizes.items():
        assert s["needed"] == 90  # d_z = 0.3 at 80 % power
        assert 2 <= s["n"] <= tiny.n_attack and s["binds"]
    full = R.strong_sample_sizes(dataclasses.replace(tiny, n_attack=30))
    budget = R.STRONG_SETTINGS["ci"].budget_s
    for method, s in full.items():
        assert s["n"] == max(2, int(budget // R.STRONG_COST_PER_IMAGE["ci"][method]))


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients"])
def test_strong_run_uses_the_evaluated_budgets_and_measures_every_condition(tiny, small, recorded, method):
    run = R.strong_run(tiny, "topk", method)
    n = tiny.n_attack
    assert run["n"] == n and run["attack"]["iterations"] == STEPS
    options = recorded[0].keywords
    if method == "smoothgrad":
        assert options["n_samples"] == tiny.smoothgrad_samples and options["stdev"] == tiny.smoothgrad_std
    else:
        assert options["n_steps"] == tiny.ig_steps and options["method"] == "gausslegendre"
    assert run["yeh_samples"] == 1 + len(clean_decoys(tiny, 1)[0].images)
    eps = R.STRONG_SETTINGS["ci"].epsilon
    for cond in ("objective", "label", "sign", "permute_all"):
        r = run[cond]
        assert np.all(r["linf"] <= eps + 1e-6) and np.all(r["label_kept"])
        for m in R.STRONG_MAPS:
            for measure in R.STRONG_MEASURES:
                assert r[m][measure].shape == (n,)
            ok = np.isfinite(r[m]["ss"])
            assert np.allclose(r[m]["ss"][ok], r[m]["map_change"][ok] / r["l2"][ok], rtol=1e-4)
    # norm-matched: the controls have the label-selected attack's own L2 norm
    for control in ("sign", "permute_all"):
        assert np.allclose(run[control]["l2"], run["label"]["l2"], rtol=1e-4)
    # the label rule returns the last iterate here (a budget of 8/255 keeps these labels)
    assert np.all(run["label"]["iteration"] == STEPS)
    assert set(run["seconds"]) == {"attack", "controls", "decoys", "maps"}


def test_tables_are_the_paired_differences_of_the_runs(tiny, small):
    runs = R.strong_study(tiny, methods=("gradient",))
    assert list(runs) == [("topk", "gradient")]
    table = R.strong_table(runs)
    assert len(table) == 2 * len(R.STRONG_COMPARISONS)
    r = runs[("topk", "gradient")]
    for row in table.itertuples():
        _, a, b = next(c for c in R.STRONG_COMPARISONS if c[0] == row.comparison)
        d = paired_difference(r[row.selection][a]["ss"], r[row.selection][b]["ss"])
        assert row.diff_mean == pytest.approx(d["mean_diff"]) and row.diff_ci_low == pytest.approx(d["ci_low"])
        assert row.dE_a == pytest.approx(float(np.mean(r[row.selection][a]["map_change"])))
    costs = R.strong_costs(runs)
    assert costs["total (s)"].iloc[0] == pytest.approx(sum(r["seconds"].values()))
    assert costs["per image (s)"].iloc[0] == pytest.approx(sum(r["seconds"].values()) / r["n"])
    assert list(costs.attack) == [R.ATTACKS["topk"]] and list(costs.method) == [R.METHODS["gradient"]]
    controls = R.strong_controls(tiny, runs)
    assert list(controls["map"]) == ["raw", "dance"]
    corner = R.attack_run(tiny, "random", "gradient")
    assert controls.ss_corner.iloc[0] == pytest.approx(float(np.nanmean(corner["ss_raw"][:r["n"]])))
    row = controls.iloc[1]
    d = paired_difference(r["label"]["dance"]["ss"], r["sign"]["dance"]["ss"])
    assert row.diff_sign == pytest.approx(d["mean_diff"])


def test_claims_count_the_label_selection_of_the_decoys_only(tiny, small):
    rows = R.strong_claims(tiny)
    assert len(rows) == 3 * 2 * 2  # methods x selections x (decoys - raw, Yeh - raw)
    counted = [c for c in rows if c.counts]
    assert len(counted) == 3 and all("label" in c.measure and "decoys − raw" in c.measure for c in counted)
    assert all(c.paper_claim == "attacks" and c.chapter == "attacks.md" for c in rows)
    assert all("underpowered" in c.note for c in rows)
    # the agreed keys of every claim row (tests/test_experiments_robustness.py checks the other chapters' rows)
    for c in rows:
        assert isinstance(c, Cl.Claim) and c.paper_claim in Cl.PAPER_CLAIMS
        assert c.supports in (True, False, None) and isinstance(c.value, float)


def test_bad_arguments_are_named(tiny):
    with pytest.raises(ValueError, match="kind"):
        R.strong_run(tiny, "random", "gradient")
    with pytest.raises(ValueError, match="kind"):
        R.strong_run(tiny, "nope", "gradient")
    with pytest.raises(ValueError, match="method"):
        R.strong_run(tiny, "topk", "lrp")
    with pytest.raises(ValueError, match="n"):
        R.strong_run(tiny, "topk", "gradient", n=0)


def test_context_kinds_are_those_the_declared_study_does_not_run():
    from dance_book.experiments import settings

    ci = settings("ci")
    assert R.strong_context_kinds(ci) == ("mass_center",)
    assert not set(R.strong_context_kinds(ci)) & set(R.strong_settings(ci).kinds)  # the declared entries stay
    paper = settings("paper")
    assert R.strong_context_kinds(paper) == ()  # paper scale declares every kind
    assert R.strong_context_study(paper) == {}
