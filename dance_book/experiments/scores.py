r"""The unit shared by the fidelity, layers, architectures and control chapters: :math:`S_F` of a population's maps.

Every experiment here reduces to one cached unit, :func:`scores`: for a model, a decoy layer, a
base method and a *population kind*, the maps of the first ``n`` experiment images and their
fidelity :math:`S_F` (:func:`dance.metrics.fidelity`, lower = more faithful by the paper's
definition) and the share of saliency mass on the object (:func:`dance.metrics.mass_in_mask`,
higher = better, a ground-truth reading the paper does not use). Population kinds:

* ``"none"``: the base method alone;
* ``"decoys"``: DANCE's optimised decoys (:func:`dance.experiments.shared_decoys`), both directions
  of every mask: ``2M + 1`` maps per image with the image (the paper's population);
* ``"decoys_m"``: the same decoys, one per mask (the up or the down one by a seeded coin per image
  and mask, :func:`dance_book.experiments.maps.one_decoy_per_mask`): ``M + 1`` maps, the size of
  the replacement populations below, so that a comparison with them is at equal population size;
* ``"blur"``, ``"inpaint"``, ``"noise"``, ``"constant"``: the same masks filled by blurring, by
  scikit-image's biharmonic inpainting (the paper's deep inpainting model of Yu et al. cannot be
  loaded offline), by Gaussian noise, or by the image's mean colour
  (:func:`dance.experiments.replacement_populations`): one per mask, ``M + 1`` maps per image.

A pixelwise range grows with the population's size, so populations are compared at equal size
(``"decoys_m"`` against the replacements); every table built by :func:`frame` carries the maps per
image (column ``maps``, :func:`population_sizes`).

A population's maps are computed once and reduced both by the paper's range (Eq. 3) and by the
mean (for the control study), so no map is computed twice.

**Which decoys.** At the main model's main layer the decoys are those every chapter shares:
``shared_decoys(S, S.main_model, S.n_fidelity)``, or its first ``n`` entries for a smaller ``n``.
At other layers (:func:`layer_scores`) and models (:func:`architecture_scores`) the decoys use
*the same masks* as at the main layer: patches :func:`mask_spacing` grid steps apart share a
mask. Only the representation the decoys must preserve changes, and every setting has the same
number of decoys per image (the range over a population grows with its size, so unequal
populations would confound the comparison). It also mirrors the paper, whose one-patch-per-mask
family does not depend on the layer either. At deeper layers these patches' footprints overlap,
so their constraint is joint: the decoys remain exact solutions of Eq. 2 for a multi-patch mask.
(The automatic non-interaction spacing would give up to 484 masks per image at the deepest
layers here, 30 times the cost.)

**The target class** is the model's prediction for the original image, for the maps and for
:math:`S_F` alike (paper §4.2).
"""
from __future__ import annotations

import sys

import time
import warnings
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from dance.decoys import Decoys
from dance.enhanced import aggregate_maps
from dance.heatmap import to_heatmap
from dance.layers import LayerProbe, eval_mode, resolve_layer
from dance.masks import interaction_spacing
from dance.metrics import fidelity, mass_in_mask

from .cache import cached
from .claims import Claim, difference_interval, direction
from .inputs import load_images, load_model, masks_unavailable, shared_decoys
from .maps import METHODS, base_method, enhanced_explainer, equal_size_populations, predicted, replacement_populations
from .settings import Settings
from .stats import mean_sd, paired_difference


#: Population kinds and their display names.
KINDS = {"none": "none", "decoys": "decoys", "decoys_m": "decoys, one per mask", "blur": "blur", "inpaint": "inpaint", "noise": "noise",
         "constant": "constant"}


#: Aggregates computed for every population (the range is DANCE's; the mean serves the control study).
AGGREGATES = ("range", "mean")


#: Images whose heatmaps are kept in the cache for the figures.
N_SHOW = 4


#: The solver of the own-family powered runs (the layers and architectures claims): the paper's (Adam), that of the
#: main-lattice powered runs they are set against, so that the two differ only in the masks.
OWN_FAMILY_SOLVER = "adam"


def maps_per_image(*n_decoys: np.ndarray) -> str:
    """The maps per image of one or more populations (each image's decoys and the image itself) as a table shows
    them: ``"33"`` when every image has as many, else the span, ``"27–33"``."""
    sizes = np.concatenate([np.asarray(n, dtype=int) for n in n_decoys]) + 1
    return f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}–{sizes.max()}"


