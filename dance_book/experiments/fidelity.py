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
import sys
import time
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from dance.decoys import SOLVERS
from dance.enhanced import aggregate_maps
from dance.metrics import fidelity as fidelity_metric

from .cache import cached
from .inputs import load_images, load_model, shared_decoys
from .maps import METHODS, mask_family, predicted
from .scores import (AGGREGATES, N_SHOW, SF_NOTE, compare, decoy_summary, example_heatmaps, frame, lower_sf, mask_spacing,
                     maps_per_image, population, population_maps, sf_claim, summary)
from . import power as Pw
from .claims import Claim
from .settings import Settings
from .stats import paired_difference

__all__ = ["FIDELITY_KINDS", "EQUAL_SIZE_DECOYS", "REPLACEMENTS", "FAMILIES", "FAMILY_SOLVER", "OWN_LATTICE",
           "matched_masks", "own_family_targets", "own_family_table", "own_family_display",
           "POWERED_KINDS", "POWERED_AGGREGATES", "POWERED_MEASURES", "POWERED_SCALES", "powered_measures", "POWERED_BUDGET_S",
           "POWERED_COST_PER_IMAGE_S", "powered_size", "powered_rule",
           "powered_scores", "fidelity_scores", "family_scores", "family_table", "family_claims", "claims", "N_SHOW", "compare",
           "decoy_summary", "example_heatmaps",
           "population", "summary"]

#: Fidelity chapter: populations compared (paper Fig. 3), and the equal-size decoys.
FIDELITY_KINDS = ("none", "decoys", "decoys_m", "blur", "inpaint")
#: The decoys compared with the replacements: one per mask, M + 1 maps per image like blur and inpainting.
EQUAL_SIZE_DECOYS = "decoys_m"
#: The replacement populations of Fig. 3 (one per mask).
REPLACEMENTS = ("blur", "inpaint")


#: The powered runs of this chapter's two claims (issue 12, section 3): the populations each needs. The fidelity
#: claim compares the paper's decoys with the raw map; the replacement claim compares one decoy per mask with
#: blur and inpainting at equal population size.
POWERED_KINDS = {"fidelity": ("none", "decoys"), "replacement": (EQUAL_SIZE_DECOYS,) + REPLACEMENTS,
                 "architectures": ("none", "decoys"),
                 # the control chapter's reference and its counted alternatives (control.CONTROL_KINDS less the
                 # context kind "decoys"), each with the range and the mean
                 "control": (EQUAL_SIZE_DECOYS, "noise", "blur", "constant")}
#: The aggregates each powered run computes (the control claim compares the range with the mean).
POWERED_AGGREGATES = {"control": AGGREGATES}
#: Counted measures per claim, the m of Holm's strictest level alpha / m that the power rule plans for (the
#: architectures claim has its three base methods on each model of ``settings.architectures``: see
#: :func:`powered_measures`).
POWERED_MEASURES = {"fidelity": len(METHODS), "replacement": len(METHODS) * len(REPLACEMENTS),
                    "control": len(METHODS) * (len(POWERED_KINDS["control"]) * len(AGGREGATES) - 1)}
#: Scales whose claims are judged on the powered runs; any other scale (and the paper-scale smoke run) judges
#: them on its ``settings.n_fidelity`` images. Tests that shrink the CI settings clear this.
POWERED_SCALES = ("ci",)
#: The compute budget of each powered run (fresh CPU seconds), declared with the runs on 2026-11-28 before they
#: ran (the fidelity run first, then the replacement run, then the architectures run, 1,800 s per model, and the
#: control run).
POWERED_BUDGET_S = {"fidelity": 1800.0, "replacement": 1800.0, "architectures": 5400.0, "control": 1800.0}
#: CPU seconds per image of each run's populations for all three base methods, decoys included, from the store
#: entries of the N = 50 run (2026-11-27) and the fidelity run's decoys (0.9 s per image): fidelity, maps
#: 130 s per 50 images and decoys; replacement, maps 242 s per 50 images (inpainting is the largest part) and
#: decoys; architectures, the N = 16 entries of alexnet-shapes (51 s) and resnet-shapes (76 s) per 16 images, with
#: their decoys, and the fidelity run's cost for vgg-shapes; control, maps of its four kinds 220 s per 50 images
#: and decoys.
POWERED_COST_PER_IMAGE_S = {"fidelity": 4.2, "replacement": 5.8, "architectures": 12.1, "control": 5.3}


