r"""The fidelity chapter (paper Fig. 3 / A13): S_F with no decoys, optimised decoys, blur and inpainting.

The cached unit and the statistics are in :mod:`dance_book.experiments.scores`; its names the
chapter uses are re-exported here.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import pandas as pd

from .maps import METHODS
from .scores import (N_SHOW, SF_NOTE, compare, decoy_summary, example_heatmaps, frame, lower_sf, population,
                     sf_claim, summary)
from .claims import Claim
from .settings import Settings

__all__ = ["FIDELITY_KINDS", "fidelity_scores", "claims", "N_SHOW", "compare", "decoy_summary", "example_heatmaps",
           "population", "summary"]

#: Fidelity chapter: populations compared (paper Fig. 3).
FIDELITY_KINDS = ("none", "decoys", "blur", "inpaint")


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
    """
    out = []
    df = fidelity_scores(settings)
    n = settings.n_fidelity
    for method, name in METHODS.items():
        d = compare(df[df.method == method], {"population": "decoys"}, {"population": "none"}).iloc[0]
        out.append(sf_claim("fidelity", f"{name}: fidelity better with decoys (Fig. 3)", "fidelity.md",
                          f"mean paired difference of S_F, decoys - none, {name}, N={n}", d, lower_sf(d),
                          f"{SF_NOTE} Higher-is-better reading: "
                          f"{'supported' if d['ci_low'] > 0 else 'not supported'}."))
        for other in ("blur", "inpaint"):
            d = compare(df[df.method == method], {"population": "decoys"}, {"population": other}).iloc[0]
            out.append(sf_claim("replacement", f"{name}: optimised decoys beat {'blurring' if other == 'blur' else 'inpainting'} "
                              f"(Fig. 3)", "fidelity.md",
                              f"mean paired difference of S_F, decoys - {other}, {name}, N={n}", d, lower_sf(d),
                              f"{SF_NOTE} Higher-is-better reading: "
                              f"{'supported' if d['ci_low'] > 0 else 'not supported'}."
                              + (" Inpainting is scikit-image's biharmonic method, not Yu et al.'s model."
                                 if other == "inpaint" else "")))
    return out
