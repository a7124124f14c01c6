r"""Weakly supervised object localization from saliency maps (paper A12 / Table A1).

The paper thresholds gradient maps with and without decoys (Table A1's "Gradient+Decoys"; the
text of A12 says the decoys were *blurry* decoys) at 0.25 by value, energy and mean
(Fong & Vedaldi), takes the tightest box around what remains, and counts an image as localised
when that box has IoU > 0.5 with a ground-truth box (Dabkowski & Gal). We compute all three:
the plain gradient, the gradient with DANCE's optimised decoys, and the gradient with blurry
decoys on the same masks, on the benchmark's images with their exact ground-truth boxes and
masks. Because the benchmark has object masks too, two ground-truth measures that need no
threshold are added: the share of saliency mass on the object
(:func:`dance.metrics.mass_in_mask`) and the pointing game (:func:`dance.metrics.pointing_game`).

The optimised decoys are the main model's shared decoys of the first ``settings.n_fidelity``
images (:func:`dance_book.experiments.shared_decoys`), computed once for the whole book.

Population size. DANCE's optimised decoys fill each of the ``M`` masks twice (one decoy per
direction), so with the image ``2M + 1`` maps per image; the blurry decoys fill each mask once,
``M + 1``. A pixelwise range grows with the population's size, so the counted comparisons use the
equal-size subsample of the optimised decoys, one decoy per mask (a seeded coin per mask,
:func:`dance_book.experiments.maps.equal_size_populations`, as the fidelity and control chapters):
``M + 1`` maps like the blurry decoys. The paper-literal ``2M + 1`` decoys are shown as context,
not counted; every table carries the maps per image (:data:`POPULATION`).
"""
from __future__ import annotations

import sys

from typing import List, Optional

import numpy as np
import torch

from dance.heatmap import to_heatmap
from dance.metrics.localization import METHODS as THRESHOLDS
from dance.metrics.localization import box_iou, mass_in_mask, pointing_game, saliency_box
from .cache import cached
from .inputs import MASKS_MISSING, clean_decoys, load_images, load_model, masks_unavailable
from .maps import base_maps, enhanced_maps, equal_size_populations, predicted, replacement_populations
from .claims import Claim, direction, pilot_context, planned_n, powered_label
from . import power as Pw
from .settings import Settings
from .stats import mean_sd, paired_difference

#: The maps compared, with display names: the counted ones first, then the paper-literal decoys (context).
VARIANTS = {"gradient": "Gradient", "decoys_m": "Gradient + decoys, one per mask", "blur": "Gradient + blurry decoys",
            "decoys": "Gradient + decoys (2M + 1)"}
#: The population each variant's maps are built from, as maps per image (the image's own map included).
POPULATION = {"gradient": "1", "decoys_m": "M + 1", "blur": "M + 1", "decoys": "2M + 1"}
#: The comparisons with the gradient that the claims count: populations of equal size (M + 1 maps).
COUNTED = ("decoys_m", "blur")
#: Shown for context, not counted: the paper's population of 2M + 1 maps.
CONTEXT = ("decoys",)
#: Threshold fraction of Table A1 (all three strategies).
ALPHA = 0.25
#: IoU a predicted box must exceed (Dabkowski & Gal; paper A12).
IOU_THRESHOLD = 0.5
#: Images whose maps and boxes are kept for the figure.
N_EXAMPLES = 4


#: Heatmap projections compared. "paper": the paper's §4.1 heatmaps (winsorised at the 95th
#: percentile), used everywhere else in the book; "unclipped": the same without winsorising
#: (percentile 100). Fixed before any result was seen: winsorising sets ~5 % of the pixels to the
#: maximum, which value thresholding and the pointing game both key on.
PROJECTIONS = {"paper": 95.0, "unclipped": 100.0}


