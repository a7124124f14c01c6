r"""The attacks chapter (paper Fig. 4 / A14): adversarial attacks on saliency maps, raw and decoy-enhanced.

The three attacks of Ghorbani et al. (top-k, targeted, mass-center) and the random-sign control of
:mod:`dance.attacks` perturb each image within an :math:`L_\infty` ball so that the *base* method's
map changes while the label stays. The decoy-enhanced map is not a differentiable function of the
input (its decoys come out of an optimisation), so, as in the paper, DANCE is evaluated on the
images attacked through the base method: the attacked image gets its own decoys, optimised for it
exactly as for a clean image (one batched call per attack and method), and :math:`S_S` compares the
maps of the clean and the attacked image, raw and decoy-enhanced, on the paper's [0, 1] heatmaps.

The strong study (issue 13, :func:`strong_run`) repeats the top-k and targeted attacks at the strength
of Ghorbani et al. (:data:`STRONG_SETTINGS`: 100 steps of epsilon / 10, directions with the evaluated
SmoothGrad / IG budgets), returns the iterate under both selection rules from one walk, and measures
norm-matched controls and Yeh et al.'s smoothing on the same images; it has its own store entries
(``attack-strong``), so the main run's stay as they are.

Every expensive result goes through :func:`dance_book.experiments.cached`; the hyperparameters are
frozen here, per scale (:data:`ATTACK_SETTINGS`, :data:`STRONG_SETTINGS`).
"""
from __future__ import annotations

import sys
import warnings

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dance import attacks as _attacks
from dance.heatmap import to_heatmap
from dance.metrics.sensitivity import sensitivity
from dance.metrics.similarity import center_shift, spearman, topk_intersection

from .cache import cached
from .claims import Claim, direction
from .inputs import clean_decoys, load_images, load_model, shared_decoys
from .maps import (MAP_BATCH, METHODS, N_EXAMPLES, base_maps, check_methods, check_n, enhanced_maps, mask_family,
                   optimised_decoys, optimised_quietly, predicted)
from .settings import Settings
from .stats import mean_sd, paired_difference

__all__ = ["ATTACKS", "N_EXAMPLES", "AttackSettings", "ATTACK_SETTINGS", "attack_settings", "clean_maps",
           "attack_run", "study_pairs", "attack_study", "excess_table", "K_SHARES", "K_SWEEP_METHODS",
           "k_sweep", "SAME_ORDER", "AttackSummary", "summarize",
           "attack_claims", "claims", "FAMILY_ATTACK", "family_attack_run", "family_attack_table", "family_claims",
           "STRONG_MAPS", "STRONG_MEASURES", "StrongSettings", "STRONG_SETTINGS",
           "STRONG_COST_PER_IMAGE", "strong_settings", "strong_sample_sizes", "strong_run", "strong_pairs", "strong_study",
           "STRONG_CONTEXT_KINDS", "strong_context_kinds", "strong_context_study",
           "STRONG_COMPARISONS", "strong_table", "strong_costs", "strong_controls", "strong_claims"]

#: The attacks, in the paper's order, then the control, with display names.
ATTACKS = {"topk": "Top-k", "targeted": "Targeted", "mass_center": "Mass-center", "random": "Random sign (control)"}


@dataclass(frozen=True)
class AttackSettings:
    r"""Attack hyperparameters, fixed a priori from Ghorbani et al. (2019) in [0, 1] pixel units.

    Ghorbani et al. bound the perturbation by :math:`\epsilon \le 8` on the 0-255 scale and take
    many small signed-gradient steps. We take their largest budget, :math:`\epsilon = 8/255`, and
    a few larger steps of ``step = 2.5 * epsilon / iterations`` (the usual projected-gradient
    choice, so the walk can cross the ball), because each step costs a second derivative of the
    map through a softplus copy of the network (``beta`` = 10, :func:`dance.attacks.softplus_copy`).
    The directions of the SmoothGrad and Integrated Gradients attacks may use fewer samples /
    steps than the maps that are then evaluated (``attack_smoothgrad_samples``,
    ``attack_ig_steps``; None = the settings' values); :math:`S_S` is always measured with the
    settings' full methods.
    """

    epsilon: float = 8 / 255
    iterations: int = 5
    beta: float = 10.0
    attack_smoothgrad_samples: Optional[int] = None
    attack_ig_steps: Optional[int] = None
    seed: int = 0

    @property
    def step_size(self) -> float:
        return 2.5 * self.epsilon / self.iterations


#: Frozen per scale. CI scale: few steps, and cheaper SmoothGrad/IG *directions* (4 noise samples,
#: 8 Riemann steps) so that the chapter's cold run fits its CPU budget; the maps that are measured
#: keep the settings' 8 samples / 16 steps.
ATTACK_SETTINGS = {
    "ci": AttackSettings(iterations=5, attack_smoothgrad_samples=4, attack_ig_steps=8),
    "paper": AttackSettings(iterations=20),
}


def attack_settings(settings: Settings) -> AttackSettings:
    """The frozen :class:`AttackSettings` of ``settings.scale`` (the paper-scale smoke run takes its few steps)."""
    if "attack_iterations" in settings.extra:
        return replace(ATTACK_SETTINGS[settings.scale], iterations=int(settings.extra["attack_iterations"]))
    return ATTACK_SETTINGS[settings.scale]


def _attack_explainer(method: str, settings: Settings, config: AttackSettings):
    """The differentiable version of a base method (matching Captum's, see :mod:`dance.attacks`)."""
    if method == "gradient":
        return _attacks.explainer("gradient")
    if method == "smoothgrad":
        n = config.attack_smoothgrad_samples or settings.smoothgrad_samples
        return _attacks.explainer("smoothgrad", n_samples=n, stdev=settings.smoothgrad_std, seed=config.seed)
    if method == "integrated_gradients":
        # Captum's IntegratedGradients defaults to Gauss-Legendre nodes, so the attack uses them too.
        n = config.attack_ig_steps or settings.ig_steps
        return _attacks.explainer("integrated_gradients", n_steps=n, method="gausslegendre")
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


def _main_attack(model, x, t, kind: str, method: str, settings: Settings, config: AttackSettings, k=None):
    """The main run's attack (:func:`attack_run`) on the base method, with the frozen :class:`AttackSettings`."""
    return _attacks.attack(model, x, t, kind=kind, explain=_attack_explainer(method, settings, config),
                           epsilon=config.epsilon, step_size=config.step_size, iterations=config.iterations,
                           beta=config.beta, seed=config.seed, k=k)


