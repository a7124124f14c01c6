"""The poster's control study: are both steps of DANCE needed, the optimised decoys and the range?

DANCE makes a population of images around ``x`` (step 1: decoys optimised to keep the layer's
representation) and reduces their maps pixelwise by the range (step 2). The control replaces
either step: the population by the same masks filled with Gaussian noise, a blur or the image's
mean colour (:func:`dance_book.experiments.replacement_populations`), and the range by the mean. Every
combination is scored on the same images with S_F (:func:`dance.metrics.fidelity`, lower = more
faithful by the paper's definition) and, as a second reading based on the benchmark's ground
truth, the share of saliency mass on the object (:func:`dance.metrics.mass_in_mask`, higher =
better).

Every population is computed once for both aggregates by :func:`dance_book.experiments.fidelity.scores`;
the optimised decoys and the blur populations are those of the fidelity chapter (same images,
same masks), so only noise and constant patches are new here.

**Equal population sizes.** The noise, blur and constant populations fill each of DANCE's M masks
once (M + 1 maps per image with the image); the paper's optimised decoys fill each mask twice, once
per direction (2M + 1). A range grows with the population's size, so the reference here is DANCE on
one decoy per mask (population ``"decoys_m"``, M + 1 maps, :func:`dance_book.experiments.maps.one_decoy_per_mask`),
and every alternative the claim counts has the same size; the paper's 2M + 1 decoys are shown
beside as context.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import pandas as pd

from .fidelity import powered_scores, powered_size
from .scores import AGGREGATES, compare, frame, population_sizes
from .maps import METHODS
from .claims import Claim, difference_interval, direction
from .settings import Settings

#: Populations of the control study, DANCE's first: at equal size (one decoy per mask), then the paper's
#: 2M + 1 decoys (context), then the replacements.
CONTROL_KINDS = ("decoys_m", "decoys", "noise", "blur", "constant")
#: The reference combination: DANCE itself, on a population of the replacements' size (M + 1 maps).
REFERENCE = {"population": "decoys_m", "aggregate": "range"}
#: Populations of another size than the reference's, shown as context only (the paper's decoys, 2M + 1 maps).
CONTEXT_KINDS = ("decoys",)


def control_scores(settings: Settings, n: Optional[int] = None,
                   methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """S_F and mass on the object for {optimised (one per mask and paper's two), noise, blur, constant} x
    {range, mean}, plus the raw maps.

    ``n`` defaults to ``settings.n_fidelity`` (the fidelity chapter's images, whose decoys and blur
    populations are reused). Returns the long table of :func:`dance_book.experiments.fidelity.fidelity_scores`
    (the raw maps have population ``"none"`` and aggregate ``"none"``; ``maps`` is the population's size).
    """
    n = settings.n_fidelity if n is None else n
    model_name = settings.main_model
    layer = settings.layer(model_name)
    return frame(settings, model_name, layer, methods, ("none",) + CONTROL_KINDS, n, aggregates=AGGREGATES)


def versus_reference(df: pd.DataFrame, value: str = "sf") -> pd.DataFrame:
    """Paired differences (combination - reference) per method for every other combination, with the
    maps per image of the combination and of the reference and whether the two are of equal size."""
    sizes = population_sizes(df, ("population", "aggregate"))
    ref_size = sizes[(REFERENCE["population"], REFERENCE["aggregate"])]
    rows = []
    combos = df[["population", "aggregate"]].drop_duplicates().itertuples(index=False)
    for kind, agg in combos:
        if kind == REFERENCE["population"] and agg == REFERENCE["aggregate"]:
            continue
        d = compare(df, {"population": kind, "aggregate": agg}, REFERENCE, by=("method",), value=value)
        d.insert(1, "population", kind)
        d.insert(2, "aggregate", agg)
        d.insert(3, "maps", sizes[(kind, agg)])
        d.insert(4, "reference maps", ref_size)
        d.insert(5, "equal size", kind not in CONTEXT_KINDS)
        rows.append(d)
    return pd.concat(rows, ignore_index=True)


def claims(settings: Settings) -> List[Claim]:
    """The poster's claim that both steps are needed, per base method and alternative, from the cached results.

    One measure per method and alternative: the paired difference (alternative - reference) of S_F,
    the reference DANCE on one decoy per mask with the range (M + 1 maps), each alternative of the
    same size (the same decoys with the mean; noise, blur and constant patches with the range or the
    mean). ``supports`` is True when the alternative has a higher S_F with its 95 % CI above 0 (lower
    S_F = more faithful, the paper's definition), False when its CI lies below 0, None otherwise.
    The claims page corrects them within the claim by Holm's method (no minimum over alternatives,
    which would be a post-selection interval). The paper's 2M + 1 decoys with the range follow as a
    context row per method (``counts=False``): the same DANCE on twice the population.
    """
    df = control_scores(settings)
    size = powered_size(settings, "control")
    runs = [(df, True)]
    if size["powered"]:  # the counted rows from the powered run; the chapter's own run becomes context (its pilot)
        runs = [(powered_scores(settings, "control"), True), (df, False)]
    out = []
    for frame_, counts in runs:
        out += _claims_of(frame_, counts, powered=size["powered"] and counts)
    return out


def _claims_of(df: pd.DataFrame, counts: bool, powered: bool) -> List[Claim]:
    """The rows of :func:`claims` from one run's scores: counted (``counts``) or the pilot's context rows."""
    sf = versus_reference(df[df.population != "none"], "sf")
    mass = versus_reference(df[df.population != "none"], "mass")
    out = []
    label = ", powered run" if powered else "" if counts else ", main run (context: the pilot of the powered run)"
    for method, name in METHODS.items():
        for _, d in sf[sf.method == method].iterrows():
            kind, agg = d["population"], d["aggregate"]
            m = mass[(mass.method == method) & (mass.population == kind) & (mass["aggregate"] == agg)].iloc[0]
            combo = f"{kind} + {agg} ({d['maps']} maps)"
            ref = f"{REFERENCE['population']} + {REFERENCE['aggregate']} ({d['reference maps']} maps)"
            measure = (f"Hodges-Lehmann paired difference of S_F, {combo} - {ref}, {name}, N={int(d['n'])}"
                       f"{' (powered run)' if powered else ''}")
            _, low, high = difference_interval(d)  # the Hodges-Lehmann interval (power.ROBUST_MEASURES)
            reading = direction(low, high, "above")
            mass_note = (f"mass on the object, alternative - reference: {m['mean_diff']:+.3f} "
                         f"[{m['ci_low']:+.3f}, {m['ci_high']:+.3f}] (higher = more on the object).")
            if kind in CONTEXT_KINDS:
                if agg == REFERENCE["aggregate"]:
                    out.append(dataclasses.replace(Claim.from_difference(
                        "control", f"{name}: the paper's DANCE (2M+1 maps) against DANCE on one decoy per mask "
                                   f"(context)", "control.md", measure, d, reading,
                        f"Context, not counted: the effect of the population's size alone (the same decoys, "
                        f"twice the members). {mass_note}"), counts=False))
                continue
            row = Claim.from_difference(
                "control", f"{name}: both steps needed: {kind} + {agg} is less faithful than optimised decoys "
                           f"+ range (poster control study){label}", "control.md", measure, d, reading,
                f"Equal population size. Lower = more faithful as printed; under the paper's higher-is-better "
                f"reading the alternative {'beats' if high < 0 else 'does not beat'} DANCE. {mass_note}")
            out.append(row if counts else dataclasses.replace(row, counts=False))
    return out
