"""The paper's claims, the chapters' measures of them, and the rule that turns measures into a verdict.

Every experiment module has a ``claims(settings)`` that reads its chapter's cached results and
returns one :class:`Claim` per *measure*: what was measured, the effect with its 95% interval, and whether it
``supports`` the claim (True), contradicts it (False) or cannot tell (None) at the 95 % level, by the
chapter's rule. Each row names the paper claim it bears on (``paper_claim``, a key of
:data:`PAPER_CLAIMS`); a row with ``counts=False`` is shown for context but does not enter the
verdict (e.g. a measurement of our line-search solver, which is not the paper's method).

This module computes no measure of its own. It collects the rows and reads them once more, the
same way for every chapter (:func:`assess`): Holm's correction within each paper claim, a *no
effect* reading against the margin declared in :mod:`~dance_book.experiments.power`, and the N that
would decide; then :func:`verdict` turns a claim's readings into one of :data:`VERDICTS`.
"""
from __future__ import annotations

import sys

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from . import power as Pw
from .settings import Settings

#: The paper's empirical claims in the order of the paper: key -> (statement, where the paper makes it).
PAPER_CLAIMS: Dict[str, tuple] = {
    "fidelity": ("Decoys make the saliency maps more faithful, for every base method", "Fig. 3, A13"),
    "replacement": ("Optimised decoys beat decoys made by blurring or inpainting", "Fig. 3, A13"),
    "attacks": ("Decoy-enhanced maps are less sensitive to attacks on the explanation", "Fig. 4, A14"),
    "layer": ("The result is insensitive to the layer the decoys are constrained at", "Fig. 5, A16"),
    "architectures": ("Decoys improve fidelity consistently across architectures", "Fig. 6, A15"),
    "sanity": ("Decoy-enhanced maps pass the cascading-randomisation sanity check", "A8, Fig. A8-A9"),
    "c": ("The initial penalty weight c makes a negligible difference", "A9, Fig. A10"),
    "runtime": ("Optimising one decoy costs less than a saliency map (37.7 % of a gradient)", "A10, Fig. A11"),
    "representation": ("Decoys stay close to the original representation; blur's violation shrinks with depth",
                       "A11, Fig. A12"),
    "localization": ("Decoys improve object localization", "A12, Table A1"),
    "control": ("Both steps are needed: optimised decoys and range aggregation", "poster control study"),
    # The seed papers' claims on the other remedies (the remedies chapter):
    "scaat": ("SCAAT (Xu et al.) makes saliency maps sparser and more faithful, barely sacrificing accuracy",
              "SCAAT poster, table"),
    "yeh": ("Smoothing the explanation or adversarially training the model lowers max-sensitivity (Yeh et al.)",
            "Yeh et al. 2019, Table 1"),
    "yeh-infidelity": ("Smoothing the explanation or adversarially training the model makes it more faithful: lower "
                       "infidelity (Yeh et al.)", "Yeh et al. 2019, §4.1; infidelity: NeurIPS 2019 version, Table 1"),
}