# In-process memo of the decoys of attacked images, keyed by the images themselves: the random-sign
# control does not depend on the explanation, so its three runs (one per method) perturb the
# images identically and share one decoy optimisation.
_ATTACKED_DECOYS: Dict[str, list] = {}


def _attacked_decoys(model, xh, layer, settings):
    key = hashlib.sha256(repr((settings, layer)).encode() + xh.detach().cpu().numpy().tobytes()).hexdigest()
    if key not in _ATTACKED_DECOYS:
        _ATTACKED_DECOYS.clear()  # keep at most one population set in memory
        _ATTACKED_DECOYS[key] = optimised_quietly(model, xh, layer, settings)
    return _ATTACKED_DECOYS[key]


def clean_maps(settings: Settings, method: str, n: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Raw and decoy-enhanced heatmaps ``[n, H, W]`` of the clean attack images (cached).

    The decoys are the shared ones of the main model (:func:`dance.experiments.shared_decoys`).
    """
    check_methods(method)
    n = settings.n_attack if n is None else check_n(n)
    config = dict(settings=repr(settings), method=method, n=n)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        decoys = clean_decoys(settings, n)
        print(f"clean maps: {METHODS[method]}, {n} images ...", file=sys.stderr, flush=True)
        raw = to_heatmap(base_maps(model, x, t, method, settings)).cpu()
        enh = to_heatmap(enhanced_maps(model, x, t, method, settings, decoys, batch_size=MAP_BATCH)).cpu()
        return {"raw": raw, "dance": enh, "target": t.cpu()}

    return cached("attack-clean-maps", config, compute)


#: The top-k attack's k as a share of the image's pixels, declared before the runs (issue 13): two
#: smaller shares and the paper's own (k = 5000 of 224 x 224, about 10 %, :data:`dance.attacks.TOPK_FRACTION`).
K_SHARES = (0.02, 0.05, _attacks.TOPK_FRACTION)
#: The methods the k sweep runs on at CI scale: the gradient only, the cheapest attack (each other
#: share is a whole attack run, about 2.5 minutes of CPU at CI scale).
K_SWEEP_METHODS = ("gradient",)


def attack_run(settings: Settings, kind: str, method: str, n: Optional[int] = None,
               k_share: Optional[float] = None) -> dict:
    """One attack on one base method over ``n`` images (default ``settings.n_attack``), cached.

    ``k_share`` sets the top-k attack's k as a share of the pixels (default None: the paper's,
    :data:`dance.attacks.TOPK_FRACTION`); the other attacks have no k.

    Attacks the base method, re-optimises the decoys for the attacked images (one batched call),
    and measures raw and decoy-enhanced maps against the clean maps of :func:`clean_maps`.

    Returns:
        dict of per-image numpy arrays ``[n]``: ``ss_raw`` / ``ss_dance`` (:math:`S_S`, lower =
        more robust), ``topk_raw`` / ``topk_dance`` (top-k intersection), ``spearman_raw`` /
        ``spearman_dance``, ``shift_raw`` / ``shift_dance`` (centre-of-mass shift in pixels),
        ``success`` (an attacked iterate that keeps the label was found), ``linf``, ``dropped``
        (decoys of the attacked image over epsilon); and ``examples`` (attacked images and their
        heatmaps for the first :data:`N_EXAMPLES` images), ``k``, ``kind``, ``method``, ``n``,
        ``attack`` (the :class:`AttackSettings` as a dict).
    """
    if kind not in ATTACKS:
        raise ValueError(f"kind must be one of {list(ATTACKS)}, got {kind!r}")
    check_methods(method)
    n = settings.n_attack if n is None else check_n(n)
    cfg = attack_settings(settings)
    config = dict(settings=repr(settings), kind=kind, method=method, n=n, attack=asdict(cfg))
    if k_share is not None:  # only then part of the key: the paper's k keeps its stored entries
        if kind != "topk":
            raise ValueError(f"k_share applies to the top-k attack only, not to kind={kind!r}")
        if isinstance(k_share, bool) or not isinstance(k_share, (int, float)) or not 0 < k_share <= 1:
            raise ValueError(f"k_share must be a share of the pixels in (0, 1], got {k_share!r}")
        config["k_share"] = float(k_share)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        clean = clean_maps(settings, method, n)
        t = clean["target"].to(x.device)
        k = None if k_share is None else max(1, int(round(k_share * x.shape[-2] * x.shape[-1])))
        print(f"attack {ATTACKS[kind]} on {METHODS[method]}: {n} images ...", file=sys.stderr, flush=True)
        r = _main_attack(model, x, t, kind, method, settings, cfg, k=k)
        xh = r.inputs.detach()
        print(f"  decoys of the {n} attacked images ...", file=sys.stderr, flush=True)
        decoys = _attacked_decoys(model, xh, settings.layer(settings.main_model), settings)
        raw = to_heatmap(base_maps(model, xh, t, method, settings)).cpu()
        enh = to_heatmap(enhanced_maps(model, xh, t, method, settings, decoys, batch_size=MAP_BATCH)).cpu()
        xc, xhc = x.cpu(), xh.cpu()
        k = r.k
        out = {
            "kind": kind, "method": method, "n": n, "k": k, "attack": asdict(cfg),
            "success": r.success.cpu().numpy(), "linf": r.linf.cpu().numpy(),
            "label_kept": (predicted(model, xh) == r.labels).cpu().numpy(),
            "dropped": np.array([d.dropped for d in decoys]),
            # clone: a slice would save its whole storage
            "examples": {"attacked": xhc[:N_EXAMPLES].clone(), "raw": raw[:N_EXAMPLES].clone(),
                         "dance": enh[:N_EXAMPLES].clone()},
        }
        for name, before, after in (("raw", clean["raw"], raw), ("dance", clean["dance"], enh)):
            out[f"ss_{name}"] = sensitivity(before, after, xc, xhc).numpy()
            out[f"topk_{name}"] = topk_intersection(before, after, k).numpy()
            out[f"spearman_{name}"] = spearman(before, after).numpy()
            out[f"shift_{name}"] = center_shift(before, after).numpy()
        return out

    return cached("attack-run", config, compute)


def study_pairs(settings: Settings, methods: Sequence[str], kinds: Sequence[str]) -> list:
    """The ``(kind, method)`` runs of :func:`attack_study`: every attack on every method. The paper-scale smoke
    run (``settings.extra["smoke"]``) runs each aimed attack on one method, in turn (``topk`` on the first), and
    the random-sign control on every method (the summary, the excess table and the claims compare each attack
    with the control on its method): every attack and every method still runs, in half the runs."""
    pairs = [(kind, method) for method in methods for kind in kinds]
    if not settings.smoke:
        return pairs
    aimed = [kind for kind in kinds if kind != "random"]
    keep = {(kind, methods[i % len(methods)]) for i, kind in enumerate(aimed)} | {("random", m) for m in methods}
    return [p for p in pairs if p in keep]


def attack_study(settings: Settings, methods: Sequence[str] = tuple(METHODS), kinds: Sequence[str] = tuple(ATTACKS),
                 n: Optional[int] = None):
    """Every attack on every method (cached runs; :func:`study_pairs`); returns ``(runs, table)``.

    ``runs[(kind, method)]`` is :func:`attack_run`'s dict; ``table`` is a :class:`pandas.DataFrame`
    with one row per attack and method: mean ± sd of :math:`S_S` raw and decoy-enhanced, the
    paired difference decoys - raw (mean, 95 % t-CI, Wilcoxon p, share of images where decoys
    are *higher*), the attack's success rate, and the top-k intersections.
    """
    import pandas as pd

    methods = check_methods(methods)
    bad = [k for k in kinds if k not in ATTACKS]
    if bad:
        raise ValueError(f"kinds must be drawn from {list(ATTACKS)}, got {list(kinds)!r}")
    runs, rows = {}, []
    for kind, method in study_pairs(settings, methods, kinds):
        r = attack_run(settings, kind, method, n)
        runs[(kind, method)] = r
        ok = np.isfinite(r["ss_raw"]) & np.isfinite(r["ss_dance"])  # x_hat == x gives NaN
        d = paired_difference(r["ss_dance"][ok], r["ss_raw"][ok])
        raw, dec = mean_sd(r["ss_raw"][ok]), mean_sd(r["ss_dance"][ok])
        rows.append({
            "attack": kind, "method": method, "n": int(ok.sum()),
            "success": float(np.mean(r["success"])),
            "ss_raw_mean": raw["mean"], "ss_raw_sd": raw["sd"],
            "ss_dance_mean": dec["mean"], "ss_dance_sd": dec["sd"],
            "diff_mean": d["mean_diff"], "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
            "p_wilcoxon": d["p_wilcoxon"], "frac_dance_higher": d["frac_positive"],
            "ratio_mean": float(np.mean(r["ss_dance"][ok] / r["ss_raw"][ok])),
            "topk_raw": float(np.mean(r["topk_raw"])), "topk_dance": float(np.mean(r["topk_dance"])),
            "dropped": int(np.sum(r["dropped"])),
        })
    return runs, pd.DataFrame(rows)


def k_sweep(settings: Settings, methods: Sequence[str] = K_SWEEP_METHODS, shares: Sequence[float] = K_SHARES,
            n: Optional[int] = None):
    """The top-k attack at each k of ``shares`` (cached runs; the paper's share reuses the main run).

    Returns a :class:`pandas.DataFrame`, one row per method and share: ``k`` (pixels), ``n``,
    mean :math:`S_S` raw and with decoys, the paired difference decoys - raw with its 95 % t-interval,
    and the mean top-k intersections raw and with decoys (over the attack's own k).
    """
    import pandas as pd

    methods = check_methods(methods)
    rows = []
    for method in methods:
        for share in settings.sweep(shares, keep=[_attacks.TOPK_FRACTION]):  # the smoke run: the ends
            paper = abs(share - _attacks.TOPK_FRACTION) < 1e-12
            r = attack_run(settings, "topk", method, n, k_share=None if paper else share)
            ok = np.isfinite(r["ss_raw"]) & np.isfinite(r["ss_dance"])
            d = paired_difference(r["ss_dance"][ok], r["ss_raw"][ok])
            rows.append({"method": method, "share": float(share), "paper": paper, "k": int(r["k"]), "n": int(ok.sum()),
                         "ss_raw": float(r["ss_raw"][ok].mean()), "ss_dance": float(r["ss_dance"][ok].mean()),
                         "diff_mean": d["mean_diff"], "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
                         "topk_raw": float(np.mean(r["topk_raw"])), "topk_dance": float(np.mean(r["topk_dance"]))})
    return pd.DataFrame(rows)


def excess_table(runs: dict):
    """How much of each attack's effect is *aimed*: per image, :math:`S_S` under the attack minus
    :math:`S_S` under the random-sign control (same images, same budget), raw and with decoys,
    and the paired difference decoys - raw of that excess. (Our addition, not the paper's.)

    Returns a :class:`pandas.DataFrame` with one row per attack and method.
    """
    import pandas as pd

    rows = []
    for (kind, method), r in runs.items():
        if kind == "random" or ("random", method) not in runs:
            continue
        c = runs[("random", method)]
        ex_raw, ex_dance = r["ss_raw"] - c["ss_raw"], r["ss_dance"] - c["ss_dance"]
        ok = np.isfinite(ex_raw) & np.isfinite(ex_dance)
        d = paired_difference(ex_dance[ok], ex_raw[ok])
        rows.append({"attack": kind, "method": method, "n": int(ok.sum()),
                     "excess_raw": float(ex_raw[ok].mean()), "excess_dance": float(ex_dance[ok].mean()),
                     "diff_mean": d["mean_diff"], "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
                     "p_wilcoxon": d["p_wilcoxon"]})
    return pd.DataFrame(rows)


#: How close the decoys' reduction of S_S under an attack must be to their reduction under the
#: random-sign control to count as "of the same order" (ratio of the two decoys/raw ratios).
SAME_ORDER = (0.8, 1.25)


@dataclass(frozen=True)
class AttackSummary:
    """What the attacks chapter reads off :func:`attack_study` and :func:`excess_table` (:func:`summarize`).

    ``verdict`` is ``"all"``, ``"some"`` or ``"none"``: in how many attack x method cases the
    paired difference of S_S (decoys - raw) has its 95% interval below zero. ``control_similar``
    is True when the control also lowers S_S and, in every case, the decoys/raw ratio under the
    attack lies within :data:`SAME_ORDER` of the ratio under the control.
    """

    success: float              #: share of images whose attack kept the label, in %
    k: int                      #: pixels of the top-k attack
    dropped: int                #: decoys of attacked images dropped (over epsilon)
    n_cases: int                #: attack x method cases (the control not counted)
    n_lower: int                #: cases with S_S lower with decoys (interval below 0)
    verdict: str                #: "all", "some" or "none" of the cases
    ratio_min: float            #: smallest / largest mean ratio S_S(decoys) / S_S(raw) under the attacks
    ratio_max: float
    ctrl_n_lower: int           #: methods whose S_S is lower with decoys under the control
    ctrl_ratio_min: float
    ctrl_ratio_max: float
    rel_min: float              #: smallest / largest (ratio under an attack) / (ratio under the control)
    rel_max: float
    control_similar: bool
    strength_min: float         #: raw S_S under an attack / raw S_S under the control
    strength_max: float
    topk_raw: float             #: top-k intersection after the top-k attack, gradient, raw / with decoys
    topk_dance: float
    topk_ctrl: float            #: the same for the raw gradient under the control
    n_excess: int               #: cases of :func:`excess_table`, and those whose excess is lower / higher with decoys
    n_excess_lower: int
    n_excess_higher: int
    excess_raw: float           #: top-k attack on the gradient: mean excess S_S, raw / with decoys
    excess_dance: float
    excess_share_min: float     #: smallest / largest excess with decoys / excess raw
    excess_share_max: float


def summarize(runs: dict, table, excess) -> AttackSummary:
    """The chapter's reading of an attack study (``runs, table = attack_study(...)``,
    ``excess = excess_table(runs)``): counts, ranges and the two verdicts, as an :class:`AttackSummary`."""
    t = table.set_index(["attack", "method"])
    aimed = table[table.attack != "random"]
    ctrl = table[table.attack == "random"]
    n_lower = int((aimed.diff_ci_high < 0).sum())
    verdict = "all" if n_lower == len(aimed) else "some" if n_lower > 0 else "none"
    pairs = [(k, m) for k, m in zip(aimed.attack, aimed.method)]
    rel = np.array([t.loc[(k, m)].ratio_mean / t.loc[("random", m)].ratio_mean for k, m in pairs])
    lo, hi = SAME_ORDER
    strength = np.array([t.loc[(k, m)].ss_raw_mean / t.loc[("random", m)].ss_raw_mean for k, m in pairs])
    ex = excess.set_index(["attack", "method"])
    share = excess.excess_dance / excess.excess_raw
    return AttackSummary(
        success=100 * float(table.success.mean()), k=int(runs[("topk", "gradient")]["k"]),
        dropped=int(table.dropped.sum()), n_cases=len(aimed), n_lower=n_lower, verdict=verdict,
        ratio_min=float(aimed.ratio_mean.min()), ratio_max=float(aimed.ratio_mean.max()),
        ctrl_n_lower=int((ctrl.diff_ci_high < 0).sum()), ctrl_ratio_min=float(ctrl.ratio_mean.min()),
        ctrl_ratio_max=float(ctrl.ratio_mean.max()), rel_min=float(rel.min()), rel_max=float(rel.max()),
        control_similar=bool(ctrl.ratio_mean.max() < 1 and np.all((rel > lo) & (rel < hi))),
        strength_min=float(strength.min()), strength_max=float(strength.max()),
        topk_raw=float(t.loc[("topk", "gradient")].topk_raw), topk_dance=float(t.loc[("topk", "gradient")].topk_dance),
        topk_ctrl=float(t.loc[("random", "gradient")].topk_raw),
        n_excess=len(excess), n_excess_lower=int((excess.diff_ci_high < 0).sum()),
        n_excess_higher=int((excess.diff_ci_low > 0).sum()),
        excess_raw=float(ex.loc[("topk", "gradient")].excess_raw),
        excess_dance=float(ex.loc[("topk", "gradient")].excess_dance),
        excess_share_min=float(share.min()), excess_share_max=float(share.max()))


def attack_claims(settings: Settings) -> List[Claim]:
    """Lower :math:`S_S` with decoys, per attack and method (the attacks chapter's cached runs)."""
    out = []
    _, table = attack_study(settings)
    control = table[table.attack == "random"].set_index("method")
    for row in table.itertuples():
        if row.attack == "random":
            continue
        ctrl = control.loc[row.method]
        supports = direction(row.diff_ci_low, row.diff_ci_high, "below")
        out.append(Claim(
            paper_claim="attacks",
            claim=f"decoys lower the sensitivity S_S under the {ATTACKS[row.attack].lower()} attack "
                     f"({METHODS[row.method]})",
            chapter="attacks.md",
            measure=f"mean paired difference of S_S, decoys - raw, {METHODS[row.method]}, "
                       f"{ATTACKS[row.attack]} attack, N={row.n}",
            value=float(row.diff_mean), ci_low=float(row.diff_ci_low), ci_high=float(row.diff_ci_high),
            n=int(row.n), supports=supports,
            note=(f"S_S {row.ss_raw_mean:.2f} raw vs {row.ss_dance_mean:.2f} with decoys; "
                     f"decoys higher on {100 * row.frac_dance_higher:.0f}% of images (Wilcoxon p = {row.p_wilcoxon:.2g}). "
                     f"Caveat: decoys/raw = {row.ratio_mean:.2f} here and {ctrl.ratio_mean:.2f} under the random-sign "
                     f"control, which is not aimed at any map."),
        ))
    return out


def claims(settings: Settings) -> List[Claim]:
    """The paper's attack claims with the numbers of the attacks chapter (reads its cached results)."""
    return attack_claims(settings) + family_claims(settings) + strong_claims(settings)


# --------------------------------------------------------------------------------------------
# The decoy family (issue 12, section 1): the paper's one-patch masks against the book's lattice
# --------------------------------------------------------------------------------------------

#: The attack and base method of the decoy-family sensitivity run: the main run's top-k attack on the gradient
#: (the cheapest attack; declared before the run, 2026-11-28).
FAMILY_ATTACK = ("topk", "gradient")


def family_attack_run(settings: Settings, n: Optional[int] = None) -> dict:
    """The top-k attack on the gradient (:data:`FAMILY_ATTACK`, the main run's attack, settings and images) with
    the decoy-enhanced map made of each decoy family of the fidelity chapter's sensitivity run (cached, one entry).

    The families are :data:`dance_book.experiments.fidelity.FAMILIES`, both solved by its line search
    (:data:`~dance_book.experiments.fidelity.FAMILY_SOLVER`, not the paper's Adam): one 3x3 patch per mask, a
    seeded subset of as many masks as the book's lattice family has (the same subset for every image), against
    the lattice. Both populations have ``2M + 1`` maps per image, so the families differ by their masks alone.
    The attacked images are those of :func:`attack_run` (the attack is deterministic); the clean and the
    attacked images get decoys of each family, and :math:`S_S` compares their heatmaps as in :func:`attack_run`.

    Returns:
        dict with ``ss_raw`` and, per family, ``ss_dance`` and ``topk_dance`` (numpy ``[n]``), ``n_decoys``,
        ``dropped`` (decoys over epsilon, clean and attacked images), ``mask_pixels``; ``n``, ``k``, ``kind``,
        ``method``, ``solver`` and ``seconds``.
    """
    import time

    from .fidelity import FAMILIES, FAMILY_SOLVER

    kind, method = FAMILY_ATTACK
    n = settings.n_attack if n is None else check_n(n)
    cfg = attack_settings(settings)
    config = dict(settings=repr(settings), kind=kind, method=method, n=n, attack=asdict(cfg),
                  families=list(FAMILIES), solver=FAMILY_SOLVER)

    def compute():
        start = time.perf_counter()
        model = load_model(settings.main_model)
        layer = settings.layer(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        print(f"decoy families under the {ATTACKS[kind]} attack on {METHODS[method]}: {n} images ...",
              file=sys.stderr, flush=True)
        r = _main_attack(model, x, t, kind, method, settings, cfg)  # attack_run's attack: its attacked images
        xh = r.inputs.detach()
        xc, xhc = x.cpu(), xh.cpu()
        raw_clean = to_heatmap(base_maps(model, x, t, method, settings)).cpu()
        raw_attacked = to_heatmap(base_maps(model, xh, t, method, settings)).cpu()
        n_masks = int(mask_family(model, x[:1], layer, settings).shape[0])
        out = {"kind": kind, "method": method, "n": n, "k": int(r.k), "solver": FAMILY_SOLVER,
               "ss_raw": sensitivity(raw_clean, raw_attacked, xc, xhc).numpy()}
        for family, options in FAMILIES.items():
            options = dict(options, solver=FAMILY_SOLVER)
            if family == "one patch":
                options["n_masks"] = n_masks
            before = shared_decoys(settings, settings.main_model, n, **options)
            with warnings.catch_warnings():  # dropped decoys are counted, not warned about
                warnings.simplefilter("ignore", RuntimeWarning)
                after = optimised_decoys(model, xh, layer, settings, **options)
            clean = to_heatmap(enhanced_maps(model, x, t, method, settings, before, batch_size=MAP_BATCH)).cpu()
            attacked = to_heatmap(enhanced_maps(model, xh, t, method, settings, after, batch_size=MAP_BATCH)).cpu()
            out[family] = {"ss_dance": sensitivity(clean, attacked, xc, xhc).numpy(),
                           "topk_dance": topk_intersection(clean, attacked, int(r.k)).numpy(),
                           "n_decoys": np.array([len(d) for d in before]),
                           "dropped": np.array([int(a.dropped) + int(b.dropped) for a, b in zip(before, after)]),
                           "mask_pixels": float(np.mean([float(d.masks.sum(dim=(1, 2, 3)).float().mean())
                                                         for d in before]))}
        out["seconds"] = time.perf_counter() - start
        return out

    return cached("attack-family", config, compute)


def family_attack_table(run: dict):
    """Per decoy family of :func:`family_attack_run`: S_S raw and with decoys, and their paired difference
    (decoys - raw, mean with its 95 % t-interval; lower = the decoys make the map more robust). A DataFrame."""
    import pandas as pd

    rows = []
    for family in (k for k in run if isinstance(run[k], dict)):
        r = run[family]
        d = paired_difference(r["ss_dance"], run["ss_raw"])
        rows.append({"family": family, "solver": run["solver"], "n": int(run["n"]),
                     "maps": int(np.min(r["n_decoys"])) + 1 if np.ptp(r["n_decoys"]) == 0 else
                     f"{int(np.min(r['n_decoys'])) + 1}–{int(np.max(r['n_decoys'])) + 1}",
                     "mask_pixels": r["mask_pixels"], "ss_raw": float(np.mean(run["ss_raw"])),
                     "ss_dance": float(np.mean(r["ss_dance"])), "diff_mean": d["mean_diff"],
                     "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"], "dropped": int(np.sum(r["dropped"]))})
    return pd.DataFrame(rows)


def family_claims(settings: Settings) -> List[Claim]:
    """Context rows (``counts=False``) of the attack claim from the decoy-family sensitivity run
    (:func:`family_attack_run`): per family, S_S with decoys - raw, labelled with the solver."""
    kind, method = FAMILY_ATTACK
    out = []
    for row in family_attack_table(family_attack_run(settings)).itertuples():
        out.append(Claim(
            paper_claim="attacks",
            claim=f"decoys lower the sensitivity S_S under the {ATTACKS[kind].lower()} attack ({METHODS[method]}), "
                  f"{row.family} masks, line search (context: decoy family)",
            chapter="attacks.md",
            measure=f"mean paired difference of S_S, decoys ({row.family} masks, {row.maps} maps, {row.solver} "
                    f"solver) - raw, {METHODS[method]}, {ATTACKS[kind]} attack, N={row.n}",
            value=float(row.diff_mean), ci_low=float(row.diff_ci_low), ci_high=float(row.diff_ci_high), n=int(row.n),
            supports=direction(row.diff_ci_low, row.diff_ci_high, "below"), counts=False,
            note=f"S_S {row.ss_raw:.2f} raw vs {row.ss_dance:.2f} with decoys. Context, not counted: a sensitivity "
                 f"run of the decoy family with the line-search solver (not the paper's Adam); one-patch masks "
                 f"subsampled to the lattice family's number of masks.",
        ))
    return out


# --------------------------------------------------------------------------------------------
# Attacks at the strength of Ghorbani et al. (issue 13): a declared study next to the main run
# --------------------------------------------------------------------------------------------

#: The maps measured in the strong study: raw, decoy-enhanced, and Yeh et al.'s smoothing of the raw method.
STRONG_MAPS = {"raw": "raw", "dance": "with decoys", "yeh": "Yeh-smoothed"}
#: The per-image measures kept for every map (S_S, ||Delta E||_2, top-k intersection, Spearman, centre shift).
STRONG_MEASURES = ("ss", "map_change", "topk", "spearman", "shift")


@dataclass(frozen=True)
class StrongSettings:
    r"""The strong transfer attacks, declared before their runs (issue 13).

    * Budget and steps: Ghorbani et al.'s largest :math:`\epsilon = 8/255`, ``iterations`` signed
      steps of ``step_fraction * epsilon`` (at least 100 steps of :math:`\epsilon/10`, against the
      main run's 5 of :math:`\epsilon/2`); softplus ``beta`` as in the main run.
    * Directions: the SmoothGrad and IG attacks use the *evaluated* ``settings.smoothgrad_samples``
      noise samples and ``settings.ig_steps`` steps (the main run's directions use fewer).
    * ``kinds``: the attacks run (the targeted one on the library's region of at least 4 x 4 pixels,
      :data:`dance.attacks.TARGET_MIN_SIDE`). Both iterate selections come from the same walk
      (:func:`dance.attacks.attack_selections`): ``"objective"`` (best raw-map objective, Ghorbani
      et al.'s and the main run's rule) and ``"label"`` (the last iterate that keeps the label).
    * ``controls``: norm-matched controls (:func:`dance.attacks.norm_matched_control`) of the
      label-selected attack's own :math:`\delta` (random signs; permuted positions).
    * Yeh et al.'s smoothing (§3, Eq. 3; :class:`dance.YehSmoothed`): radius ``yeh_radius`` = 0.3 in
      :math:`L_\infty` (their value for [0, 1] pixels, as the remedies chapter), with as many samples as
      the decoy-enhanced map has maps (1 + the decoys of the first clean image): equal compute in maps
      of the base method (DANCE also optimises its decoys).
    * Sample size: the claims' power rule (:func:`dance_book.experiments.power.n_needed` at the attacks
      claim's declared :math:`d_z`), capped by ``budget_s`` seconds per store entry (one method and one
      attack kind) over :data:`STRONG_COST_PER_IMAGE`, never below ``n_min``; where the cap binds the
      chapter says "underpowered".
    """

    epsilon: float = 8 / 255
    iterations: int = 100
    step_fraction: float = 0.1
    beta: float = 10.0
    kinds: Tuple[str, ...] = ("topk", "targeted")
    controls: Tuple[str, ...] = ("sign", "permute_all")
    yeh_radius: float = 0.3
    seed: int = 0
    budget_s: float = 120.0
    n_min: int = 2
    n_max: Optional[int] = None

    @property
    def step_size(self) -> float:
        return self.step_fraction * self.epsilon


#: Frozen per scale. Paper scale: Ghorbani et al.'s ~300 steps, capped at 50 images (needs a GPU).
STRONG_SETTINGS = {
    "ci": StrongSettings(),
    "paper": StrongSettings(iterations=300, step_fraction=0.05, kinds=("topk", "targeted", "mass_center"),
                            budget_s=3600.0, n_max=50),
}

#: Measured wall seconds per image for one method and one attack kind with everything of :func:`strong_run`
#: at CI scale (one torch thread on the book's 2-core machine shared with four other jobs, load ~2.4,
#: 2026-11-28: 100 steps cost 0.07 / 0.20 / 0.35 s per image and step for the gradient / SmoothGrad (8
#: samples) / IG (16 steps) at batch 2, a decoy population 2.4 s per image, four per image here).
#: Paper scale: not measured, the cap is ``n_max``.
STRONG_COST_PER_IMAGE = {"ci": {"gradient": 20.0, "smoothgrad": 40.0, "integrated_gradients": 55.0}}


def strong_settings(settings: Settings) -> StrongSettings:
    """The frozen :class:`StrongSettings` of ``settings.scale`` (a paper-scale smoke run: CI's, one image,
    the smoke run's few steps)."""
    if settings.scale == "paper" and settings.smoke:
        return replace(STRONG_SETTINGS["ci"], iterations=int(settings.extra.get("attack_iterations", 2)), n_max=1)
    return STRONG_SETTINGS[settings.scale]


def strong_sample_sizes(settings: Settings, methods: Sequence[str] = tuple(METHODS)) -> Dict[str, dict]:
    """:func:`dance_book.experiments.adaptive.choose_n` per method: the N for 80 % power at the attacks
    claim's declared smallest effect (:data:`dance_book.experiments.power.DECLARATIONS`), capped by the
    budget of one store entry over the measured cost of an image and by the main run's ``settings.n_attack``."""
    from . import power as Pw
    from .adaptive import choose_n

    cfg = strong_settings(settings)
    needed = int(Pw.n_needed(1.0, Pw.DECLARATIONS["attacks"].effect_dz))
    # never more than the main run's images: the corner control of the same images is read from it
    cap = settings.n_attack if cfg.n_max is None else min(cfg.n_max, settings.n_attack)
    costs = STRONG_COST_PER_IMAGE.get("ci" if settings.scale == "ci" or settings.smoke else settings.scale)
    out = {}
    for method in check_methods(methods):
        if costs is None:
            out[method] = choose_n(needed, 1.0, float(cap), min(cfg.n_min, cap))
        else:
            out[method] = choose_n(needed, costs[method], cfg.budget_s, min(cfg.n_min, cap), cap)
    return out


def _measures(before: torch.Tensor, after: torch.Tensor, x: torch.Tensor, xh: torch.Tensor, k: int) -> dict:
    """Per-image measures of two batches of [0, 1] heatmaps ``[B, H, W]`` (:data:`STRONG_MEASURES`)."""
    return {"ss": sensitivity(before, after, x, xh).numpy(),
            "map_change": (after - before).flatten(1).norm(dim=1).numpy(),
            "topk": topk_intersection(before, after, k).numpy(), "spearman": spearman(before, after).numpy(),
            "shift": center_shift(before, after).numpy()}


def strong_run(settings: Settings, kind: str, method: str, n: Optional[int] = None) -> dict:
    """One strong attack (:class:`StrongSettings`) on one base method over the first ``n`` images (cached;
    default :func:`strong_sample_sizes`).

    One walk, both selections (:func:`dance.attacks.attack_selections`); for each returned image the
    decoys are re-optimised (as in :func:`attack_run`) and the raw, decoy-enhanced and Yeh-smoothed heatmaps
    are compared with those of the clean image. The norm-matched controls of the label-selected
    perturbation are measured the same way.

    Returns:
        dict with ``kind``, ``method``, ``n``, ``k``, ``attack`` (the settings as a dict), ``yeh_samples``,
        ``seconds`` (wall time per part), and per condition (``"objective"``, ``"label"``, then each control)
        a dict ``{map: {measure: [n] array}}`` over :data:`STRONG_MAPS` and :data:`STRONG_MEASURES`, plus
        ``linf``, ``l2``, ``label_kept``, ``iteration``, ``success`` ``[n]``; ``examples`` (the first
        image: clean and attacked images and heatmaps of each map, label selection).
    """
    from dance import YehSmoothed

    from .maps import base_method

    if kind not in ATTACKS or kind == "random":
        raise ValueError(f"kind must be one of {[k for k in ATTACKS if k != 'random']}, got {kind!r}")
    check_methods(method)
    cfg = strong_settings(settings)
    n = strong_sample_sizes(settings, [method])[method]["n"] if n is None else check_n(n)
    config = dict(settings=repr(settings), kind=kind, method=method, n=n, strong=asdict(cfg))

    def compute():
        import time

        seconds = {}

        def timed(name, call):
            start = time.perf_counter()
            value = call()
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            return value

        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        layer = settings.layer(settings.main_model)
        clean_decoy_sets = clean_decoys(settings, n)
        yeh_samples = 1 + len(clean_decoys(settings, 1)[0].images)
        if method == "gradient":
            fn = _attacks.explainer("gradient")
        elif method == "smoothgrad":
            fn = _attacks.explainer("smoothgrad", n_samples=settings.smoothgrad_samples, stdev=settings.smoothgrad_std,
                                    seed=cfg.seed)
        else:
            fn = _attacks.explainer("integrated_gradients", n_steps=settings.ig_steps, method="gausslegendre")
        attribution, kwargs = base_method(model, method, settings)
        smoother = YehSmoothed(attribution, radius=cfg.yeh_radius, n_samples=yeh_samples, seed=cfg.seed)

        def heatmaps(z, decoys):
            raw = to_heatmap(base_maps(model, z, t, method, settings)).cpu()
            enh = to_heatmap(enhanced_maps(model, z, t, method, settings, decoys, batch_size=MAP_BATCH)).cpu()
            torch.manual_seed(settings.seed)  # SmoothGrad's noise inside Yeh's smoothing, as base_maps seeds it
            yeh = to_heatmap(smoother.attribute(z, target=t, batch_size=256, **kwargs).detach()).cpu()
            return {"raw": raw, "dance": enh, "yeh": yeh}

        print(f"strong attack {ATTACKS[kind]} on {METHODS[method]}: {n} images, {cfg.iterations} steps ...",
              file=sys.stderr, flush=True)
        clean = timed("maps", lambda: heatmaps(x, clean_decoy_sets))
        walks = timed("attack", lambda: _attacks.attack_selections(
            model, x, t, kind=kind, explain=fn, epsilon=cfg.epsilon, step_size=cfg.step_size,
            iterations=cfg.iterations, beta=cfg.beta, seed=cfg.seed))
        results = dict(walks)
        for control in cfg.controls:
            results[control] = timed("controls", lambda: _attacks.norm_matched_control(
                model, walks["label"], control=control, explain=fn, seed=cfg.seed))
        k = int(walks["label"].k)
        xc = x.cpu()
        out = {"kind": kind, "method": method, "n": n, "k": k, "attack": asdict(cfg), "yeh_samples": yeh_samples,
               "seconds": seconds, "examples": {"image": xc[0].clone(), **{f"clean_{m}": clean[m][0].clone()
                                                                           for m in STRONG_MAPS}}}
        for name, r in results.items():
            xh = r.inputs.detach()
            print(f"  {name}: decoys and maps of the {n} perturbed images ...", file=sys.stderr, flush=True)
            decoys = timed("decoys", lambda: optimised_quietly(model, xh, layer, settings))
            after = timed("maps", lambda: heatmaps(xh, decoys))
            xhc = xh.cpu()
            out[name] = {m: _measures(clean[m], after[m], xc, xhc, k) for m in STRONG_MAPS}
            out[name].update({"linf": r.linf.cpu().numpy(), "l2": r.l2.cpu().numpy(),
                              "label_kept": (predicted(model, xh) == r.labels).cpu().numpy(),
                              "iteration": r.iteration.cpu().numpy(), "success": r.success.cpu().numpy(),
                              "dropped": np.array([d.dropped for d in decoys])})
            if name == "label":
                out["examples"].update({"attacked": xhc[0].clone(), **{m: after[m][0].clone() for m in STRONG_MAPS}})
        return out

    return cached("attack-strong", config, compute)


def strong_pairs(settings: Settings, methods: Sequence[str], kinds: Sequence[str], offset: int = 0) -> list:
    """The ``(kind, method)`` runs of :func:`strong_study` and :func:`strong_context_study`: every kind on every
    method. The paper-scale smoke run (``settings.extra["smoke"]``) runs each kind on one method, in turn from
    method number ``offset`` (the context study starts after the declared kinds: with the declared top-k
    and targeted attacks on the gradient and Integrated Gradients, the mass-centre attack runs on SmoothGrad):
    every kind and every method still runs once.

    Example:
        >>> from dance_book.experiments.settings import CI, PAPER_SMOKE
        >>> strong_pairs(PAPER_SMOKE, ["gradient", "smoothgrad"], ["topk", "targeted"])
        [('topk', 'gradient'), ('targeted', 'smoothgrad')]
        >>> strong_pairs(PAPER_SMOKE, ["gradient", "smoothgrad"], ["mass_center"], offset=1)
        [('mass_center', 'smoothgrad')]
        >>> len(strong_pairs(CI, ["gradient", "smoothgrad"], ["topk", "targeted"]))
        4
    """
    methods, kinds = list(methods), list(kinds)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int (the first method's position), got {offset!r}")
    pairs = [(kind, method) for method in methods for kind in kinds]
    if not settings.smoke or not methods:
        return pairs
    keep = {(kind, methods[(offset + i) % len(methods)]) for i, kind in enumerate(kinds)}
    return [p for p in pairs if p in keep]


def strong_study(settings: Settings, methods: Sequence[str] = tuple(METHODS),
                 kinds: Optional[Sequence[str]] = None) -> Dict[tuple, dict]:
    """:func:`strong_run` for every declared kind and method (:func:`strong_pairs`): ``{(kind, method): run}``."""
    kinds = strong_settings(settings).kinds if kinds is None else kinds
    return {(kind, method): strong_run(settings, kind, method)
            for kind, method in strong_pairs(settings, check_methods(methods), kinds)}


#: Attack kinds run at the strong settings *after* the declared study, as context rows (issue 13): not in
#: :attr:`StrongSettings.kinds`, so the declared runs keep their store entries and the claims rows (which
#: read the declared kinds) do not change. Paper scale declares every kind, so there it adds none.
STRONG_CONTEXT_KINDS = ("mass_center",)


def strong_context_kinds(settings: Settings) -> Tuple[str, ...]:
    """The kinds of :data:`STRONG_CONTEXT_KINDS` that the settings' declared study does not run."""
    return tuple(k for k in STRONG_CONTEXT_KINDS if k not in strong_settings(settings).kinds)


def strong_context_study(settings: Settings, methods: Sequence[str] = tuple(METHODS)) -> Dict[tuple, dict]:
    """:func:`strong_run` (same settings, N and store layout as the declared study) for every kind of
    :func:`strong_context_kinds` and method: ``{(kind, method): run}``; empty where there is none."""
    offset = len(strong_settings(settings).kinds)  # the smoke run: on the methods the declared kinds left
    return {(kind, method): strong_run(settings, kind, method)
            for kind, method in strong_pairs(settings, check_methods(methods), strong_context_kinds(settings), offset)}


#: The paired comparisons of the strong study, per selection: (name, map a, map b), difference a - b of S_S.
STRONG_COMPARISONS = (("decoys − raw", "dance", "raw"), ("Yeh − raw", "yeh", "raw"), ("decoys − Yeh", "dance", "yeh"))


def strong_table(runs: Dict[tuple, dict], measure: str = "ss"):
    """One row per kind, method, selection and comparison (:data:`STRONG_COMPARISONS`): N, mean of
    ``measure`` for both maps, their paired difference a - b with its 95 % t-interval, and the mean
    :math:`\\|\\Delta E\\|_2` of both maps (next to S_S, as the issue asks)."""
    import pandas as pd

    if measure not in STRONG_MEASURES:
        raise ValueError(f"measure must be one of {STRONG_MEASURES}, got {measure!r}")
    rows = []
    for (kind, method), run in runs.items():
        for select in _attacks.SELECTIONS:
            r = run[select]
            for name, a, b in STRONG_COMPARISONS:
                va, vb = np.asarray(r[a][measure], float), np.asarray(r[b][measure], float)
                ok = np.isfinite(va) & np.isfinite(vb)
                d = paired_difference(va[ok], vb[ok])
                rows.append({"attack": kind, "method": method, "selection": select, "comparison": name, "n": int(ok.sum()),
                             "a": float(va[ok].mean()), "b": float(vb[ok].mean()), "diff_mean": d["mean_diff"],
                             "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
                             "dE_a": float(np.mean(r[a]["map_change"])), "dE_b": float(np.mean(r[b]["map_change"]))})
    return pd.DataFrame(rows)


def strong_costs(runs: Dict[tuple, dict]):
    """What each strong run cost when it was computed: one row per kind and method with N, the seconds of
    its parts (attack, decoys, maps, controls), their total and the total per image."""
    import pandas as pd

    rows = []
    for (kind, method), run in runs.items():
        parts = {f"{part} (s)": float(run["seconds"][part]) for part in ("attack", "decoys", "maps", "controls")}
        total = float(sum(run["seconds"].values()))
        rows.append({"method": METHODS[method], "attack": ATTACKS[kind], "n": run["n"], **parts,
                     "total (s)": total, "per image (s)": total / run["n"]})
    return pd.DataFrame(rows)


def strong_controls(settings: Settings, runs: Dict[tuple, dict]):
    """Per kind, method and map (raw, with decoys): mean S_S and :math:`\\|\\Delta E\\|_2` under the
    label-selected strong attack, under its norm-matched controls, and (S_S only) under the main run's
    random-sign corner control on the same images; and the paired difference attack - control of S_S."""
    import pandas as pd

    rows = []
    for (kind, method), run in runs.items():
        n = run["n"]
        corner = attack_run(settings, "random", method)  # the main run's control (stored), same first images
        for m in ("raw", "dance"):
            a = np.asarray(run["label"][m]["ss"], float)
            row = {"attack": kind, "method": method, "map": m, "n": n, "ss_attack": float(np.nanmean(a)),
                   "dE_attack": float(np.mean(run["label"][m]["map_change"])),
                   "ss_corner": float(np.nanmean(corner[f"ss_{m}"][:n]))}
            for control in strong_settings(settings).controls:
                c = np.asarray(run[control][m]["ss"], float)
                ok = np.isfinite(a) & np.isfinite(c)
                d = paired_difference(a[ok], c[ok])
                row.update({f"ss_{control}": float(c[ok].mean()),
                            f"dE_{control}": float(np.mean(run[control][m]["map_change"])),
                            f"diff_{control}": d["mean_diff"], f"lo_{control}": d["ci_low"],
                            f"hi_{control}": d["ci_high"]})
            rows.append(row)
    return pd.DataFrame(rows)


def strong_claims(settings: Settings) -> List[Claim]:
    """Lower S_S with decoys under the strong attacks: per kind and method, the label selection counts
    (no selection on any map); the objective selection and Yeh's smoothing are context rows."""
    sizes = strong_sample_sizes(settings)
    table = strong_table(strong_study(settings))
    out = []
    for row in table.itertuples():
        if row.comparison == "decoys − Yeh":
            continue
        counts = row.selection == "label" and row.comparison == "decoys − raw"
        subject = "decoys" if row.comparison == "decoys − raw" else "Yeh et al.'s smoothing"
        under = " (underpowered: the compute cap bound)" if sizes[row.method]["binds"] else ""
        out.append(Claim(
            paper_claim="attacks",
            claim=f"{subject} lower the sensitivity S_S under the strong {ATTACKS[row.attack].lower()} attack "
                  f"({METHODS[row.method]}, iterate selected on the {row.selection})",
            chapter="attacks.md",
            measure=f"mean paired difference of S_S, {row.comparison}, {METHODS[row.method]}, strong "
                    f"{ATTACKS[row.attack]} attack ({strong_settings(settings).iterations} steps), "
                    f"{row.selection} selection, N={row.n}",
            value=float(row.diff_mean), ci_low=float(row.diff_ci_low), ci_high=float(row.diff_ci_high),
            n=int(row.n), supports=direction(row.diff_ci_low, row.diff_ci_high, "below"), counts=counts,
            note=f"S_S {row.b:.2f} raw vs {row.a:.2f}; ||ΔE||_2 {row.dE_b:.2f} vs {row.dE_a:.2f}{under}."))
    return out
