"""The paper's claims, the chapters' measures of them, and the rule that turns measures into a verdict.

Every experiment module has a ``claims(settings)`` that reads its chapter's cached results and
returns one :class:`Claim` per *measure*: what was measured, the effect with its 95% interval, and whether it
``supports`` the claim (True), contradicts it (False) or cannot tell (None), by the rule the
chapter fixed in advance. Each row names the paper claim it bears on (``paper_claim``, a key of
:data:`PAPER_CLAIMS`); a row with ``counts=False`` is shown for context but does not enter the
verdict (e.g. a measurement of our line-search solver, which is not the paper's method).

This module only collects and counts; it computes no measure of its own.
"""
from __future__ import annotations

import sys

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import pandas as pd

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
}

@dataclass(frozen=True)
class Claim:
    """One measure of one paper claim, as a chapter reports it to the claims chapter.

    ``value`` is the effect with its 95% interval ``[ci_low, ci_high]`` (None when there is none)
    over ``n`` images; ``supports`` is True / False / None (supports, contradicts, cannot tell) by
    the chapter's rule fixed in advance; ``counts=False`` shows the measure for context only.
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

    @classmethod
    def from_difference(cls, paper_claim: str, claim: str, chapter: str, measure: str, d, supports: Optional[bool],
                        note: str) -> "Claim":
        """A measure that is a paired difference (a :func:`~dance_book.experiments.stats.paired_difference` row)."""
        return cls(paper_claim=paper_claim, claim=claim, chapter=chapter, measure=measure,
                   value=float(d["mean_diff"]), ci_low=float(d["ci_low"]), ci_high=float(d["ci_high"]),
                   n=int(d["n"]), supports=supports, note=note)


#: The fields of a measure row.
ROW_KEYS = frozenset(Claim.__dataclass_fields__)

#: The experiment modules that report claims.
MODULES = ["fidelity", "layers", "architectures", "control", "attacks", "sanity", "localization", "hyperparameters",
           "runtime", "representation"]

VERDICTS = ("reproduced", "partly reproduced", "not reproduced")


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


def reading(supports: Optional[bool]) -> str:
    """A measure's reading: ``supports`` (True), ``contradicts`` (False) or ``inconclusive`` (None)."""
    if supports is None or (isinstance(supports, float) and pd.isna(supports)):
        return "inconclusive"
    return "supports" if bool(supports) else "contradicts"


def verdict(readings) -> str:
    """The rule fixed before any number was read.

    *reproduced* when every counted measure supports the claim, *partly reproduced* when some do,
    *not reproduced* when none does.
    """
    readings = list(readings)
    if not readings:
        raise ValueError("verdict needs at least one measure; got none")
    n_sup = sum(r == "supports" for r in readings)
    if n_sup == len(readings):
        return "reproduced"
    return "partly reproduced" if n_sup else "not reproduced"


def collect(settings: Settings, modules: Optional[List[str]] = None) -> pd.DataFrame:
    """Every measure of every chapter, one row each, with its reading (reads cached results only)."""
    rows = []
    for name in modules or MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        print(f"collecting claims from dance_book.experiments.{name} ...", file=sys.stderr, flush=True)
        rows += module.claims(settings)
    bad = [type(r).__name__ for r in rows if not isinstance(r, Claim)]
    if bad:
        raise TypeError(f"a chapter's claims() must return Claim objects; got {sorted(set(bad))}")
    table = pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=sorted(ROW_KEYS))
    unknown = set(table["paper_claim"]) - set(PAPER_CLAIMS)
    if unknown:
        raise ValueError(f"claims name unknown paper claims {sorted(unknown)}; add them to PAPER_CLAIMS")
    table["counts"] = table["counts"].astype(bool)
    table["reading"] = [reading(v) for v in table["supports"]]
    return table


def _fmt(row) -> str:
    ci = "" if pd.isna(row.ci_low) else f" [{row.ci_low:.3g}, {row.ci_high:.3g}]"
    return f"{row.value:.3g}{ci}"


def why(group: pd.DataFrame) -> str:
    """One sentence, built from the measures, on why a claim is not (fully) reproduced; '' when it is."""
    counted = group[group.counts]
    against = counted[counted.reading == "contradicts"]
    unsure = counted[counted.reading == "inconclusive"]
    if against.empty and unsure.empty:
        return ""
    parts = []
    if len(against):
        r = against.iloc[0]
        parts.append(f"{len(against)} of {len(counted)} measures show the opposite effect "
                     f"(e.g. {r.measure}: {_fmt(r)})")
    if len(unsure):
        # an example with an interval of some width (a [0, 0] interval says only "no image differs")
        wide = unsure[(unsure.ci_high > unsure.ci_low).fillna(False)]
        r = (wide if len(wide) else unsure).iloc[0]
        parts.append(f"{len(unsure)} of {len(counted)} cannot tell at this N, their interval includes no effect "
                     f"or the margin (e.g. {r.measure}: {_fmt(r)})")
    return "; ".join(parts) + "."


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per paper claim (in the paper's order): counts of readings, the verdict and why."""
    rows = []
    for key, (statement, where) in PAPER_CLAIMS.items():
        group = table[table.paper_claim == key]
        if group.empty:
            continue
        counted = group[group.counts]
        rows.append(dict(claim=statement, paper=where, measures=len(counted),
                         supporting=int((counted.reading == "supports").sum()),
                         contradicting=int((counted.reading == "contradicts").sum()),
                         inconclusive=int((counted.reading == "inconclusive").sum()),
                         verdict=verdict(counted.reading), why=why(group)))
    return pd.DataFrame(rows)


def detail(table: pd.DataFrame) -> pd.DataFrame:
    """Every measure with its result as text, grouped under the paper claim it bears on."""
    order = {k: i for i, k in enumerate(PAPER_CLAIMS)}
    out = table.assign(paper_claim_title=[PAPER_CLAIMS[k][0] for k in table.paper_claim],
                       _order=[order[k] for k in table.paper_claim],
                       result=table.apply(_fmt, axis=1),
                       reading=[r if c else f"{r} (not counted)" for r, c in zip(table.reading, table.counts)])
    out = out.sort_values("_order", kind="stable")
    return out[["paper_claim_title", "claim", "chapter", "measure", "result", "n", "reading", "note"]].rename(
        columns={"paper_claim_title": "paper claim", "claim": "sub-claim"})