@dataclass(frozen=True)
class Claim:
    """One measure of one paper claim, as a chapter reports it to the claims chapter.

    ``value`` is the effect with its 95% interval ``[ci_low, ci_high]`` (None when there is none)
    over ``n`` images; ``supports`` is True / False / None (supports, contradicts, cannot tell) by
    the chapter's rule at the 95 % level; ``counts=False`` shows the measure for context only.

    ``test`` says how ``supports`` was read, and so what :func:`assess` may do with the row:

    * ``"direction"`` (the default): the 95 % interval is a symmetric t-interval (paired, or one-sample),
      or for a robust measure (``interval="hodges-lehmann"``) the distribution-free interval of the
      Hodges-Lehmann estimate (:func:`~dance_book.experiments.stats.hodges_lehmann`), and ``supports``
      says whether it excludes ``null`` in the paper's direction (True) or the other way (False). The
      p-value of a t-interval follows from the interval and n; a robust row carries its signed-rank
      ``p_value`` and its paired ``sd_diff``. The p-value enters Holm's correction, and the row may read
      *no effect* against the declared margin;
    * ``"equivalence"``: a claim of insensitivity; ``supports`` is True when the t-interval lies inside
      the chapter's own ``margin`` (in the measure's units). Kept as the chapter read it;
    * ``"other"``: the interval is not a t-interval (a bootstrap interval of a ratio, a range over
      timing rounds); kept as the chapter read it, with no p-value and no N planned; with its own
      ``margin`` (a declared tolerance around ``null``), a range inside it reads *no effect*.

    ``null`` is the measure's no-effect value (0 for a difference, 1 for a ratio or for SSIM).
    """

    paper_claim: str            #: a key of :data:`PAPER_CLAIMS`
    claim: str                  #: the sub-claim measured
    chapter: str                #: the chapter's file, e.g. ``"fidelity.md"``
    measure: str                #: what was measured, with N
    value: float
    ci_low: Optional[float]
    ci_high: Optional[float]
    n: int
    supports: Optional[bool]
    note: str
    counts: bool = True
    test: str = "direction"     #: how ``supports`` was read: one of :data:`TESTS`
    null: float = 0.0           #: the no-effect value of the measure
    margin: Optional[float] = None  #: the chapter's own equivalence margin, in the measure's units
    interval: str = "t"         #: the kind of the 95 % interval: one of :data:`INTERVALS`
    p_value: Optional[float] = None  #: the test's two-sided p (a robust row's signed-rank p); else from the interval
    sd_diff: Optional[float] = None  #: the per-image SD of the paired differences (a robust row's); else from the interval

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {self.test!r}")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {INTERVALS}, got {self.interval!r}")
        if self.interval == "hodges-lehmann" and self.test == "direction" and self.p_value is None:
            raise ValueError("a Hodges-Lehmann direction row needs its signed-rank p_value (the interval is not "
                             "symmetric, so no p can be recovered from it); pass p_value=d['p_signed_rank']")
        if self.test == "equivalence" and (self.margin is None or not self.margin > 0):
            raise ValueError(f"an equivalence measure needs its positive margin; got margin={self.margin!r}")

    @classmethod
    def from_difference(cls, paper_claim: str, claim: str, chapter: str, measure: str, d, supports: Optional[bool],
                        note: str) -> "Claim":
        """A measure that is a paired difference (a :func:`~dance_book.experiments.stats.paired_difference` row).

        A row computed with ``robust=True`` (it holds ``hl``) gives the Hodges-Lehmann estimate with its
        distribution-free interval, its signed-rank p and its paired SD (``interval="hodges-lehmann"``);
        ``supports`` must then be read from that interval (:func:`difference_interval`)."""
        value, low, high = difference_interval(d)
        if robust_row(d):
            return cls(paper_claim=paper_claim, claim=claim, chapter=chapter, measure=measure, value=value,
                       ci_low=low, ci_high=high, n=int(d["n"]), supports=supports, note=note,
                       interval="hodges-lehmann", p_value=float(d["p_signed_rank"]), sd_diff=float(d["sd_diff"]))
        return cls(paper_claim=paper_claim, claim=claim, chapter=chapter, measure=measure,
                   value=value, ci_low=low, ci_high=high, n=int(d["n"]), supports=supports, note=note)


#: How a measure's ``supports`` was read (see :class:`Claim`).
TESTS = ("direction", "equivalence", "other")
#: The kinds of a measure's interval: a t-interval, or the Hodges-Lehmann estimate's distribution-free one.
INTERVALS = ("t", "hodges-lehmann")


def robust_row(d) -> bool:
    """Whether a paired-difference row holds the Hodges-Lehmann reading (computed with ``robust=True``)."""
    try:
        return "hl" in d and not pd.isna(d["hl"])
    except TypeError:
        return False


def difference_interval(d) -> tuple:
    """``(estimate, low, high)`` of a paired-difference row, the reading the verdicts use: the
    Hodges-Lehmann estimate and its distribution-free interval for a robust row (:func:`robust_row`;
    every S_F measure, :data:`~dance_book.experiments.power.ROBUST_MEASURES`), else the mean and its
    t-interval."""
    if robust_row(d):
        return float(d["hl"]), float(d["hl_low"]), float(d["hl_high"])
    return float(d["mean_diff"]), float(d["ci_low"]), float(d["ci_high"])

#: The fields of a measure row.
ROW_KEYS = frozenset(Claim.__dataclass_fields__)

#: The experiment modules that report claims.
MODULES = ["fidelity", "layers", "architectures", "control", "attacks", "adaptive", "sanity", "localization",
           "hyperparameters", "runtime", "representation", "epsilon", "remedies"]

