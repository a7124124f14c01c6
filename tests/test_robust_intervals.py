"""The Hodges-Lehmann estimate with its distribution-free interval, and how the verdicts read it (issue 12, section 3)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dance_book.experiments import claims as Cl
from dance_book.experiments.stats import hodges_lehmann, paired_difference, signed_rank_cdf


def test_signed_rank_cdf_by_hand_and_against_scipy():
    # n = 3: W+ takes 0, 1, 2, 3, 3, 4, 5, 6 over the 8 sign patterns
    assert signed_rank_cdf(3, [0, 2, 3, 5, 6]).tolist() == pytest.approx([1 / 8, 3 / 8, 5 / 8, 7 / 8, 1.0])
    assert float(signed_rank_cdf(3, -1)) == 0.0 and float(signed_rank_cdf(3, 99)) == 1.0
    rng = np.random.default_rng(1)
    for n in (6, 11, 25):
        d = rng.normal(0.3, 1.0, size=n)
        assert hodges_lehmann(d)["p_signed_rank"] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-9)
    with pytest.raises(ValueError, match="n must be"):
        signed_rank_cdf(0, 1)


@pytest.mark.parametrize("n", [8, 15, 50])
def test_the_interval_is_the_set_of_shifts_the_signed_rank_test_keeps(n):
    """Inverting scipy's exact Wilcoxon test: just inside each end it is not rejected at 5 %, just outside it is."""
    rng = np.random.default_rng(n)
    d = rng.standard_t(2, size=n) + 0.5                           # heavy tails
    r = hodges_lehmann(d)
    assert r["hl"] == pytest.approx(np.median([(a + b) / 2 for i, a in enumerate(d) for b in d[i:]]))
    assert r["hl_confidence"] >= 0.95
    eps = 1e-9 * max(1.0, abs(r["hl_low"]), abs(r["hl_high"]))
    p = lambda theta: stats.wilcoxon(d - theta, method="exact").pvalue  # noqa: E731
    assert p(r["hl_low"] - eps) < 0.05 <= p(r["hl_low"] + eps)
    assert p(r["hl_high"] + eps) < 0.05 <= p(r["hl_high"] - eps)


def test_one_outlier_moves_the_mean_and_t_interval_but_not_the_hodges_lehmann_reading():
    d = np.array([-1.0, -1.2, -0.8, -1.1, -0.9, -1.05, -0.95, -1.0, -1.1, -0.9] * 2 + [30.0])
    r = paired_difference(d, np.zeros_like(d), robust=True)
    assert r["ci_low"] < 0 < r["ci_high"]                         # the t-interval cannot tell
    assert r["hl_high"] < 0 and r["hl"] == pytest.approx(-0.975, abs=0.1)   # the rank interval can
    assert r["p_signed_rank"] < 0.05


def test_too_few_pairs_give_no_finite_interval_and_nothing_is_changed():
    d = np.array([0.5, 0.7, 0.6, 0.8])
    before = d.copy()
    r = hodges_lehmann(d)
    assert r["hl_low"] == -math.inf and r["hl_high"] == math.inf   # 95 % needs 6 pairs
    assert np.array_equal(d, before)
    assert hodges_lehmann(np.zeros(8))["p_signed_rank"] == 1.0
    with pytest.raises(ValueError, match="confidence"):
        hodges_lehmann(d, confidence=1.5)
    with pytest.raises(TypeError, match="robust"):
        paired_difference(d, d, robust="yes")
    assert "hl" not in paired_difference(d, d)                    # the default row is unchanged


def test_a_robust_row_enters_assess_with_its_signed_rank_p_and_paired_sd():
    rng = np.random.default_rng(3)
    a, b = rng.standard_t(2, size=30) - 0.6, np.zeros(30)
    d = paired_difference(a, b, robust=True)
    row = Cl.Claim.from_difference("fidelity", "sub", "x.md", "m", d, Cl.direction(d["hl_low"], d["hl_high"], "below"),
                                   "")
    assert row.interval == "hodges-lehmann" and row.value == d["hl"] and (row.ci_low, row.ci_high) == (d["hl_low"],
                                                                                                       d["hl_high"])
    out = Cl.frame([row])
    assert out.p.iloc[0] == pytest.approx(d["p_signed_rank"]) and out.sd.iloc[0] == pytest.approx(d["sd_diff"])
    # a t row built from the same differences still recovers its p from the interval
    t_row = Cl.Claim.from_difference("fidelity", "sub", "x.md", "m2", paired_difference(a, b), None, "")
    assert t_row.interval == "t" and Cl.frame([t_row]).p.iloc[0] == pytest.approx(stats.ttest_1samp(a, 0).pvalue)
    with pytest.raises(ValueError, match="p_value"):
        Cl.Claim(paper_claim="fidelity", claim="s", chapter="x.md", measure="m", value=0.0, ci_low=-1.0, ci_high=2.0,
                 n=10, supports=None, note="", interval="hodges-lehmann")
    with pytest.raises(ValueError, match="interval"):
        Cl.Claim(paper_claim="fidelity", claim="s", chapter="x.md", measure="m", value=0.0, ci_low=-1.0, ci_high=2.0,
                 n=10, supports=None, note="", interval="bootstrap")


def test_s_f_claims_read_the_hodges_lehmann_interval():
    """compare() rows are robust, and lower_sf / sf_claim read their rank interval, not the t-interval."""
    from dance_book.experiments.scores import compare, lower_sf, sf_claim
    d = [-1.0, -1.2, -0.8, -1.1, -0.9, -1.05, -0.95, -1.0, -1.1, -0.9] * 2 + [30.0]
    df = pd.DataFrame([dict(method="gradient", population=p, image=i, sf=(v if p == "decoys" else 0.0))
                       for p in ("decoys", "none") for i, v in enumerate(d)])
    r = compare(df, {"population": "decoys"}, {"population": "none"}).iloc[0]
    assert r["ci_high"] > 0 and r["hl_high"] < 0
    assert lower_sf(r) is True
    claim = sf_claim("fidelity", "sub", "fidelity.md", "m", r, lower_sf(r), "")
    assert claim.interval == "hodges-lehmann" and claim.ci_high == r["hl_high"]
    assert Cl.frame([claim]).reading.iloc[0] == "supports"