#: Images per forward/backward pass of the base methods: small batches run fastest on CPU
#: (measured: ~0.55 ms per image at 64 against ~0.85 ms at 256, VGG-style model, one thread).
_PASS_BATCH = 64


def _is_main(settings: Settings, model_name: str, layer: str) -> bool:
    return model_name == settings.main_model and layer == settings.layer(settings.main_model)


_SPACINGS: Dict[str, int] = {}


def mask_spacing(settings: Settings) -> int:
    """Lattice spacing (grid steps) of the main layer's mask family, used at every layer and model.

    It is the main layer's measured non-interaction spacing (the larger of its two axes), so at the
    main layer the family equals DANCE's default one.
    """
    key = repr(settings)
    if key not in _SPACINGS:
        model = load_model(settings.main_model)
        x = load_images(settings, 1).images
        name, module = resolve_layer(model, settings.layer(settings.main_model))
        patch = settings.decoys.patch_size
        stride = patch if settings.decoys.stride is None else settings.decoys.stride
        with eval_mode(model):
            kr, kc = interaction_spacing(LayerProbe(model, module, name), x[:1], patch, stride)
        _SPACINGS[key] = int(max(kr, kc))
    return _SPACINGS[key]


def decoy_population(settings: Settings, model_name: str, layer: str, n: int) -> List[Decoys]:
    """Optimised decoys of the first ``n`` experiment images at ``layer`` of ``model_name`` (cached).

    The main model's main layer reuses the decoys shared by every chapter (the first ``n`` of
    ``settings.n_fidelity``); elsewhere the masks are the main layer's (see the module docstring).
    """
    if _is_main(settings, model_name, layer):
        if n <= settings.n_fidelity:
            return shared_decoys(settings, settings.main_model, settings.n_fidelity)[:n]
        return shared_decoys(settings, settings.main_model, n)
    return shared_decoys(settings, model_name, n, layer=layer, spacing=mask_spacing(settings))


def decoy_summary(settings: Settings, model_name: str, layer: str, n: int) -> dict:
    """What the chapters report about the decoys of :func:`decoy_population`, per image (a stored
    result, so that a chapter that reports them need not optimise the decoys again).

    Returns a dict of numpy arrays ``[n]``: ``count`` (decoys), ``dropped`` (over epsilon) and
    ``move`` (the mean over the image's decoys of the mean absolute pixel change inside the
    decoy's mask, pixels in [0, 1])."""
    config = dict(settings=repr(settings), model=model_name, layer=layer, n=n)

    def compute():
        pops = decoy_population(settings, model_name, layer, n)
        move = [float(((d.images - d.original).abs().sum(dim=(1, 2, 3))
                       / (d.masks.sum(dim=(1, 2, 3)) * d.images.shape[1])).mean()) for d in pops]
        return {"count": np.array([len(d) for d in pops]), "dropped": np.array([int(d.dropped) for d in pops]),
                "move": np.array(move)}

    return cached("decoy-summary", config, compute)


