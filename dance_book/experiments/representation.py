"""How far decoys and blurred patches move the network's representations (paper Supplementary A11, Fig. A12).

The paper explains why blurred patches work nearly as well as decoys by comparing the relative
difference of intermediate representations,

    r_l(x~) = ||F_l(x~) - F_l(x)||_inf / max|F_l(x)|,

for decoys and for blurred images: large for blur and tiny for decoys at the first max-pool layer
(0.307 vs 0.006 on average), both small at the last fully connected layer (0.034 vs 0.002).

Here the decoys are the book's own (optimised at the main model's decoy layer, shared with the
other chapters through :func:`dance_book.experiments.shared_decoys`) and the blurred images put a
Gaussian blur of the image into exactly the same masks (:func:`dance.baselines.replacement_decoys`;
the default width sigma = 2 pixels, plus wider blurs). ``r_l`` is measured for every decoy at every
conv and pool layer of the model (:func:`dance_book.zoo.layers`) and at its fully connected layers, the
last of which gives the logits. The layers *before* the decoy layer are not constrained by the
decoys' construction, so the decoys may differ there as much as blur does; the constraint
``r_l <= epsilon`` (relative) holds at the decoy layer itself by construction.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from .. import zoo
from dance.layers import eval_mode
from dance.baselines import replacement_decoys
from .cache import cached
from .inputs import load_images, load_model, shared_decoys
from .maps import mask_family
from .claims import Claim, direction
from .settings import Settings
from .stats import mean_sd, paired_difference

#: The paper's averages (A11, Fig. A12): relative difference at VGG16's first max-pool and last FC layer.
PAPER = dict(first_pool_decoy=0.006, first_pool_blur=0.307, last_decoy=0.002, last_blur=0.034)
#: Blur widths (pixels): the replacement_populations default (2) and wider blurs.
SIGMAS = (2.0, 4.0, 8.0)


def measured_layers(model: nn.Module, include: Sequence[str] = ()) -> List[str]:
    """Conv and pool layers (:func:`dance_book.zoo.layers`) and then the linear layers, in forward order, with
    the layers of ``include`` in their place (the decoy layer may be neither: VGG16's ``model.features.3`` is a ReLU)."""
    convpool = zoo.layers(model)
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = convpool + linear
    extra = [n for n in include if n not in names]
    if extra:
        order = [n for n, _ in model.named_modules()]
        names = sorted(names + extra, key=order.index)
    return names


def relative_differences(model: nn.Module, x: torch.Tensor, images: torch.Tensor, layers: Sequence[str],
                         batch_size: int = 256) -> torch.Tensor:
    """``r_l`` of every image of ``images [N, C, H, W]`` against ``x [1, C, H, W]`` at each layer.

    Returns:
        ``[N, len(layers)]``: ``||F_l(image) - F_l(x)||_inf / max|F_l(x)|``.
    """
    modules = dict(model.named_modules())
    outputs: Dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().flatten(1).float()))
        for name in layers]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
            ref = {name: outputs[name].clone() for name in layers}
            scale = torch.stack([ref[name].abs().amax() for name in layers])
            out = []
            for lo in range(0, images.shape[0], batch_size):
                model(images[lo:lo + batch_size])
                out.append(torch.stack([(outputs[name] - ref[name]).abs().amax(dim=1) for name in layers], dim=1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out) / scale


def representation_study(settings: Settings, n: Optional[int] = None, sigmas: Sequence[float] = SIGMAS,
                         model_name: Optional[str] = None) -> Dict[str, object]:
    """``r_l`` of DANCE decoys and blurred patches at every layer, for ``n`` images (cached).

    Args:
        settings: the frozen experiment settings.
        n: number of images (default ``settings.n_small``, the images whose main-layer decoys the
            layer chapter also uses).
        sigmas: blur widths in pixels.
        model_name: default ``settings.main_model``.

    Returns:
        dict with ``model``, ``layer`` (the decoy layer), ``layers`` (measured, in forward order),
        ``n``, ``epsilon_relative`` and ``table``: a DataFrame with one row per image, population
        member and layer: ``kind`` (``"decoy"`` or ``"blur s=<sigma>"``), ``image``, ``member``,
        ``layer``, ``depth`` (its index in ``layers``), ``r`` (the relative difference); and
        ``pixels``: one row per image and member with ``l1``, its pixel change ``||x~ - x||_1``.
    """
    model_name = model_name or settings.main_model
    n = settings.n_small if n is None else int(n)
    sigmas = tuple(float(s) for s in sigmas)
    config = dict(settings=repr(settings), n=n, sigmas=sigmas, model=model_name)

    def compute():
        model = load_model(model_name)
        layer = settings.layer(model_name)
        x = load_images(settings, n).images
        layers = measured_layers(model, include=[layer])
        print(f"decoys of {n} images at {layer} ...", file=sys.stderr, flush=True)
        decoys = shared_decoys(settings, model_name, n)
        masks = mask_family(model, x, layer, settings)
        rows, moves = [], []

        def record(kind, b, r, images):
            r = r.cpu().numpy()
            for member in range(r.shape[0]):
                for depth, name in enumerate(layers):
                    rows.append((kind, b, member, name, depth, float(r[member, depth])))
            l1 = (images - x[b:b + 1]).abs().flatten(1).sum(dim=1).cpu().tolist()
            moves.extend((kind, b, member, v) for member, v in enumerate(l1))

        print(f"relative differences at {len(layers)} layers ...", file=sys.stderr, flush=True)
        for b in range(n):
            xb = x[b:b + 1]
            dec = decoys[b].images.to(x.device)
            record("decoy", b, relative_differences(model, xb, dec, layers), dec)
            for s in sigmas:
                blur = replacement_decoys(xb, masks, "blur", sigma=s).images
                record(f"blur s={s:g}", b, relative_differences(model, xb, blur, layers), blur)
        table = pd.DataFrame(rows, columns=["kind", "image", "member", "layer", "depth", "r"])
        pixels = pd.DataFrame(moves, columns=["kind", "image", "member", "l1"])
        return dict(model=model_name, layer=layer, layers=layers, n=n, sigmas=sigmas,
                    epsilon_relative=float(settings.decoys.epsilon) if settings.decoys.relative else None,
                    table=table, pixels=pixels)

    return cached("representation", config, compute)


def per_image(result: Dict[str, object]) -> pd.DataFrame:
    """Mean ``r`` over each image's population, per kind and layer (the unit for paired tests)."""
    t = result["table"]
    return t.groupby(["kind", "layer", "depth", "image"], sort=False).r.mean().reset_index()


def layer_summary(result: Dict[str, object]) -> pd.DataFrame:
    """Per layer and kind: mean +- sd over images of the per-image mean ``r``, the median and max
    over all members; and per layer the paired difference decoy - blur (sigma = the first of
    ``sigmas``) with its 95 % CI and Wilcoxon p."""
    p = per_image(result)
    t = result["table"]
    blur0 = f"blur s={result['sigmas'][0]:g}"
    rows = []
    for name in result["layers"]:
        for kind in p.kind.unique():
            v = p[(p.layer == name) & (p.kind == kind)].sort_values("image").r.to_numpy()
            all_r = t[(t.layer == name) & (t.kind == kind)].r
            m = mean_sd(v)
            row = dict(layer=name, depth=result["layers"].index(name), kind=kind, n=m["n"], mean=m["mean"],
                       sd=m["sd"], median_all=float(all_r.median()), max_all=float(all_r.max()))
            if kind == "decoy":
                b = p[(p.layer == name) & (p.kind == blur0)].sort_values("image").r.to_numpy()
                d = paired_difference(v, b)
                row.update(diff_vs_blur=d["mean_diff"], ci_low=d["ci_low"], ci_high=d["ci_high"],
                           p_wilcoxon=d["p_wilcoxon"])
            rows.append(row)
    return pd.DataFrame(rows)


def key_layers(result: Dict[str, object]) -> Dict[str, str]:
    """The two layers the paper reports: the first pool layer after the decoy layer, and the last layer."""
    layers = result["layers"]
    modules = dict(load_model(result["model"]).named_modules())
    # The decoy layer may be a ReLU that the conv/pool list leaves out (VGG16's features.3 at paper
    # scale): "after" it is in module order.
    order = list(modules)
    after = [name for name in layers if order.index(name) > order.index(result["layer"])]
    pools = [name for name in after if isinstance(modules[name], (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    if not pools:
        raise ValueError(f"no pool layer after the decoy layer {result['layer']!r} among {layers}")
    return dict(first_pool=pools[0], last=layers[-1])


def claims(settings: Settings) -> List[Claim]:
    """"Decoys stay closer to the original representation than blur" (A11), from the cached study."""
    result = representation_study(settings)
    p = per_image(result)
    blur0 = f"blur s={result['sigmas'][0]:g}"
    keys = key_layers(result)

    def values(kind, layer):
        return p[(p.layer == layer) & (p.kind == kind)].sort_values("image").r.to_numpy()

    out = []
    for label, layer in [("first pool layer after the decoy layer", keys["first_pool"]), ("last layer (logits)", keys["last"])]:
        dec, blur = values("decoy", layer), values(blur0, layer)
        d = paired_difference(dec, blur)
        out.append(Claim(
paper_claim="representation",
            claim="decoys stay closer to the original intermediate representation than blurred images (A11)",
            chapter="representation.md",
            measure=(f"mean paired difference of r = ||dF||_inf / max|F| (per-image mean), decoys - {blur0}, "
                     f"at {label} {layer}, N={d['n']}"),
            value=d["mean_diff"], ci_low=d["ci_low"], ci_high=d["ci_high"], n=d["n"],
            supports=direction(d["ci_low"], d["ci_high"], "below"),
            note=f"decoys {dec.mean():.3g} vs blur {blur.mean():.3g} (paper: "
                 + (f"{PAPER['first_pool_decoy']} vs {PAPER['first_pool_blur']} at the first max-pool)"
                    if layer == keys["first_pool"] else
                    f"{PAPER['last_decoy']} vs {PAPER['last_blur']} at the last FC layer)")))
    first, last = values(blur0, keys["first_pool"]), values(blur0, keys["last"])
    d = paired_difference(last, first)
    out.append(Claim(
paper_claim="representation",
        claim="the blurred images' violation of the constraint shrinks in deeper layers (A11)",
        chapter="representation.md",
        measure=f"mean paired difference of r for {blur0}, {keys['last']} - {keys['first_pool']}, N={d['n']}",
        value=d["mean_diff"], ci_low=d["ci_low"], ci_high=d["ci_high"], n=d["n"],
        supports=direction(d["ci_low"], d["ci_high"], "below"),
        note=f"blur r {first.mean():.3g} at {keys['first_pool']} vs {last.mean():.3g} at {keys['last']} "
             f"(paper: {PAPER['first_pool_blur']} vs {PAPER['last_blur']})"))
    return out
