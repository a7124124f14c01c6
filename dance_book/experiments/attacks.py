r"""The attacks chapter (paper Fig. 4 / A14): adversarial attacks on saliency maps, raw and decoy-enhanced.

The three attacks of Ghorbani et al. (top-k, targeted, mass-center) and the random-sign control of
:mod:`dance.attacks` perturb each image within an :math:`L_\infty` ball so that the *base* method's
map changes while the label stays. The decoy-enhanced map is not a differentiable function of the
input (its decoys come out of an optimisation), so, as in the paper, DANCE is evaluated on the
images attacked through the base method: the attacked image gets its own decoys, optimised for it
exactly as for a clean image (one batched call per attack and method), and :math:`S_S` compares the
maps of the clean and the attacked image, raw and decoy-enhanced, on the paper's [0, 1] heatmaps.

Every expensive result goes through :func:`dance_book.experiments.cached`; the hyperparameters are
frozen here, per scale (:data:`ATTACK_SETTINGS`).
"""
from __future__ import annotations

import sys

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from dance import attacks as _attacks
from dance.heatmap import to_heatmap
from dance.metrics.sensitivity import sensitivity
from dance.metrics.similarity import center_shift, spearman, topk_intersection

from .cache import cached
from .claims import Claim, direction
from .inputs import clean_decoys, load_images, load_model
from .maps import (MAP_BATCH, METHODS, N_EXAMPLES, base_maps, check_methods, check_n, enhanced_maps, optimised_quietly,
                   predicted)
from .settings import Settings
from .stats import mean_sd, paired_difference

__all__ = ["ATTACKS", "N_EXAMPLES", "AttackSettings", "ATTACK_SETTINGS", "attack_settings", "clean_maps",
           "attack_run", "study_pairs", "attack_study", "excess_table", "K_SHARES", "K_SWEEP_METHODS",
           "k_sweep", "SAME_ORDER", "AttackSummary", "summarize",
           "attack_claims", "claims"]

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
        r = _attacks.attack(model, x, t, kind=kind, explain=_attack_explainer(method, settings, cfg),
                            epsilon=cfg.epsilon, step_size=cfg.step_size, iterations=cfg.iterations,
                            beta=cfg.beta, seed=cfg.seed, k=k)
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
    if not settings.extra.get("smoke"):
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
    return attack_claims(settings)
