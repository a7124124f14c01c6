"""The paper-scale smoke run's reductions of the attacks and adaptive chapters (and that CI's runs stay as they are).

The smoke run (``PAPER_SMOKE``) must still run every study function, attack mode and method once, in few runs; CI
scale must run exactly the runs whose results are in the store. The run functions are replaced by recorders, so
nothing is computed.
"""
from __future__ import annotations

import pytest

from dance_book.experiments import adaptive as D
from dance_book.experiments import attacks as R
from dance_book.experiments.maps import METHODS
from dance_book.experiments.settings import CI, PAPER, PAPER_SMOKE


@pytest.fixture
def calls(monkeypatch):
    """Every call of the run functions, as (function, args, kwargs), with a stand-in result."""
    log = []

    def recorder(name):
        def record(*args, **kwargs):
            log.append((name, args[1:], kwargs))
            return {"n": 1}
        return record

    monkeypatch.setattr(R, "strong_run", recorder("strong_run"))
    monkeypatch.setattr(D, "adaptive_run", recorder("adaptive_run"))
    return log


def test_ci_and_paper_scale_run_every_kind_on_every_method(calls):
    for s in (CI, PAPER):
        assert D.study_methods(s) == tuple(METHODS)
        assert D.kind_plan(s) == (D.OTHER_KINDS, D.KIND_METHODS) == (("targeted", "mass_center"), ("gradient",))
        assert D.unrolled_methods(s) == D.UNROLLED_METHODS
        assert D.unroll_steps_sweep(s) == [1, 5, 10]
        assert D.adaptive_settings(s) == D.ADAPTIVE_SETTINGS[s.scale]
        assert R.strong_settings(s) == R.STRONG_SETTINGS[s.scale]
    # CI's runs, in the order that the store's entries were written
    assert list(R.strong_study(CI)) == [(k, m) for m in METHODS for k in ("topk", "targeted")]
    assert list(R.strong_context_study(CI)) == [("mass_center", m) for m in METHODS]
    assert list(D.adaptive_study(CI)) == list(METHODS)
    assert list(D.kind_study(CI)) == ["targeted", "mass_center"]
    assert {c[1][0] for c in calls if c[0] == "adaptive_run"} == set(METHODS)
    assert D.sample_sizes(CI)["gradient"]["n"] == 10 and D.kind_sample_sizes(CI) == {
        "gradient": D.choose_n(10, D.COST_PER_IMAGE["ci"]["gradient"], D.KIND_BUDGET_S, 2)}


def test_smoke_runs_each_study_once_on_one_image(calls):
    s = PAPER_SMOKE
    cfg = D.adaptive_settings(s)
    assert (cfg.n_min, cfg.n_max, cfg.iterations, cfg.eot_samples) == (1, 1, 1, 2)
    assert cfg.eot_methods == ("gradient",)  # the main run's method: EOT runs once
    assert {m: v["n"] for m, v in D.sample_sizes(s).items()} == {m: 1 for m in METHODS}
    assert R.strong_settings(s).n_max == 1 and R.strong_sample_sizes(s)["gradient"]["n"] == 1
    assert s.n_attack == 1 and CI.n_attack == 30 and PAPER.n_attack == 50  # the main attack runs' images
    assert list(D.adaptive_study(s)) == ["gradient"]
    assert list(D.kind_study(s)) == ["targeted"]
    assert calls[-1] == ("adaptive_run", ("smoothgrad", 1), {"kind": "targeted"})
    assert D.unrolled_methods(s) == ("gradient",) and D.unroll_steps_sweep(s) == [D.UNROLL_STEPS]
    strong, context = R.strong_study(s), R.strong_context_study(s)
    assert list(strong) == [("topk", "gradient"), ("targeted", "integrated_gradients")]
    assert list(context) == [("mass_center", "smoothgrad")]
    # the adaptive chapter reads the population size from this strong run
    assert ("topk", "gradient") in strong


def test_smoke_still_runs_every_method_kind_and_mode():
    s = PAPER_SMOKE
    pairs = R.study_pairs(s, tuple(METHODS), tuple(R.ATTACKS))
    assert {k for k, _ in pairs} == set(R.ATTACKS) and {m for _, m in pairs} == set(METHODS)
    strong = R.strong_pairs(s, tuple(METHODS), R.strong_settings(s).kinds) + R.strong_pairs(
        s, tuple(METHODS), R.strong_context_kinds(s), offset=len(R.strong_settings(s).kinds))
    assert {m for _, m in strong} == set(METHODS)
    assert {k for k, _ in strong} == {"topk", "targeted", "mass_center"}
    kinds, kind_methods = D.kind_plan(s)
    adaptive_methods = set(D.study_methods(s)) | set(kind_methods) | set(D.unrolled_methods(s))
    assert {"gradient", "smoothgrad"} <= adaptive_methods  # Integrated Gradients: the attacks chapter's runs
    assert set(D.adaptive_settings(s).eot_methods) <= set(D.study_methods(s))  # EOT runs in the main study
    assert set(D.unrolled_methods(s)) <= set(D.study_methods(s))  # the unrolled study reuses the main run
    assert kinds and set(kinds) <= set(D.OTHER_KINDS)


def test_strong_pairs_checks_its_offset():
    with pytest.raises(ValueError, match="offset"):
        R.strong_pairs(PAPER_SMOKE, ["gradient"], ["topk"], offset=-1)
    assert R.strong_pairs(PAPER_SMOKE, [], ["topk"]) == []


def test_kind_study_names_the_allowed_methods():
    with pytest.raises(ValueError, match="method must be one of"):
        D.kind_study(CI, method="smoothgrad")
    with pytest.raises(ValueError, match="method must be one of"):
        D.kind_study(PAPER_SMOKE, method="gradient")
