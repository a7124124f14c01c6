"""The five-valued verdict scale, Holm's correction, no-effect readings and the N that would decide.

Every expected number here can be checked by hand (or with a t table); the rows are constructed,
no experiment runs.
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dance_book.experiments import claims as Cl
from dance_book.experiments import power as Pw
from dance_book.notebook import LABEL_COLOURS


def interval_for_p(value, p, n):
    """The symmetric 95 % t-interval of a mean ``value`` over n pairs whose t-test of 0 has two-sided p."""
    se = abs(value) / stats.t.isf(p / 2, n - 1)
    half = stats.t.ppf(0.975, n - 1) * se
    return value - half, value + half


def row(paper_claim="fidelity", supports=True, value=1.0, ci=(0.5, 1.5), n=10, counts=True, **kw):
    return Cl.Claim(paper_claim=paper_claim, claim="sub", chapter="x.md", measure=f"m{value}", value=value,
                    ci_low=ci[0], ci_high=ci[1], n=n, supports=supports, note="", counts=counts, **kw)


# --- the verdict rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("readings, expected", [
    (["supports", "supports"], "reproduced"),
    (["supports", "inconclusive", "contradicts"], "partly reproduced"),
    (["supports", "no effect"], "partly reproduced"),
    (["contradicts", "inconclusive"], "contradicted"),
    (["contradicts", "no effect"], "contradicted"),
    (["no effect", "no effect"], "no effect"),
    (["no effect", "inconclusive"], "inconclusive (underpowered)"),
    (["inconclusive"], "inconclusive (underpowered)"),
])
def test_each_verdict(readings, expected):
    assert Cl.verdict(readings) == expected


def test_the_scale_has_five_values_and_each_a_colour_and_a_glue_key():
    assert Cl.VERDICTS == ("reproduced", "partly reproduced", "contradicted", "no effect",
                           "inconclusive (underpowered)")
    assert "not reproduced" not in Cl.VERDICTS
    assert set(Cl.VERDICT_KEYS) == set(Cl.VERDICTS)
    assert all(k.isidentifier() for k in Cl.VERDICT_KEYS.values())
    for word in Cl.VERDICTS + Cl.READINGS:
        assert word in LABEL_COLOURS, word
    # contradicted and inconclusive are told apart by colour too
    assert LABEL_COLOURS["contradicted"] != LABEL_COLOURS["inconclusive (underpowered)"]


def test_verdict_rejects_unknown_readings():
    with pytest.raises(ValueError, match="readings must be among"):
        Cl.verdict(["supports", "maybe"])


# --- readings -----------------------------------------------------------------------------------

def test_no_effect_reading_from_an_interval_inside_the_margin():
    assert Cl.reading(None, -0.1, 0.2, margin=0.3) == "no effect"
    assert Cl.reading(None, -0.1, 0.4, margin=0.3) == "inconclusive"   # sticks out above
    assert Cl.reading(None, 0.8, 1.1, margin=0.3, null=1.0) == "no effect"
    assert Cl.reading(None, -0.1, 0.2) == "inconclusive"                # no margin declared
    assert Cl.reading(None, 0.0, 0.0, margin=0.0) == "inconclusive"     # a zero margin decides nothing
    assert Cl.reading(True, -0.1, 0.2, margin=0.3) == "supports"        # a decided reading stays


def test_assess_reads_no_effect_against_the_declared_margin():
    # n = 400, a 95 % interval of half-width 0.05 about 0: sd = 0.05 / t_{0.975,399} * 20 = 0.5087;
    # margin = 0.3 sd = 0.1526, so [-0.05, 0.05] lies inside.
    t = Cl.frame([row(supports=None, value=0.0, ci=(-0.05, 0.05), n=400)]).iloc[0]
    assert t.sd == pytest.approx(0.05 / 1.96593 * 20, rel=1e-4)
    assert t.margin_used == pytest.approx(Pw.DECLARATIONS["fidelity"].margin_dz * t.sd)
    assert t.reading == "no effect"
    # the same interval at n = 10 has a much larger sd: sd = 0.05 / 2.2622 * sqrt(10) = 0.0699, margin 0.021
    t = Cl.frame([row(supports=None, value=0.0, ci=(-0.05, 0.05), n=10)]).iloc[0]
    assert t.margin_used == pytest.approx(0.3 * 0.05 / 2.262157 * math.sqrt(10), rel=1e-4)
    assert t.reading == "inconclusive"


def test_each_verdict_end_to_end_from_claim_rows():
    ok = dict(supports=True, value=1.0, ci=(0.5, 1.5))              # p = 0.0014 at n = 10
    bad = dict(supports=False, value=-1.0, ci=(-1.5, -0.5))
    flat = dict(supports=None, value=0.0, ci=(-0.05, 0.05), n=400)  # inside 0.3 sd
    wide = dict(supports=None, value=0.0, ci=(-1.0, 1.0))
    rows = ([row("fidelity", **ok), row("fidelity", **ok)]
            + [row("replacement", **ok), row("replacement", **wide)]
            + [row("attacks", **bad), row("attacks", **wide)]
            + [row("architectures", **flat), row("architectures", **flat)]
            + [row("localization", **flat), row("localization", **wide)])
    s = Cl.summary(Cl.frame(rows)).set_index("claim")["verdict"]
    assert [s[Cl.PAPER_CLAIMS[k][0]] for k in ("fidelity", "replacement", "attacks", "architectures",
                                                 "localization")] == list(Cl.VERDICTS)


# --- Holm ---------------------------------------------------------------------------------------

def test_holm_by_hand():
    # sorted 0.001, 0.02, 0.04 -> 3 * 0.001, 2 * 0.02, 1 * 0.04 = 0.003, 0.04, 0.04 (Bonferroni: 0.12 for the last)
    assert Pw.holm([0.04, 0.001, 0.02]) == pytest.approx([0.04, 0.003, 0.04])
    # the running maximum keeps the order: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, max(0.04, 0.06) = 0.06
    assert Pw.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert Pw.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])            # capped at 1
    out = Pw.holm([np.nan, 0.01, 0.04])                                # NaN does not count towards m
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    with pytest.raises(ValueError, match="pvalues"):
        Pw.holm([1.5])


def test_holm_applies_within_each_paper_claim_to_counted_direction_rows():
    # three supporting measures of one claim at 95 %, p = 0.001, 0.03, 0.04 -> Holm 0.003, 0.06, 0.06:
    # only the first keeps its support; the other two cannot tell after the correction.
    ps = [0.001, 0.03, 0.04]
    rows = [row("attacks", supports=True, value=1.0, ci=interval_for_p(1.0, p, 10)) for p in ps]
    # rows of another claim, an uncounted row and an "other" row are not in the family
    rows += [row("fidelity", supports=True, value=1.0, ci=interval_for_p(1.0, 0.03, 10)),
             row("attacks", supports=True, value=1.0, ci=interval_for_p(1.0, 0.0001, 10), counts=False),
             row("attacks", supports=True, value=0.3, ci=(0.1, 0.9), test="other")]
    t = Cl.frame(rows)
    assert t.p[:4].to_numpy() == pytest.approx(ps + [0.03], rel=1e-6)
    assert t.p_holm[:3].to_numpy() == pytest.approx([0.003, 0.06, 0.06], rel=1e-6)
    assert t.p_holm[3] == pytest.approx(0.03, rel=1e-6)   # alone in its family
    assert t.p_holm[4:].isna().all()
    assert list(t.reading_95) == ["supports"] * 6
    assert list(t.reading) == ["supports", "inconclusive", "inconclusive", "supports", "supports", "supports"]
    att = Cl.summary(t).set_index("claim").loc[Cl.PAPER_CLAIMS["attacks"][0]]
    assert att.verdict == "partly reproduced" and "2 of them decided at 95 % but not after Holm" in att.why


def test_p_and_sd_recovered_from_the_interval_match_scipy_on_data():
    rng = np.random.default_rng(0)
    d = rng.normal(0.4, 1.0, size=12)
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(0.95)
    assert Pw.p_from_interval(d.mean(), ci.low, ci.high, 12) == pytest.approx(res.pvalue, rel=1e-9)
    assert Pw.sd_from_interval(ci.low, ci.high, 12) == pytest.approx(d.std(ddof=1), rel=1e-9)
    # against a null of 1 (SSIM, ratios)
    res1 = stats.ttest_1samp(d, 1.0)
    assert Pw.p_from_interval(d.mean(), ci.low, ci.high, 12, null=1.0) == pytest.approx(res1.pvalue, rel=1e-9)
    # not a t-interval (not symmetric about the value): no p
    assert math.isnan(Pw.p_from_interval(0.3, 0.1, 0.9, 12))
    # no spread
    assert Pw.p_from_interval(0.0, 0.0, 0.0, 12) == 1.0 and Pw.p_from_interval(0.5, 0.5, 0.5, 12) == 0.0


def test_chance_counts_the_expected_false_supports():
    rows = [row("attacks"), row("attacks"), row("fidelity"), row("fidelity", counts=False),
            row("runtime", test="other")]
    c = Cl.chance(Cl.frame(rows))
    assert c["measures"] == 3 and c["claims"] == 2
    assert c["uncorrected"] == pytest.approx(3 * 0.025) and c["holm"] == pytest.approx(2 * 0.025)


# --- the N that would decide --------------------------------------------------------------------

def test_n_needed_against_a_hand_computation():
    # normal approximation: ((z_0.975 + z_0.8) / 0.5)^2 = ((1.95996 + 0.84162) / 0.5)^2 = 31.4 -> 32
    assert Pw.n_needed(1.0, 0.5, method="normal") == 32
    # exact two-sided paired t-test (noncentral t): 34 pairs, the textbook value for d_z = 0.5
    assert Pw.n_needed(1.0, 0.5) == 34
    assert Pw.t_power(34, 0.5) >= 0.8 > Pw.t_power(33, 0.5)
    # only d_z matters: sd 2 and effect 1 is d_z 0.5
    assert Pw.n_needed(2.0, 1.0) == 34 and Pw.n_needed(2.0, -1.0) == 34
    # a smaller alpha (Holm's alpha / m) asks for more: d_z 0.3 at 0.05 / 3
    z = stats.norm.ppf(1 - 0.05 / 6) + stats.norm.ppf(0.8)
    assert Pw.n_needed(1.0, 0.3, alpha=0.05 / 3, method="normal") == math.ceil((z / 0.3) ** 2)
    assert Pw.n_needed(0.0, 0.3) is None and Pw.n_needed(float("nan"), 0.3) is None


@pytest.mark.parametrize("dz, alpha, power", [(0.3, 0.05 / 21, 0.8), (1.0, 0.001, 0.8), (1.0, 0.001, 0.9),
                                              (2.5, 0.05 / 21, 0.5), (10.0, 0.05 / 21, 0.8), (0.05, 0.05, 0.8)])
def test_n_needed_is_the_smallest_n_with_the_power(dz, alpha, power):
    # The search (doubling, then bisection) returns what a scan up from n = 2 returns; the power is finite
    # where SciPy's nct.cdf of the lower tail is NaN (these cases), so no n is skipped.
    n = Pw.n_needed(1.0, dz, alpha=alpha, power=power)
    assert Pw.t_power(n, dz, alpha) >= power
    assert n == 2 or Pw.t_power(n - 1, dz, alpha) < power
    assert all(math.isfinite(Pw.t_power(k, dz, alpha)) for k in range(2, min(n + 5, 60)))
    assert Pw.n_needed(1.0, dz, alpha=alpha, power=power, n_max=n) == n
    assert Pw.n_needed(1.0, dz, alpha=alpha, power=power, n_max=n - 1) is None if n > 2 else True


def test_n_equivalence_is_the_smallest_n_inside_the_margin():
    def inside(n, margin):  # the docstring's probability that the t-interval lies inside +-margin
        return 2 * stats.norm.cdf(math.sqrt(n) * margin - stats.t.ppf(0.975, n - 1)) - 1
    for margin in (0.05, 0.3, 1.0, 3.0):
        n = Pw.n_equivalence(1.0, margin)
        assert inside(n, margin) >= 0.8 and (n == 2 or inside(n - 1, margin) < 0.8)
    assert Pw.n_equivalence(1.0, 0.01, n_max=100) is None and Pw.n_equivalence(0.0, 0.3) is None


def test_n_needed_rejects_bad_input():
    with pytest.raises(ValueError, match="effect"):
        Pw.n_needed(1.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        Pw.n_needed(1.0, 0.5, alpha=5)
    with pytest.raises(ValueError, match="method"):
        Pw.n_needed(1.0, 0.5, method="exact")
    with pytest.raises(TypeError, match="n must be an integer"):
        Pw.sd_from_interval(0.0, 1.0, 10.5)


def test_n_equivalence_by_hand():
    # sd 1, margin 0.5: the first n with 2 * Phi(sqrt(n) * 0.5 - t_{0.975, n-1}) - 1 >= 0.8
    n = Pw.n_equivalence(1.0, 0.5)
    ok = [2 * stats.norm.cdf(math.sqrt(k) * 0.5 - stats.t.ppf(0.975, k - 1)) - 1 >= 0.8 for k in (n - 1, n)]
    assert ok == [False, True]
    # with z_0.975 for the t quantile: ((1.95996 + 1.28155) / 0.5)^2 = 42.03 -> 43; t_{0.975, 43} = 2.0167 adds one
    assert n == 44


def test_assess_plans_n_at_holms_smallest_level():
    # three counted direction rows of one claim: each planned at alpha / 3 for the declared d_z
    rows = [row("attacks", supports=None, value=0.1, ci=(-0.9, 1.1)) for _ in range(3)]
    t = Cl.frame(rows)
    sd = Pw.sd_from_interval(-0.9, 1.1, 10)
    expected = Pw.n_needed(sd, Pw.DECLARATIONS["attacks"].effect_dz * sd, alpha=0.05 / 3)
    assert list(t.n_needed) == [expected] * 3 and expected == Pw.n_needed(1.0, 0.3, alpha=0.05 / 3)
    s = Cl.summary(t).iloc[0]
    assert s.verdict == "inconclusive (underpowered)" and s.n_decide == expected
    assert f"N = {expected} would decide them" in s.why
    d = Cl.detail(t)
    assert list(d["N for 80 % power"]) == [str(expected)] * 3


def test_equivalence_and_other_rows_keep_the_chapters_reading():
    rows = [row("c", supports=True, value=0.05, ci=(-0.1, 0.2), test="equivalence", margin=0.25),
            row("layer", supports=None, value=0.7, ci=(0.4, 2.4), test="other")]
    t = Cl.frame(rows)
    assert list(t.reading) == ["supports", "inconclusive"]
    assert t.n_needed[0] == Pw.n_equivalence(Pw.sd_from_interval(-0.1, 0.2, 10), 0.25)
    assert pd.isna(t.n_needed[1]) and t.p.isna().all()


def test_claim_checks_its_test():
    with pytest.raises(ValueError, match="test must be one of"):
        row(test="t")
    with pytest.raises(ValueError, match="margin"):
        row(test="equivalence")


def test_assess_leaves_its_input_alone():
    t = Cl.frame([row()])
    before = t.copy()
    Cl.assess(t)
    pd.testing.assert_frame_equal(t, before)


# --- the declaration record ---------------------------------------------------------------------

def test_declarations_are_dated_and_cover_every_paper_claim():
    assert Pw.DECLARED_ON == "2026-11-27"
    reason = Pw.DECLARATION_REASON.lower()
    assert "after the first wave" in reason and "before any run at a powered n" in reason
    assert set(Pw.DECLARATIONS) == set(Cl.PAPER_CLAIMS)
    for key, d in Pw.DECLARATIONS.items():
        assert d.why, key
        # a margin needs an effect to plan for; the sanity claim's non-inferiority rows have an effect but no
        # no-effect margin (their margin is SANITY_SSIM_MARGIN, the rows' null)
        assert d.margin_dz is None or d.effect_dz is not None, key
        assert (d.effect_dz is None) == (d.margin_dz is None) or key == "sanity", key
        assert d.effect_dz is None or d.effect_dz > 0
    # the chapters read their margins from the one place
    from dance_book.experiments import hyperparameters as H, layers as La
    assert H.EQUIVALENCE_D == Pw.EQUIVALENCE_D and La.LAYER_RATIO_THRESHOLD == Pw.LAYER_RATIO_THRESHOLD
    assert La.LAYER_MARGIN_FRACTION == Pw.LAYER_MARGIN_FRACTION


def test_every_rule_change_is_recorded_with_date_and_reason():
    dates = [c["date"] for c in Pw.RULE_CHANGES]
    assert dates == sorted(dates) and Pw.DECLARED_ON in dates
    for c in Pw.RULE_CHANGES:
        assert c["change"] and c["reason"]
    declared = [c for c in Pw.RULE_CHANGES if c["date"] == Pw.DECLARED_ON]
    assert declared[0]["reason"] == Pw.DECLARATION_REASON
    # a change after the declaration names the claims it changed
    for c in Pw.RULE_CHANGES:
        if c["date"] > Pw.DECLARED_ON:
            assert any(word in c["change"] for word in ("layer", "c claim", "sanity", "localization", "S_F", "attacks claim",
                                                               "runtime claim", "adaptive claim", "SCAAT claim", "architectures claim"))


def test_the_robust_rule_is_declared_and_recorded():
    assert "S_F" in Pw.ROBUST_MEASURES
    change = [c for c in Pw.RULE_CHANGES if "Hodges-Lehmann" in c["change"]]
    assert len(change) == 1 and change[0]["date"] == "2026-11-28" and "heavy-tailed" in change[0]["reason"]


# ----------------------------------------------------------------------------------------------
# Equivalence rows: the layer claim per layer, the c claim per c (no selected row)
# ----------------------------------------------------------------------------------------------

def test_equivalence_reading_by_hand():
    from dance_book.experiments.claims import equivalence_reading
    assert equivalence_reading(-0.2, 0.2, 0.3) is True
    assert equivalence_reading(0.31, 0.9, 0.3) is False and equivalence_reading(-0.9, -0.31, 0.3) is False
    assert equivalence_reading(0.1, 0.5, 0.3) is None            # straddles the margin
    assert equivalence_reading(float("nan"), 0.1, 0.3) is None and equivalence_reading(0.0, 0.1, 0.0) is None
    assert equivalence_reading(0.9, 1.1, 0.2, null=1.0) is True


def test_layer_equivalence_compares_every_layer_with_the_main_layer_against_the_decoy_effect():
    import pandas as pd
    from dance_book.experiments import layers as La
    # eight images: the distribution-free (Hodges-Lehmann) interval of S_F measures needs at least six at 95 %
    raw = [0.0] * 8
    main = [-1.0, -1.2, -0.8, -1.0, -1.1, -0.9, -1.0, -1.0]       # decoy effect -1.0: margin 0.5
    near = [m - dx for m, dx in zip(main, [0.1, 0.05, 0.1, 0.05, 0.08, 0.12, 0.1, 0.1])]   # within 0.1 of main
    far = [m - dx for m, dx in zip(main, [2.0, 2.1, 2.0, 1.9, 2.2, 1.8, 2.0, 2.05])]      # about 2 lower
    rows = [dict(method="gradient", population="none", layer="L2", image=i, sf=v) for i, v in enumerate(raw)]
    for layer, vals in (("L2", main), ("L1", near), ("L3", far)):
        rows += [dict(method="gradient", population="decoys", layer=layer, image=i, sf=v) for i, v in enumerate(vals)]
    t = La.layer_equivalence(pd.DataFrame(rows), "gradient", "L2").set_index("layer")
    assert list(t.index) == ["L1", "L3"]                           # the main layer is the reference, not a row
    assert t.margin.tolist() == pytest.approx([0.5, 0.5]) and t.decoy_effect.iloc[0] == pytest.approx(-1.0)
    assert [t.loc[layer, "equivalent"] for layer in ("L1", "L3")] == [True, False]
    with pytest.raises(ValueError, match="main layer"):
        La.layer_equivalence(pd.DataFrame(rows), "gradient", "nope")


# --- a range read against its own tolerance (the runtime claim) -----------------------------------

def test_runtime_ranges_read_against_their_tolerance():
    from dance_book.experiments import runtime as Rt
    m = Rt.RUNTIME_MARGIN
    assert (Rt.cost_reading(0.3, 0.45), Rt.cost_reading(0.86, 1.05), Rt.cost_reading(3.5, 6.0)) == (True, None, False)
    # the band's edges: strictly below 1 - m supports, strictly above 1 + m contradicts
    assert Rt.cost_reading(0.5, 1 - m) is None and Rt.cost_reading(1 + m, 2.0) is None
    assert Rt.cost_reading(float("nan"), 0.5) is None
    with pytest.raises(ValueError, match="margin"):
        Rt.cost_reading(0.5, 0.6, margin=1.5)

    def runtime_row(lo, hi, counts=True):
        return row("runtime", Rt.cost_reading(lo, hi), value=(lo + hi) / 2, ci=(lo, hi), n=3, counts=counts,
                   test="other", null=1.0, margin=m)

    # a ratio near 1 (the amortised decoy on the CI model) is the same cost, on a quiet or a loaded machine:
    # before the tolerance, (0.86, 0.99) supported the claim and (0.86, 1.05) could not tell
    out = Cl.assess(Cl.frame([runtime_row(0.86, 0.99), runtime_row(4.0, 6.0)]))
    assert list(out.reading) == ["no effect", "contradicts"]
    assert Cl.verdict(out.reading) == "contradicted"
    loaded = Cl.assess(Cl.frame([runtime_row(0.86, 1.05), runtime_row(4.0, 6.0)]))
    assert list(loaded.reading) == ["no effect", "contradicts"]
    # a range across the band's edge cannot tell; one wholly below it supports
    edge = Cl.assess(Cl.frame([runtime_row(0.7, 0.9), runtime_row(0.3, 0.4)]))
    assert list(edge.reading) == ["inconclusive", "supports"]
    # an "other" row without a tolerance keeps the chapter's reading (no "no effect" for it)
    plain = Cl.assess(Cl.frame([row("runtime", None, value=0.95, ci=(0.9, 1.0), n=3, test="other", null=1.0)]))
    assert list(plain.reading) == ["inconclusive"]
    assert (Rt.cost_word(0.7, 0.9), Rt.cost_word(0.5, 1.5)) == ("less than or about as much as",
                                                                "anything from less than to more than")


def test_a_row_at_its_planned_n_does_not_ask_for_it_again():
    # undecided rows that already have the N planned for the declared d_z: no "N = ... would decide"
    planned = Pw.n_needed(1.0, Pw.DECLARATIONS["attacks"].effect_dz, alpha=0.05 / 2)
    rows = [row("attacks", supports=None, value=2.0, ci=(-0.1, 4.1), n=planned + 5) for _ in range(2)]
    t = Cl.frame(rows)
    assert list(t.reading) == ["inconclusive"] * 2 and list(t.n_needed) == [planned] * 2
    s = Cl.summary(t).iloc[0]
    assert pd.isna(s.n_decide) and "would decide" not in s.why
    assert "2 of them already have the N planned for the declared smallest effect" in s.why
    # one row below its planned N: only that one asks for more
    t = Cl.frame(rows[:1] + [row("attacks", supports=None, value=2.0, ci=(-0.1, 4.1), n=planned - 5)])
    s = Cl.summary(t).iloc[0]
    assert s.n_decide == planned and f"N = {planned} would decide them" in s.why
    assert "1 of them already has the N planned" in s.why
