r"""The layers chapter (paper Fig. 5 / A16): S_F of decoy-enhanced maps with decoys at every layer.

The sweep gives every layer the main layer's mask family (:func:`~dance_book.experiments.scores.mask_spacing`),
so only the representation the decoys preserve changes; see :mod:`dance_book.experiments.scores`. The claim's
counted run (:func:`own_family_layers`) gives each layer its own default family instead, with equal populations.
"""
from __future__ import annotations

import sys

from typing import List, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .. import zoo
from . import power as Pw
from .claims import Claim, direction, equivalence_reading, pilot_context, planned_n, powered_label
from .inputs import load_model
from .maps import METHODS
from .scores import (N_SHOW, OWN_FAMILY_SOLVER, decoy_population, decoy_summary, example_heatmaps, frame, mask_spacing,
                     maps_per_image, summary)
from .settings import Settings
from .stats import paired_difference

__all__ = ["LAYER_SWEEP_N", "LAYER_RATIO_THRESHOLD", "LAYER_MARGIN_FRACTION", "PAPER_LAYER_SF", "PAPER_A16_SF",
           "layer_sweep_size", "sweep_layers",
           "layer_scores", "layer_spread", "layer_insensitive", "layer_equivalence", "equivalence_reading", "claims",
           "N_SHOW", "decoy_population", "decoy_summary",
           "example_heatmaps",
           "mask_spacing", "summary", "POWERED_SCALES", "POWERED_BUDGET_S", "POWERED_COST_PER_IMAGE_S", "powered_size",
           "powered_rule", "powered_layer_scores", "OWN_FAMILY_SOLVER", "own_family_layers", "own_family_layers_display",
           "own_family_coverage"]

#: Images of the layer sweep, per scale. At CI scale the minimum of 8 (below ``n_small``): each of
#: the ten layers re-optimises every decoy with the paper's Adam solver, and at the deep layers it
#: runs its full step budget (measured: ~20 s of CPU per image for the nine non-main layers).
LAYER_SWEEP_N = {"ci": 8}


def layer_sweep_size(settings: Settings) -> int:
    """Number of images of :func:`layer_scores` (``settings.n_small``, capped by :data:`LAYER_SWEEP_N`)."""
    return min(settings.n_small, LAYER_SWEEP_N.get(settings.scale, settings.n_small))


def sweep_layers(settings: Settings) -> List[str]:
    """The decoy layers of the sweep: every conv and pool layer of the main model (:func:`dance_book.zoo.layers`)
    and the main layer, in forward order (VGG16's main layer ``model.features.3`` is a ReLU, which the conv and
    pool layers leave out). The paper-scale smoke run keeps the first, the main and the last (:meth:`Settings.sweep`)."""
    model_name, main = settings.main_model, settings.layer(settings.main_model)
    layers = zoo.layers(model_name)
    if main not in layers:
        order = [name for name, _ in load_model(model_name).named_modules()]
        layers = sorted(layers + [main], key=order.index)
    return settings.sweep(layers, keep=[main])


def layer_scores(settings: Settings, n: Optional[int] = None, layers: Optional[Sequence[str]] = None,
                 methods: Sequence[str] = tuple(METHODS)) -> pd.DataFrame:
    """Paper Fig. 5 / A16: S_F of decoy-enhanced maps with decoys at every conv and pool layer of the main model.

    Rows with ``layer`` = the decoy layer and ``population`` = ``"decoys"``, plus the raw maps
    (``population`` = ``"none"``, ``layer`` = the main layer). ``n`` defaults to
    :func:`layer_sweep_size`, ``layers`` to :func:`sweep_layers`.
    """
    n = layer_sweep_size(settings) if n is None else n
    model_name = settings.main_model
    layers = sweep_layers(settings) if layers is None else list(layers)
    main = settings.layer(model_name)
    parts = [frame(settings, model_name, main, methods, ("none",), n)]
    for i, layer in enumerate(layers):
        print(f"layer {i + 1}/{len(layers)}: {layer}", file=sys.stderr, flush=True)
        parts.append(frame(settings, model_name, layer, methods, ("decoys",), n))
    return pd.concat(parts, ignore_index=True)


