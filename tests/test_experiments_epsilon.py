"""The epsilon sweep (dance_book.experiments.epsilon): the paper-matched selection rule, the derived settings,
the sample size and the sweep's structure on a tiny configuration. No paper claim is checked here."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from torch import nn

import dance_book.experiments as E
from dance_book.experiments import claims as Cl
from dance_book.experiments import epsilon as Ep

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load


# ---------------------------------------------------------------------------------------------
# The selection rule (pure)
# ---------------------------------------------------------------------------------------------

def test_select_epsilon_is_closest_on_a_log_scale():
    # 0.003 is 2x the target on a log scale below 0.012 (2x above): a tie, which goes to the larger epsilon
    assert Ep.select_epsilon({0.001: 0.003, 0.01: 0.012}, target=0.006) == 0.01
    # on a linear scale 0.003 (distance 0.003) would beat 0.0125 (0.0065); on a log scale 0.0125 is closer
    assert Ep.select_epsilon({0.001: 0.0025, 0.01: 0.0125}, target=0.006) == 0.01
    assert Ep.select_epsilon({0.001: 0.0031, 0.01: 0.0125}, target=0.006) == 0.001
    # the default target is the paper's first-pool drift
    assert Ep.PAPER_DRIFT == 0.006
    assert Ep.select_epsilon({0.003: 0.0061, 0.01: 0.02, 0.1: 0.17}) == 0.003


def test_select_epsilon_skips_unusable_drifts_and_keeps_its_input():
    drifts = {0.001: float("nan"), 0.003: 0.0, 0.1: 0.2}
    before = dict(drifts)
    assert Ep.select_epsilon(drifts) == 0.1
    assert set(drifts) == set(before) and drifts[0.1] == before[0.1] and math.isnan(drifts[0.001])


@pytest.mark.parametrize("bad, error, match", [
    ({}, TypeError, "drifts"), ([0.1, 0.2], TypeError, "drifts"),
    ({0.1: float("nan")}, ValueError, "positive finite drift")])
def test_select_epsilon_rejects_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        Ep.select_epsilon(bad)


def test_select_epsilon_rejects_a_bad_target():
    with pytest.raises(ValueError, match="target"):
        Ep.select_epsilon({0.1: 0.2}, target=0)


# ---------------------------------------------------------------------------------------------
# Settings, epsilons, N
# ---------------------------------------------------------------------------------------------

def test_epsilon_settings_derive_without_changing_the_default():
    S = E.CI
    before = repr(S)
    s = Ep.epsilon_settings(S, 0.01, 16)
    assert repr(S) == before and S.decoys.epsilon == 0.1 and S.n_fidelity == 50
    assert s.decoys.epsilon == 0.01 and s.n_fidelity == 16 and repr(s) != before
    assert dataclasses.replace(s.decoys, epsilon=0.1) == S.decoys  # only epsilon moved among the decoy settings
    for bad in (0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="epsilon"):
            Ep.epsilon_settings(S, bad, 16)


def test_sweep_epsilons_hold_the_declared_ones_the_books_and_the_matched_one():
    assert Ep.sweep_epsilons(E.CI, 0.003) == (0.003, 0.01, 0.03, 0.1)
    assert Ep.sweep_epsilons(E.CI, 0.01) == (0.01, 0.03, 0.1)   # a matched value of the sweep is not repeated


def test_the_sweep_and_the_pilot_read_the_module_constants_when_called(monkeypatch):
    """SWEEP and PILOT_GRID are read at call time, not bound as default arguments at import."""
    assert Ep.pilot.__defaults__ == (None, None) and Ep.sweep_epsilons.__defaults__ == (None,)
    monkeypatch.setattr(Ep, "SWEEP", (0.2,))
    assert Ep.sweep_epsilons(E.CI, 0.003) == (0.003, 0.1, 0.2)
    assert Ep.sweep_epsilons(E.CI, 0.003, sweep=(0.05,)) == (0.003, 0.05, 0.1)   # an explicit sweep still wins
    seen = {}
    monkeypatch.setattr(Ep, "cached", lambda name, config, compute: seen.setdefault(name, config))
    monkeypatch.setattr(Ep, "PILOT_GRID", (0.02, 0.2))
    assert Ep.pilot(E.CI)["grid"] == (0.02, 0.2)
    seen.clear()
    assert Ep.pilot(E.CI, grid=[0.5])["grid"] == (0.5,)


def test_sample_size_is_the_power_rule_capped_by_the_budget():
    size = Ep.sample_size(E.CI)
    assert size["needed"] > size["n"] and size["binds"]      # the CI budget binds: underpowered
    assert size["n"] == int(Ep.BUDGET_S["ci"] // (Ep.COST_PER_IMAGE["ci"] * Ep.NEW_EPSILONS))
    paper = Ep.sample_size(E.PAPER)
    assert paper["n"] == min(paper["needed"], E.PAPER.n_fidelity)


def test_first_pool_is_the_first_pooling_layer():
    assert Ep.first_pool(E.load_model("vgg-shapes")) == "features.pool1"
    with pytest.raises(ValueError, match="pooling"):
        Ep.first_pool(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)))


# ---------------------------------------------------------------------------------------------
# The sweep's structure, on a tiny configuration
# ---------------------------------------------------------------------------------------------

N = 2


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """Two images, cheap base methods, 8 x 8 patches (few decoys) and 20 Adam steps per decoy round (as the shared
    ``tiny`` of conftest.py: the structure holds at any step budget), a private cache, a grid of two epsilons and
    one pilot image."""
    monkeypatch.setenv("DANCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DANCE_RESULTS", "off")
    monkeypatch.setattr(Ep, "SWEEP", (0.1,))
    monkeypatch.setattr(Ep, "PILOT_GRID", (0.05, 0.1))
    monkeypatch.setattr(Ep, "PILOT_IMAGES", {"tiny": 1})
    return dataclasses.replace(E.CI, scale="tiny", n_fidelity=N, n_small=N, smoothgrad_samples=2, ig_steps=2,
                               decoys=dataclasses.replace(E.CI.decoys, patch_size=8), extra={**E.CI.extra, "adam_steps": 20})


def test_sweep_structure_and_context_rows(tiny, monkeypatch):
    found = Ep.pilot(tiny)
    assert found["layer"] == "features.pool1" and found["offset"] == N and found["n"] == 1
    assert set(found["drifts"]) == {0.05, 0.1} and found["matched"] == Ep.select_epsilon(found["drifts"])
    assert list(found["table"].image.unique()) == [N]            # the pilot image is not a sweep image
    result = Ep.epsilon_sweep(tiny, n=N)
    eps = result["epsilons"]
    assert eps == tuple(sorted({0.1, found["matched"]})) and result["reference"] == 0.1
    t = result["table"]
    assert len(t) == len(eps) * len(E.METHODS) * N
    # the raw map does not depend on epsilon
    raw = t.pivot_table(index=["method", "image"], columns="epsilon", values="sf_none")
    assert (raw.nunique(axis=1) == 1).all()
    assert len(result["drift"]) == len(eps) * N and (result["drift"].drift > 0).all()
    s = Ep.summary(result)
    assert len(s) == len(eps) * len(E.METHODS)
    assert s.book.sum() == len(E.METHODS) and s.matched.sum() == len(E.METHODS)
    assert set(s.reading) <= set(Ep.READING.values())
    assert (s.ci_low <= s.mean_diff).all() and (s.mean_diff <= s.ci_high).all()
    holds = Ep.holds_at(s)
    assert set(holds) == set(E.METHODS)
    assert all(sorted(sum(h.values(), [])) == sorted(eps) for h in holds.values())
    # claims: context rows of the fidelity claim, none at the book's epsilon
    monkeypatch.setattr(Ep, "epsilon_sweep", lambda settings: result)
    rows = Ep.claims(tiny)
    assert len(rows) == (len(eps) - 1) * len(E.METHODS)
    assert all(not r.counts and r.paper_claim == "fidelity" and r.chapter == "hyperparameters.md" for r in rows)
    table = Cl.frame(rows)
    assert isinstance(table, pd.DataFrame) and len(table) == len(rows)


def test_epsilon_is_a_claims_module():
    assert "epsilon" in Cl.MODULES
