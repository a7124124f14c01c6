"""The pure functions of dance_book.experiments.adaptive (the "Attacking the defence" chapter):
the sample-size rule, the paired tables and the readings. The heavy runs are the chapter's; here
only hand-made per-image numbers (tiny n) go in."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from dance_book.experiments import adaptive as D

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load


def test_n_needed_is_the_smallest_n_with_the_declared_power():
    for effect in (0.5, 1.0, 1.5):
        n = D.n_needed(effect)

        def power(m):
            crit = stats.t.ppf(0.975, m - 1)
            nc = effect * np.sqrt(m)
            return stats.nct.sf(crit, m - 1, nc) + stats.nct.cdf(-crit, m - 1, nc)

        assert power(n) >= 0.8 > power(n - 1)
    assert D.n_needed(1.0) == 10 and D.n_needed(0.5) == 34  # the usual tables' values
    assert D.n_needed(1.0, power=0.9) > D.n_needed(1.0)
    assert D.n_needed(1.0, alpha=0.01) > D.n_needed(1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "1"])
def test_n_needed_refuses_a_non_positive_effect(bad):
    with pytest.raises(ValueError, match="effect"):
        D.n_needed(bad)


def test_n_needed_refuses_bad_power_and_alpha():
    with pytest.raises(ValueError, match="power"):
        D.n_needed(1.0, power=1.0)
    with pytest.raises(ValueError, match="alpha"):
        D.n_needed(1.0, alpha=0.0)
    with pytest.raises(ValueError, match="n_max"):
        D.n_needed(0.01, n_max=50)


def test_choose_n_caps_at_the_budget_and_says_when_it_binds():
    assert D.choose_n(10, 40.0, 150.0) == {"n": 3, "needed": 10, "affordable": 3, "binds": True}
    assert D.choose_n(10, 1.0, 100.0) == {"n": 10, "needed": 10, "affordable": 100, "binds": False}
    assert D.choose_n(10, 100.0, 50.0)["n"] == 2  # never below n_min
    assert D.choose_n(10, 1.0, 100.0, n_max=4) == {"n": 4, "needed": 10, "affordable": 4, "binds": True}
    with pytest.raises(ValueError, match="needed"):
        D.choose_n(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="cost_per_image"):
        D.choose_n(10, 0.0, 1.0)


def test_sample_sizes_follow_the_rule_for_every_method():
    from dance_book.experiments import settings

    ci = settings("ci")
    sizes = D.sample_sizes(ci)
    cfg = D.adaptive_settings(ci)
    needed = D.n_needed(cfg.smallest_effect, cfg.power, cfg.alpha)
    for method, s in sizes.items():
        assert s == D.choose_n(needed, D.COST_PER_IMAGE["ci"][method], cfg.budget_s[method], cfg.n_min, cfg.n_max)


def _run(n, shift, seed=0, skip=()):
    """A hand-made run: S_S of each condition = base + shift[condition] + noise, per image."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 2.0, n)
    run = {"n": n, "seconds": {c: 1.0 for c in D.CONDITIONS}}
    for cond in (c for c in D.CONDITIONS if c not in skip):
        ss = base + shift.get(cond, 0.0) + rng.normal(0, 0.01, n)
        run[cond] = {"ss": ss, "map_change": ss * 0.1, "topk": np.full(n, 0.5), "spearman": np.full(n, 0.9),
                     "shift": np.zeros(n), "label_kept": np.ones(n, bool)}
    return run


def test_difference_table_is_paired_and_leaves_its_input_alone():
    runs = {"gradient": _run(5, {"fixed_decoy": 0.5, "eot": 0.3, "raw": 2.0})}
    before = copy.deepcopy(runs)
    t = D.difference_table(runs).set_index(["a", "b"])
    row = t.loc[("fixed_decoy", "transfer")]
    assert row.n == 5
    assert row.difference == pytest.approx(0.5, abs=0.03)
    assert row.ci_low < row.difference < row.ci_high and row.ci_low > 0  # the noise is small, the shift is not
    assert t.loc[("fixed_decoy", "raw")].ci_high < 0
    np.testing.assert_array_equal(runs["gradient"]["raw"]["ss"], before["gradient"]["raw"]["ss"])
    with pytest.raises(ValueError, match="measure"):
        D.difference_table(runs, measure="S_S")


def test_difference_table_drops_non_finite_pairs():
    run = _run(4, {})
    run["transfer"]["ss"] = run["transfer"]["ss"].copy()
    run["transfer"]["ss"][0] = np.nan  # x_hat == x gives NaN
    t = D.difference_table({"gradient": run}).set_index(["a", "b"])
    assert t.loc[("fixed_decoy", "transfer")].n == 3
    assert t.loc[("fixed_decoy", "raw")].n == 4