def layer_spread(df: pd.DataFrame, method: str, value: str = "sf", n_boot: int = 2000, seed: int = 0) -> dict:
    """How much S_F of decoy-enhanced maps depends on the decoy layer, for one method.

    Returns a dict: per-layer means; ``range_means`` (max - min of the per-layer means);
    ``between_sd`` (sd across images at a fixed layer, averaged over layers); ``within_sd``
    (sd across layers for a fixed image, averaged over images: the paper's reading of its
    0.01-0.02); ``ratio`` = range_means / between_sd with a bootstrap 95% CI over images;
    Friedman's chi-square test across layers (blocks = images) and Kendall's W
    (= chi2 / (n (k - 1)), 0 = layers indistinguishable, 1 = every image ranks the layers alike).
    """
    d = df[(df.method == method) & (df.population == "decoys")]
    table = d.pivot(index="image", columns="layer", values=value)
    table = table[[c for c in d.layer.unique()]].dropna()
    v = table.to_numpy()  # [n images, k layers]
    n, k = v.shape

    def ratio(a):
        sd = a.std(axis=0, ddof=1).mean()
        return float(np.ptp(a.mean(axis=0)) / sd) if sd > 0 else float("nan")

    # Percentile bootstrap by hand: scipy.stats.bootstrap(method="percentile") draws the same resamples
    # but keeps the degenerate ones (a NaN interval for a handful of images) and rounds its percentiles apart.
    rng = np.random.default_rng(seed)
    boot = np.array([ratio(v[rng.integers(0, n, n)]) for _ in range(n_boot)])
    boot = boot[np.isfinite(boot)]  # resamples of one repeated image have no spread
    if boot.size == 0:
        boot = np.array([float("nan")])
    fr = stats.friedmanchisquare(*v.T) if k >= 3 else None
    chi2 = float(fr.statistic) if fr is not None else float("nan")
    return {"method": method, "n": n, "k": k, "layer_means": dict(zip(table.columns, v.mean(axis=0))),
            "grand_mean": float(v.mean()), "range_means": float(np.ptp(v.mean(axis=0))),
            "between_sd": float(v.std(axis=0, ddof=1).mean()), "within_sd": float(v.std(axis=1, ddof=1).mean()),
            "ratio": ratio(v), "ratio_ci_low": float(np.quantile(boot, 0.025)),
            "ratio_ci_high": float(np.quantile(boot, 0.975)), "friedman_chi2": chi2,
            "friedman_p": float(fr.pvalue) if fr is not None else float("nan"),
            "kendall_w": chi2 / (n * (k - 1)) if fr is not None else float("nan")}


#: A priori threshold for "not sensitive to the layer": the spread of per-layer means is below
#: half a between-image standard deviation (a "medium" standardized effect, Cohen 1988), with the
#: upper end of its 95% bootstrap interval. Declared with the other margins in
#: :mod:`~dance_book.experiments.power`.
LAYER_RATIO_THRESHOLD = Pw.LAYER_RATIO_THRESHOLD


#: The paper's reported S_F (mean, sd) over its layer sweep on VGG16 (§4.4).
PAPER_LAYER_SF = {"gradient": (-0.11, 0.02), "integrated_gradients": (-0.18, 0.02), "smoothgrad": (-0.21, 0.01)}
#: The (mean, sd) pairs of the Fig. A16(b) caption, for the same sweep, as the project's experiments review
#: quotes them from the published PDF (the plain-text copy in ``shared/papers`` keeps the caption without
#: its numbers). They disagree with §4.4's in sign and size, and their sds are far larger.
PAPER_A16_SF = {"gradient": (3.34, 0.73), "integrated_gradients": (2.21, 1.33), "smoothgrad": (1.49, 0.18)}


