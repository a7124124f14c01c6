r"""The architectures chapter (paper Fig. 6 / A15): S_F with and without decoys on each architecture.

Each model's decoys use the main layer's mask family at its Table-A2-position layer; see
:mod:`dance_book.experiments.scores`.
"""
from __future__ import annotations

import dataclasses
import sys

from typing import List, Optional, Sequence

import pandas as pd

from .fidelity import FAMILY_SOLVER, own_family_table, own_family_targets, powered_scores, powered_size
from .maps import METHODS
from .scores import N_SHOW, SF_NOTE, compare, example_heatmaps, frame, lower_sf, mask_spacing, sf_claim, summary
from .claims import Claim
from .settings import Settings

__all__ = ["architecture_scores", "claims", "own_family_claims", "N_SHOW", "compare", "example_heatmaps", "mask_spacing", "summary"]

def architecture_scores(settings: Settings, n: Optional[int] = None, models: Optional[Sequence[str]] = None,
                        methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """Paper Fig. 6 / A15: S_F with and without decoys for each architecture at its Table-A2-position layer."""
    n = settings.n_small if n is None else n
    models = settings.architectures if models is None else list(models)
    parts = []
    for name in models:
        print(f"model {name} @ {settings.layer(name)}", file=sys.stderr, flush=True)
        parts.append(frame(settings, name, settings.layer(name), methods, ("none", "decoys"), n))
    return pd.concat(parts, ignore_index=True)


def claims(settings: Settings) -> List[Claim]:
    """The paper's claim that decoys improve fidelity on every architecture, from the cached results."""
    out = []
    adf = architecture_scores(settings)
    size = powered_size(settings, "architectures")
    pdf = powered_scores(settings, "architectures") if size["powered"] else None
    # (label, scores, counted): the powered run counts and the chapter's own run is its context (the pilot)
    runs = [("", adf, True)] if pdf is None else [(", powered run", pdf, True),
                                                  (", main run (context: the pilot of the powered run)", adf, False)]
    for model_name in settings.architectures:
        for method, name in METHODS.items():
            for label, frame_, counts in runs:
                g = frame_[(frame_.model == model_name) & (frame_.method == method)]
                d = compare(g, {"population": "decoys"}, {"population": "none"}).iloc[0]
                row = sf_claim("architectures", f"{name}: fidelity better with decoys on {model_name} (Fig. 6){label}",
                               "architectures.md",
                               f"Hodges-Lehmann paired difference of S_F, decoys - none, {name}, {model_name} at "
                               f"{settings.layer(model_name)}, N={int(d['n'])}{' (powered run)' if frame_ is pdf else ''}",
                               d, lower_sf(d),
                               f"{SF_NOTE} Higher-is-better reading: "
                               f"{'supported' if d['hl_low'] > 0 else 'not supported'}.")
                out.append(row if counts else dataclasses.replace(row, counts=False))
    return out + own_family_claims(settings)


def own_family_claims(settings: Settings) -> List[Claim]:
    """Context rows (``counts=False``) of the architectures claim from the own-lattice sensitivity run
    (:func:`~dance_book.experiments.fidelity.own_family_table`): per other model and base method, S_F(decoys) -
    S_F(raw) with the model's own lattice, labelled with the solver and the masks used."""
    targets = [t for t in own_family_targets(settings) if t[0] != settings.main_model]
    out = []
    for r in own_family_table(settings, targets=targets).itertuples():
        name = METHODS[r.method]
        d = dict(hl=r.own, hl_low=r.own_low, hl_high=r.own_high, n=r.n, p_signed_rank=r.own_p, sd_diff=r.own_sd)
        out.append(dataclasses.replace(sf_claim(
            "architectures", f"{name}: fidelity better with decoys on {r.model}, its own mask lattice, line search "
                             "(context: decoy family)", "architectures.md",
            f"Hodges-Lehmann paired difference of S_F, decoys ({r.model}'s own lattice, {r.masks} of {r.masks_own} "
            f"masks, {r.maps} maps, {FAMILY_SOLVER} solver) - none, {name}, {r.model} at {r.layer}, N={r.n}",
            d, lower_sf(d),
            f"{SF_NOTE} Context, not counted: the model's own default lattice instead of the main layer's, with the "
            f"line-search solver; own minus main lattice {r.hl:+.3g} [{r.hl_low:+.3g}, {r.hl_high:+.3g}]."),
            counts=False))
    return out
