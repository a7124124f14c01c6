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
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from dance.metrics.sanity import cascading_randomization, parameter_layers, randomize_

from .cache import cached
from .claims import Claim, direction
from .inputs import clean_decoys, load_images, load_model
from .maps import (MAP_BATCH, METHODS, N_EXAMPLES, base_maps, check_methods, check_n, enhanced_maps, optimised_quietly,
                   predicted)
from .settings import Settings
from .stats import paired_difference

__all__ = ["DecoyMemo", "N_EXAMPLES", "sanity_run", "sanity_study", "check_decoy_memo", "SANITY_N", "sanity_n",
           "SANITY_METHODS", "SANITY_RAW_METHODS", "sanity_claims", "claims"]

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
    (through :class:`DecoyMemo`; the trained model's decoys are the shared ones).

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
    return min(n, settings.n_small) if settings.extra.get("smoke") else n


#: Methods of the sanity chapter whose decoy-enhanced maps are checked (CI: the gradient only, as
#: every randomised model below the decoy layer needs new decoys), and whose raw maps are shown.
SANITY_METHODS = {"ci": ("gradient",), "paper": tuple(METHODS)}


SANITY_RAW_METHODS = tuple(METHODS)


def ci_mean(values):
    """Mean of ``values`` with its 95% t-interval (SciPy's one-sample t-test); no interval below 2 values."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, None, None
    ci = stats.ttest_1samp(v, 0.0).confidence_interval(0.95)
    return m, float(ci.low), float(ci.high)


def sanity_claims(settings: Settings) -> List[Claim]:
    """The decoy-enhanced maps pass the cascading-randomisation check (the sanity chapter's cached runs)."""
    out = []
    n = sanity_n(settings)
    runs, _ = sanity_study(settings, n, SANITY_RAW_METHODS, SANITY_METHODS[settings.scale])
    for method in SANITY_METHODS[settings.scale]:
        enh, raw = runs[(method, True)], runs[(method, False)]
        final_enh, final_raw = enh["ssim"][-1], raw["ssim"][-1]
        m, lo, hi = ci_mean(final_enh)
        d = paired_difference(final_enh, final_raw)
        changes = None if hi is None else direction(lo, hi, "below", at=1.0)
        # "keeps no more structure than the raw map": contradicted when significantly more similar
        more = direction(d["ci_low"], d["ci_high"], "below")
        out.append(Claim(
            paper_claim="sanity",
            claim=f"decoy-enhanced {METHODS[method]} changes when the model is randomised",
            chapter="sanity.md",
            measure=f"mean SSIM between the maps of the trained and the fully randomised model, "
                       f"decoy-enhanced {METHODS[method]}, N={n}",
            value=m, ci_low=lo, ci_high=hi, n=n, supports=changes, null=1.0,
            note=f"raw {METHODS[method]}: {float(np.mean(final_raw)):.3f}; supports = the SSIM is below 1 with "
                    f"its 95% interval (Adebayo et al.'s test, as the paper applies it).",
        ))
        out.append(Claim(
            paper_claim="sanity",
            claim=f"decoy-enhanced {METHODS[method]} keeps no more of the trained map than raw "
                     f"{METHODS[method]}",
            chapter="sanity.md",
            measure=f"mean paired difference of that SSIM, decoy-enhanced - raw {METHODS[method]}, N={n}",
            value=float(d["mean_diff"]), ci_low=float(d["ci_low"]), ci_high=float(d["ci_high"]), n=n,
            supports=more,
            note="supports = lower than the raw map's with its 95% interval; contradicts = higher (the "
                    "decoy-enhanced map keeps more of its structure after randomisation than the raw map).",
        ))
    return out


def claims(settings: Settings) -> List[Claim]:
    """The paper's sanity claim with the numbers of the sanity chapter (reads its cached results)."""
    return sanity_claims(settings)