def layer_insensitive(spread) -> Optional[bool]:
    """Read a :func:`layer_spread` row: insensitive to the layer (True) when the 95% interval of its
    ratio lies below :data:`LAYER_RATIO_THRESHOLD`, sensitive (False) when it lies above, None when
    it straddles the threshold."""
    return direction(spread["ratio_ci_low"], spread["ratio_ci_high"], "below", at=LAYER_RATIO_THRESHOLD)


#: The equivalence margin's fraction of the decoys' effect at the main layer (declared in
#: :mod:`~dance_book.experiments.power`, with the date of the rule change).
LAYER_MARGIN_FRACTION = Pw.LAYER_MARGIN_FRACTION


def layer_equivalence(df: pd.DataFrame, method: str, main: str, value: str = "sf",
                      fraction: float = LAYER_MARGIN_FRACTION) -> pd.DataFrame:
    """Per decoy layer other than ``main``: is S_F there equivalent to S_F at the main layer?

    One row per layer: the paired difference ``S_F(layer) - S_F(main)`` over the images, its mean with
    the 95 % t-interval and its Hodges-Lehmann estimate ``hl`` with the distribution-free 95 % interval
    ``hl_low``, ``hl_high`` (:func:`~dance_book.experiments.stats.paired_difference`, ``robust=True``), the
    margin ``fraction * |decoy effect|`` (the decoy effect: the Hodges-Lehmann estimate of the paired
    ``S_F(decoys at main) - S_F(raw map)``, what the layer's choice is to be small against), and
    ``equivalent`` (:func:`equivalence_reading` of the Hodges-Lehmann interval, the reading of every S_F
    measure, :data:`~dance_book.experiments.power.ROBUST_MEASURES`).
    """
    d = df[df.method == method]
    raw = d[d.population == "none"].set_index("image")[value]
    dec = d[d.population == "decoys"]
    at_main = dec[dec.layer == main].set_index("image")[value]
    if at_main.empty:
        raise ValueError(f"main={main!r} has no decoy rows for method {method!r}; pass the main layer of the sweep")
    effect = paired_difference(*[s.to_numpy() for s in at_main.align(raw, join="inner")], robust=True)["hl"]
    margin = fraction * abs(effect)
    rows = []
    for layer in dec.layer.unique():
        if layer == main:
            continue
        a, b = dec[dec.layer == layer].set_index("image")[value].align(at_main, join="inner")
        diff = paired_difference(a.to_numpy(), b.to_numpy(), robust=True)
        rows.append({"method": method, "layer": layer, "n": diff["n"], "mean_diff": diff["mean_diff"],
                     "ci_low": diff["ci_low"], "ci_high": diff["ci_high"], "hl": diff["hl"], "hl_low": diff["hl_low"],
                     "hl_high": diff["hl_high"], "sd_diff": diff["sd_diff"], "decoy_effect": effect, "margin": margin,
                     "equivalent": equivalence_reading(diff["hl_low"], diff["hl_high"], margin)})
    return pd.DataFrame(rows)


#: Scales whose layer claim is judged on the powered run (:func:`powered_size`); any other scale, and the
#: paper-scale smoke run, judge it on the sweep of :func:`layer_sweep_size`. Tests that shrink the CI settings clear it.
POWERED_SCALES = ("ci",)
#: The compute budget of the powered layer sweep (fresh CPU seconds), declared on 2026-11-28 before it ran: the
#: 1,800 s that each powered run of the fidelity chapter has (``fidelity.POWERED_BUDGET_S``).
POWERED_BUDGET_S = 1800.0
#: CPU seconds per image of the sweep (decoys re-optimised at the nine other layers, the maps of all ten, three
#: methods), from the store entries of the N = 8 sweep (2026-11-28): about 185 s per 8 images, and a second for the
#: raw maps.
POWERED_COST_PER_IMAGE_S = 24.0


def _supports(equivalent) -> Optional[bool]:
    """An ``equivalent`` cell of :func:`layer_equivalence` or :func:`own_family_layers` as a Claim's ``supports``."""
    return None if equivalent is None or pd.isna(equivalent) else bool(equivalent)