#: The verdict scale, from the paper's side to the other, then the two that decide nothing either way.
VERDICTS = ("reproduced", "partly reproduced", "contradicted", "no effect", "inconclusive (underpowered)")
#: A glue-safe key per verdict (``claims_<key>`` on the claims page).
VERDICT_KEYS = {"reproduced": "reproduced", "partly reproduced": "partly_reproduced", "contradicted": "contradicted",
                "no effect": "no_effect", "inconclusive (underpowered)": "inconclusive"}
#: A measure's readings.
READINGS = ("supports", "contradicts", "no effect", "inconclusive")


def direction(ci_low: float, ci_high: float, expected: str, at: float = 0.0) -> Optional[bool]:
    """Three-valued reading of an interval against the paper's expected direction.

    ``expected="below"``: the claim predicts an effect below ``at`` (e.g. a lower S_F with decoys).
    True when the whole interval lies below ``at``, False when it lies wholly above (the effect
    goes the other way), None when it contains ``at`` or is not finite (cannot tell).
    ``expected="above"`` mirrors it.
    """
    if expected not in ("below", "above"):
        raise ValueError(f"expected must be 'below' or 'above', got {expected!r}")
    lo, hi = float(ci_low), float(ci_high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if expected == "above":
        lo, hi, at = -hi, -lo, -at
    if hi < at:
        return True
    if lo > at:
        return False
    return None


def inside(ci_low, ci_high, margin, null: float = 0.0) -> bool:
    """Whether the interval lies inside ``[null - margin, null + margin]`` (ends included); False when
    the margin is missing, not positive or anything is not finite."""
    try:
        lo, hi, m = float(ci_low), float(ci_high), float(margin)
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(x) for x in (lo, hi, m)) or m <= 0:
        return False
    return null - m <= lo and hi <= null + m


def equivalence_reading(ci_low, ci_high, margin, null: float = 0.0) -> Optional[bool]:
    """An ``equivalence`` row's ``supports``: True when the interval lies inside ``null +- margin``
    (:func:`inside`), False when it lies wholly outside (a difference larger than the margin is
    shown), None otherwise or when anything is missing (cannot tell).

    Example:
        >>> equivalence_reading(-0.1, 0.2, 0.3), equivalence_reading(0.4, 0.9, 0.3), equivalence_reading(0.1, 0.5, 0.3)
        (True, False, None)
    """
    if inside(ci_low, ci_high, margin, null):
        return True
    try:
        lo, hi, m = float(ci_low), float(ci_high), float(margin)
    except (TypeError, ValueError):
        return None
    if all(math.isfinite(x) for x in (lo, hi, m)) and m > 0 and (lo > null + m or hi < null - m):
        return False
    return None


def reading(supports: Optional[bool], ci_low=None, ci_high=None, margin=None, null: float = 0.0) -> str:
    """A measure's reading: ``supports`` (True), ``contradicts`` (False), and for None ``no effect``
    when the interval ``[ci_low, ci_high]`` lies inside ``null +- margin`` (a margin declared in
    advance), else ``inconclusive``. Without a margin, None reads ``inconclusive``.

    Example:
        >>> reading(True), reading(None), reading(None, -0.1, 0.2, margin=0.3)
        ('supports', 'inconclusive', 'no effect')
    """
    if supports is None or (isinstance(supports, float) and pd.isna(supports)):
        return "no effect" if inside(ci_low, ci_high, margin, null) else "inconclusive"
    return "supports" if bool(supports) else "contradicts"


def verdict(readings) -> str:
    """A paper claim's verdict from the readings of its counted measures (one of :data:`VERDICTS`).

    The rule, with the readings after Holm's correction (:func:`assess`):

    * *reproduced*: every counted measure supports the claim;
    * *partly reproduced*: at least one supports, not all;
    * *contradicted*: none supports and at least one contradicts;
    * *no effect*: none supports or contradicts, and every one reads *no effect* (its interval lies
      inside the margin declared in :mod:`~dance_book.experiments.power`);
    * *inconclusive (underpowered)*: otherwise: none supports or contradicts and at least one cannot
      tell at this N.

    A claim with measures both for and against is *partly reproduced*: the measures that support it
    are shown next to those that contradict it, and :func:`why` names the latter.
    """
    readings = list(readings)
    if not readings:
        raise ValueError("verdict needs at least one measure; got none")
    unknown = set(readings) - set(READINGS)
    if unknown:
        raise ValueError(f"readings must be among {READINGS}; got {sorted(unknown)}")
    n_sup = sum(r == "supports" for r in readings)
    if n_sup == len(readings):
        return "reproduced"
    if n_sup:
        return "partly reproduced"
    if any(r == "contradicts" for r in readings):
        return "contradicted"
    if all(r == "no effect" for r in readings):
        return "no effect"
    return "inconclusive (underpowered)"