def test_condition_table_has_a_row_per_method_and_condition():
    runs = {"gradient": _run(3, {}), "smoothgrad": _run(3, {}, seed=1)}
    t = D.condition_table(runs)
    assert len(t) == 2 * len(D.CONDITIONS)
    assert set(t.condition) == set(D.CONDITIONS)


def test_reading_and_verdict():
    assert D.reading(-2, -1, "below", False) == "supports"
    assert D.reading(1, 2, "below", True) == "contradicts"
    assert D.reading(-1, 1, "below", True) == "underpowered"
    assert D.reading(-1, 1, "below", False) == "inconclusive"
    assert D.reading(float("nan"), float("nan"), "below", False) == "inconclusive"
    assert D.verdict(["supports"] * 3) == "reproduced"
    assert D.verdict(["supports", "contradicts", "underpowered"]) == "partly reproduced"
    assert D.verdict(["contradicts", "underpowered"]) == "not reproduced"
    assert D.verdict(["inconclusive", "underpowered"]) == "underpowered"
    assert D.verdict(["inconclusive"]) == "inconclusive"
    with pytest.raises(ValueError, match="at least one"):
        D.verdict([])
    with pytest.raises(ValueError, match="readings"):
        D.verdict(["reproduced"])


def test_survival_picks_the_stronger_adaptive_attack_and_reads_it():
    runs = {"gradient": _run(6, {"fixed_decoy": 0.2, "eot": 0.4, "raw": 2.0}),
            "smoothgrad": _run(6, {"fixed_decoy": 3.0, "eot": 0.1, "raw": 1.0}, seed=1)}
    sizes = {"gradient": {"binds": False}, "smoothgrad": {"binds": True}}
    s = D.survival(runs, sizes).set_index("method")
    assert s.loc["gradient", "strongest attack"] == "eot"
    assert s.loc["gradient", "reading"] == "supports"  # DANCE under EOT still well below raw
    assert s.loc["smoothgrad", "strongest attack"] == "fixed_decoy"
    assert s.loc["smoothgrad", "reading"] == "contradicts"  # 3.0 above transfer, raw only 1.0 above
    assert s.loc["gradient", "adaptive − transfer"] == pytest.approx(0.4, abs=0.03)


def test_runs_without_eot_are_tabled_and_read_on_the_fixed_decoy_attack():
    runs = {"gradient": _run(4, {"eot": 1.0}), "smoothgrad": _run(4, {"fixed_decoy": 0.3}, skip=("eot",))}
    assert len(D.condition_table(runs)) == 2 * len(D.CONDITIONS) - 1
    d = D.difference_table(runs)
    assert not ((d.method == "smoothgrad") & (d.a == "eot")).any()
    assert ((d.method == "gradient") & (d.a == "eot")).sum() == 2
    s = D.survival(runs, {"gradient": {"binds": True}, "smoothgrad": {"binds": True}}).set_index("method")
    assert s.loc["smoothgrad", "strongest attack"] == "fixed_decoy"
    assert s.loc["gradient", "strongest attack"] == "eot"


def test_kind_sample_sizes_follow_the_rule_under_the_kinds_budget():
    from dance_book.experiments import settings

    sizes = D.kind_sample_sizes(settings("ci"))
    assert list(sizes) == list(D.KIND_METHODS)
    for m, s in sizes.items():
        assert s == D.choose_n(D.n_needed(1.0), D.COST_PER_IMAGE["ci"][m], D.KIND_BUDGET_S)


def test_other_kinds_run_every_condition_with_their_own_attack(tiny, monkeypatch):
    import dataclasses

    monkeypatch.setitem(D.ADAPTIVE_SETTINGS, "ci", dataclasses.replace(D.ADAPTIVE_SETTINGS["ci"], iterations=1))
    # the kinds' budget for N = n_min = 2 images (the main rule's N stays 10, so the run must still take the
    # kinds' N; the rule itself: test_kind_sample_sizes_follow_the_rule_under_the_kinds_budget)
    monkeypatch.setattr(D, "KIND_BUDGET_S", 2 * D.COST_PER_IMAGE["ci"]["gradient"])
    assert D.kind_sample_sizes(tiny)["gradient"]["n"] == 2 < D.sample_sizes(tiny, ["gradient"])["gradient"]["n"]
    seen = []
    real_attack, real_adaptive = D._attacks.attack, D._attacks.adaptive_attack
    first_call_only = []

    class FirstCall(Exception):
        pass

    def attack(*args, **kwargs):
        seen.append(("attack", kwargs["kind"]))
        if first_call_only:
            raise FirstCall  # the run's first attack and its kind are all that is checked
        return real_attack(*args, **kwargs)

    def adaptive(*args, **kwargs):
        seen.append((kwargs["mode"], kwargs["kind"]))
        return real_adaptive(*args, **kwargs)

    monkeypatch.setattr(D._attacks, "attack", attack)
    monkeypatch.setattr(D._attacks, "adaptive_attack", adaptive)
    runs = D.kind_study(tiny, kinds=("targeted",))
    assert list(runs) == ["targeted"]
    assert seen == [("attack", "targeted"), ("fixed_decoy", "targeted"), ("eot", "targeted")]
    run = runs["targeted"]
    assert run["attack"]["kind"] == "targeted" and run["n"] == D.kind_sample_sizes(tiny)["gradient"]["n"]
    for cond in ("raw", "transfer", "fixed_decoy", "eot", "sign", "permute_all"):
        assert run[cond]["ss"].shape == (run["n"],) and np.all(run[cond]["label_kept"])
    # the default kind keeps the top-k runs' configuration (and so their stored entries)
    seen.clear()
    first_call_only.append(True)
    with pytest.raises(FirstCall):
        D.adaptive_run(tiny, "gradient", 1, kind="topk")
    assert seen == [("attack", "topk")]


