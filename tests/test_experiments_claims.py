"""The claims chapter's counting rule (dance_book.experiments.claims), on hand-made measures.

The measures themselves come from the experiment modules and are tested there; here only the rule
that turns readings into a verdict, the grouping by paper claim and the checks on the rows.
"""
import re
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


def test_rounded_keeps_the_digits_the_interval_supports():
    assert Cl.rounded(-0.3806, -1.4186, 0.6574) == "-0.4 [-1.4, 0.7]"   # half-width 1.04: one decimal
    assert Cl.rounded(-1.5191, -1.7398, -1.2983) == "-1.52 [-1.74, -1.30]"
    assert Cl.rounded(0.0, 0.0, 0.0) == "0 [0, 0]"      # no width: three significant digits
    assert Cl.rounded(4.931, None, None) == "4.93"      # no interval


def answer_table(fake_module):
    """Two chapters: x.md measures fidelity (one supports, one cannot tell) and shares the attacks
    claim with y.md; y.md's attacks measure cannot tell."""
    wide = (-2.0, 1.0)
    fake_module.rows = [
        row("fidelity", True, value=-1.0, ci=(-1.5, -0.5), claim="Gradient: better with decoys"),
        row("fidelity", None, value=-0.5, ci=wide, claim="SmoothGrad: better with decoys"),
        row("attacks", True, value=-1.2, ci=(-1.4, -1.0), claim="lower S_S"),
        dataclasses.replace(row("attacks", None, value=-0.4, ci=wide, claim="lower S_S, adaptive"), chapter="y.md"),
        row("runtime", True, value=0.3, ci=(0.2, 0.4), counts=False, test="other", null=1.0, claim="line search"),
        row("runtime", True, value=0.4, ci=(0.3, 0.5), test="other", null=1.0, claim="Adam"),
    ]
    return Cl.collect(None, modules=["_fake"])


def test_answer_gives_claim_n_effect_verdict_and_the_n_that_would_decide(fake_module):
    table = answer_table(fake_module)
    text = Cl.answer(table, "x.md")
    fid = table[(table.paper_claim == "fidelity") & (table.reading == "inconclusive")].iloc[0]
    assert not pd.isna(fid.n_needed)  # the synthetic table plans an N for the undecided measure
    blocks = text.split("\n\n**Claim**")
    # one block per paper claim, in the paper's order
    assert re.findall(r"\*\*Claim\*\* \([^)]*\): (.*?)\. \*\*Verdict", text) == [
        Cl.PAPER_CLAIMS[k][0] for k in ("fidelity", "attacks", "runtime")]
    assert len(blocks) == 3
    f = blocks[0]
    assert "**Verdict:** **partly reproduced**, on 2 counted measures" in f
    assert f"N = {int(fid.n_needed)} would decide its undecided measures" in f
    assert "Gradient: better with decoys: -1.00 [-1.50, -0.50], N = 10 (m-1.0): **supports**" in f
    assert f"SmoothGrad: better with decoys: -0.5 [-2.0, 1.0], N = 10 (m-0.5): **inconclusive**; " \
           f"N = {int(fid.n_needed)} would decide" in f
    # the attacks verdict counts y.md's measure too and says so, but lists only this chapter's
    a = blocks[1]
    assert "**partly reproduced**, on 2 counted measures (1 here, 1 in y.md)" in a
    assert "lower S\\_S: -1.2" in a and "adaptive" not in a
    # the uncounted measure is listed as context and does not enter the verdict
    r = blocks[2]
    assert "**reproduced**, on 1 counted measure." in r and "(context, not counted)" in r
    assert "would decide" not in r


def test_answer_of_the_other_chapter_and_a_custom_label(fake_module):
    table = answer_table(fake_module)
    text = Cl.answer(table, "y", label=lambda w: f"<{w}>")
    assert text.startswith(f"**Claim** ({Cl.PAPER_CLAIMS['attacks'][1]}): ")
    assert "**Verdict:** <partly reproduced>, on 2 counted measures (1 here, 1 in x.md)" in text
    assert "lower S\\_S, adaptive: -0.4 [-2.0, 1.0], N = 10 (m-0.4): <inconclusive>; N = " in text
    assert "Gradient" not in text