def localization_run(settings: Settings, n: Optional[int] = None) -> dict:
    """Maps, boxes and ground-truth measures of the three variants on the first ``n`` images (default
    ``settings.n_fidelity``; cached).

    Returns:
        dict with ``n``; ``correct`` ``[n]`` (prediction = label); ``whole_image_iou`` ``[n]`` (IoU of
        the box covering the whole image: what a map that keeps every pixel scores); and per
        projection ``p`` of :data:`PROJECTIONS` and variant ``v`` of :data:`VARIANTS`:
        ``iou[p][v][t]`` ``[n]`` for each threshold ``t`` in value / energy / mean,
        ``area[p][v][t]`` (predicted box area / image area), ``mass[p][v]`` and
        ``pointing[p][v]`` ``[n]``; ``maps[v]`` ``[n]``: maps per image of variant ``v`` (1 for the
        gradient, 1 + its decoys otherwise); ``examples``: images, ground-truth boxes and masks,
        heatmaps and predicted boxes (paper projection) of the first :data:`N_EXAMPLES` images;
        ``unavailable``: None, or why the measures are NaN (images without ground-truth boxes).
    """
    n = settings.n_fidelity if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    config = dict(settings=repr(settings), n=n, alpha=ALPHA, projections=PROJECTIONS, variants=list(VARIANTS))

    def compute():
        model = load_model(settings.main_model)
        data = load_images(settings, n)
        missing = masks_unavailable(data) or (MASKS_MISSING if data.boxes is None else None)
        if missing:  # an image folder without boxes: the maps are computed, the measures are NaN
            data.boxes = [torch.zeros(0, 4) for _ in range(n)]
            data.masks = torch.zeros(n, 1, *data.images.shape[-2:], dtype=torch.bool)
        x = data.images
        t = predicted(model, x)
        height, width = x.shape[-2:]
        layer = settings.layer(settings.main_model)
        decoys = clean_decoys(settings, n)  # the fidelity chapter's shared decoys (their first n, or n of their own)
        print(f"localization: gradient maps of {n} images (raw, decoys, blurry decoys) ...", file=sys.stderr, flush=True)
        populations = {"decoys_m": equal_size_populations(decoys, settings.seed),
                       "blur": replacement_populations(model, x, layer, settings, "blur"), "decoys": decoys}
        signed = {"gradient": base_maps(model, x, t, "gradient", settings).cpu()}
        signed.update({v: enhanced_maps(model, x, t, "gradient", settings, populations[v]).cpu() for v in populations})
        maps = {"gradient": np.ones(n, dtype=int)}
        maps.update({v: np.array([1 + len(d) for d in pop]) for v, pop in populations.items()})
        boxes = data.boxes if isinstance(data.boxes, list) else data.boxes.cpu()
        masks = data.masks[:, 0].cpu()
        whole = torch.tensor([[0, 0, width, height]]).expand(n, 4)
        out = {"n": n, "correct": (t.cpu() == data.labels.cpu()).numpy(), "maps": maps,
               "whole_image_iou": box_iou(whole, boxes).numpy(),
               "iou": {}, "area": {}, "mass": {}, "pointing": {},
               "examples": {"images": x[:N_EXAMPLES].cpu().clone(), "masks": masks[:N_EXAMPLES].clone(),
                            "gt_boxes": [b.clone() for b in boxes[:N_EXAMPLES]] if isinstance(boxes, list)
                            else boxes[:N_EXAMPLES].clone(), "maps": {}, "boxes": {}}}
        out["unavailable"] = missing
        if missing:
            out["whole_image_iou"] = np.full(n, np.nan)
        for p, percentile in PROJECTIONS.items():
            for key in ("iou", "area", "mass", "pointing"):
                out[key][p] = {}
            for v, a in signed.items():
                h = to_heatmap(a, percentile=percentile)
                pred = {th: saliency_box(h, th, ALPHA) for th in THRESHOLDS}
                out["iou"][p][v] = {th: box_iou(pred[th], boxes).numpy() for th in THRESHOLDS}
                out["area"][p][v] = {th: ((pred[th][:, 2] - pred[th][:, 0]) * (pred[th][:, 3] - pred[th][:, 1])
                                          ).double().div(height * width).numpy() for th in THRESHOLDS}
                out["mass"][p][v] = mass_in_mask(h, masks).numpy()
                out["pointing"][p][v] = pointing_game(h, masks).numpy()
                if missing:
                    for key in ("mass", "pointing"):
                        out[key][p][v] = np.full(n, np.nan)
                    out["iou"][p][v] = {th: np.full(n, np.nan) for th in THRESHOLDS}
                if p == "paper":
                    out["examples"]["maps"][v] = h[:N_EXAMPLES].clone()
                    out["examples"]["boxes"][v] = {th: b[:N_EXAMPLES].clone() for th, b in pred.items()}
        return out

    return cached("localization", config, compute)


def _success(iou) -> np.ndarray:
    """1.0 where IoU > :data:`IOU_THRESHOLD`, 0.0 where not, NaN where the IoU is not available."""
    iou = np.asarray(iou, dtype=float)
    return np.where(np.isfinite(iou), (iou > IOU_THRESHOLD).astype(float), np.nan)


