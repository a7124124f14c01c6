r"""The sanity chapter (paper A8 / A9): the cascading-randomisation check of decoy-enhanced maps.

:func:`dance.metrics.cascading_randomization` re-initialises the main model's layers from the top
down and compares each step's map with the trained model's map by SSIM and Spearman correlation.
The decoy-enhanced map of each randomised model uses decoys optimised *for that model*. Decoys
preserve the activations of the decoy layer ``l`` and so depend only on the layers up to ``l``; the
optimisation is deterministic. Re-optimising them after randomising a layer *above* ``l`` therefore
gives exactly the decoys of the previous step, and :class:`DecoyMemo` reuses them (keyed by a
fingerprint of the parameters up to ``l``): only the steps that randomise ``l`` or a layer below it
pay for a new optimisation. The chapter checks the shortcut by re-optimising once and comparing.
"""
from __future__ import annotations

import sys

import copy
import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import stats
from torch import nn

from dance.heatmap import to_heatmap
from dance.metrics import spearman as spearman_similarity, ssim as ssim_similarity
from dance.metrics.sanity import cascading_randomization, parameter_layers, randomize_

from . import power as Pw
from .cache import cached
from .claims import Claim, direction
from .inputs import clean_decoys, load_images, load_model
from .maps import (MAP_BATCH, METHODS, N_EXAMPLES, base_maps, check_methods, check_n, enhanced_maps, optimised_quietly,
                   predicted)
from .settings import Settings
from .stats import paired_difference