def test_answer_says_one_shared_sub_claim_once(fake_module):
    fake_module.rows = [row("c", True, value=0.1, ci=(0.05, 0.15), claim="c does not matter"),
                        row("c", True, value=0.2, ci=(0.1, 0.3), claim="c does not matter")]
    text = Cl.answer(Cl.collect(None, modules=["_fake"]), "x.md")
    assert text.count("c does not matter") == 1 and "Measured here: c does not matter." in text
    assert "\n* 0.100 [0.050, 0.150], N = 10 (m0.1): **supports**" in text


def test_answer_says_when_holm_took_a_reading_away(fake_module):
    # two measures of one claim, each excluding zero at 95 % (p about 0.04): Holm keeps neither
    fake_module.rows = [row("fidelity", True, value=-1.0, ci=(-1.95, -0.05), claim="a"),
                        row("fidelity", True, value=-1.0, ci=(-1.95, -0.05), claim="b")]
    table = Cl.collect(None, modules=["_fake"])
    assert list(table.reading) == ["inconclusive"] * 2
    text = Cl.answer(table, "x.md")
    assert text.count("**inconclusive** (supports at the 95 % level, not after Holm's correction); N = ") == 2


def test_answer_says_when_no_n_can_be_planned(fake_module):
    fake_module.rows = [row("localization", None, value=0.0, ci=(0.0, 0.0), claim="no image differs")]
    text = Cl.answer(Cl.collect(None, modules=["_fake"]), "x.md")
    assert "**inconclusive (underpowered)**, on 1 counted measure." in text
    assert "0 [0, 0], N = 10 (m0.0): **inconclusive**; no N can be planned from an interval without width" in text
    fake_module.rows = [row("layer", None, value=0.8, ci=(0.4, 2.4), test="other", claim="bootstrap ratio")]
    text = Cl.answer(Cl.collect(None, modules=["_fake"]), "x.md")
    assert "0.8 [0.4, 2.4], N = 10 (m0.8): **inconclusive**; no N is planned for this kind of interval" in text


def test_answer_rejects_a_chapter_without_measures(fake_module):
    table = answer_table(fake_module)
    before = table.copy()
    with pytest.raises(ValueError, match="no measure of chapter 'z.md'.*x.md"):
        Cl.answer(table, "z.md")
    with pytest.raises(TypeError, match="chapter"):
        Cl.answer(table, None)
    pd.testing.assert_frame_equal(table, before)  # the caller's table is not changed


def test_answer_summarises_a_claim_with_many_measures_and_lists_them_all_on_request(fake_module):
    """The layers chapter has 27 equivalence rows and 3 context rows: the box counts readings per
    sub-claim; the folded list (max_listed=None) has every row."""
    rows = []
    for method in ("Gradient", "SmoothGrad"):
        for i in range(8):   # 3 equivalent, 1 different, 4 undecided per method
            ci = (-0.1, 0.1) if i < 3 else (2.0, 3.0) if i == 3 else (-0.1, 2.0)
            rows.append(row("layer", {0: True, 1: True, 2: True, 3: False}.get(i), value=sum(ci) / 2, ci=ci,
                            claim=f"{method}: not sensitive", test="equivalence", margin=0.5))
        rows.append(row("layer", None, value=0.8, ci=(0.4, 2.4), test="other", counts=False,
                        claim=f"{method}: not sensitive"))
    fake_module.rows = rows
    table = Cl.collect(None, modules=["_fake"])
    before = table.copy()
    box = Cl.answer(table, "x.md")
    assert "* 16 counted measures here, read after Holm's correction: 6 equivalent (**supports**), " \
           "2 different (**contradicts**), 8 **inconclusive**" in box
    assert "  * Gradient: not sensitive: 3 equivalent (**supports**), 1 different (**contradicts**), 4 **inconclusive**" in box
    assert "* 2 context rows, not counted" in box and "folded list" in box
    assert "N = 10 (m" not in box                      # no measure is listed one by one
    full = Cl.answer(table, "x.md", max_listed=None)
    assert full.count("\n* ") == 18 and "folded list" not in full
    assert Cl.answer(table, "x.md", max_listed=18) == full
    pd.testing.assert_frame_equal(table, before)
    with pytest.raises(ValueError, match="max_listed"):
        Cl.answer(table, "x.md", max_listed=0)
