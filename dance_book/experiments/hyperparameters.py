"""Sensitivity of DANCE to the initial penalty weight ``c`` (paper Supplementary A9, Fig. A10).

The paper solves Eq. 2 through the penalty form Eq. 6 with an initial weight ``c`` that is doubled
whenever the optimisation finds no feasible decoy (§3.4), and reports that the choice of
``c in {10, 1e2, 1e3, 1e4, 1e5}`` "makes a negligible difference" to the decoy-enhanced maps of
the three base methods. This module regenerates that experiment: for every ``c`` it optimises the
decoys of the same images (everything else frozen at the book's settings), builds the
decoy-enhanced maps of every base method, and measures

* the fidelity ``S_F`` of those maps (and of the base maps, for scale),
* how much the maps move with ``c``: Spearman rank correlation and SSIM of each ``c``'s heatmap
  with the heatmap at the reference ``c`` (Table A2: ``1e4``),
* what ``c`` does to the decoys themselves: their movement (the objective of Eq. 2), their
  deviation relative to epsilon, how many were dropped and how many optimiser steps ran.

``c`` only exists for the paper's Adam solver; if the settings ever select another solver, the
sweep still runs Adam (and says so in its result).

The verdict statistic (:func:`insensitivity`) is an equivalence test fixed before any result was
seen: ``S_F`` is called insensitive to ``c`` for a method if, for every ``c``, the 95 % CI of the
paired difference ``S_F(c) - S_F(c_ref)`` lies inside ``+-`` :data:`EQUIVALENCE_D` times the
across-image standard deviation of ``S_F(c_ref)`` (a "small" standardised effect, Cohen's d = 0.2).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from dance.heatmap import to_heatmap
from dance.metrics import fidelity, spearman, ssim
from .cache import cached
from .inputs import load_images, load_model, shared_decoys
from .maps import METHODS, base_maps, enhanced_maps, predicted
from . import power as Pw
from .claims import Claim, direction, equivalence_reading, pilot_context, planned_n, powered_label
from .settings import Settings
from .stats import mean_sd, paired_difference

#: The paper's grid of initial penalty weights (A9).
C_VALUES = (1e1, 1e2, 1e3, 1e4, 1e5)
#: Images in the sweep, per scale: every c re-optimises every decoy, and at c <= 1e2 the
#: optimiser runs its full step budget, so the CI-scale sweep is kept small (chosen for the
#: book's CPU budget, before any result was seen).
SWEEP_IMAGES = {"ci": 4, "paper": 24}
#: Equivalence margin of :func:`insensitivity`, in across-image standard deviations of S_F (declared
#: with the other margins in :mod:`~dance_book.experiments.power`).
EQUIVALENCE_D = Pw.EQUIVALENCE_D
#: Images whose heatmaps are kept for the figure.
N_SHOW = 3


def sweep_c_values(settings: Settings) -> tuple:
    """The initial c of the sweep: :data:`C_VALUES` (the paper-scale smoke run: its ends and the reference c,
    :meth:`~dance_book.experiments.settings.Settings.sweep`)."""
    return tuple(float(c) for c in settings.sweep(C_VALUES, keep=[float(settings.decoys.c)]))


def sweep_size(settings: Settings) -> int:
    """Number of images the c sweep uses at this scale (:data:`SWEEP_IMAGES`; no more than
    ``settings.n_small`` under the paper-scale smoke test, whose folder holds a few images)."""
    n = SWEEP_IMAGES.get(settings.scale, settings.n_small)
    return min(n, settings.n_small) if settings.smoke else n


def _overrides(settings: Settings, c: float) -> dict:
    """Decoy options that make ``shared_decoys`` run the settings with initial weight ``c``."""
    out = {}
    if c != settings.decoys.c:
        out["c"] = float(c)
    if settings.decoys.options().get("solver", "adam") != "adam":
        out["solver"] = "adam"  # c is a parameter of the paper's (Adam) solver only
    return out


def c_sweep(settings: Settings, n: Optional[int] = None, c_values: Optional[Sequence[float]] = None,
            model_name: Optional[str] = None) -> Dict[str, object]:
    """Decoys and decoy-enhanced maps for every initial ``c`` (cached on disk).

    Args:
        settings: the frozen experiment settings (:func:`dance_book.experiments.settings`).
        n: number of images (default :func:`sweep_size`).
        c_values: initial penalty weights (default :func:`sweep_c_values`); must contain
            ``settings.decoys.c`` (the reference).
        model_name: default ``settings.main_model``.

    Returns:
        dict with ``c_values``, ``reference_c``, ``n``, ``model``, ``layer``, ``solver_note`` and
        DataFrames ``decoys`` (one row per c and image: ``n_decoys``, ``dropped``, ``movement``
        (mean over the image's decoys), ``dev_over_eps_max`` / ``dev_over_eps_mean``,
        ``steps_run``), ``fidelity`` (one row per setting, method and image: ``setting`` is
        ``"none"`` for the base map or the c value, ``S_F``), ``similarity`` (one row per setting,
        method and image: ``spearman``, ``ssim`` of the heatmap with the reference-c heatmap; the
        setting ``"none"`` compares the base map, i.e. the change the decoys themselves make); and
        ``heatmaps``: ``{(method, setting): [N_SHOW, H, W]}`` with ``images [N_SHOW, C, H, W]``.
    """
    model_name = model_name or settings.main_model
    n = sweep_size(settings) if n is None else int(n)
    c_values = sweep_c_values(settings) if c_values is None else tuple(float(c) for c in c_values)
    ref_c = float(settings.decoys.c)
    if ref_c not in c_values:
        raise ValueError(f"c_values must contain the reference c = settings.decoys.c = {ref_c:g}, got {c_values}")
    config = dict(settings=repr(settings), n=n, c_values=c_values, model=model_name)

    def compute():
        model = load_model(model_name)
        x = load_images(settings, n).images
        target = predicted(model, x)
        layer = settings.layer(model_name)
        rows_dec, rows_sf, rows_sim, heat, base_heat = [], [], [], {}, {}
        for method in METHODS:
            base = base_maps(model, x, target, method, settings)
            for i, v in enumerate(fidelity(model, x, base, target).tolist()):
                rows_sf.append(dict(setting="none", method=method, image=i, S_F=v))
            base_heat[method] = to_heatmap(base).cpu()
        enhanced_heat = {}
        for c in c_values:
            print(f"c = {c:g}: decoys of {n} images ...", file=sys.stderr, flush=True)
            # Through the shared disk cache: the reference c gives the chapters' own decoys.
            pops = [d.to(x.device) for d in shared_decoys(settings, model_name, n, **_overrides(settings, c))]
            for i, d in enumerate(pops):
                rel = (d.deviation / d.epsilon) if len(d) else torch.zeros(1)
                rows_dec.append(dict(c=c, image=i, n_decoys=len(d), dropped=int(d.dropped),
                                     movement=float(d.movement.mean()) if len(d) else 0.0,
                                     dev_over_eps_max=float(rel.max()), dev_over_eps_mean=float(rel.mean()),
                                     steps_run=int(d.steps_run)))
            for method in METHODS:
                print(f"c = {c:g}: {METHODS[method]} maps ...", file=sys.stderr, flush=True)
                maps = enhanced_maps(model, x, target, method, settings, pops)
                for i, v in enumerate(fidelity(model, x, maps, target).tolist()):
                    rows_sf.append(dict(setting=c, method=method, image=i, S_F=v))
                enhanced_heat[(method, c)] = to_heatmap(maps).cpu()
        for (method, c), h in list(enhanced_heat.items()) + [((m, "none"), base_heat[m]) for m in METHODS]:
            ref = enhanced_heat[(method, ref_c)]
            for i, (r, s) in enumerate(zip(spearman(h, ref).tolist(), ssim(h, ref).tolist())):
                rows_sim.append(dict(c=c, method=method, image=i, spearman=r, ssim=s))
            heat[(method, c)] = h[:N_SHOW]
        over = _overrides(settings, ref_c)
        return dict(c_values=c_values, reference_c=ref_c, n=n, model=model_name, layer=layer,
                    solver_note="adam (forced: c is an Adam parameter)" if over.get("solver") else "adam",
                    decoys=pd.DataFrame(rows_dec), fidelity=pd.DataFrame(rows_sf),
                    similarity=pd.DataFrame(rows_sim), heatmaps=heat, images=x[:N_SHOW].cpu())

    return cached("hyper-c-sweep", config, compute)


def c_summary(result: Dict[str, object]) -> pd.DataFrame:
    """One row per c and method: S_F mean +- sd, the paired difference to the reference c (mean,
    95 % t-CI, Wilcoxon p; the Hodges-Lehmann estimate ``hl`` with its 95 % interval ``hl_low``, ``hl_high``
    and the paired SD ``sd_diff``, which the claims read), map similarity to the reference (Spearman, SSIM: mean +- sd) and the
    decoys' movement and deviation/epsilon."""
    ref_c = result["reference_c"]
    sf, sim, dec = result["fidelity"], result["similarity"], result["decoys"]
    rows = []
    for c in result["c_values"]:
        d = dec[dec.c == c]
        for method in METHODS:
            a = sf[(sf.setting == c) & (sf.method == method)].sort_values("image").S_F.to_numpy()
            r = sf[(sf.setting == ref_c) & (sf.method == method)].sort_values("image").S_F.to_numpy()
            s = sim[(sim.c == c) & (sim.method == method)]
            m = mean_sd(a)
            row = dict(c=c, method=method, n=m["n"], S_F_mean=m["mean"], S_F_sd=m["sd"])
            if c != ref_c:
                p = paired_difference(a, r, robust=True)
                row.update(diff_vs_ref=p["mean_diff"], ci_low=p["ci_low"], ci_high=p["ci_high"],
                           p_wilcoxon=p["p_wilcoxon"], hl=p["hl"], hl_low=p["hl_low"], hl_high=p["hl_high"],
                           sd_diff=p["sd_diff"])
            else:
                row.update(diff_vs_ref=0.0, ci_low=np.nan, ci_high=np.nan, p_wilcoxon=np.nan, hl=0.0, hl_low=np.nan,
                           hl_high=np.nan, sd_diff=np.nan)
            row.update(spearman_mean=float(s.spearman.mean()), spearman_sd=float(s.spearman.std(ddof=1)),
                       ssim_mean=float(s.ssim.mean()), ssim_sd=float(s.ssim.std(ddof=1)),
                       movement=float(d.movement.mean()), dev_over_eps_max=float(d.dev_over_eps_max.max()),
                       dropped=int(d.dropped.sum()), steps_run=int(d.steps_run.max()))
            rows.append(row)
    return pd.DataFrame(rows)


def insensitivity(result: Dict[str, object], d: float = EQUIVALENCE_D) -> pd.DataFrame:
    """The verdict statistics for "insensitive to c", one row per method.

    On fidelity, read by the book's declared rule for S_F differences (``power.ROBUST_MEASURES``: the
    Hodges-Lehmann estimate with its distribution-free 95 % interval, as the chapter's claims rows):
    ``margin`` (``d`` times the across-image sd of S_F at the reference c), ``worst_c`` (the c whose
    paired S_F difference to the reference has the largest ``|hl|``), ``worst_diff`` (its
    Hodges-Lehmann estimate) with its interval ``worst_ci_low``/``worst_ci_high``, ``equivalent``
    (every c's interval inside ``+-margin``), ``different`` (some c's interval lies wholly outside
    ``+-margin``: that c moves S_F by more than the margin; the reading of
    :func:`~dance_book.experiments.claims.equivalence_reading`), ``decoy_effect`` (Hodges-Lehmann
    estimate of S_F of the enhanced map at the reference c minus that of the base map, the effect c is
    to be compared with) and ``interval`` (``"hodges-lehmann"``). Beside them, the mean reading of the
    same worst c: ``worst_mean`` with its 95 % t-interval ``worst_t_low``/``worst_t_high``, and
    ``decoy_effect_mean``.

    On the maps: ``sim_c`` (the c whose map is least like the reference map by mean Spearman),
    ``min_spearman`` / ``min_ssim`` (its mean Spearman and the lowest mean SSIM over c),
    ``base_spearman`` (mean Spearman of the *base* map with the reference map: how much the decoys
    change the map), and the paired difference ``spearman(c map) - spearman(base map)`` over
    images at ``sim_c``: ``sim_gap`` with CI ``sim_ci_low``/``sim_ci_high``. A positive gap means
    that the least favourable c changes the map less than the decoys do.
    """
    summary = c_summary(result)
    sf, sim = result["fidelity"], result["similarity"]
    ref_c = result["reference_c"]

    def per_image(frame, column, setting, method):
        return frame[(frame.iloc[:, 0] == setting) & (frame.method == method)].sort_values("image")[column].to_numpy()

    rows = []
    for method in METHODS:
        s = summary[(summary.method == method) & (summary.c != ref_c)]
        ref_sd = float(summary[(summary.method == method) & (summary.c == ref_c)].S_F_sd.iloc[0])
        margin = d * ref_sd
        worst = s.iloc[int(np.argmax(np.abs(s.hl.to_numpy())))]
        enh = per_image(sf, "S_F", ref_c, method)
        base = per_image(sf, "S_F", "none", method)
        far = s.iloc[int(np.argmin(s.spearman_mean.to_numpy()))]
        gap = paired_difference(per_image(sim, "spearman", far.c, method),
                                per_image(sim, "spearman", "none", method))
        effect = paired_difference(enh, base, robust=True)
        rows.append(dict(method=method, n=int(worst.n), margin=margin, worst_c=float(worst.c),
                         worst_diff=float(worst.hl), worst_ci_low=float(worst.hl_low),
                         worst_ci_high=float(worst.hl_high),
                         equivalent=bool(((s.hl_low >= -margin) & (s.hl_high <= margin)).all()),
                         different=bool(((s.hl_low > margin) | (s.hl_high < -margin)).any()),
                         decoy_effect=float(effect["hl"]), interval="hodges-lehmann",
                         worst_mean=float(worst.diff_vs_ref), worst_t_low=float(worst.ci_low),
                         worst_t_high=float(worst.ci_high), decoy_effect_mean=float(effect["mean_diff"]),
                         sim_c=float(far.c), min_spearman=float(far.spearman_mean), min_ssim=float(s.ssim_mean.min()),
                         base_spearman=float(per_image(sim, "spearman", "none", method).mean()),
                         sim_gap=gap["mean_diff"], sim_ci_low=gap["ci_low"], sim_ci_high=gap["ci_high"]))
    return pd.DataFrame(rows)


#: Scales whose c claim is judged on the powered run (:func:`powered_size`); any other scale, and the paper-scale
#: smoke run, judge it on the sweep of :func:`sweep_size`. Tests that shrink the CI settings clear it.
POWERED_SCALES = ("ci",)
#: The compute budget of the powered c sweep (fresh CPU seconds), declared on 2026-11-28 before it ran: the 1,800 s
#: that each powered run of the fidelity chapter has (``fidelity.POWERED_BUDGET_S``).
POWERED_BUDGET_S = 1800.0
#: CPU seconds per image of the sweep (decoys at every c, the three methods' maps), from the store entry of the
#: N = 4 sweep (2026-11-27): 108 s for 4 images.
POWERED_COST_PER_IMAGE_S = 27.0


def _rows(result: Dict[str, object], counts: bool = True, run: str = "") -> List[Claim]:
    """The claim's rows from a sweep (:func:`c_sweep`), counted when ``counts``; ``run`` names the run in the
    sub-claim (e.g. ", powered run")."""
    ref = result["reference_c"]
    claim = f"the choice of the initial c makes a negligible difference (A9, Fig. A10){run}"
    summary = c_summary(result)
    out = []
    for _, r in insensitivity(result).iterrows():
        name = METHODS[r.method]
        per_c = summary[(summary.method == r.method) & (summary.c != ref)].sort_values("c")
        for row in per_c.itertuples():
            supports = equivalence_reading(row.hl_low, row.hl_high, r.margin) if r.margin > 0 else None
            word = {True: "inside the margin", False: "wholly outside the margin",
                    None: "too wide to decide either way"}[supports]
            out.append(Claim(
                paper_claim="c", claim=claim, chapter="hyperparameters.md",
                measure=f"S_F: Hodges-Lehmann paired difference S_F(c={row.c:g}) - S_F(c={ref:g}), {name}, "
                        f"N={int(row.n)}",
                value=float(row.hl), ci_low=float(row.hl_low), ci_high=float(row.hl_high), n=int(row.n),
                supports=supports, interval="hodges-lehmann", sd_diff=float(row.sd_diff), counts=counts,
                test="equivalence" if r.margin > 0 else "other", margin=float(r.margin) if r.margin > 0 else None,
                note=f"equivalence margin +-{r.margin:.3g} ({EQUIVALENCE_D} sd of S_F): the interval is {word}"))
        out.append(Claim(
            paper_claim="c", claim=claim, chapter="hyperparameters.md", counts=counts,
            measure=(f"maps: Spearman with the c={ref:g} map at the least similar c ({r.sim_c:g}) minus that of "
                     f"the base map, {name}, N={r.n}"),
            value=float(r.sim_gap), ci_low=float(r.sim_ci_low), ci_high=float(r.sim_ci_high), n=int(r.n),
            supports=direction(r.sim_ci_low, r.sim_ci_high, "above"),
            note=(f"mean Spearman {r.min_spearman:.3f} at c = {r.sim_c:g} vs {r.base_spearman:.3f} for the base map: "
                  + ("c moves the map less than the decoys themselves do" if r.sim_ci_low > 0 else
                     "c does not move the map demonstrably less than the decoys do"))))
    return out


def powered_size(settings: Settings) -> dict:
    """The N of the c claim's powered run (:func:`~dance_book.experiments.power.budgeted_n`): the N the claims page
    plans for the sweep of :func:`sweep_size` (its pilot: the largest N any of its counted rows needs,
    :func:`~dance_book.experiments.claims.planned_n`), capped by :data:`POWERED_BUDGET_S` at
    :data:`POWERED_COST_PER_IMAGE_S`; the pilot's N on a scale without powered runs (:data:`POWERED_SCALES`) and under
    the paper-scale smoke run."""
    pilot_n = sweep_size(settings)
    powered = settings.scale in POWERED_SCALES and not settings.smoke
    needed = planned_n(_rows(c_sweep(settings))) if powered else None
    return Pw.budgeted_n(needed, pilot_n, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S, powered)


def powered_rule(settings: Settings) -> str:
    """How :func:`powered_size` chose N, in words (the chapter pastes it above the powered run)."""
    size = powered_size(settings)
    return (f"N = {size['n']} images (the rule asks for {size['needed']}: the largest N that a counted measure of the "
            f"N = {sweep_size(settings)} sweep needs for {100 * Pw.POWER:g} % power; "
            f"{Pw.budget_clause(size, POWERED_BUDGET_S, POWERED_COST_PER_IMAGE_S)})")


def powered_sweep(settings: Settings) -> Optional[Dict[str, object]]:
    """The powered run: :func:`c_sweep` on the first ``powered_size(settings)["n"]`` images (its first
    :func:`sweep_size` images are the pilot's); None when there is none (the N is the pilot's)."""
    size = powered_size(settings)
    return c_sweep(settings, n=size["n"]) if size["n"] > sweep_size(settings) else None


def claims(settings: Settings) -> List[Claim]:
    """The paper's claim "insensitive to the initial c" as measured by this chapter (cached results only).

    Per method: one S_F equivalence row per c other than the reference (every c is judged, none
    selected; the margin is :data:`EQUIVALENCE_D` across-image SDs of S_F at the reference c), and the
    map-similarity comparison of :func:`insensitivity` at the least similar c. With a powered run
    (:func:`powered_size`) its rows count and the sweep's rows (its pilot) are context.
    """
    pilot = _rows(c_sweep(settings))
    powered = powered_sweep(settings)
    if powered is None:
        return pilot
    return _rows(powered, run=powered_label(powered_size(settings))) + pilot_context(pilot)
