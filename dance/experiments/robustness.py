r"""Robustness experiments: adversarial attacks on saliency maps (paper Fig. 4 / A14) and the
cascading-randomisation sanity check (paper A8 / A9).

**Attacks.** The three attacks of Ghorbani et al. (top-k, targeted, mass-center) and the
random-sign control of :mod:`dance.attacks` perturb each image within an :math:`L_\infty` ball
so that the *base* method's map changes while the label stays. The decoy-enhanced map is not a
differentiable function of the input (its decoys come out of an optimisation), so, as in the
paper, DANCE is evaluated on the images attacked through the base method: the attacked image gets
its own decoys, optimised for it exactly as for a clean image (one batched call per attack and
method), and :math:`S_S` compares the maps of the clean and the attacked image, raw and
decoy-enhanced, on the paper's [0, 1] heatmaps.

**Sanity check.** :func:`dance.metrics.cascading_randomization` re-initialises the main model's
layers from the top down and compares each step's map with the trained model's map by SSIM and
Spearman correlation. The decoy-enhanced map of each randomised model uses decoys optimised *for
that model*. Decoys preserve the activations of the decoy layer ``l`` and so depend only on the
layers up to ``l``; the optimisation is deterministic. Re-optimising them after randomising a
layer *above* ``l`` therefore gives exactly the decoys of the previous step, and
:class:`DecoyMemo` reuses them (keyed by a fingerprint of the parameters up to ``l``): only the
steps that randomise ``l`` or a layer below it pay for a new optimisation. The chapter checks the
shortcut by re-optimising once and comparing.

Every expensive result goes through :func:`dance.experiments.cached`; the hyperparameters are
frozen here, per scale (:data:`ATTACK_SETTINGS`).
"""
from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .. import attacks as _attacks
from ..heatmap import to_heatmap
from ..metrics.sanity import cascading_randomization, parameter_layers
from ..metrics.sensitivity import sensitivity
from ..metrics.similarity import center_shift, spearman, topk_intersection
from .cache import cached
from .inputs import load_images, load_model, shared_decoys
from .maps import METHODS, base_maps, enhanced_maps, optimised_decoys, predicted
from .claims import direction
from .settings import Settings
from .stats import mean_sd, paired_difference

#: The attacks, in the paper's order, then the control, with display names.
ATTACKS = {"topk": "Top-k", "targeted": "Targeted", "mass_center": "Mass-center", "random": "Random sign (control)"}
#: Images kept (maps and attacked images) for the figures.
N_EXAMPLES = 3


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
    """The frozen :class:`AttackSettings` of ``settings.scale``."""
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