def assess(table: pd.DataFrame) -> pd.DataFrame:
    """The readings of the claims page, the same for every chapter: a copy of ``table`` (rows of
    :class:`Claim` fields) with the columns

    * ``reading_95``: the chapter's own reading at the 95 % level (:func:`reading` of ``supports``);
    * ``sd``: the row's ``sd_diff`` when it carries one (a robust row), else the per-image SD
      recovered from the 95 % t-interval and n (:func:`~dance_book.experiments.power.sd_from_interval`;
      ``direction`` and ``equivalence`` rows);
    * ``p``: the row's ``p_value`` when it carries one (a robust row's signed-rank p), else the two-sided
      t-test p-value of ``value == null``, recovered from the same interval (exact for a symmetric
      t-interval; ``direction`` rows only);
    * ``p_holm``: Holm's adjusted p over the counted ``direction`` rows of the same paper claim;
    * ``margin_used``: the *no effect* margin, the row's own ``margin`` or the declared ``margin_dz``
      times ``sd``;
    * ``n_needed``: the N for 80 % power: for a ``direction`` row, of the two-sided paired t-test at
      alpha / m (m = the claim's counted ``direction`` rows: the level Holm asks of the smallest p, so
      the plan holds whatever the order) to detect the declared ``effect_dz`` times ``sd`` (for a robust
      row too: the signed-rank test is at least 86 % as efficient as the t-test for any symmetric
      distribution and more efficient for heavy tails, so the plan is off by at most about 16 % of N for a
      symmetric distribution and conservative for heavy tails); for an
      ``equivalence`` row, for its 95 % interval to land inside its margin when there is no effect;
    * ``reading``: the reading the verdict uses. A counted ``direction`` row keeps *supports* or
      *contradicts* only when ``p_holm`` < alpha; otherwise it reads *no effect* when its 95 % interval
      lies inside ``null +- margin_used``, else *inconclusive*. Other rows keep the chapter's reading
      (an uncounted ``direction`` row, and an ``other`` row with its own ``margin``, may also read
      *no effect*).
    """
    out = table.copy()
    alpha = Pw.ALPHA
    counts = out["counts"].astype(bool)
    direction_rows = (out["test"] == "direction").to_numpy()
    t_rows = out["test"].isin(["direction", "equivalence"]).to_numpy()
    out["reading_95"] = [reading(v) for v in out["supports"]]
    given_sd = out["sd_diff"] if "sd_diff" in out else pd.Series(np.nan, index=out.index)
    given_p = out["p_value"] if "p_value" in out else pd.Series(np.nan, index=out.index)
    out["sd"] = [float(s) if t and not pd.isna(s) else
                 Pw.sd_from_interval(lo, hi, int(n)) if t and not (pd.isna(lo) or pd.isna(hi)) else np.nan
                 for lo, hi, n, t, s in zip(out.ci_low, out.ci_high, out.n, t_rows, given_sd)]
    out["p"] = [float(g) if d and not pd.isna(g) else
                Pw.p_from_interval(v, lo, hi, int(n), null) if d and not (pd.isna(lo) or pd.isna(hi)) else np.nan
                for v, lo, hi, n, null, d, g in zip(out.value, out.ci_low, out.ci_high, out.n, out.null, direction_rows,
                                                    given_p)]
    out["p_holm"] = np.nan
    family = counts & direction_rows & out["p"].notna()
    m_family = {}
    for key, idx in out[family].groupby("paper_claim").groups.items():
        out.loc[idx, "p_holm"] = Pw.holm(out.loc[idx, "p"].to_numpy())
        m_family[key] = len(idx)

    margins, needed, readings = [], [], []
    for row in out.itertuples():
        decl = Pw.DECLARATIONS.get(row.paper_claim)
        sd_ok = math.isfinite(row.sd) and row.sd > 0
        margin = row.margin if row.margin is not None and not pd.isna(row.margin) else (
            decl.margin_dz * row.sd if decl is not None and decl.margin_dz is not None and sd_ok else np.nan)
        margins.append(margin)
        n = None
        if row.test == "direction" and sd_ok and decl is not None and decl.effect_dz is not None:
            n = Pw.n_needed(row.sd, decl.effect_dz * row.sd, alpha=alpha / max(1, m_family.get(row.paper_claim, 1)))
        elif row.test == "equivalence" and sd_ok:
            n = Pw.n_equivalence(row.sd, margin)
        needed.append(n)
        if row.test == "other" and row.margin is not None and not pd.isna(row.margin):
            # a range read against its own declared tolerance (the runtime claim): inside it, the same
            readings.append(reading(row.supports, row.ci_low, row.ci_high, row.margin, row.null))
        elif row.test != "direction":
            readings.append(row.reading_95)
        elif not row.counts:
            readings.append(reading(row.supports, row.ci_low, row.ci_high, margin, row.null))
        elif row.reading_95 in ("supports", "contradicts") and row.p_holm < alpha:
            readings.append(row.reading_95)
        else:
            readings.append("no effect" if inside(row.ci_low, row.ci_high, margin, row.null) else "inconclusive")
    out["margin_used"] = margins
    out["n_needed"] = pd.array(needed, dtype="Int64")
    out["reading"] = readings
    return out


