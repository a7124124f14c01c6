"""The claims chapter's counting rule (dance_book.experiments.claims), on hand-made measures.

The measures themselves come from the experiment modules and are tested there; here only the rule
that turns readings into a verdict, the grouping by paper claim and the checks on the rows.
"""
import sys
import types

import pandas as pd
import dataclasses

import pytest

from dance_book.experiments import claims as Cl


def row(paper_claim, supports, value=1.0, counts=True, claim="sub", ci=(0.5, 1.5), **kw):
    return Cl.Claim(paper_claim=paper_claim, claim=claim, chapter="x.md", measure=f"m{value}", value=value,
                    ci_low=ci[0], ci_high=ci[1], n=10, supports=supports, note="", counts=counts, **kw)


@pytest.fixture
def fake_module(monkeypatch):
    """A stand-in experiment module whose claims() returns the rows the test sets."""
    mod = types.ModuleType("dance_book.experiments._fake")
    mod.rows = []
    mod.claims = lambda settings: list(mod.rows)
    monkeypatch.setitem(sys.modules, "dance_book.experiments._fake", mod)
    return mod


def test_reading():
    assert Cl.reading(True) == "supports"
    assert Cl.reading(False) == "contradicts"
    assert Cl.reading(None) == "inconclusive"
    assert Cl.reading(float("nan")) == "inconclusive"  # what pandas makes of None in a bool column


@pytest.mark.parametrize("readings, expected", [
    (["supports"], "reproduced"),
    (["supports", "supports"], "reproduced"),
    (["supports", "inconclusive"], "partly reproduced"),
    (["contradicts", "supports"], "partly reproduced"),
    (["inconclusive", "contradicts"], "contradicted"),
    (["inconclusive"], "inconclusive (underpowered)"),
])
def test_verdict_rule(readings, expected):
    assert Cl.verdict(readings) == expected


@pytest.mark.parametrize("lo, hi, expected, at, out", [
    (-2.0, -0.5, "below", 0.0, True),
    (0.5, 2.0, "below", 0.0, False),
    (-0.5, 0.5, "below", 0.0, None),
    (0.5, 2.0, "above", 0.0, True),
    (-2.0, -0.5, "above", 0.0, False),
    (-0.5, 0.5, "above", 0.0, None),
    (0.3, 0.9, "below", 1.0, True),    # a ratio below 1
    (2.8, 4.5, "below", 1.0, False),
    (0.8, 1.2, "below", 1.0, None),
    (0.0, 1.0, "below", 0.0, None),    # touching the boundary is not excluding it
    (float("nan"), 1.0, "below", 0.0, None),
    (-1.0, float("inf"), "above", 0.0, None),
])
def test_direction(lo, hi, expected, at, out):
    assert Cl.direction(lo, hi, expected, at=at) is out


def test_direction_rejects_unknown_expectation():
    with pytest.raises(ValueError, match="expected"):
        Cl.direction(0.0, 1.0, "lower")


def test_verdict_needs_a_measure():
    with pytest.raises(ValueError, match="at least one measure"):
        Cl.verdict([])


def test_summary_groups_by_paper_claim_in_paper_order(fake_module):
    fake_module.rows = [row("attacks", True), row("fidelity", None, value=-0.3, ci=(-1.0, 0.4)),
                        row("fidelity", True), row("attacks", True),
                        row("runtime", False, value=4.9, ci=(4.0, 6.0), test="other", null=1.0),
                        row("runtime", True, value=0.3, counts=False, test="other", null=1.0)]
    table = Cl.collect(None, modules=["_fake"])
    assert table["counts"].tolist() == [True] * 5 + [False]
    s = Cl.summary(table).set_index("claim")
    keys = list(Cl.PAPER_CLAIMS)
    assert list(s.index) == [Cl.PAPER_CLAIMS[k][0] for k in keys if k in ("fidelity", "attacks", "runtime")]
    fid, att, run = (s.loc[Cl.PAPER_CLAIMS[k][0]] for k in ("fidelity", "attacks", "runtime"))
    assert (fid.measures, fid.supporting, fid.inconclusive, fid.verdict) == (2, 1, 1, "partly reproduced")
    assert (att.measures, att.supporting, att.verdict, att.why) == (2, 2, "reproduced", "")
    # the uncounted line-search row does not rescue the runtime claim
    assert (run.measures, run.contradicting, run.verdict) == (1, 1, "contradicted")
    assert "1 of 1 measures show the opposite effect" in run.why and "4.9 [4, 6]" in run.why
    assert "1 of 2 cannot tell" in fid.why and "-0.3 [-1, 0.4]" in fid.why


def test_why_prefers_an_example_with_a_real_interval(fake_module):
    fake_module.rows = [row("localization", None, value=0.0, ci=(0.0, 0.0)),
                        row("localization", None, value=0.01, ci=(-0.1, 0.12))]
    why = Cl.summary(Cl.collect(None, modules=["_fake"])).iloc[0].why
    assert "2 of 2 cannot tell" in why and "0.01 [-0.1, 0.12]" in why


def test_detail_marks_uncounted_rows(fake_module):
    fake_module.rows = [row("runtime", True, counts=False, test="other"), row("fidelity", True)]
    d = Cl.detail(Cl.collect(None, modules=["_fake"]))
    assert list(d["paper claim"]) == [Cl.PAPER_CLAIMS["fidelity"][0], Cl.PAPER_CLAIMS["runtime"][0]]
    assert list(d["reading"]) == ["supports", "supports (not counted)"]
    assert list(d["result"]) == ["1 [0.5, 1.5]"] * 2


def test_collect_rejects_bad_rows(fake_module):
    fake_module.rows = [row("no such claim", True)]
    with pytest.raises(ValueError, match="unknown paper claims"):
        Cl.collect(None, modules=["_fake"])
    bad = dataclasses.asdict(row("fidelity", True))  # a plain dict, not a Claim
    fake_module.rows = [bad]
    with pytest.raises(TypeError, match="Claim"):
        Cl.collect(None, modules=["_fake"])


def test_every_module_is_known():
    import importlib
    for name in Cl.MODULES:
        assert callable(importlib.import_module(f"dance_book.experiments.{name}").claims)
    assert isinstance(Cl.summary(pd.DataFrame(columns=["paper_claim"])), pd.DataFrame)
