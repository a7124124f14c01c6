r"""The fidelity chapter (paper Fig. 3 / A13): S_F with no decoys, optimised decoys, blur and inpainting.

Blur and inpainting fill each of DANCE's M masks once (M + 1 maps per image with the image), the
optimised decoys fill each mask twice, once per direction (2M + 1). A range grows with the size of the
population, so the claim "optimised decoys beat blurring / inpainting" is judged at equal size: on
:data:`EQUAL_SIZE_DECOYS` (one decoy per mask, M + 1 maps); the paper-literal 2M + 1 decoys are
reported beside it as context (rows that do not count towards the verdict).

The cached unit and the statistics are in :mod:`dance_book.experiments.scores`; its names the
chapter uses are re-exported here.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import pandas as pd

from .maps import METHODS
from .scores import (N_SHOW, SF_NOTE, compare, decoy_summary, example_heatmaps, frame, lower_sf, population,
                     sf_claim, summary)
from .claims import Claim
from .settings import Settings

__all__ = ["FIDELITY_KINDS", "EQUAL_SIZE_DECOYS", "REPLACEMENTS",
           "fidelity_scores", "claims", "N_SHOW", "compare", "decoy_summary", "example_heatmaps",
           "population", "summary"]

#: Fidelity chapter: populations compared (paper Fig. 3), and the equal-size decoys.
FIDELITY_KINDS = ("none", "decoys", "decoys_m", "blur", "inpaint")
#: The decoys compared with the replacements: one per mask, M + 1 maps per image like blur and inpainting.
EQUAL_SIZE_DECOYS = "decoys_m"
#: The replacement populations of Fig. 3 (one per mask).
REPLACEMENTS = ("blur", "inpaint")


def fidelity_scores(settings: Settings, n: Optional[int] = None,
                    methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """Paper Fig. 3 / A13: S_F per image for each method with no decoys, decoys, blur and inpainting.

    Returns a long table with columns ``model, layer, method, population, aggregate, image, sf, mass``
    (``n`` defaults to ``settings.n_fidelity``).
    """
    n = settings.n_fidelity if n is None else n
    model_name = settings.main_model
    return frame(settings, model_name, settings.layer(model_name), methods, FIDELITY_KINDS, n)


def claims(settings: Settings) -> List[Claim]:
    """The paper's fidelity and replacement claims (the fidelity chapter), from the cached results.

    ``supports`` reads S_F as the paper defines it (lower = more faithful): True when the paired
    difference (decoys - reference) has its whole 95% CI below zero, False when it lies above zero,
    None when it contains zero. The paper's results section
    says S_F is "higher with decoys" and reads that as better; the note of each entry says so.

    "Decoys beat blurring / inpainting" compares populations of equal size, M + 1 maps per image
    (:data:`EQUAL_SIZE_DECOYS` against the replacement); the same difference with the paper's 2M + 1
    decoys follows as a context row (``counts=False``). "Fidelity better with decoys" compares the
    paper's decoys with the raw map.
    """
    out = []
    df = fidelity_scores(settings)
    n = settings.n_fidelity
    for method, name in METHODS.items():
        d = compare(df[df.method == method], {"population": "decoys"}, {"population": "none"}).iloc[0]
        out.append(sf_claim("fidelity", f"{name}: fidelity better with decoys (Fig. 3)", "fidelity.md",
                          f"Hodges-Lehmann paired difference of S_F, decoys - none, {name}, N={n}", d, lower_sf(d),
                          f"{SF_NOTE} Higher-is-better reading: "
                          f"{'supported' if d['hl_low'] > 0 else 'not supported'}."))
        for other in REPLACEMENTS:
            what = "blurring" if other == "blur" else "inpainting"
            inpaint = " Inpainting is scikit-image's biharmonic method, not Yu et al.'s model." if other == "inpaint" else ""
            sub = df[df.method == method]
            d = compare(sub, {"population": EQUAL_SIZE_DECOYS}, {"population": other}).iloc[0]
            wide = compare(sub, {"population": "decoys"}, {"population": other}).iloc[0]
            out.append(sf_claim("replacement", f"{name}: optimised decoys beat {what} (Fig. 3)", "fidelity.md",
                                f"Hodges-Lehmann paired difference of S_F, decoys (one per mask, M+1 maps) - {other} (M+1 maps), "
                                f"{name}, N={n}", d, lower_sf(d),
                                f"{SF_NOTE} Higher-is-better reading: "
                                f"{'supported' if d['hl_low'] > 0 else 'not supported'}. Equal population size; "
                                f"with the paper's 2M+1 decoys the difference is {wide['hl']:+.3f} "
                                f"[{wide['hl_low']:+.3f}, {wide['hl_high']:+.3f}] (context row).{inpaint}"))
            out.append(dataclasses.replace(
                sf_claim("replacement", f"{name}: optimised decoys beat {what}, paper's 2M+1 decoys (context: "
                         f"unequal population size)", "fidelity.md",
                         f"Hodges-Lehmann paired difference of S_F, decoys (2M+1 maps) - {other} (M+1 maps), {name}, N={n}",
                         wide, lower_sf(wide),
                         f"{SF_NOTE} Context, not counted: the decoy population has twice the members of the "
                         f"{other} population, and a range grows with the population's size.{inpaint}"),
                counts=False))
    return out