def chance(table: pd.DataFrame) -> Dict[str, float]:
    """How many supporting readings chance alone would give, for an :func:`assess`-ed table.

    Under the null (no effect anywhere) a ``direction`` measure read at the 95 % level supports the
    claim with probability alpha / 2 (its interval excludes the null on the paper's side), so
    ``uncorrected`` = M * alpha / 2 for the M counted ``direction`` measures. With Holm's
    correction within each claim, a claim gets any false support with probability at most alpha / 2
    (Holm controls the family-wise error at alpha; half of it falls on the paper's side), so at most
    ``holm`` = K * alpha / 2 of the K claims with such measures would gain a supporting reading by chance.
    """
    family = table[table["counts"].astype(bool) & (table["test"] == "direction") & table["p"].notna()]
    half = Pw.ALPHA / 2
    return {"measures": int(len(family)), "claims": int(family["paper_claim"].nunique()),
            "uncorrected": len(family) * half, "holm": family["paper_claim"].nunique() * half}


def frame(rows: List[Claim]) -> pd.DataFrame:
    """:class:`Claim` rows as the assessed table of :func:`collect` (checks the rows)."""
    bad = [type(r).__name__ for r in rows if not isinstance(r, Claim)]
    if bad:
        raise TypeError(f"a chapter's claims() must return Claim objects; got {sorted(set(bad))}")
    table = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=sorted(ROW_KEYS))
    unknown = set(table["paper_claim"]) - set(PAPER_CLAIMS)
    if unknown:
        raise ValueError(f"claims name unknown paper claims {sorted(unknown)}; add them to PAPER_CLAIMS")
    table["counts"] = table["counts"].astype(bool)
    table["null"] = table["null"].astype(float)
    return assess(table)


def collect(settings: Settings, modules: Optional[List[str]] = None) -> pd.DataFrame:
    """Every measure of every chapter, one row each, with its readings (:func:`assess`; reads cached results only)."""
    rows = []
    for name in modules or MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        print(f"collecting claims from dance_book.experiments.{name} ...", file=sys.stderr, flush=True)
        rows += module.claims(settings)
    return frame(rows)


def _fmt(row) -> str:
    ci = "" if pd.isna(row.ci_low) else f" [{row.ci_low:.3g}, {row.ci_high:.3g}]"
    return f"{row.value:.3g}{ci}"


def n_decide(group: pd.DataFrame) -> Optional[int]:
    """The N that would decide a claim's undecided measures: the largest ``n_needed`` over its counted
    measures that read *inconclusive* and have fewer images than that; None when none does or none has an N
    planned (a measure already at its planned N stays undecided only for an effect smaller than the declared
    one, or by the 20 % chance of missing one of that size: no planned N decides it)."""
    unsure = group[group.counts & (group.reading == "inconclusive")]
    if "n_needed" not in unsure:
        return None
    needed = pd.to_numeric(unsure["n_needed"], errors="coerce")
    values = needed[needed > pd.to_numeric(unsure["n"], errors="coerce")].dropna()
    return int(max(values)) if len(values) else None


def at_planned_n(row) -> bool:
    """Whether an *inconclusive* row already has the N planned for it (``n >= n_needed``)."""
    return row.reading == "inconclusive" and not pd.isna(row.n_needed) and int(row.n) >= int(row.n_needed)