def _equivalence_claim(r, claim: str, measure: str, counts: bool = True, effect_at: str = "", tail: str = "") -> Claim:
    """One equivalence row of the claim from a row ``r`` of :func:`layer_equivalence` or :func:`own_family_layers`
    (the Hodges-Lehmann estimate and interval against ``r.margin``); ``effect_at`` qualifies the main layer's decoy
    effect in the note and ``tail`` ends it."""
    supports = _supports(r.equivalent)
    word = {True: "equivalent", False: "different", None: "undecided at this N"}[supports]
    return Claim(paper_claim="layer", claim=claim, chapter="layers.md", measure=measure,
                 value=float(r.hl), ci_low=float(r.hl_low), ci_high=float(r.hl_high), n=int(r.n),
                 supports=supports, test="equivalence", margin=float(r.margin) if r.margin > 0 else 1e-12,
                 interval="hodges-lehmann", sd_diff=float(r.sd_diff), counts=counts,
                 note=(f"margin +-{r.margin:.3g} = {LAYER_MARGIN_FRACTION:g} x the decoys' effect on S_F at the main layer"
                       f"{effect_at} ({r.decoy_effect:+.3g}): {word}{tail}"))


def _rows(settings: Settings, ldf: pd.DataFrame, counts: bool = True, run: str = "") -> List[Claim]:
    """The claim's rows from a sweep's table: one equivalence row per method and non-main layer
    (:func:`layer_equivalence`, counted when ``counts``), and the bootstrap ratio of :func:`layer_spread` per method
    as context; ``run`` names the run in the sub-claim (e.g. ", powered run")."""
    out = []
    main = settings.layer(settings.main_model)
    for method, name in METHODS.items():
        for r in layer_equivalence(ldf, method, main).itertuples():
            out.append(_equivalence_claim(
                r, f"{name}: not sensitive to the decoy layer (Fig. 5){run}",
                f"S_F with decoys at {r.layer} minus at the main layer {main}, {name}, N={r.n}", counts))
        s = layer_spread(ldf, method)
        supports = layer_insensitive(s)
        verdict = {True: "insensitive", False: "sensitive", None: "undecided at this N"}[supports]
        out.append(Claim(paper_claim="layer", claim=f"{name}: not sensitive to the decoy layer (Fig. 5){run}",
                        chapter="layers.md",
                        measure=f"range of per-layer mean S_F / between-image sd, {name}, {s['k']} layers, "
                                f"N={s['n']} (bootstrap 95% CI; the first rule, context since 2026-11-28)",
                        value=s["ratio"], ci_low=s["ratio_ci_low"], ci_high=s["ratio_ci_high"], n=s["n"],
                        supports=supports, test="other", counts=False,
                        note=f"Insensitive if the CI lies below {LAYER_RATIO_THRESHOLD} between-image sd (fixed in "
                             f"advance): {verdict}; Friedman p = {s['friedman_p']:.3g}, Kendall's W = "
                             f"{s['kendall_w']:.2f}; S_F pooled over layers {s['grand_mean']:+.3f} (paper on ImageNet: "
                             f"{PAPER_LAYER_SF[method][0]:+.2f} +- {PAPER_LAYER_SF[method][1]:.2f})."))
    return out


def powered_size(settings: Settings) -> dict:
    """The N of the layer claim's powered run (:func:`~dance_book.experiments.power.budgeted_n`): the N the claims
    page plans for the sweep of :func:`layer_sweep_size` (its pilot: the largest N any of its equivalence rows needs
    for its interval to land inside its margin with 80 % power, :func:`~dance_book.experiments.claims.planned_n`),
    capped by :data:`POWERED_BUDGET_S` at :data:`POWERED_COST_PER_IMAGE_S`; the pilot's N on a scale without
    powered runs (:data:`POWERED_SCALES`) and under the paper-scale smoke run."""
    pilot_n = layer_sweep_size(settings)
    powered = settings.scale in POWERED_SCALES and not settings.smoke
    needed = planned_n(_rows(settings, layer_scores(settings))) if powered else None
    return Pw.budgeted_n(needed, pilot_n, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S, powered)