def test_other_kinds_bad_input(tiny):
    with pytest.raises(ValueError, match="kind"):
        D.adaptive_run(tiny, "gradient", 1, kind="random")
    with pytest.raises(ValueError, match="kinds"):
        D.kind_study(tiny, kinds=("nope",))
    with pytest.raises(ValueError, match="method"):
        D.kind_study(tiny, method="smoothgrad")


# ----------------------------------------------------------------------------------------------
# The through-the-solver attack (unrolled Adam steps)
# ----------------------------------------------------------------------------------------------

def test_unrolled_chunks_cover_the_runs_images_within_the_entry_budget():
    from dance_book.experiments import settings

    ci = settings("ci")
    for m in D.UNROLLED_METHODS:
        n = D.sample_sizes(ci, [m])[m]["n"]
        for k in (D.UNROLL_STEPS,) + tuple(D.UNROLL_STEPS_SWEEP):
            chunks = D.unrolled_chunks(ci, m, k)
            assert chunks[0][0] == 0 and chunks[-1][1] == n  # the same images as the method's run
            assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # contiguous, no overlap
            per_image = D.UNROLLED_COST_PER_IMAGE["ci"][m] * k / D.UNROLL_STEPS
            assert all((hi - lo) == 1 or (hi - lo) * per_image <= D.UNROLLED_BUDGET_S for lo, hi in chunks)


def test_unrolled_study_adds_the_unrolled_attack_on_the_same_images(tiny, monkeypatch):
    import dataclasses

    monkeypatch.setitem(D.ADAPTIVE_SETTINGS, "ci", dataclasses.replace(D.ADAPTIVE_SETTINGS["ci"], iterations=1))
    monkeypatch.setitem(D.COST_PER_IMAGE, "ci", dict(D.COST_PER_IMAGE["ci"], gradient=1e6))  # N = n_min = 2
    monkeypatch.setitem(D.UNROLLED_COST_PER_IMAGE, "ci", {"gradient": D.UNROLLED_BUDGET_S})  # chunks of 1
    seen = []
    real = D._attacks.adaptive_attack

    def adaptive(*args, **kwargs):
        seen.append((kwargs["mode"], kwargs.get("unroll_steps"), args[1].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(D._attacks, "adaptive_attack", adaptive)
    run = D.unrolled_study(tiny, "gradient", unroll_steps=2)
    n = run["n"]
    unrolled_calls = [s for s in seen if s[0] == "unrolled"]
    assert [s[1] for s in unrolled_calls] == [2] * len(unrolled_calls) and sum(s[2] for s in unrolled_calls) == n
    assert run["unrolled_parts"] == len(D.unrolled_chunks(tiny, "gradient", 2)) == len(unrolled_calls)
    for key in ("ss", "map_change", "topk", "label_kept", "linf"):
        assert run["unrolled"][key].shape == (n,)
    assert np.all(run["unrolled"]["label_kept"])
    table = D.difference_table({"gradient": run})
    assert {"unrolled − transfer", "unrolled − fixed-decoy"} <= set(table.comparison)
    # the chapter's own run is unchanged by the addition
    assert "unrolled" not in D.adaptive_run(tiny, "gradient")


def test_unrolled_run_bad_input(tiny):
    with pytest.raises(ValueError, match="method"):
        D.unrolled_run(tiny, "saliency", 0, 1)
    with pytest.raises(ValueError, match="lo, hi"):
        D.unrolled_run(tiny, "gradient", 1, 1)
    with pytest.raises(ValueError, match="unroll_steps"):
        D.unrolled_run(tiny, "gradient", 0, 1, unroll_steps=0)