def population(settings: Settings, model_name: str, layer: str, kind: str, n: int,
               x: Optional[torch.Tensor] = None) -> Optional[List[Decoys]]:
    """The decoy population of each of the first ``n`` images for a kind of :data:`KINDS` (None for "none")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "decoys":
        return decoy_population(settings, model_name, layer, n)
    if kind == "decoys_m":  # image b's coins seeded by settings.seed + b: independent of n and of the batch
        return equal_size_populations(decoy_population(settings, model_name, layer, n), settings.seed)
    model = load_model(model_name)
    x = load_images(settings, n).images if x is None else x
    return replacement_populations(model, x, layer, settings, kind)


def population_maps(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
                    settings: Settings, populations: Optional[List[Decoys]], seed: int = 0) -> List[torch.Tensor]:
    """Signed maps of every image and its decoys, in small batches (the fastest on CPU).

    Args:
        model: the classifier (evaluated in eval mode, not changed).
        x: ``[B, C, H, W]`` images; ``target``: ``LongTensor[B]``.
        method: a key of :data:`dance.experiments.METHODS`.
        populations: one :class:`dance.Decoys` per image, or None for the images alone.
        seed: seeds SmoothGrad's noise (the global random state is restored afterwards); with
            ``settings.smoothgrad_noise == "common"`` an image and its decoys share the draws
            (:func:`dance_book.experiments.maps.enhanced_explainer`).

    Returns:
        list of ``B`` tensors ``[1 + N_b, C, H, W]``: the map of ``x[b]`` first, then its decoys'.
        ``dance.aggregate_maps`` of entry ``b`` is DANCE's map of image ``b``.
    """
    if populations is not None and len(populations) != x.shape[0]:
        raise ValueError(f"populations must hold one Decoys per image ({x.shape[0]}), got {len(populations)}")
    attribution, kwargs = base_method(model, method, settings)
    explainer = enhanced_explainer(model, method, settings, seed=seed)[0]
    if method == "integrated_gradients":
        kwargs["internal_batch_size"] = _PASS_BATCH  # measured ~35% faster than 256 on CPU
    passes = {"integrated_gradients": settings.ig_steps, "smoothgrad": settings.smoothgrad_samples}.get(method, 1)
    step = max(1, _PASS_BATCH // passes)  # rows per call, so that one call is about one pass batch
    with torch.random.fork_rng(devices=[]), eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        torch.manual_seed(seed)
        if populations is not None:
            return explainer.population_maps(x, target, decoys=populations, batch_size=step, **kwargs)
        out = [attribution.attribute(x[lo:lo + step].clone(), target=target[lo:lo + step], **kwargs).detach()
               for lo in range(0, x.shape[0], step)]
    return list(torch.cat(out).split(1))


def _slice(result: dict, n: int) -> dict:
    out = {k: v for k, v in result.items() if k not in ("sf", "mass", "n_decoys", "dropped")}
    for key in ("sf", "mass"):
        out[key] = {agg: v[:n] for agg, v in result[key].items()}
    out["n_decoys"] = result["n_decoys"][:n]
    out["dropped"] = result["dropped"][:n]
    out["heat"] = {agg: v[:min(n, N_SHOW)] for agg, v in result["heat"].items()}
    out["n"] = n
    return out


def scores(settings: Settings, model_name: str, layer: str, method: str, kind: str, n: int) -> dict:
    """S_F and mass on the object of the first ``n`` images' maps for one setting (cached).

    Args:
        settings: the experiment settings (:func:`dance.experiments.settings`).
        model_name: a model of the settings' scale; ``layer``: its decoy layer.
        method: a key of :data:`dance.experiments.METHODS`; ``kind``: a key of :data:`KINDS`.
        n: number of experiment images (the first ``n``).

    Returns:
        dict with ``sf`` and ``mass``: ``{aggregate: Tensor[n]}`` (aggregate ``"none"`` for the
        base method alone, else ``"range"`` and ``"mean"``), ``heat``: the same keys to heatmaps
        ``[min(n, N_SHOW), H, W]`` of the first images, ``n_decoys`` and ``dropped``: ``LongTensor[n]``,
        ``target``: the explained classes, ``seconds``: compute time of the maps and scores,
        ``mass_note``: None, or why ``mass`` is not available (NaN: the images have no ground-truth masks).
        At the main model and layer, ``n`` below ``settings.n_fidelity`` slices the
        ``n_fidelity``-image result (same images, same decoys).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if _is_main(settings, model_name, layer) and n < settings.n_fidelity:
        return _slice(scores(settings, model_name, layer, method, kind, settings.n_fidelity), n)
    config = dict(settings=repr(settings), model=model_name, layer=layer, method=method, kind=kind, n=n,
                  spacing=None if _is_main(settings, model_name, layer) else mask_spacing(settings))

    def compute():
        pops = population(settings, model_name, layer, kind, n)
        print(f"S_F: {model_name} @ {layer}, {METHODS[method]}, {kind}, {n} images ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        model = load_model(model_name)
        data = load_images(settings, n)
        x = data.images
        target = predicted(model, x)
        maps = population_maps(model, x, target, method, settings, pops, seed=settings.seed)
        aggs = ("none",) if pops is None else AGGREGATES
        out = {"sf": {}, "mass": {}, "heat": {}}
        for agg in aggs:
            m = torch.stack([g[0] for g in maps]) if agg == "none" else \
                torch.stack([aggregate_maps(g, agg) for g in maps])
            out["sf"][agg] = fidelity(model, x, m, target).cpu()
            # without ground-truth masks (an image folder without boxes) the measure is not available: NaN
            out["mass"][agg] = (torch.full((n,), float("nan")) if data.masks is None
                                else mass_in_mask(m, data.masks.to(m.device)).cpu())
            out["heat"][agg] = to_heatmap(m[:N_SHOW]).cpu()
        out["n_decoys"] = torch.tensor([0] * n if pops is None else [len(p) for p in pops])
        out["dropped"] = torch.tensor([0] * n if pops is None else [int(p.dropped) for p in pops])
        out["target"] = target.cpu()
        out["mass_note"] = masks_unavailable(data)
        out["n"] = n
        out["seconds"] = time.perf_counter() - start
        print(f"    done in {out['seconds']:.1f} s", file=sys.stderr, flush=True)
        return out

    return cached("fidelity-scores", config, compute)


def frame(settings: Settings, model_name: str, layer: str, methods: Iterable[str], kinds: Iterable[str],
           n: int, aggregates: Sequence[str] = ("range",)) -> pd.DataFrame:
    """S_F and mass on the object per image, one row per (method, population, aggregate, image); the column
    ``maps`` is the population's size for that image, the image's map included (1 for ``"none"``)."""
    rows = []
    for method in methods:
        for kind in kinds:
            r = scores(settings, model_name, layer, method, kind, n)
            for agg in (("none",) if kind == "none" else aggregates):
                sf, mass = r["sf"][agg].numpy(), r["mass"][agg].numpy()
                rows.append(pd.DataFrame(dict(model=model_name, layer=layer, method=method, population=kind,
                                              aggregate=agg, image=np.arange(n), maps=r["n_decoys"].numpy() + 1,
                                              sf=sf, mass=mass)))
    return pd.concat(rows, ignore_index=True)


def population_sizes(df: pd.DataFrame, by: Sequence[str] = ("population",)) -> pd.Series:
    """Maps per image (the image's map included) of each group of a :func:`frame` table, as a label:
    ``"33"`` when every image has the same number, else ``"31-33"`` (decoys dropped for exceeding epsilon)."""
    def label(v):
        lo, hi = int(v.min()), int(v.max())
        return f"{lo}" if lo == hi else f"{lo}–{hi}"
    return df.groupby(list(by), sort=False)["maps"].apply(label).rename("maps per image")


def example_heatmaps(settings: Settings, model_name: str, layer: str, method: str, kind: str, n: int,
                     aggregate: str = "range") -> torch.Tensor:
    """Heatmaps ``[min(n, N_SHOW), H, W]`` of the first images, read from :func:`scores`' cache."""
    r = scores(settings, model_name, layer, method, kind, n)
    return r["heat"]["none" if kind == "none" else aggregate]


def summary(df: pd.DataFrame, by: Sequence[str], value: str = "sf") -> pd.DataFrame:
    """Mean, sd and n of ``value`` per group."""
    out = df.groupby(list(by), sort=False)[value].apply(lambda v: pd.Series(mean_sd(v.to_numpy())))
    return out.unstack().reset_index()


def compare(df: pd.DataFrame, a: dict, b: dict, by: Sequence[str] = ("method",), value: str = "sf") -> pd.DataFrame:
    """Paired differences ``a - b`` of ``value`` per group, images matched by index: the mean with its
    t-interval and the Hodges-Lehmann estimate with its distribution-free interval
    (:func:`~dance_book.experiments.stats.paired_difference` with ``robust=True``; the verdicts read the
    latter for S_F, :data:`~dance_book.experiments.power.ROBUST_MEASURES`).

    ``a`` and ``b`` select rows by column values, e.g. ``{"population": "decoys"}``.
    """
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        sel = [g.loc[np.logical_and.reduce([g[c] == v for c, v in s.items()])].set_index("image")[value]
               for s in (a, b)]
        if len(sel[0]) == 0 or len(sel[1]) == 0:
            continue
        va, vb = sel[0].align(sel[1], join="inner")
        rows.append({**dict(zip(by, key)), **paired_difference(va.to_numpy(), vb.to_numpy(), robust=True)})
    return pd.DataFrame(rows)


SF_NOTE = "S_F as printed (lower = more faithful); the paper's results section reads higher S_F as better."


def sf_claim(paper_claim, claim, chapter, measure, d: dict, supports, note) -> Claim:
    """A claims row for a paired difference of S_F (see :class:`~dance_book.experiments.claims.Claim`):
    the Hodges-Lehmann reading when ``d`` holds it (a :func:`compare` row), as every S_F measure should
    (:data:`~dance_book.experiments.power.ROBUST_MEASURES`)."""
    return Claim.from_difference(paper_claim, claim, chapter, measure, d, supports, note)


def lower_sf(d: dict) -> Optional[bool]:
    """A paired difference (setting - reference) of S_F: lower with the CI below 0 (True), higher
    with the CI above 0 (False), or no demonstrable difference (None). The interval is the one the
    verdicts use (:func:`~dance_book.experiments.claims.difference_interval`): the Hodges-Lehmann
    interval of a robust row (a :func:`compare` row), else the t-interval."""
    _, low, high = difference_interval(d)
    return direction(low, high, "below")