__all__ = ["DecoyMemo", "N_EXAMPLES", "sanity_run", "sanity_study", "check_decoy_memo", "SANITY_N", "sanity_n",
           "SANITY_METHODS", "sanity_methods", "SANITY_RAW_METHODS", "sanity_claims", "claims", "FLOOR_SEED_OFFSET",
           "fully_randomized", "sanity_floor", "floor_n", "FLOOR_N_CAP", "FLOOR_METHODS", "floor_table"]

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
            self._store[key] = optimised_quietly(model, x, self.layer, self.settings)
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
    (through :class:`DecoyMemo`; the trained model's decoys are the shared ones). The paper-scale
    smoke run explains only the first and the last step (:meth:`Settings.sweep`).

    Returns:
        dict with ``layers`` (``"original"`` then the layer randomised at each step),
        ``ssim`` and ``spearman`` ``[S + 1, n]`` numpy arrays, ``maps`` ``[S + 1, N_EXAMPLES, H, W]``,
        ``optimisations`` (decoy optimisations actually run), ``dropped`` (decoys over epsilon).
    """
    check_methods(method)
    n = check_n(n)
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
            memo.register(model, x, clean_decoys(settings, n))

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
        layers = parameter_layers(model)
        # the paper-scale smoke run explains the first and the last step only (the same cascade and last model)
        steps = settings.sweep(range(1, len(layers) + 1))
        r = cascading_randomization(model, factory, x, t, layers=layers, seed=settings.seed, steps=steps)
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

    methods = check_methods(methods)
    enhanced_methods = methods if enhanced_methods is None else check_methods(enhanced_methods)
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
    n = check_n(n)
    config = dict(settings=repr(settings), n=n, step_layer=step_layer)

    def compute():
        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        layer = settings.layer(settings.main_model)
        top = step_layer or parameter_layers(model)[0]
        net = copy.deepcopy(model)
        randomize_(dict(net.named_modules())[top], settings.seed + 1)
        if _fingerprint(model, layer) != _fingerprint(net, layer):
            raise ValueError(f"step_layer {top!r} is not above the decoy layer {layer!r}")
        if all(torch.equal(p, q) for p, q in zip(model.parameters(), net.parameters())):
            raise RuntimeError(f"randomising {top!r} changed no parameter")
        print(f"re-optimising the decoys of {n} image(s) for a model randomised at {top} ...", file=sys.stderr, flush=True)
        before = optimised_quietly(model, x, layer, settings)
        after = optimised_quietly(net, x, layer, settings)
        return max(float((a.images - b.images).abs().max()) for a, b in zip(before, after))

    return cached("sanity-memo-check", config, compute)


#: N of the sanity chapter's runs (small: each randomised model below the decoy layer needs new decoys).
SANITY_N = {"ci": 8, "paper": 8}


def sanity_n(settings: Settings) -> int:
    """N of the sanity chapter at ``settings``' scale: :data:`SANITY_N`, but no more than
    ``settings.n_small`` under the paper-scale smoke test (whose folder holds a few images).

    Example:
        >>> from dance_book.experiments.settings import CI, PAPER_SMOKE
        >>> sanity_n(CI), sanity_n(PAPER_SMOKE)
        (8, 2)
    """
    n = SANITY_N[settings.scale]
    return min(n, settings.n_small) if settings.smoke else n


#: Methods of the sanity chapter whose decoy-enhanced maps are checked (CI: the gradient only, as
#: every randomised model below the decoy layer needs new decoys), and whose raw maps are shown.
SANITY_METHODS = {"ci": ("gradient",), "paper": tuple(METHODS)}


def sanity_methods(settings: Settings) -> Tuple[str, ...]:
    """The methods whose decoy-enhanced maps are randomised at ``settings``' scale (:data:`SANITY_METHODS`);
    the paper-scale smoke test takes CI's, as every method's cascade re-optimises the decoys of every
    randomised model (its numbers mean nothing; the other methods' code runs in the null floor).

    Example:
        >>> from dance_book.experiments.settings import CI, PAPER, PAPER_SMOKE
        >>> sanity_methods(CI), sanity_methods(PAPER_SMOKE), len(sanity_methods(PAPER))
        (('gradient',), ('gradient',), 3)
    """
    return SANITY_METHODS["ci" if settings.smoke else settings.scale]


SANITY_RAW_METHODS = tuple(METHODS)


def ci_mean(values):
    """Mean of ``values`` with its 95% t-interval (SciPy's one-sample t-test); no interval below 2 values."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, None, None
    ci = stats.ttest_1samp(v, 0.0).confidence_interval(0.95)
    return m, float(ci.low), float(ci.high)


#: The null floor's second, independent randomisation: model B's step ``k`` (top first, from 1) uses
#: the seed ``settings.seed + FLOOR_SEED_OFFSET + k``; model A, the cascade's last model, uses
#: ``settings.seed + k`` (:func:`dance.metrics.cascading_randomization`'s seeds).
FLOOR_SEED_OFFSET = 1000
#: Methods whose raw and decoy-enhanced maps are judged against the null floor (all three, every scale).
FLOOR_METHODS = tuple(METHODS)
#: The budget that caps the null floor's N, per scale: the images whose decoys are optimised for the
#: two randomised models and whose 9 decoy-enhanced maps (3 methods x trained, A, B) are computed.
#: CI: 10 images, about 4 minutes on one CPU thread (CPU time measured 2026-11-28: ~8.4 s to optimise
#: one image's decoys for a randomised model, whose Adam loop runs all its 200 steps, and ~1.7 s for
#: one model's raw and decoy-enhanced maps of the three methods: ~22 s per image), beyond the shared
#: decoys of the trained model that other chapters compute anyway.
FLOOR_N_CAP = {"ci": 10, "paper": 64}


def fully_randomized(model: nn.Module, layers: Sequence[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` (eval mode) with every layer of ``layers`` re-initialised, the ``k``-th
    (from 1, top first) by :func:`dance.metrics.sanity.randomize_` with seed ``seed + k``: the
    cascade's last model when ``seed`` is the cascade's seed. ``model`` is not changed."""
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"layers must be a sequence of module names (str), got {layers!r}")
    net = copy.deepcopy(model).eval()
    modules = dict(net.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not in model.named_modules(); pass names from parameter_layers(model)")
    for k, name in enumerate(layers, start=1):
        randomize_(modules[name], seed + k)
    return net


def floor_n(settings: Settings) -> Dict[str, object]:
    """The null floor's N: the power rule's N, capped by :data:`FLOOR_N_CAP` (and by ``settings.n_small``
    under the paper-scale smoke test).

    The rule is the claims page's (:func:`dance_book.experiments.claims.assess`): 80 % power of a
    two-sided paired t-test at alpha / m (m = the sanity claim's counted rows, two per method of
    :data:`FLOOR_METHODS`) to detect the declared smallest effect of interest,
    ``DECLARATIONS["sanity"].effect_dz`` paired SDs (here: a distance of that size between the mean
    and the non-inferiority margin). Returns ``{"n", "planned", "cap", "capped"}``.
    """
    m = 2 * len(FLOOR_METHODS)
    planned = Pw.n_needed(1.0, Pw.DECLARATIONS["sanity"].effect_dz, alpha=Pw.ALPHA / m)
    cap = FLOOR_N_CAP[settings.scale]
    if settings.smoke:
        cap = min(cap, settings.n_small)
    n = cap if planned is None else min(planned, cap)
    return {"n": int(n), "planned": planned, "cap": int(cap), "capped": planned is None or planned > cap}


def _masks_of(decoys) -> torch.Tensor:
    """The mask family of one image's decoys, kept and dropped, as sorted unique flattened rows."""
    rows = [decoys.masks.reshape(len(decoys), -1).cpu()]
    if decoys.dropped_masks is not None and decoys.dropped_masks.numel():
        rows.append(decoys.dropped_masks.reshape(decoys.dropped_masks.shape[0], -1).cpu())
    return torch.unique(torch.cat(rows).to(torch.uint8), dim=0)


def sanity_floor(settings: Settings, n: int, methods: Sequence[str] = FLOOR_METHODS, seed: int = 0) -> dict:
    """Trained-versus-randomised similarity and its null floor, raw and decoy-enhanced, per method (cached).

    Model A is the cascade's last model (every layer with parameters randomised,
    :func:`fully_randomized` with ``settings.seed``); model B is randomised the same way with other
    seeds (``settings.seed + FLOOR_SEED_OFFSET``), independently of A. Decoy-enhanced maps use decoys
    optimised for each model (:class:`DecoyMemo`) on the same mask family and the same decoy
    settings, on the same images; the trained model's are the shared decoys. The *null floor* is the
    similarity of A's and B's maps: what two maps share when neither model has learned anything,
    e.g. through the mask lattice that every decoy-enhanced map inherits.

    Returns:
        dict with ``n``, ``methods``; per ``(method, enhanced)`` key of ``ssim_trained`` /
        ``ssim_floor`` / ``spearman_trained`` / ``spearman_floor`` a ``[n]`` array (SSIM or Spearman
        of trained vs A, of A vs B, on :func:`dance.to_heatmap` maps winsorised at 95 %, as the cascade);
        ``same_masks`` (the decoys of the trained model, A and B have identical masks);
        ``models_differ`` (A and B differ in every randomised layer); ``dropped`` per model;
        ``examples`` (heatmaps of the first :data:`N_EXAMPLES` images per key and model);
        ``seconds`` (the wall time of the computation, without the trained model's shared decoys).
    """
    methods = check_methods(methods)
    n = check_n(n)
    config = dict(settings=repr(settings), n=n, methods=list(methods), seed=seed, floor_seed_offset=FLOOR_SEED_OFFSET)

    def compute():
        import time

        model = load_model(settings.main_model)
        x = load_images(settings, n).images
        t = predicted(model, x)
        layer = settings.layer(settings.main_model)
        layers = parameter_layers(model)
        memo = _sanity_memo(settings, layer)
        memo.register(model, x, clean_decoys(settings, n))  # shared with other chapters: not timed here
        start = time.perf_counter()
        a = fully_randomized(model, layers, settings.seed)
        b = fully_randomized(model, layers, settings.seed + FLOOR_SEED_OFFSET)
        nets = {"trained": model, "A": a, "B": b}
        print(f"null floor: decoys of {n} images for two independently randomised models ...", file=sys.stderr,
              flush=True)
        decoys = {k: memo(net, x) for k, net in nets.items()}
        same_masks = all(torch.equal(_masks_of(dt), _masks_of(da)) and torch.equal(_masks_of(dt), _masks_of(db))
                         for dt, da, db in zip(decoys["trained"], decoys["A"], decoys["B"]))
        modules_a, modules_b = dict(a.named_modules()), dict(b.named_modules())
        models_differ = all(any(not torch.equal(p, q) for p, q in zip(modules_a[name].parameters(recurse=False),
                                                                        modules_b[name].parameters(recurse=False)))
                            for name in layers)
        out = {"n": n, "methods": list(methods), "same_masks": bool(same_masks), "models_differ": bool(models_differ),
               "dropped": {k: int(sum(d.dropped for d in v)) for k, v in decoys.items()},
               "ssim_trained": {}, "ssim_floor": {}, "spearman_trained": {}, "spearman_floor": {}, "examples": {}}
        for method in methods:
            for enhanced in (False, True):
                print(f"null floor: {'decoy-enhanced ' if enhanced else ''}{METHODS[method]} ...", file=sys.stderr,
                      flush=True)
                h = {}
                for k, net in nets.items():
                    if enhanced:
                        signed = enhanced_maps(net, x, t, method, settings, decoys[k], seed=seed, batch_size=MAP_BATCH)
                    else:
                        signed = base_maps(net, x, t, method, settings, seed=seed)
                    h[k] = to_heatmap(signed.detach(), percentile=95.0).cpu()
                key = (method, enhanced)
                out["ssim_trained"][key] = ssim_similarity(h["trained"], h["A"]).numpy()
                out["ssim_floor"][key] = ssim_similarity(h["A"], h["B"]).numpy()
                out["spearman_trained"][key] = spearman_similarity(h["trained"], h["A"]).numpy()
                out["spearman_floor"][key] = spearman_similarity(h["A"], h["B"]).numpy()
                out["examples"][key] = {k: v[:N_EXAMPLES].clone() for k, v in h.items()}
        out["seconds"] = time.perf_counter() - start
        return out

    return cached("sanity-floor", config, compute)


def floor_table(run: dict):
    """Per method and map (raw, decoy-enhanced): mean SSIM trained vs randomised, the null floor, the
    excess over the floor (paired, 95 % t-interval), and the same for Spearman. A :class:`pandas.DataFrame`."""
    import pandas as pd

    rows = []
    for method in run["methods"]:
        for enhanced in (False, True):
            key = (method, enhanced)
            d = paired_difference(run["ssim_trained"][key], run["ssim_floor"][key])
            rows.append({"method": METHODS[method], "map": "decoy-enhanced" if enhanced else "raw", "n": run["n"],
                         "SSIM trained vs randomised": float(np.mean(run["ssim_trained"][key])),
                         "null floor (A vs B)": float(np.mean(run["ssim_floor"][key])),
                         "excess": d["mean_diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                         "Spearman trained vs randomised": float(np.mean(run["spearman_trained"][key])),
                         "Spearman floor": float(np.mean(run["spearman_floor"][key]))})
    return pd.DataFrame(rows)


def sanity_claims(settings: Settings) -> List[Claim]:
    """The decoy-enhanced maps pass the cascading-randomisation check, judged against the null floor
    (:func:`sanity_floor`) with the non-inferiority margin ``power.SANITY_SSIM_MARGIN``, for every method.

    Counted, per method: (1) the decoy-enhanced map of the fully randomised model keeps no more of
    the trained map than two independently randomised models' maps share (the excess SSIM over the
    floor, paired per image, below the margin with its 95 % interval); (2) it keeps no more than the
    raw map does (the paired difference of the two excesses below the margin). Both are
    non-inferiority readings: the row's ``null`` is the margin, ``supports`` means the interval lies
    below it, ``contradicts`` that it lies wholly above (more structure kept than the margin allows).
    Context (not counted): the test as the paper applies it, SSIM below 1, which any map whose
    randomised version is not identical passes.
    """
    out = []
    plan = floor_n(settings)
    n = plan["n"]
    run = sanity_floor(settings, n)
    margin = Pw.SANITY_SSIM_MARGIN
    capped = (f" N is capped by the compute budget at {plan['cap']} (the power rule asks for {plan['planned']})."
              if plan["capped"] else "")
    for method in run["methods"]:
        name = METHODS[method]
        enh, raw = (method, True), (method, False)
        excess_enh = run["ssim_trained"][enh] - run["ssim_floor"][enh]
        excess_raw = run["ssim_trained"][raw] - run["ssim_floor"][raw]
        d1 = paired_difference(run["ssim_trained"][enh], run["ssim_floor"][enh])
        d2 = paired_difference(excess_enh, excess_raw)
        out.append(Claim(
            paper_claim="sanity",
            claim=f"decoy-enhanced {name} of the randomised model keeps no more of the trained map than the null floor",
            chapter="sanity.md",
            measure=f"mean excess SSIM over the null floor, SSIM(trained, randomised A) - SSIM(randomised A, "
                    f"randomised B), decoy-enhanced {name}, paired over N={n} images; non-inferiority margin {margin:g}",
            value=float(d1["mean_diff"]), ci_low=float(d1["ci_low"]), ci_high=float(d1["ci_high"]), n=n,
            supports=direction(d1["ci_low"], d1["ci_high"], "below", at=margin), null=margin,
            note=f"SSIM trained vs randomised {float(np.mean(run['ssim_trained'][enh])):.3f}, null floor "
                 f"{float(np.mean(run['ssim_floor'][enh])):.3f}; supports = the 95% interval lies below the margin, "
                 f"contradicts = wholly above it.{capped}",
        ))
        out.append(Claim(
            paper_claim="sanity",
            claim=f"decoy-enhanced {name} keeps no more of the trained map than raw {name}",
            chapter="sanity.md",
            measure=f"mean paired difference of the excess SSIM over each map's null floor, decoy-enhanced - raw "
                    f"{name}, N={n}; non-inferiority margin {margin:g}",
            value=float(d2["mean_diff"]), ci_low=float(d2["ci_low"]), ci_high=float(d2["ci_high"]), n=n,
            supports=direction(d2["ci_low"], d2["ci_high"], "below", at=margin), null=margin,
            note=f"excess over the floor: decoy-enhanced {float(np.mean(excess_enh)):.3f}, raw "
                 f"{float(np.mean(excess_raw)):.3f}; supports = the 95% interval lies below the margin, "
                 f"contradicts = wholly above it.{capped}",
        ))
        m, lo, hi = ci_mean(run["ssim_trained"][enh])
        out.append(Claim(
            paper_claim="sanity",
            claim=f"decoy-enhanced {name} changes when the model is randomised (SSIM < 1)",
            chapter="sanity.md",
            measure=f"mean SSIM between the maps of the trained and the fully randomised model, decoy-enhanced "
                    f"{name}, N={n}",
            value=m, ci_low=lo, ci_high=hi, n=n, supports=None if hi is None else direction(lo, hi, "below", at=1.0),
            null=1.0, counts=False,
            note="the test as the paper applies it; met by any map whose randomised version is not identical, "
                 "and inflated for decoy-enhanced maps by the mask lattice they share: context, not counted "
                 "(the rule before 2026-11-28).",
        ))
    return out


def claims(settings: Settings) -> List[Claim]:
    """The paper's sanity claim with the numbers of the sanity chapter (reads its cached results)."""
    return sanity_claims(settings)