def planned_n(rows: List[Claim]) -> Optional[int]:
    """The N a powered run needs, planned from its pilot's rows: the largest ``n_needed`` (:func:`assess`, the plan
    this page prints) over the counted rows, so that every counted measure gets its 80 % power; None when no
    counted row has an N planned."""
    table = frame(rows)
    values = pd.to_numeric(table.loc[table["counts"], "n_needed"], errors="coerce").dropna()
    return int(values.max()) if len(values) else None


def powered_label(size: dict) -> str:
    """The suffix of a powered run's sub-claims (``size`` from :func:`~dance_book.experiments.power.budgeted_n`)."""
    return ", powered run" + (f" (N capped by the budget; the rule asks for {size['needed']})" if size["binds"] else "")


def pilot_context(rows: List[Claim]) -> List[Claim]:
    """A chapter's own rows turned into context beside its powered run: the pilot's, not counted."""
    return [dataclasses.replace(r, claim=r.claim + ", the sweep (context: the pilot of the powered run)", counts=False)
            for r in rows]


def why(group: pd.DataFrame) -> str:
    """One sentence, built from the measures, on why a claim is not (fully) reproduced; '' when it is."""
    counted = group[group.counts]
    against = counted[counted.reading == "contradicts"]
    unsure = counted[counted.reading == "inconclusive"]
    null = counted[counted.reading == "no effect"]
    if against.empty and unsure.empty and null.empty:
        return ""
    parts = []
    if len(against):
        r = against.iloc[0]
        parts.append(f"{len(against)} of {len(counted)} measures show the opposite effect "
                     f"(e.g. {r.measure}: {_fmt(r)})")
    if len(null):
        r = null.iloc[0]
        parts.append(f"{len(null)} of {len(counted)} show no effect, their interval inside the declared margin "
                     f"(e.g. {r.measure}: {_fmt(r)}, margin +-{r.margin_used:.3g})")
    if len(unsure):
        # an example with an interval of some width (a [0, 0] interval says only "no image differs")
        wide = unsure[(unsure.ci_high > unsure.ci_low).fillna(False)]
        r = (wide if len(wide) else unsure).iloc[0]
        text = (f"{len(unsure)} of {len(counted)} cannot tell at this N, their interval includes no effect "
                f"or the margin (e.g. {r.measure}: {_fmt(r)})")
        if "reading_95" in unsure:
            lost = int(unsure.reading_95.isin(["supports", "contradicts"]).sum())
            if lost:
                text += f", {lost} of them decided at 95 % but not after Holm's correction"
        n = n_decide(group)
        if n is not None:
            text += f"; N = {n} would decide them"
        reached = sum(at_planned_n(r) for r in unsure.itertuples()) if "n_needed" in unsure else 0
        if reached:
            text += (f"; {reached} of them already {'has' if reached == 1 else 'have'} the N planned for the declared "
                     "smallest effect, so an effect that size would most likely have been decided")
        parts.append(text)
    return "; ".join(parts) + "."


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per paper claim (in the paper's order): counts of readings, the verdict, the N that
    would decide its undecided measures (``n_decide``) and why."""
    rows = []
    for key, (statement, where) in PAPER_CLAIMS.items():
        group = table[table.paper_claim == key]
        if group.empty:
            continue
        counted = group[group.counts]
        rows.append(dict(claim=statement, paper=where, measures=len(counted),
                         supporting=int((counted.reading == "supports").sum()),
                         contradicting=int((counted.reading == "contradicts").sum()),
                         no_effect=int((counted.reading == "no effect").sum()),
                         inconclusive=int((counted.reading == "inconclusive").sum()),
                         verdict=verdict(counted.reading), n_decide=n_decide(group), why=why(group)))
    out = pd.DataFrame(rows)
    if len(out):
        out["n_decide"] = pd.array(out["n_decide"], dtype="Int64")
    return out


def detail(table: pd.DataFrame) -> pd.DataFrame:
    """Every measure with its result as text, grouped under the paper claim it bears on, with its
    Holm-adjusted p (``p (Holm)``) and the N for 80 % power (``N for 80 % power``, with the power of
    :data:`~dance_book.experiments.power.POWER`)."""
    order = {k: i for i, k in enumerate(PAPER_CLAIMS)}
    out = table.assign(paper_claim_title=[PAPER_CLAIMS[k][0] for k in table.paper_claim],
                       _order=[order[k] for k in table.paper_claim],
                       result=table.apply(_fmt, axis=1),
                       reading=[r if c else f"{r} (not counted)" for r, c in zip(table.reading, table.counts)],
                       p_holm_text=[f"{p:.2g}" if not pd.isna(p) else "" for p in table.p_holm],
                       n_text=["" if pd.isna(n) else str(int(n)) for n in table.n_needed])
    out = out.sort_values("_order", kind="stable")
    return out[["paper_claim_title", "claim", "chapter", "measure", "result", "n", "p_holm_text", "n_text", "reading",
                "note"]].rename(columns={"paper_claim_title": "paper claim", "claim": "sub-claim",
                                         "p_holm_text": "p (Holm)", "n_text": f"N for {100 * Pw.POWER:g} % power"})


def rounded(value, ci_low=None, ci_high=None) -> str:
    """An effect with its interval, both rounded to what the interval supports: two significant digits
    of its half-width (``"-1.52 [-1.74, -1.30]"``); three significant digits when there is no interval
    or it has no width.

    Example:
        >>> rounded(-1.5191, -1.7398, -1.2983), rounded(0.0, 0.0, 0.0), rounded(4.93)
        ('-1.52 [-1.74, -1.30]', '0 [0, 0]', '4.93')
    """
    if ci_low is None or ci_high is None or pd.isna(ci_low) or pd.isna(ci_high):
        return f"{value:.3g}"
    half = (float(ci_high) - float(ci_low)) / 2
    if not math.isfinite(half) or half <= 0:
        return f"{value:.3g} [{ci_low:.3g}, {ci_high:.3g}]"
    d = max(0, 1 - math.floor(math.log10(half)))
    return f"{value:.{d}f} [{ci_low:.{d}f}, {ci_high:.{d}f}]"


def _escape(text) -> str:
    """``text`` with Markdown's special characters escaped, so that it renders as written."""
    return "".join("\\" + ch if ch in "\\`*_[]<>$|#" else ch for ch in str(text))


def _bold(text: str) -> str:
    return f"**{text}**"


#: An answer box lists a claim's measures one by one up to this many; above, it gives their counts per
#: reading (:func:`answer`) and the chapter shows the full list folded away.
MAX_LISTED = 12
#: What a reading means for an equivalence row (a claim of insensitivity).
EQUIVALENCE_WORDS = {"supports": "equivalent", "contradicts": "different", "inconclusive": "inconclusive",
                     "no effect": "no effect"}


def reading_counts(group: pd.DataFrame, label=_bold) -> str:
    """The counts of the readings of ``group``'s counted measures, in the order of :data:`READINGS`, as
    Markdown (``"3 supports, 24 inconclusive"``); for equivalence rows the reading is named by what it
    means (:data:`EQUIVALENCE_WORDS`: ``"3 equivalent (supports)"``). Readings that no measure has are
    left out; '' when no measure is counted."""
    counted = group[group.counts.astype(bool)]
    equivalence = len(counted) > 0 and bool((counted.test == "equivalence").all())
    parts = []
    for r in READINGS:
        k = int((counted.reading == r).sum())
        if k:
            word = f"{EQUIVALENCE_WORDS[r]} ({label(r)})" if equivalence and EQUIVALENCE_WORDS[r] != r else label(r)
            parts.append(f"{k} {word}")
    return ", ".join(parts)


def _summarised(own: pd.DataFrame, label) -> str:
    """The lines of :func:`answer` for a claim with many measures in one chapter: counts, not the list."""
    counted = own[own.counts.astype(bool)]
    context = len(own) - len(counted)
    items = [f"* {len(counted)} counted measure{'s' * (len(counted) != 1)} here, read after Holm's correction: "
             f"{reading_counts(counted, label) or 'none'}"]
    subs = list(dict.fromkeys(counted.claim))
    if 1 < len(subs) <= 6:
        for sub in subs:
            items.append(f"  * {_escape(sub)}: {reading_counts(counted[counted.claim == sub], label)}")
    if "reading_95" in counted:
        lost = int(((counted.reading == "inconclusive") & counted.reading_95.isin(["supports", "contradicts"])).sum())
        if lost:
            items.append(f"* {lost} of them decided at the 95 % level but not after Holm's correction")
    if context:
        items.append(f"* {context} context row{'s' * (context != 1)}, not counted")
    items.append("* every measure with its effect, interval and N: in the folded list \"Every measure of this answer\" further down")
    return "\n".join(items)


def answer(table: pd.DataFrame, chapter: str, label=_bold, max_listed: Optional[int] = MAX_LISTED) -> str:
    """The answer box of one chapter, as Markdown: for each paper claim that ``chapter`` measures (in
    the paper's order), the claim, its verdict on the scale of :data:`VERDICTS` and, when the verdict is
    *inconclusive (underpowered)* or *partly reproduced* with undecided measures, the N that would
    decide them (:func:`n_decide`); then each of the chapter's measures of it: the sub-claim, the
    effect with its 95 % interval (:func:`rounded`), N, the reading after Holm's correction (and the
    reading at the 95 % level where the correction took it away) and, for an inconclusive measure, the
    N that would decide it.

    A claim with more than ``max_listed`` measures in ``chapter`` is summarised instead: the counts of
    its counted measures' readings after Holm's correction (:func:`reading_counts`), per sub-claim when
    there are few sub-claims, how many were decided at the 95 % level but not after the correction, and
    the number of context rows; the chapter shows the full list folded away (``max_listed=None``
    lists every measure).

    ``table`` is an assessed table (:func:`collect`, :func:`frame`) that holds *every* measure of the
    claims the chapter bears on, from whichever chapter (Holm's correction and the verdict run over
    them all); measures from other chapters are counted in the verdict and named, not listed.
    ``chapter`` is the chapter's file (``"fidelity.md"``; ``"fidelity"`` also works). ``label`` turns
    a verdict or reading word into Markdown (bold by default; a chapter may pass
    :func:`dance_book.notebook.label` for the coloured labels).

    Raises ValueError when the table has no measure of ``chapter``.
    """
    if not isinstance(chapter, str) or not chapter:
        raise TypeError(f"chapter must be a chapter's file name such as 'fidelity.md'; got {chapter!r}")
    if max_listed is not None and (isinstance(max_listed, bool) or not isinstance(max_listed, (int, np.integer))
                                   or max_listed < 1):
        raise ValueError(f"max_listed must be a positive number of measures or None (list them all); got {max_listed!r}")
    name = chapter if chapter.endswith(".md") else f"{chapter}.md"
    mine = table[table.chapter == name]
    if mine.empty:
        known = sorted(set(table.chapter)) if "chapter" in table else []
        raise ValueError(f"the table has no measure of chapter {name!r}; it has {known}. "
                         f"Collect the chapter's module first (collect(settings, [module]))")
    blocks = []
    for key, (statement, where) in PAPER_CLAIMS.items():
        own = mine[mine.paper_claim == key]
        if own.empty:
            continue
        group = table[table.paper_claim == key]
        counted = group[group.counts]
        text = f"**Claim** ({_escape(where)}): {_escape(statement)}. **Verdict:** {label(verdict(counted.reading))}"
        others = counted[counted.chapter != name]
        text += f", on {len(counted)} counted measure{'s' * (len(counted) != 1)}"
        if len(others):
            where_else = ", ".join(sorted(set(others.chapter)))
            text += f" ({len(counted) - len(others)} here, {len(others)} in {where_else})"
        n = n_decide(group)
        text += f"; N = {n} would decide its undecided measures." if n is not None else "."
        lines = [text, ""]
        if max_listed is not None and len(own) > max_listed:
            lines.append(_summarised(own, label))
            blocks.append("\n".join(lines))
            continue
        shared = own.claim.nunique() == 1 and len(own) > 1  # one sub-claim measured several ways: said once
        if shared:
            lines[0] += f" Measured here: {_escape(own.claim.iloc[0])}."
        for row in own.itertuples():
            item = "* " + ("" if shared else f"{_escape(row.claim)}: ")
            item += (f"{rounded(row.value, row.ci_low, row.ci_high)}, N = {int(row.n)} "
                     f"({_escape(row.measure)}): {label(row.reading)}")
            if not row.counts:
                item += " (context, not counted)"
            if row.reading == "inconclusive" and getattr(row, "reading_95", None) in ("supports", "contradicts"):
                item += f" ({row.reading_95} at the 95 % level, not after Holm's correction)"
            if at_planned_n(row):
                item += (f"; N = {int(row.n_needed)} was planned for the declared smallest effect and is reached: an "
                         "effect that size would most likely (80 %) have been decided")
            elif row.reading == "inconclusive" and not pd.isna(row.n_needed):
                item += f"; N = {int(row.n_needed)} would decide"
            elif row.reading == "inconclusive" and row.ci_low == row.ci_high:
                item += "; no N can be planned from an interval without width"
            elif row.reading == "inconclusive" and row.test == "other":
                item += "; no N is planned for this kind of interval"
            lines.append(item)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
