r"""The architectures chapter (paper Fig. 6 / A15): S_F with and without decoys on each architecture.

The chapter's runs give each model's decoys the main layer's mask family at its Table-A2-position layer; see
:mod:`dance_book.experiments.scores`. The claim's counted run (:func:`own_family_powered`) gives each model its own
default family instead.
"""
from __future__ import annotations

import dataclasses
import sys

from typing import List, Optional, Sequence

import pandas as pd

from .fidelity import (FAMILY_SOLVER, OWN_LATTICE, family_scores, matched_masks, own_family_table, own_family_targets,
                       powered_scores, powered_size)
from .maps import METHODS
from .stats import paired_difference
from .scores import (N_SHOW, OWN_FAMILY_SOLVER, SF_NOTE, compare, example_heatmaps, frame, lower_sf, mask_spacing,
                     maps_per_image, sf_claim, summary)
from .claims import Claim
from .settings import Settings

__all__ = ["architecture_scores", "claims", "own_family_claims", "own_family_powered", "own_family_powered_display",
           "OWN_FAMILY_SOLVER", "N_SHOW",
           "compare", "example_heatmaps", "mask_spacing", "summary"]

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


def own_family_powered(settings: Settings, methods: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The architectures claim's counted run on the models other than the main one (issue 12, section 1): each
    model's decoys on its **own** default mask family (the lattice DANCE measures at that model's layer), cut by a
    seeded random subset to at most the main layer's number of masks (equal populations with the main model's,
    ``2 M + 1`` maps per image), solved by :data:`OWN_FAMILY_SOLVER` on the first ``powered_size(settings,
    "architectures")["n"]`` images. The main model needs no such run: its own family is the main lattice, which the
    main-lattice powered run (:func:`~dance_book.experiments.fidelity.powered_scores`) already uses.

    Returns:
        one row per (model, method): ``model``, ``layer``, ``method``, ``masks_own`` (the own family's size),
        ``masks`` (the number used), ``masks_main`` (the main layer's family's size), ``maps`` (per image, the
        image's included), ``cover`` (the share of the image the masks used cover) and the paired difference S_F(decoys) - S_F(raw) of
        :func:`~dance_book.experiments.stats.paired_difference` (``robust=True``: ``hl``, ``hl_low``, ``hl_high``,
        ``p_signed_rank``, ``n``, ...).
    """
    n = powered_size(settings, "architectures")["n"]
    rows = []
    for model_name in settings.architectures:
        if model_name == settings.main_model:
            continue
        layer = settings.layer(model_name)
        sizes = matched_masks(settings, model_name, layer)
        for method in (settings.sweep(METHODS) if methods is None else methods):
            r = family_scores(settings, method, OWN_LATTICE, n, model_name=model_name, masks=sizes["masks"],
                              solver=OWN_FAMILY_SOLVER)
            rows.append(dict(model=model_name, layer=layer, method=method, masks_own=sizes["masks_own"],
                             masks=sizes["masks"], masks_main=sizes["masks_main"],
                             maps=maps_per_image(r["n_decoys"]),
                             cover=sizes["masks"] * r["mask_pixels"] / sizes["pixels"],
                             **paired_difference(r["sf_decoys"], r["sf_none"], robust=True)))
    return pd.DataFrame(rows)


def own_family_powered_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`own_family_powered` as the chapter shows it: per model and method, N, the own family's masks and the
    number used (``masks``: own → used), the maps per image, the share of the image the masks cover, and
    S_F(decoys) - S_F(raw) (Hodges-Lehmann estimate [95 % interval])."""
    return pd.DataFrame({
        "model": table.model, "method": table.method.map(METHODS), "N": table.n,
        "masks": [f"{a} → {b}" for a, b in zip(table.masks_own, table.masks)],
        "maps": table.maps, "cover": [f"{c:.0%}" for c in table.cover],
        "S_F decoys − raw, HL [95 % CI]": [f"{r.hl:+.2f} [{r.hl_low:+.2f}, {r.hl_high:+.2f}]"
                                           for r in table.itertuples()]})


def claims(settings: Settings) -> List[Claim]:
    """The paper's claim that decoys improve fidelity on every architecture, from the cached results.

    With a powered run (:func:`~dance_book.experiments.fidelity.powered_size`) the counted rows are each model's
    decoys on its own default mask family at the powered N (issue 12, section 1): the main-lattice powered run for
    the main model (its own family), :func:`own_family_powered` for the others; the main lattice forced onto the
    other models and the chapter's own run (the pilot) are context. Without one (other scales, the paper-scale
    smoke run) the chapter's own run counts."""
    out = []
    adf = architecture_scores(settings)
    size = powered_size(settings, "architectures")
    if not size["powered"]:
        return _sf_rows(settings, adf, "", True) + own_family_claims(settings)
    pdf = powered_scores(settings, "architectures")
    own = own_family_powered(settings)
    for model_name in settings.architectures:
        main = model_name == settings.main_model
        for method, name in METHODS.items():
            if not main:
                r = own[(own.model == model_name) & (own.method == method)].iloc[0]
                out.append(sf_claim(
                    "architectures", f"{name}: fidelity better with decoys on {model_name} (Fig. 6), powered run, "
                                     "its own mask family", "architectures.md",
                    f"Hodges-Lehmann paired difference of S_F, decoys ({model_name}'s own lattice, {r.masks} of "
                    f"{r.masks_own} masks, {r.maps} maps, covering {r.cover:.0%} of the image, {OWN_FAMILY_SOLVER}) - "
                    f"none, {name}, {model_name} at {r.layer}, N={int(r.n)} (powered run)",
                    r.to_dict(), lower_sf(r.to_dict()),
                    f"{SF_NOTE} Higher-is-better reading: {'supported' if r.hl_low > 0 else 'not supported'}. The "
                    f"model's own default mask family (the lattice measured at its layer), cut to at most the main "
                    f"layer's number of masks; the main layer's lattice on this model is context."))
            label = ", powered run" + ("" if main else " (context: the main layer's lattice)")
            out += _sf_rows(settings, pdf, label, main, [model_name], [method], powered=True)
            out += _sf_rows(settings, adf, ", main run (context: the pilot of the powered run)", False,
                            [model_name], [method])
    return out + own_family_claims(settings)


def _sf_rows(settings: Settings, frame_: pd.DataFrame, label: str, counts: bool,
             models: Optional[Sequence[str]] = None, methods: Optional[Sequence[str]] = None,
             powered: bool = False) -> List[Claim]:
    """Claims rows of S_F(decoys) - S_F(raw) per model and method of a :func:`frame`-format run (the main
    layer's lattice on every model), ``counts`` or context."""
    out = []
    for model_name in (settings.architectures if models is None else models):
        for method in (tuple(METHODS) if methods is None else methods):
            name = METHODS[method]
            g = frame_[(frame_.model == model_name) & (frame_.method == method)]
            d = compare(g, {"population": "decoys"}, {"population": "none"}).iloc[0]
            row = sf_claim("architectures", f"{name}: fidelity better with decoys on {model_name} (Fig. 6){label}",
                           "architectures.md",
                           f"Hodges-Lehmann paired difference of S_F, decoys - none, {name}, {model_name} at "
                           f"{settings.layer(model_name)}, N={int(d['n'])}{' (powered run)' if powered else ''}",
                           d, lower_sf(d),
                           f"{SF_NOTE} Higher-is-better reading: "
                           f"{'supported' if d['hl_low'] > 0 else 'not supported'}.")
            out.append(row if counts else dataclasses.replace(row, counts=False))
    return out


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