def _check_powered(claim: str) -> str:
    if claim not in POWERED_KINDS:
        raise ValueError(f"claim must be one of {list(POWERED_KINDS)}, got {claim!r}")
    return claim


def powered_measures(settings: Settings, claim: str) -> int:
    """The counted measures of a claim's powered run (:data:`POWERED_MEASURES`; for the architectures claim,
    the three base methods on each of ``settings.architectures``)."""
    claim = _check_powered(claim)
    return len(METHODS) * len(settings.architectures) if claim == "architectures" else POWERED_MEASURES[claim]


def powered_size(settings: Settings, claim: str = "fidelity") -> dict:
    """The N of a claim's powered run: the claims' power rule (the claim's declared d_z, 80 % power, the
    paired t-test at Holm's strictest level alpha / m over its counted measures, :func:`powered_measures`),
    capped by :data:`POWERED_BUDGET_S` at :data:`POWERED_COST_PER_IMAGE_S`, and never below the chapter's
    own run (``settings.n_fidelity``; ``settings.n_small`` for the architectures claim).

    Args:
        settings: the experiment settings.
        claim: ``"fidelity"``, ``"replacement"`` or ``"architectures"`` (a key of :data:`POWERED_KINDS`).

    Returns:
        dict with ``n`` (the images to use), ``needed`` (the rule's N), ``affordable`` (the budget's N),
        ``binds`` (the budget caps N below the rule's), ``powered`` (whether this scale has powered runs,
        :data:`POWERED_SCALES`) and ``estimate_s`` (the cost estimate of ``n`` images).
    """
    claim = _check_powered(claim)
    needed = int(Pw.n_needed(1.0, Pw.DECLARATIONS[claim].effect_dz, alpha=Pw.ALPHA / powered_measures(settings, claim)))
    powered = settings.scale in POWERED_SCALES and not settings.smoke
    main_n = settings.n_small if claim == "architectures" else settings.n_fidelity  # the chapter's own run
    return Pw.budgeted_n(needed, main_n, POWERED_BUDGET_S[claim], POWERED_COST_PER_IMAGE_S[claim], powered)


def powered_rule(settings: Settings, claim: str = "fidelity") -> str:
    """How :func:`powered_size` chose a claim's N, in words (the chapters paste it above their powered runs):
    the N, the rule's N with its d_z, power and Holm level, and whether the budget binds."""
    size = powered_size(settings, claim)
    per = " per model" if claim == "architectures" else ""
    return (f"N = {size['n']} images{per} (the rule asks for {size['needed']}: d_z = {Pw.DECLARATIONS[claim].effect_dz:g}, "
            f"{100 * Pw.POWER:g} % power, Holm's α/{powered_measures(settings, claim)} over the claim's counted measures; "
            f"{Pw.budget_clause(size, POWERED_BUDGET_S[claim], POWERED_COST_PER_IMAGE_S[claim])})")