def maps_label(sizes) -> str:
    """Maps per image as a label: ``"33"`` when every image has the same number, else ``"31–33"``
    (decoys dropped for exceeding epsilon)."""
    sizes = np.asarray(sizes)
    lo, hi = int(sizes.min()), int(sizes.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def accuracy_table(run: dict, projection: str = "paper"):
    """Table A1 at this scale: localization accuracy (share of IoU > 0.5) per variant and threshold,
    the mean predicted box area (share of the image), and the two ground-truth measures; plus a
    last row for the whole-image box. The column ``maps per image`` gives each variant's population
    (:data:`POPULATION`, with the count). Returns a :class:`pandas.DataFrame` indexed by variant."""
    import pandas as pd

    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, got {projection!r}")
    rows = []
    for v, name in VARIANTS.items():
        row = {"variant": name, "maps per image": f"{POPULATION[v]} = {maps_label(run['maps'][v])}"
               if v != "gradient" else "1"}
        for th in THRESHOLDS:
            row[f"{th} ({ALPHA})"] = float(np.nanmean(_success(run["iou"][projection][v][th])))
        for th in THRESHOLDS:
            row[f"box area, {th}"] = float(np.mean(run["area"][projection][v][th]))
        row["mass in mask"] = float(np.nanmean(run["mass"][projection][v]))
        row["pointing game"] = float(np.nanmean(run["pointing"][projection][v]))
        rows.append(row)
    whole = {"variant": "Whole-image box", "maps per image": ""}
    for th in THRESHOLDS:
        whole[f"{th} ({ALPHA})"] = float(np.nanmean(_success(run["whole_image_iou"])))
        whole[f"box area, {th}"] = 1.0
    rows.append(whole)
    return pd.DataFrame(rows).set_index("variant")


#: The paired comparisons of :func:`comparisons`: (variant, reference). The first two are counted
#: (equal-size populations against the gradient); the direct equal-size comparison of the two fills
#: and the paper-literal decoys are context.
COMPARISONS = (("decoys_m", "gradient"), ("blur", "gradient"), ("decoys_m", "blur"), ("decoys", "gradient"))


def comparisons(run: dict, projection: str = "paper"):
    """Paired differences per measure, over images, for each pair of :data:`COMPARISONS` (variant -
    reference), with the maps per image of both (``maps``, ``maps (reference)``) and whether the
    claims count the comparison (``counted``).

    Localization success is 0/1 per image, so its mean difference is the difference of
    accuracies; the t-interval and Wilcoxon's p (here a sign test on the discordant images) come
    from :func:`dance_book.experiments.paired_difference`. Returns a :class:`pandas.DataFrame`.
    """
    import pandas as pd

    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, got {projection!r}")
    iou, rows = run["iou"][projection], []
    for v, ref in COMPARISONS:
        measures = {f"success, {th}": (_success(iou[v][th]), _success(iou[ref][th])) for th in THRESHOLDS}
        measures.update({f"IoU, {th}": (iou[v][th], iou[ref][th]) for th in THRESHOLDS})
        measures["mass in mask"] = (run["mass"][projection][v], run["mass"][projection][ref])
        measures["pointing game"] = (run["pointing"][projection][v], run["pointing"][projection][ref])
        for measure, (a, b) in measures.items():
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            ok = np.isfinite(a) & np.isfinite(b)
            d = paired_difference(a[ok], b[ok])
            rows.append({"projection": projection, "comparison": f"{VARIANTS[v]} - {VARIANTS[ref]}",
                         "maps": maps_label(run["maps"][v]), "maps (reference)": maps_label(run["maps"][ref]),
                         "counted": v in COUNTED and ref == "gradient", "measure": measure, "n": d["n"],
                         "with": float(a[ok].mean()), "without": float(b[ok].mean()),
                         "diff_mean": d["mean_diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                         "p_wilcoxon": d["p_wilcoxon"], "frac_better": d["frac_positive"],
                         "frac_worse": float(np.mean(a[ok] < b[ok]))})
    return pd.DataFrame(rows)


def is_degenerate(row) -> bool:
    """A row of :func:`comparisons` where both maps localise no image (or every image): the
    measurement cannot tell them apart, so it gives no verdict."""
    return bool(row.frac_better == 0 and row.frac_worse == 0 and row["without"] in (0.0, 1.0))


#: Scales whose localization claim is judged on the powered run (:func:`powered_size`); any other scale, and the
#: paper-scale smoke run, judge it on the chapter's run. Tests that shrink the CI settings clear it.
POWERED_SCALES = ("ci",)
#: The compute budget of the powered run (fresh CPU seconds), declared on 2026-11-28 before it ran: the 1,800 s
#: that each powered run of the fidelity chapter has (``fidelity.POWERED_BUDGET_S``).
POWERED_BUDGET_S = 1800.0
#: CPU seconds per image, decoys included, from the chapter's N = 50 entry computed from an empty cache
#: (2026-11-28: 159 s).
POWERED_COST_PER_IMAGE_S = 3.2


def powered_size(settings: Settings) -> dict:
    """The N of the localization claim's powered run (:func:`~dance_book.experiments.power.budgeted_n`): the N the
    claims page plans for the chapter's run of ``settings.n_fidelity`` images (its pilot: the largest N any of its
    counted rows needs, :func:`~dance_book.experiments.claims.planned_n`), capped by :data:`POWERED_BUDGET_S` at
    :data:`POWERED_COST_PER_IMAGE_S`; the pilot's N on a scale without powered runs and under the smoke run."""
    powered = settings.scale in POWERED_SCALES and not settings.smoke
    needed = planned_n(run_claims(localization_run(settings))) if powered else None
    return Pw.budgeted_n(needed, settings.n_fidelity, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S, powered)


def powered_rule(settings: Settings) -> str:
    """How :func:`powered_size` chose N, in words (the chapter pastes it above the powered run)."""
    size = powered_size(settings)
    return (f"N = {size['n']} images (the rule asks for {size['needed']}: the largest N that a counted measure of the "
            f"N = {settings.n_fidelity} run needs for {100 * Pw.POWER:g} % power; "
            f"{Pw.budget_clause(size, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S)})")


def powered_run(settings: Settings) -> Optional[dict]:
    """The powered run: :func:`localization_run` on the first ``powered_size(settings)["n"]`` images (its first
    ``settings.n_fidelity`` are the chapter's run); None when there is none."""
    size = powered_size(settings)
    return localization_run(settings, size["n"]) if size["n"] > settings.n_fidelity else None


def claims(settings: Settings) -> List[Claim]:
    """The paper's localization claim (Table A1) measured here; reads the chapter's cached runs only. With a powered
    run (:func:`powered_size`) its rows count and the chapter's run (its pilot) is context."""
    pilot = run_claims(localization_run(settings))
    powered = powered_run(settings)
    if powered is None:
        return pilot
    return run_claims(powered, run_label=powered_label(powered_size(settings))) + pilot_context(pilot)


def run_claims(run: dict, run_label: str = "") -> List[Claim]:
    """The claim's rows from one :func:`localization_run` (the counted variants count); ``run_label`` names the run
    in the sub-claim (e.g. ", powered run")."""
    table = comparisons(run)
    out = []
    what = {"decoys_m": "optimised decoys, one per mask (M + 1 maps)", "blur": "blurry decoys (A12's text; M + 1 maps)",
            "decoys": "optimised decoys, the paper's 2M + 1 maps"}
    for v in COUNTED + CONTEXT:
        for th in THRESHOLDS:
            row = table[(table.comparison == f"{VARIANTS[v]} - Gradient") & (table.measure == f"success, {th}")].iloc[0]
            degenerate = is_degenerate(row)
            missing = run.get("unavailable")
            supports = None if degenerate or missing else direction(row.ci_low, row.ci_high, "above")
            out.append(Claim(
                paper_claim="localization",
                claim=f"better localization accuracy with {what[v]}, {th} thresholding at {ALPHA}{run_label}",
                chapter="localization.md",
                measure=f"difference of localization accuracy (IoU > {IOU_THRESHOLD}), {VARIANTS[v]} - Gradient, "
                           f"paired over N={int(row.n)} images",
                value=float(row.diff_mean), ci_low=float(row.ci_low), ci_high=float(row.ci_high),
                n=int(row.n), supports=supports, counts=v in COUNTED,
                note=(f"{row['maps']} maps per image against 1; accuracy {row['without']:.2f} without vs {row['with']:.2f} with (better on "
                         f"{100 * row.frac_better:.0f}%, worse on {100 * row.frac_worse:.0f}% of images; mean "
                         f"predicted box {100 * float(np.mean(run['area']['paper']['gradient'][th])):.0f}% / "
                         f"{100 * float(np.mean(run['area']['paper'][v][th])):.0f}% of the image"
                         + ("; degenerate: no verdict possible)." if degenerate else ").")
                         + (f" Localization {missing}." if missing else "")
                         + ("" if v in COUNTED else " Context, not counted: a range over 2M + 1 maps compares "
                            "population size as well as the fill.")),
            ))
    return out


def summary(run: dict, projection: str = "paper") -> dict:
    """Mean ± sd of the per-image IoU, mass in mask and pointing game per variant (for the prose)."""
    out = {}
    for v in VARIANTS:
        out[v] = {f"iou_{th}": mean_sd(run["iou"][projection][v][th]) for th in THRESHOLDS}
        mass, hits = run["mass"][projection][v], run["pointing"][projection][v]
        out[v]["mass"] = mean_sd(mass[np.isfinite(mass)])
        out[v]["pointing"] = mean_sd(hits[np.isfinite(hits)])
    return out