def _check_n(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def _check_methods(methods) -> List[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty list drawn from {list(METHODS)}, got {methods!r}")
    return methods


def _clean_decoys(settings: Settings, n: int):
    """DANCE decoys of the first ``n`` experiment images, from the cache shared between chapters."""
    if n <= settings.n_fidelity:
        return shared_decoys(settings, settings.main_model, settings.n_fidelity)[:n]
    return shared_decoys(settings, settings.main_model, n)


#: Rows (image or decoy) per call of the base method in decoy-enhanced maps: on a CPU, chunks of
#: 16 rows run SmoothGrad about twice as fast as chunks of 256 (measured), and cost no accuracy.
MAP_BATCH = 16
#: Decoys optimised at once. The rows of the optimisation are independent, so chunking changes
#: no decoy (checked: identical images), but chunks of a few hundred rows run ~2.5x faster on a
#: CPU than one batch of every row.
DECOY_BATCH = 256


def _optimised_quietly(model, x, layer, settings):
    """Decoys of ``x``; dropped decoys are counted in the result instead of warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return optimised_decoys(model, x, layer, settings, batch_size=DECOY_BATCH)


# In-process memo of the decoys of attacked images, keyed by the images themselves: the random-sign
# control does not depend on the explanation, so its three runs (one per method) perturb the
# images identically and share one decoy optimisation.
_ATTACKED_DECOYS: Dict[str, list] = {}


def _attacked_decoys(model, xh, layer, settings):
    key = hashlib.sha256(repr((settings, layer)).encode() + xh.detach().cpu().numpy().tobytes()).hexdigest()
    if key not in _ATTACKED_DECOYS:
        _ATTACKED_DECOYS.clear()  # keep at most one population set in memory
        _ATTACKED_DECOYS[key] = _optimised_quietly(model, xh, layer, settings)
    return _ATTACKED_DECOYS[key]


# --------------------------------------------------------------------------------------------
# Attacks (Fig. 4 / A14)
# --------------------------------------------------------------------------------------------

def clean_maps(settings: Settings, method: str, n: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Raw and decoy-enhanced heatmaps ``[n, H, W]`` of the clean attack images (cached).

    The decoys are the shared ones of the main model (:func:`dance.experiments.shared_decoys`).
    """
    _check_methods(method)
    n = settings.n_attack if n is None else _check_n(n)
    config = dict(settings=repr(settings), method=method, n=n)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        decoys = _clean_decoys(settings, n)
        print(f"clean maps: {METHODS[method]}, {n} images ...", file=sys.stderr, flush=True)
        raw = to_heatmap(base_maps(model, x, t, method, settings)).cpu()
        enh = to_heatmap(enhanced_maps(model, x, t, method, settings, decoys, batch_size=MAP_BATCH)).cpu()
        return {"raw": raw, "dance": enh, "target": t.cpu()}

    return cached("attack-clean-maps", config, compute)


def attack_run(settings: Settings, kind: str, method: str, n: Optional[int] = None) -> dict:
    """One attack on one base method over ``n`` images (default ``settings.n_attack``), cached.

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
    _check_methods(method)
    n = settings.n_attack if n is None else _check_n(n)
    cfg = attack_settings(settings)
    config = dict(settings=repr(settings), kind=kind, method=method, n=n, attack=asdict(cfg))

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        clean = clean_maps(settings, method, n)
        t = clean["target"].to(x.device)
        print(f"attack {ATTACKS[kind]} on {METHODS[method]}: {n} images ...", file=sys.stderr, flush=True)
        r = _attacks.attack(model, x, t, kind=kind, explain=_attack_explainer(method, settings, cfg),
                            epsilon=cfg.epsilon, step_size=cfg.step_size, iterations=cfg.iterations,
                            beta=cfg.beta, seed=cfg.seed)
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


def attack_study(settings: Settings, methods: Sequence[str] = tuple(METHODS), kinds: Sequence[str] = tuple(ATTACKS),
                 n: Optional[int] = None):
    """Every attack on every method (cached runs); returns ``(runs, table)``.

    ``runs[(kind, method)]`` is :func:`attack_run`'s dict; ``table`` is a :class:`pandas.DataFrame`
    with one row per attack and method: mean ± sd of :math:`S_S` raw and decoy-enhanced, the
    paired difference decoys - raw (mean, 95 % t-CI, Wilcoxon p, share of images where decoys
    are *higher*), the attack's success rate, and the top-k intersections.
    """
    import pandas as pd

    methods = _check_methods(methods)
    bad = [k for k in kinds if k not in ATTACKS]
    if bad:
        raise ValueError(f"kinds must be drawn from {list(ATTACKS)}, got {list(kinds)!r}")
    runs, rows = {}, []
    for method in methods:
        for kind in kinds:
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


# --------------------------------------------------------------------------------------------
# Sanity check (A8 / A9)
# --------------------------------------------------------------------------------------------

def _prefix_modules(model: nn.Module, layer: str) -> List[nn.Module]:
    """Modules defined up to and including ``layer`` (definition order = forward order, as for
    the sequential VGG / AlexNet-style models and :func:`dance.metrics.sanity.parameter_layers`)."""
    out = []
    for name, module in model.named_modules():
        out.append(module)
        if name == layer:
            return out
    raise ValueError(f"layer {layer!r} is not in model.named_modules()")


def _fingerprint(model: nn.Module, layer: str) -> str:
    """sha256 of the parameters and buffers that the activations at ``layer`` depend on."""
    h = hashlib.sha256()
    for module in _prefix_modules(model, layer):
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class DecoyMemo:
    """Decoys per (model state up to the decoy layer, images): optimised once, then reused.

    Decoys depend only on the network up to their layer ``l`` and are optimised
    deterministically, so a model whose parameters up to ``l`` are unchanged has the same decoys.
    ``seed`` decoys (e.g. the shared decoys of the trained model) can be registered up front.
    """

    def __init__(self, settings: Settings, layer: str):
        self.settings, self.layer = settings, layer
        self._store: Dict[str, list] = {}
        self.optimisations = 0

    def register(self, model: nn.Module, x: torch.Tensor, decoys: list) -> None:
        self._store[self._key(model, x)] = decoys

    def _key(self, model, x) -> str:
        return _fingerprint(model, self.layer) + hashlib.sha256(x.detach().cpu().numpy().tobytes()).hexdigest()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> list:
        key = self._key(model, x)
        if key not in self._store:
            self.optimisations += 1
            self._store[key] = _optimised_quietly(model, x, self.layer, self.settings)
        return self._store[key]


_SANITY_MEMOS: Dict[str, DecoyMemo] = {}


def _sanity_memo(settings: Settings, layer: str) -> DecoyMemo:
    """One memo per settings and layer in this process, so the methods share their decoys."""
    key = repr((settings, layer))
    if key not in _SANITY_MEMOS:
        _SANITY_MEMOS.clear()
        _SANITY_MEMOS[key] = DecoyMemo(settings, layer)
    return _SANITY_MEMOS[key]


def sanity_run(settings: Settings, method: str, n: int, enhanced: bool = True, seed: int = 0) -> dict:
    """Cascading randomisation of the main model for one method, raw or decoy-enhanced (cached).

    The layers with parameters are re-initialised from the top (logits) down, cumulatively
    (:func:`dance.metrics.cascading_randomization`); the target is the trained model's predicted
    class throughout. With ``enhanced`` the decoys are re-optimised for every randomised model
    (through :class:`DecoyMemo`; the trained model's decoys are the shared ones).

    Returns:
        dict with ``layers`` (``"original"`` then the layer randomised at each step),
        ``ssim`` and ``spearman`` ``[S + 1, n]`` numpy arrays, ``maps`` ``[S + 1, N_EXAMPLES, H, W]``,
        ``optimisations`` (decoy optimisations actually run), ``dropped`` (decoys over epsilon).
    """
    _check_methods(method)
    n = _check_n(n)
    config = dict(settings=repr(settings), method=method, n=n, enhanced=bool(enhanced), seed=seed)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        layer = settings.layer(settings.main_model)
        memo = _sanity_memo(settings, layer)
        optimised_before = memo.optimisations
        dropped = []
        if enhanced:
            memo.register(model, x, _clean_decoys(settings, n))

            def factory(net):
                def explain(xx, tt):
                    decoys = memo(net, xx)
                    dropped.append(int(sum(d.dropped for d in decoys)))
                    return enhanced_maps(net, xx, tt, method, settings, decoys, seed=seed, batch_size=MAP_BATCH)
                return explain
        else:
            def factory(net):
                return lambda xx, tt: base_maps(net, xx, tt, method, settings, seed=seed)

        label = ("decoy-enhanced " if enhanced else "") + METHODS[method]
        print(f"cascading randomisation: {label}, {n} images ...", file=sys.stderr, flush=True)
        r = cascading_randomization(model, factory, x, t, layers=parameter_layers(model), seed=settings.seed)
        return {"method": method, "enhanced": bool(enhanced), "n": n, "layers": r.layers,
                "ssim": r.ssim.cpu().numpy(), "spearman": r.spearman.cpu().numpy(),
                "maps": r.maps[:, :N_EXAMPLES].cpu().clone(), "optimisations": memo.optimisations - optimised_before,
                "dropped": dropped}

    return cached("sanity-run", config, compute)


def sanity_study(settings: Settings, n: int, methods: Sequence[str] = ("gradient",),
                 enhanced_methods: Optional[Sequence[str]] = None):
    """Raw and decoy-enhanced cascading randomisation for ``methods`` (cached runs).

    ``enhanced_methods`` (default: all of ``methods``) get the decoy-enhanced run too; the raw
    run is cheap and always made. Returns ``(runs, frame)``: ``runs[(method, enhanced)]`` is
    :func:`sanity_run`'s dict; ``frame`` is long-format (method, enhanced, step, layer, image,
    ssim, spearman).
    """
    import pandas as pd

    methods = _check_methods(methods)
    enhanced_methods = methods if enhanced_methods is None else _check_methods(enhanced_methods)
    runs, rows = {}, []
    for method in methods:
        for enhanced in ((False, True) if method in enhanced_methods else (False,)):
            r = sanity_run(settings, method, n, enhanced)
            runs[(method, enhanced)] = r
            for s, layer in enumerate(r["layers"]):
                for i in range(r["ssim"].shape[1]):
                    rows.append({"method": method, "enhanced": enhanced, "step": s, "layer": layer, "image": i,
                                 "ssim": float(r["ssim"][s, i]), "spearman": float(r["spearman"][s, i])})
    return runs, pd.DataFrame(rows)


def check_decoy_memo(settings: Settings, n: int = 1, step_layer: Optional[str] = None) -> float:
    """The largest pixel difference between the decoys of the trained model and decoys
    re-optimised from scratch for a copy randomised at ``step_layer`` above the decoy layer
    (default: the top layer). 0.0 means the shortcut of :class:`DecoyMemo` is exact. Cached."""
    import copy

    from ..metrics.sanity import _randomize_

    n = _check_n(n)
    config = dict(settings=repr(settings), n=n, step_layer=step_layer)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        layer = settings.layer(settings.main_model)
        top = step_layer or parameter_layers(model)[0]
        net = copy.deepcopy(model)
        _randomize_(dict(net.named_modules())[top], settings.seed + 1)
        if _fingerprint(model, layer) != _fingerprint(net, layer):
            raise ValueError(f"step_layer {top!r} is not above the decoy layer {layer!r}")
        if all(torch.equal(p, q) for p, q in zip(model.parameters(), net.parameters())):
            raise RuntimeError(f"randomising {top!r} changed no parameter")
        print(f"re-optimising the decoys of {n} image(s) for a model randomised at {top} ...", file=sys.stderr, flush=True)
        before = _optimised_quietly(model, x, layer, settings)
        after = _optimised_quietly(net, x, layer, settings)
        return max(float((a.images - b.images).abs().max()) for a, b in zip(before, after))

    return cached("sanity-memo-check", config, compute)


# --------------------------------------------------------------------------------------------
# Claims (for the claims chapter; read the cached results only)
# --------------------------------------------------------------------------------------------

#: N of the sanity chapter's runs (small: each randomised model below the decoy layer needs new decoys).
SANITY_N = {"ci": 8, "paper": 8}
#: Methods of the sanity chapter whose decoy-enhanced maps are checked (CI: the gradient only, as
#: every randomised model below the decoy layer needs new decoys), and whose raw maps are shown.
SANITY_METHODS = {"ci": ("gradient",), "paper": tuple(METHODS)}
SANITY_RAW_METHODS = tuple(METHODS)


def _ci_mean(values):
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, None, None
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def claims(settings: Settings) -> List[dict]:
    """The paper's robustness claims with the numbers of the attacks and sanity chapters.

    Only reads the chapters' cached results (same calls, same arguments as the chapters).
    """
    return attack_claims(settings) + sanity_claims(settings)


def attack_claims(settings: Settings) -> List[dict]:
    """Lower :math:`S_S` with decoys, per attack and method (the attacks chapter's cached runs)."""
    out = []
    _, table = attack_study(settings)
    control = table[table.attack == "random"].set_index("method")
    for row in table.itertuples():
        if row.attack == "random":
            continue
        ctrl = control.loc[row.method]
        supports = direction(row.diff_ci_low, row.diff_ci_high, "below")
        out.append({
            "paper_claim": "attacks",
            "claim": f"decoys lower the sensitivity S_S under the {ATTACKS[row.attack].lower()} attack "
                     f"({METHODS[row.method]})",
            "chapter": "attacks.md",
            "measure": f"mean paired difference of S_S, decoys - raw, {METHODS[row.method]}, "
                       f"{ATTACKS[row.attack]} attack, N={row.n}",
            "value": float(row.diff_mean), "ci_low": float(row.diff_ci_low), "ci_high": float(row.diff_ci_high),
            "n": int(row.n), "supports": supports,
            "note": (f"S_S {row.ss_raw_mean:.2f} raw vs {row.ss_dance_mean:.2f} with decoys; "
                     f"decoys higher on {100 * row.frac_dance_higher:.0f}% of images (Wilcoxon p = {row.p_wilcoxon:.2g}). "
                     f"Caveat: decoys/raw = {row.ratio_mean:.2f} here and {ctrl.ratio_mean:.2f} under the random-sign "
                     f"control, which is not aimed at any map."),
        })
    return out


def sanity_claims(settings: Settings) -> List[dict]:
    """The decoy-enhanced maps pass the cascading-randomisation check (the sanity chapter's cached runs)."""
    out = []
    n = SANITY_N[settings.scale]
    runs, _ = sanity_study(settings, n, SANITY_RAW_METHODS, SANITY_METHODS[settings.scale])
    for method in SANITY_METHODS[settings.scale]:
        enh, raw = runs[(method, True)], runs[(method, False)]
        final_enh, final_raw = enh["ssim"][-1], raw["ssim"][-1]
        m, lo, hi = _ci_mean(final_enh)
        d = paired_difference(final_enh, final_raw)
        changes = None if hi is None else direction(lo, hi, "below", at=1.0)
        # "keeps no more structure than the raw map": contradicted when significantly more similar
        more = direction(d["ci_low"], d["ci_high"], "below")
        out.append({
            "paper_claim": "sanity",
            "claim": f"decoy-enhanced {METHODS[method]} changes when the model is randomised",
            "chapter": "sanity.md",
            "measure": f"mean SSIM between the maps of the trained and the fully randomised model, "
                       f"decoy-enhanced {METHODS[method]}, N={n}",
            "value": m, "ci_low": lo, "ci_high": hi, "n": n, "supports": changes,
            "note": f"raw {METHODS[method]}: {float(np.mean(final_raw)):.3f}; supports = the SSIM is below 1 with "
                    f"its 95% interval (Adebayo et al.'s test, as the paper applies it).",
        })
        out.append({
            "paper_claim": "sanity",
            "claim": f"decoy-enhanced {METHODS[method]} keeps no more of the trained map than raw "
                     f"{METHODS[method]}",
            "chapter": "sanity.md",
            "measure": f"mean paired difference of that SSIM, decoy-enhanced - raw {METHODS[method]}, N={n}",
            "value": float(d["mean_diff"]), "ci_low": float(d["ci_low"]), "ci_high": float(d["ci_high"]), "n": n,
            "supports": more,
            "note": "supports = lower than the raw map's with its 95% interval; contradicts = higher (the "
                    "decoy-enhanced map keeps more of its structure after randomisation than the raw map).",
        })
    return out