def powered_rule(settings: Settings) -> str:
    """How :func:`powered_size` chose N, in words (the chapter pastes it above the powered run)."""
    size = powered_size(settings)
    return (f"N = {size['n']} images (the rule asks for {size['needed']}: the largest N at which an equivalence "
            f"interval of the N = {layer_sweep_size(settings)} sweep lands inside its margin with {100 * Pw.POWER:g} % "
            f"power; {Pw.budget_clause(size, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S)})")


def powered_layer_scores(settings: Settings) -> Optional[pd.DataFrame]:
    """The powered run: :func:`layer_scores` on the first ``powered_size(settings)["n"]`` images (its first
    :func:`layer_sweep_size` images are the pilot's); None when there is none (the N is the pilot's)."""
    size = powered_size(settings)
    return layer_scores(settings, n=size["n"]) if size["n"] > layer_sweep_size(settings) else None


def own_family_layers(settings: Settings, n: Optional[int] = None, layers: Optional[Sequence[str]] = None,
                      methods: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The layer claim's counted run (issue 12, section 1): the decoys at each layer on that layer's **own** default
    mask family (the lattice DANCE measures there), against the main layer's own family, both cut by a seeded random
    subset to the same number of masks (the smaller of the layer's family and the main layer's: equal populations,
    ``2 M + 1`` maps per image) and solved by :data:`OWN_FAMILY_SOLVER`, on the first ``n`` images (default the
    powered run's N, :func:`powered_size`).

    Returns:
        one row per (layer other than the main one, method): ``layer``, ``method``, ``n``, ``masks_own``,
        ``masks_main`` (the two families' sizes), ``masks`` (the number used), ``maps``, ``cover`` (the share of the
        image the layer's masks cover), the paired difference S_F(decoys at the layer) - S_F(decoys at the main
        layer) (``hl``, ``hl_low``, ``hl_high``, ``sd_diff``, ...), ``decoy_effect`` (the Hodges-Lehmann estimate
        of S_F(decoys at the main layer) - S_F(raw map) with the same masks), ``margin`` (:data:`LAYER_MARGIN_FRACTION`
        times its size) and ``equivalent`` (:func:`equivalence_reading` of the Hodges-Lehmann interval).
    """
    from .fidelity import OWN_LATTICE, family_scores, matched_masks  # fidelity imports this module

    n = powered_size(settings)["n"] if n is None else n
    main = settings.layer(settings.main_model)
    rows = []
    for layer in (sweep_layers(settings) if layers is None else layers):
        if layer == main:
            continue
        counts = matched_masks(settings, settings.main_model, layer)
        masks_own, masks_main, masks, pixels = counts["masks_own"], counts["masks_main"], counts["masks"], counts["pixels"]
        for method in (settings.sweep(METHODS) if methods is None else methods):
            at, ref = (family_scores(settings, method, OWN_LATTICE, n, layer=where, masks=masks,
                                     solver=OWN_FAMILY_SOLVER) for where in (layer, main))
            diff = paired_difference(at["sf_decoys"], ref["sf_decoys"], robust=True)
            effect = paired_difference(ref["sf_decoys"], ref["sf_none"], robust=True)["hl"]
            margin = LAYER_MARGIN_FRACTION * abs(effect)
            rows.append(dict(layer=layer, method=method, masks_own=masks_own, masks_main=masks_main, masks=masks,
                             maps=maps_per_image(at["n_decoys"], ref["n_decoys"]),
                             cover=masks * at["mask_pixels"] / pixels, **diff, decoy_effect=effect, margin=margin,
                             equivalent=equivalence_reading(diff["hl_low"], diff["hl_high"], margin)))
    return pd.DataFrame(rows)


def own_family_layers_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`own_family_layers` as the chapter shows it: one row per layer (in the table's order, by its last name),
    the masks of its own family and the number used (``masks``: own → used), the share of the image they cover, and
    per method S_F(layer) - S_F(main layer) (Hodges-Lehmann estimate [95 % interval]) with its equivalence margin
    (+-)."""
    first = table.groupby("layer", sort=False).first()
    out = pd.DataFrame({"masks": [f"{a} → {b}" for a, b in zip(first.masks_own, first.masks)],
                        "cover": [f"{c:.0%}" for c in first.cover]}, index=first.index)
    for method in table.method.unique():
        rows = table[table.method == method].set_index("layer").loc[out.index]
        out[METHODS[method]] = [f"{r.hl:+.2f} [{r.hl_low:+.2f}, {r.hl_high:+.2f}] (±{r.margin:.2f})"
                                for r in rows.itertuples()]
    # the short layer name ("conv4_2", not "features.conv4_2"): the table is wide enough without it
    return out.rename(index=lambda name: name.rsplit(".", 1)[-1])


def _own_rows(settings: Settings, table: pd.DataFrame, run: str) -> List[Claim]:
    """The claim's counted rows from :func:`own_family_layers`: one equivalence row per method and non-main layer."""
    main = settings.layer(settings.main_model)
    return [_equivalence_claim(
        r, f"{METHODS[r.method]}: not sensitive to the decoy layer (Fig. 5){run}, each layer's own mask family",
        f"S_F with decoys at {r.layer} minus at the main layer {main}, each on its own mask lattice ({r.masks} masks, "
        f"{r.maps} maps, {OWN_FAMILY_SOLVER}), {METHODS[r.method]}, N={r.n}",
        effect_at=" with the same number of masks",
        tail=(f". The layer's own default family ({r.masks_own} masks, cut to {r.masks}; they cover {r.cover:.0%} of "
              f"the image); the main layer's lattice forced onto the layer is context."))
        for r in table.itertuples()]


def own_family_coverage(table: pd.DataFrame) -> str:
    """How the coverage of the kept masks splits :func:`own_family_layers`' readings, in words (the chapter's
    paragraph): the layers whose own family covers the whole image (none of its masks dropped) against the deeper
    ones, whose many small masks cut to the main family's number cover only part of it."""
    full, part = table[table.cover >= 0.999], table[table.cover < 0.999]
    if part.empty:
        return "Every layer's own family covers the whole image."

    def count(rows, value):
        return sum(_supports(v) is value for v in rows.equivalent)

    different = part[[_supports(v) is False for v in part.equivalent]]
    side = ("" if different.empty else ", all with higher S_F than at the main layer" if (different.hl > 0).all()
            else ", all with lower S_F than at the main layer" if (different.hl < 0).all() else ", in both directions")
    return (f"At the {full.layer.nunique()} layers whose own family keeps the whole image covered (it has no more masks "
            f"than the main family, so none is dropped), {count(full, True)} of {len(full)} pairs are equivalent and "
            f"{count(full, False)} different; at the {part.layer.nunique()} deeper layers, whose many small masks cut to "
            f"{int(part.masks.max())} cover {part.cover.min():.0%} to {part.cover.max():.0%} of the image, "
            f"{count(part, True)} of {len(part)} are equivalent and {count(part, False)} different{side}. Those rows "
            f"compare a decoy population on part of the image with one on all of it; the paper's one-patch family would "
            f"use every patch position at every layer, which at these layers is up to {int(part.masks_own.max())} "
            f"masks per image.")


def claims(settings: Settings) -> List[Claim]:
    """The paper's layer-insensitivity claim (the layers chapter), from the cached results: one
    equivalence row per method and non-main layer (:func:`layer_equivalence`), and the bootstrap
    ratio of :func:`layer_spread` per method as context. With a powered run (:func:`powered_size`) its rows
    count and the sweep's rows (its pilot) are context."""
    pilot = _rows(settings, layer_scores(settings), counts=True)
    powered = powered_layer_scores(settings)
    if powered is None:
        return pilot
    label = powered_label(powered_size(settings))
    forced = _rows(settings, powered, counts=False, run=f"{label} (context: the main layer's lattice)")
    return _own_rows(settings, own_family_layers(settings), label) + forced + pilot_context(pilot)