def powered_scores(settings: Settings, claim: str = "fidelity", methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """S_F per image of a claim's populations (:data:`POWERED_KINDS`) on the first ``powered_size(settings,
    claim)["n"]`` images (for the architectures claim, of every model of ``settings.architectures`` at its
    layer): the claim's powered run, in the long format of :func:`fidelity_scores`. Its first images are those
    of the chapter's own run (an internal pilot: N was fixed by the
    rule, which does not read the pilot's effect)."""
    claim = _check_powered(claim)
    n = powered_size(settings, claim)["n"]
    models = settings.architectures if claim == "architectures" else (settings.main_model,)
    aggregates = POWERED_AGGREGATES.get(claim, ("range",))
    return pd.concat([frame(settings, m, settings.layer(m), methods, POWERED_KINDS[claim], n, aggregates=aggregates)
                      for m in models], ignore_index=True)


def fidelity_scores(settings: Settings, n: Optional[int] = None,
                    methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """Paper Fig. 3 / A13: S_F per image for each method with no decoys, decoys, blur and inpainting.

    Returns a long table with columns ``model, layer, method, population, aggregate, image, sf, mass``
    (``n`` defaults to ``settings.n_fidelity``).
    """
    n = settings.n_fidelity if n is None else n
    model_name = settings.main_model
    return frame(settings, model_name, settings.layer(model_name), methods, FIDELITY_KINDS, n)


def _with_powered_row(row: Claim, powered: pd.DataFrame, method: str, pair: Sequence[str], size: dict, n: int,
                      measure: str, note: str = "", tail: str = "") -> List[Claim]:
    """The counted row of a powered run (the paired difference ``pair[0] - pair[1]`` of S_F for ``method``) and
    the main run's ``row`` turned into context (the powered run's pilot), in that order; ``note`` follows the
    reading in the row's note and ``tail`` ends it."""
    name = METHODS[method]
    p = compare(powered[powered.method == method], {"population": pair[0]}, {"population": pair[1]}).iloc[0]
    base = row.claim.split(" (Fig. 3)")[0]
    counted = sf_claim(row.paper_claim, f"{base} (Fig. 3), powered run", "fidelity.md",
                       f"{measure}, {name}, N={size['n']} (powered run)", p, lower_sf(p),
                       f"{SF_NOTE} Higher-is-better reading: {'supported' if p['hl_low'] > 0 else 'not supported'}."
                       f"{note} N from the power rule{' capped by the budget' if size['binds'] else ''}; its first {n} "
                       f"images are the main run's.{tail}")
    pilot = dataclasses.replace(row, claim=f"{base} (Fig. 3), main run (context: the pilot of the powered run)",
                                counts=False)
    return [counted, pilot]


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
    size, size_r = powered_size(settings), powered_size(settings, "replacement")
    powered = powered_scores(settings) if size["powered"] else None
    powered_r = powered_scores(settings, "replacement") if size_r["powered"] else None
    for method, name in METHODS.items():
        d = compare(df[df.method == method], {"population": "decoys"}, {"population": "none"}).iloc[0]
        row = sf_claim("fidelity", f"{name}: fidelity better with decoys (Fig. 3)", "fidelity.md",
                       f"Hodges-Lehmann paired difference of S_F, decoys - none, {name}, N={n}", d, lower_sf(d),
                       f"{SF_NOTE} Higher-is-better reading: {'supported' if d['hl_low'] > 0 else 'not supported'}.")
        if powered is not None:
            out += _with_powered_row(row, powered, method, ("decoys", "none"), size, n,
                                     "Hodges-Lehmann paired difference of S_F, decoys - none")
        else:
            out.append(row)
        for other in REPLACEMENTS:
            what = "blurring" if other == "blur" else "inpainting"
            inpaint = " Inpainting is scikit-image's biharmonic method, not Yu et al.'s model." if other == "inpaint" else ""
            sub = df[df.method == method]
            d = compare(sub, {"population": EQUAL_SIZE_DECOYS}, {"population": other}).iloc[0]
            wide = compare(sub, {"population": "decoys"}, {"population": other}).iloc[0]
            row = sf_claim("replacement", f"{name}: optimised decoys beat {what} (Fig. 3)", "fidelity.md",
                           f"Hodges-Lehmann paired difference of S_F, decoys (one per mask, M+1 maps) - {other} (M+1 maps), "
                           f"{name}, N={n}", d, lower_sf(d),
                           f"{SF_NOTE} Higher-is-better reading: "
                           f"{'supported' if d['hl_low'] > 0 else 'not supported'}. Equal population size; "
                           f"with the paper's 2M+1 decoys the difference is {wide['hl']:+.3f} "
                           f"[{wide['hl_low']:+.3f}, {wide['hl_high']:+.3f}] (context row).{inpaint}")
            if powered_r is not None:
                out += _with_powered_row(row, powered_r, method, (EQUAL_SIZE_DECOYS, other), size_r, n,
                                         f"Hodges-Lehmann paired difference of S_F, decoys (one per mask, M+1 maps) - "
                                         f"{other} (M+1 maps)", " Equal population size.", inpaint)
            else:
                out.append(row)
            out.append(dataclasses.replace(
                sf_claim("replacement", f"{name}: optimised decoys beat {what}, paper's 2M+1 decoys (context: "
                         f"unequal population size)", "fidelity.md",
                         f"Hodges-Lehmann paired difference of S_F, decoys (2M+1 maps) - {other} (M+1 maps), {name}, N={n}",
                         wide, lower_sf(wide),
                         f"{SF_NOTE} Context, not counted: the decoy population has twice the members of the "
                         f"{other} population, and a range grows with the population's size.{inpaint}"),
                counts=False))
    return out + family_claims(settings)


#: The sensitivity run of the decoy family (issue 12, section 1): the paper's one-patch masks against the
#: book's lattice masks, both solved by the library's line search (the paper's solver is Adam; the line search
#: keeps each stored entry within CI's recheck budget). Family name -> the decoy options that make it.
FAMILIES = {"one patch": dict(spacing=None), "lattice": dict()}
#: The solver of the sensitivity run (a label of every row it gives).
FAMILY_SOLVER = "linesearch"


#: The decoy layer of the paper's kind on the main model (Table A2's VGG16 layer is the post-ReLU output before
#: the first pool; the book's main layer is a pre-ReLU conv after it): the layer-kind sensitivity row.
PAPER_KIND_LAYER = {"vgg-shapes": "features.relu1_1"}


def family_scores(settings: Settings, method: str, family: str, n: Optional[int] = None,
                  layer: Optional[str] = None, model_name: Optional[str] = None, masks: Optional[int] = None,
                  solver: str = FAMILY_SOLVER) -> dict:
    """S_F of the raw and the decoy-enhanced (range) maps of the first ``n`` images with one decoy family
    (cached, one entry per base method and family; ``n`` defaults to ``settings.n_fidelity``).

    ``family`` is a key of :data:`FAMILIES`: ``"one patch"`` optimises decoys of one 3x3 patch per mask
    (``spacing=None``, the paper's family), subsampled to as many masks per image as the book's lattice family
    has at the main layer (``n_masks``, a seeded random subset), so that both populations have ``2M + 1`` maps
    per image; ``"lattice"`` is the book's own family (patches a lattice apart share a mask). Both use the
    :data:`FAMILY_SOLVER`, so that their difference is the family's alone.

    ``layer`` (default: the main layer) constrains the decoys at another layer of the main model, with the
    main layer's masks (the lattice spacing of :func:`~dance_book.experiments.scores.mask_spacing`, the
    number of masks of the main layer's family): the layer-kind sensitivity row (:data:`PAPER_KIND_LAYER`).
    ``model_name`` (default: the main model) optimises them on another architecture, at ``layer`` (default: that
    model's layer). There the family :data:`OWN_LATTICE` is that layer's own default lattice (the spacing measured
    at that layer, what DANCE would use there), against ``"lattice"``, the main layer's lattice forced onto it (the
    book's default there); ``masks`` keeps a seeded random subset of that many masks (:func:`own_family_table`
    matches both families' population sizes with it). ``solver`` (default :data:`FAMILY_SOLVER`) is
    ``"linesearch"`` or ``"adam"`` (the paper's, what the architectures claim's own-family run uses).

    Returns:
        dict with ``sf_none``, ``sf_decoys`` (numpy ``[n]``), ``n_decoys``, ``dropped`` (per image),
        ``n_masks``, ``mask_pixels`` (mean pixels per mask), ``family``, ``solver`` and ``seconds``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if family not in FAMILIES and family != OWN_LATTICE:
        raise ValueError(f"family must be one of {list(FAMILIES) + [OWN_LATTICE]}, got {family!r}")
    n = settings.n_fidelity if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if masks is not None and (isinstance(masks, bool) or not isinstance(masks, int) or masks < 1):
        raise ValueError(f"masks must be a positive int or None, got {masks!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    main = settings.layer(settings.main_model)
    model_name = settings.main_model if model_name is None else model_name
    layer = settings.layer(model_name) if layer is None else layer
    model = load_model(model_name)
    n_masks = int(mask_family(load_model(settings.main_model), load_images(settings, 1).images, main,
                              settings).shape[0])
    options = dict(FAMILIES.get(family, {}), solver=solver)
    if family == "one patch":
        options["n_masks"] = n_masks
    elif family == "lattice" and (model_name, layer) != (settings.main_model, main):
        options["spacing"] = mask_spacing(settings)  # the main layer's lattice, not the one measured at this layer
    if masks is not None:
        options["n_masks"] = masks
    config = dict(settings=repr(settings), model=model_name, layer=layer, method=method, family=family, n=n,
                  options=sorted(options.items()))

    def compute():
        start = time.perf_counter()
        pops = shared_decoys(settings, model_name, n, layer=layer, **options)
        print(f"S_F: {family} decoys ({solver}), {METHODS[method]}, {n} images ...", file=sys.stderr, flush=True)
        x = load_images(settings, n).images
        target = predicted(model, x)
        maps = population_maps(model, x, target, method, settings, pops, seed=settings.seed)
        raw = torch.stack([g[0] for g in maps])
        dance = torch.stack([aggregate_maps(g, "range") for g in maps])
        return dict(sf_none=fidelity_metric(model, x, raw, target).cpu().numpy(),
                    sf_decoys=fidelity_metric(model, x, dance, target).cpu().numpy(),
                    n_decoys=np.array([len(p) for p in pops]), dropped=np.array([int(p.dropped) for p in pops]),
                    n_masks=n_masks, mask_pixels=float(np.mean([float(p.masks.sum(dim=(1, 2, 3)).float().mean())
                                                                for p in pops])),
                    family=family, solver=solver, seconds=time.perf_counter() - start)

    return cached("fidelity-family", config, compute)


def family_table(settings: Settings, n: Optional[int] = None, methods: Optional[Sequence[str]] = None,
                 layer: Optional[str] = None, families: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per base method (``methods``, default every method of :data:`METHODS`; in the paper-scale smoke
    run the ends of that list, :meth:`Settings.sweep`) and family of :data:`FAMILIES` (or ``families``) at
    ``layer`` (default the main layer): the paired difference S_F(decoys) - S_F(raw) (mean with t-interval,
    Hodges-Lehmann estimate ``hl`` with its distribution-free interval, the reading of S_F measures), its reading
    (:func:`lower_sf`), the maps per image, pixels per mask and decoys dropped."""
    rows = []
    for method in (settings.sweep(METHODS) if methods is None else methods):
        for family in (tuple(FAMILIES) if families is None else families):
            r = family_scores(settings, method, family, n, layer=layer)
            d = paired_difference(r["sf_decoys"], r["sf_none"], robust=True)
            rows.append(dict(method=method, family=family, layer=layer or settings.layer(settings.main_model),
                             solver=r["solver"], **d, supports=lower_sf(d),
                             maps=maps_per_image(r["n_decoys"]),
                             mask_pixels=r["mask_pixels"], dropped=int(r["dropped"].sum())))
    return pd.DataFrame(rows)


def family_claims(settings: Settings) -> List[Claim]:
    """Context rows (``counts=False``) of the fidelity claim from the decoy-family sensitivity run
    (:func:`family_table`): per base method and family, S_F(decoys) - S_F(raw), labelled with the solver."""
    out = []
    for _, r in family_table(settings).iterrows():
        name = METHODS[r.method]
        out.append(dataclasses.replace(sf_claim(
            "fidelity", f"{name}: fidelity better with decoys, {r.family} masks, line search (context: decoy family)",
            "fidelity.md", f"Hodges-Lehmann paired difference of S_F, decoys ({r.family} masks, {r.maps} maps, "
                           f"{FAMILY_SOLVER} solver) - none, {name}, N={int(r.n)}",
            r, lower_sf(r),
            f"{SF_NOTE} Context, not counted: a sensitivity run of the decoy family with the line-search solver "
            f"(not the paper's Adam); one-patch masks subsampled to the lattice family's number of masks."),
            counts=False))
    return out


#: The family of another layer or architecture: its own default lattice (issue 12, section 1), against the main
#: layer's lattice, which the layers and architectures chapters force onto it so that every layer and model has
#: the same number of decoys per image.
OWN_LATTICE = "own lattice"


def matched_masks(settings: Settings, model_name: str, layer: str) -> dict:
    """The mask counts of a comparison of ``layer`` of ``model_name``'s own default family with the main layer's:
    ``masks_own`` and ``masks_main`` (the two families' sizes), ``masks`` (the smaller, what both are cut to: equal
    populations) and ``pixels`` (an image's, for the share of it the masks cover)."""
    x = load_images(settings, 1).images
    masks_main = int(mask_family(load_model(settings.main_model), x, settings.layer(settings.main_model),
                                 settings).shape[0])
    masks_own = int(mask_family(load_model(model_name), x, layer, settings).shape[0])
    return dict(masks_own=masks_own, masks_main=masks_main, masks=min(masks_own, masks_main),
                pixels=x.shape[-2] * x.shape[-1])


def own_family_targets(settings: Settings) -> List[tuple]:
    """The (model, layer, N) the own-lattice sensitivity run covers: every architecture other than the main model
    at its layer (N = ``settings.n_small``, the architectures chapter's run) and every decoy layer of the layers
    chapter other than the main one (its sweep's N)."""
    from .layers import layer_sweep_size, sweep_layers  # layers imports this module

    main_model, main = settings.main_model, settings.layer(settings.main_model)
    out = [(m, settings.layer(m), settings.n_small) for m in settings.architectures if m != main_model]
    return out + [(main_model, layer, layer_sweep_size(settings)) for layer in sweep_layers(settings) if layer != main]


def own_family_table(settings: Settings, targets: Optional[Sequence[tuple]] = None,
                     methods: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The own-lattice sensitivity run: per (model, layer, N) of ``targets`` (default :func:`own_family_targets`)
    and base method, S_F(decoys) - S_F(raw) with the layer's own lattice and with the main layer's lattice, both
    subsampled to the same number of masks ``masks`` (the smaller of the two families' counts: equal populations,
    2 masks + 1 maps per image) and solved by :data:`FAMILY_SOLVER`, and their paired difference (own - main).

    Hodges-Lehmann estimates with their distribution-free 95 % intervals (the reading of every S_F measure):
    ``own``, ``own_low``, ``own_high`` (with ``own_p``, the signed-rank p, and ``own_sd``, the paired SD);
    ``main``, ``main_low``, ``main_high``; ``hl``, ``hl_low``, ``hl_high``
    (own - main); ``masks_own`` and ``masks_main`` (the families' sizes before subsampling), ``maps``, and
    ``own_cover`` / ``main_cover``, the share of the image's pixels the masks used cover: cutting a family of many
    small masks to a few leaves most of the image without a decoy."""
    rows = []
    for model_name, layer, n in (own_family_targets(settings) if targets is None else targets):
        sizes = matched_masks(settings, model_name, layer)
        masks_own, masks_main, masks, pixels = sizes["masks_own"], sizes["masks_main"], sizes["masks"], sizes["pixels"]
        for method in (settings.sweep(METHODS) if methods is None else methods):
            own, lattice = (family_scores(settings, method, family, n, layer=layer, model_name=model_name, masks=masks)
                            for family in (OWN_LATTICE, "lattice"))
            d_own = paired_difference(own["sf_decoys"], own["sf_none"], robust=True)
            d_main = paired_difference(lattice["sf_decoys"], lattice["sf_none"], robust=True)
            diff = paired_difference(own["sf_decoys"], lattice["sf_decoys"], robust=True)
            rows.append(dict(model=model_name, layer=layer, method=method, n=int(n), masks_own=masks_own,
                             masks_main=masks_main, masks=masks, own=d_own["hl"], own_low=d_own["hl_low"],
                             own_high=d_own["hl_high"], own_p=d_own["p_signed_rank"], own_sd=d_own["sd_diff"],
                             main=d_main["hl"], main_low=d_main["hl_low"],
                             main_high=d_main["hl_high"], hl=diff["hl"], hl_low=diff["hl_low"], hl_high=diff["hl_high"],
                             maps=maps_per_image(own["n_decoys"], lattice["n_decoys"]),
                             # the share of the image the masks cover (tiled patches: a family's masks are disjoint)
                             own_cover=masks * own["mask_pixels"] / pixels, main_cover=masks * lattice["mask_pixels"] / pixels))
    return pd.DataFrame(rows)


def own_family_display(table: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """The own-lattice table as the chapters show it: one row per ``by`` (``"model"`` or ``"layer"``), the masks of
    its own family and the number used, the share of the image each family covers, and per base method S_F(own
    lattice) - S_F(main lattice) (Hodges-Lehmann estimate [95 % interval], one decimal)."""
    if by not in ("model", "layer"):
        raise ValueError(f"by must be 'model' or 'layer', got {by!r}")
    first = table.groupby(by, sort=False).first()
    out = pd.DataFrame({"masks (own → used)": [f"{a} → {b}" for a, b in zip(first.masks_own, first.masks)],
                        "covered (own / main)": [f"{a:.0%} / {b:.0%}" for a, b in zip(first.own_cover, first.main_cover)]},
                       index=first.index)
    for method in table.method.unique():
        rows = table[table.method == method].set_index(by)
        out[METHODS[method]] = [f"{r.hl:+.1f} [{r.hl_low:+.1f}, {r.hl_high:+.1f}]" for r in rows.loc[out.index].itertuples()]
    return out
