"""The maps every experiment chapter compares: base methods, with optimised or replacement decoys."""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from dance.layers import LayerProbe, eval_mode, resolve_layer
from dance.baselines import replacement_decoys
from dance.decoys import Adam, DecoyConfig, Decoys, generate_decoys_batch
from dance.enhanced import AGGREGATES, DecoyEnhanced, aggregate_maps, noise_tunnel_reduce
from dance.masks import default_masks
from .settings import Settings

#: Base saliency methods, in the paper's order, with their display names.
METHODS = {"gradient": "Gradient", "integrated_gradients": "Integrated Gradients", "smoothgrad": "SmoothGrad"}


def base_method(model: nn.Module, method: str, settings: Settings):
    """``(captum attribution, attribute kwargs)`` for a base method name of :data:`METHODS`."""
    if method == "gradient":
        return Saliency(model), dict(abs=False)
    if method == "smoothgrad":
        return NoiseTunnel(Saliency(model)), dict(nt_type="smoothgrad", nt_samples=settings.smoothgrad_samples,
                                                  stdevs=settings.smoothgrad_std, abs=False)
    if method == "integrated_gradients":
        return IntegratedGradients(model), dict(n_steps=settings.ig_steps, internal_batch_size=256)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


def base_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, settings: Settings,
              seed: int = 0) -> torch.Tensor:
    """Signed maps ``[B, C, H, W]`` of a base method (SmoothGrad's noise seeded by ``seed``)."""
    attribution, kwargs = base_method(model, method, settings)
    torch.manual_seed(seed)
    with eval_mode(model):
        return attribution.attribute(x.clone(), target=target, **kwargs).detach()


#: Adam's settings that :class:`~dance_book.experiments.settings.DecoySettings` and overrides may set.
_ADAM_FIELDS = frozenset(Adam.__dataclass_fields__)


def decoy_config(settings: Settings, **overrides) -> DecoyConfig:
    """The :class:`dance.DecoyConfig` of the settings' decoys, with ``overrides`` (any keyword of
    :func:`dance.generate_decoys`, or an Adam setting such as ``c``, which applies to the Adam solver)."""
    options = settings.decoys.options()
    options["batch_size"] = DECOY_BATCH
    options["progress"] = False  # the chapters print their own progress
    options.update(overrides)
    epsilon = options.pop("epsilon", settings.decoys.epsilon)
    adam = {k: options.pop(k) for k in list(options) if k in _ADAM_FIELDS}
    if "adam_steps" in settings.extra:  # the paper-scale smoke run only
        adam.setdefault("steps", int(settings.extra["adam_steps"]))
    solver = options.pop("solver", "adam")
    if solver == "adam":
        solver = Adam(**adam)
    elif set(adam) & set(overrides):  # the settings' own Adam fields are moot for another solver
        raise ValueError(f"{sorted(set(adam) & set(overrides))} apply to the Adam solver only, not to "
                         f"solver={solver!r}")
    return DecoyConfig(epsilon=epsilon, solver=solver, **options)


def optimised_decoys(model: nn.Module, x: torch.Tensor, layer: str, settings: Settings, **overrides) -> List[Decoys]:
    """DANCE decoys of every image of ``x`` at ``layer``, all optimised in one batched loop."""
    return generate_decoys_batch(model, x, layer, decoy_config(settings, **overrides))


def mask_family(model: nn.Module, x: torch.Tensor, layer: str, settings: Settings) -> torch.Tensor:
    """The default masks DANCE uses for images like ``x`` at ``layer`` (one per lattice, no direction)."""
    name, module = resolve_layer(model, layer)
    with eval_mode(model):
        return default_masks(LayerProbe(model, module, name), x[:1], settings.decoys.patch_size,
                             settings.decoys.stride)


def replacement_populations(model: nn.Module, x: torch.Tensor, layer: str, settings: Settings, kind: str,
                            masks: Optional[torch.Tensor] = None) -> List[Decoys]:
    """Blur / inpaint / noise / constant decoys of every image, on DANCE's own masks."""
    masks = mask_family(model, x, layer, settings) if masks is None else masks
    return [replacement_decoys(x[b], masks, kind, model=model, layer=layer, seed=settings.seed + b)
            for b in range(x.shape[0])]


def one_decoy_per_mask(decoys: Decoys, seed: int) -> Decoys:
    """An equal-size subsample of an image's optimised decoys: one decoy per mask, the up (s = +1) or the
    down (s = -1) one chosen by a seeded coin per mask.

    DANCE's decoys give two maps per mask (one per direction), so with the image ``2M + 1`` maps per
    image, while the replacement populations (blur, inpainting, noise, constant fill,
    :func:`replacement_populations`) give one per mask, ``M + 1``. A pixelwise range grows with the
    population's size, so comparing the two compares the fill *and* the size. This subsample has
    ``M + 1`` maps on the same masks, the size of the replacement populations.

    Args:
        decoys: one image's :class:`dance.Decoys` (not changed).
        seed: seeds the coins: mask ``j`` (the masks in a canonical order, the lexicographic order of
            their pixels, which does not depend on which decoys were dropped) gets the ``j``-th draw of
            a CPU generator seeded with ``seed``; 1 picks the up decoy, 0 the down one. The experiments
            pass ``settings.seed + b`` for image ``b`` (as the noise population does), so an image's
            subsample does not depend on the other images of its batch.

    Returns:
        :class:`dance.Decoys` with one decoy per mask, in the order of ``decoys``. When the coin's
        decoy was dropped (over epsilon) the other direction's is taken (counted in
        ``extra["fallback"]``); a mask whose two decoys were both dropped has none (``dropped`` counts
        such masks, ``dropped_masks`` lists them).
    """
    if not isinstance(decoys, Decoys):
        raise TypeError(f"decoys must be one image's dance.Decoys, got {type(decoys).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (e.g. settings.seed + the image's index), got {seed!r}")
    H, W = decoys.masks.shape[-2:]
    kept = decoys.masks.reshape(len(decoys), -1).to(torch.uint8).cpu()
    gone = decoys.dropped_masks
    gone = (torch.zeros(0, H * W, dtype=torch.uint8) if gone is None or gone.numel() == 0
            else gone.reshape(gone.shape[0], -1).to(torch.uint8).cpu())
    family, inverse = torch.unique(torch.cat([kept, gone]), dim=0, return_inverse=True)
    mask_of, signs = inverse[:len(decoys)], decoys.signs.cpu()
    up = torch.randint(0, 2, (family.shape[0],), generator=torch.Generator().manual_seed(seed)) == 1
    chosen, missing, fallback = [], [], 0
    for j in range(family.shape[0]):
        rows = (mask_of == j).nonzero().flatten()
        if rows.numel() == 0:
            missing.append(j)
            continue
        hit = rows[signs[rows] == (1 if bool(up[j]) else -1)]
        fallback += int(hit.numel() == 0)
        chosen.append(int(hit[0] if hit.numel() else rows[0]))
    idx = torch.tensor(sorted(chosen), dtype=torch.long, device=decoys.images.device)
    lost = torch.tensor(missing, dtype=torch.long)
    return Decoys(images=decoys.images[idx], masks=decoys.masks[idx], signs=decoys.signs[idx],
                  deviation=decoys.deviation[idx], movement=decoys.movement[idx], epsilon=decoys.epsilon,
                  layer=decoys.layer, original=decoys.original, dropped=len(missing),
                  dropped_masks=family[lost].bool().view(-1, 1, H, W).to(decoys.masks.device),
                  dropped_signs=torch.where(up[lost], 1, -1).to(decoys.signs.device), steps_run=decoys.steps_run,
                  extra={**decoys.extra, "subsample": "one decoy per mask", "coin_seed": seed, "fallback": fallback})


def equal_size_populations(populations: Sequence[Decoys], seed: int) -> List[Decoys]:
    """:func:`one_decoy_per_mask` of every image's decoys, image ``b``'s coins seeded by ``seed + b``."""
    return [one_decoy_per_mask(d, seed + b) for b, d in enumerate(populations)]


def enhanced_explainer(model: nn.Module, method: str, settings: Settings, seed: int = 0,
                       aggregate: str = "range") -> Tuple[DecoyEnhanced, dict]:
    """``(DecoyEnhanced, attribute kwargs)`` of ``method`` for given populations (it makes no decoys).

    SmoothGrad's noise follows ``settings.smoothgrad_noise``: ``"common"`` shares the draws between
    an image and its decoys, seeded by ``seed`` (``noise_seed``: the same draws for every image, so an
    image's map does not depend on its batch); ``"independent"`` leaves the noise to Captum's
    NoiseTunnel and torch's global generator (seed it with ``torch.manual_seed(seed)``).
    """
    attribution, kwargs = base_method(model, method, settings)
    if isinstance(attribution, NoiseTunnel):
        common = settings.common_noise
        return DecoyEnhanced(attribution, aggregate=aggregate, common_noise=common,
                             noise_seed=seed if common else None), kwargs
    return DecoyEnhanced(attribution, aggregate=aggregate), kwargs


def enhanced_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, settings: Settings,
                  populations: List[Decoys], aggregate: str = "range", seed: int = 0,
                  batch_size: Optional[int] = 256) -> torch.Tensor:
    """Decoy-enhanced maps ``[B, C, H, W]`` of ``method`` over given decoy populations (SmoothGrad's
    noise as :func:`enhanced_explainer` says)."""
    explainer, kwargs = enhanced_explainer(model, method, settings, seed=seed, aggregate=aggregate)
    torch.manual_seed(seed)
    return explainer.attribute(x, target, decoys=populations, batch_size=batch_size, **kwargs)


def noise_only_control(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings,
                       draws: Union[int, Sequence[int]], seed: int = 0, aggregate: str = "range",
                       batch_size: int = 8) -> torch.Tensor:
    """The noise-only control of DANCE-SmoothGrad: for each image, the pixelwise ``aggregate`` (the range)
    over ``draws`` independent SmoothGrad maps of *the image alone*, no decoys.

    It is what the range over a population of ``draws`` members would be if the decoys equalled the
    image and every member got its own SmoothGrad noise, i.e. the part of a DANCE-SmoothGrad map with
    independent noise that Monte-Carlo noise alone explains. Compare it with DANCE-SmoothGrad at the
    same population size (``draws = 1 + len(decoys)``).

    Args:
        model: the classifier (evaluated in eval mode, not changed).
        x: ``[B, C, H, W]`` images; ``target``: ``LongTensor[B]``, the explained classes.
        settings: SmoothGrad's samples per map (``smoothgrad_samples``) and noise (``smoothgrad_std``).
        draws: SmoothGrad maps per image: an int, or a list of one per image (e.g. each image's
            population size, ``1 + len(decoys)``).
        seed: the noise: for every image, a CPU generator seeded with ``seed`` gives draw ``d``'s noise
            ``smoothgrad_std * torch.randn(smoothgrad_samples, C, H, W)``, for ``d = 0, 1, ...`` in
            turn (so draw 0 is the noise the image gets in DANCE-SmoothGrad with common noise and
            the same seed, and an image's control does not depend on its batch).
        aggregate: ``"range"`` (as DANCE), ``"mean"`` or ``"std"``.
        batch_size: SmoothGrad maps per call of the gradient (8 maps of 8 samples: the 64-image
            batches that run fastest on a CPU, see :mod:`dance_book.experiments.scores`).

    Returns:
        ``[B, C, H, W]``.
    """
    B = x.shape[0]
    counts = list(draws) if isinstance(draws, (list, tuple)) else [draws] * B
    if len(counts) != B:
        raise ValueError(f"draws must be an int or one count per image ({B}), got {len(counts)} counts")
    counts = [check_n(d, "draws") for d in counts]
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    batch_size = check_n(batch_size, "batch_size")
    samples = settings.smoothgrad_samples
    # The same draws for every image: draw d is the d-th call of one seeded generator.
    generator = torch.Generator().manual_seed(seed)
    noise = torch.stack([torch.randn(samples, *x.shape[1:], generator=generator) * settings.smoothgrad_std
                         for _ in range(max(counts))]).to(x.device, x.dtype)
    saliency = Saliency(model)
    out = []
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        for b in range(B):
            maps = []
            for lo in range(0, counts[b], batch_size):
                part = noise[lo:min(counts[b], lo + batch_size)]
                noisy = (x[b:b + 1] + part).flatten(0, 1).detach().requires_grad_(True)
                t = target[b:b + 1].expand(noisy.shape[0])
                a = saliency.attribute(noisy, target=t, abs=False).detach()
                maps.append(noise_tunnel_reduce(a.view(part.shape), "smoothgrad"))
            out.append(aggregate_maps(torch.cat(maps), aggregate))
    return torch.stack(out)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model), torch.no_grad():
        return model(x).argmax(dim=1)


#: Images kept (maps and attacked images) for the figures of the attacks and sanity chapters.
N_EXAMPLES = 3


def check_n(n, name: str = "n") -> int:
    """``n`` if it is a positive int, else a ``ValueError`` naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def check_methods(methods) -> List[str]:
    """A method name or a list of them as a list of keys of :data:`METHODS` (``ValueError`` otherwise)."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty list drawn from {list(METHODS)}, got {methods!r}")
    return methods


#: Rows (image or decoy) per call of the base method in decoy-enhanced maps: on a CPU, chunks of
#: 16 rows run SmoothGrad about twice as fast as chunks of 256 (measured), and cost no accuracy.
MAP_BATCH = 16
#: Decoys optimised at once. The rows of the optimisation are independent, so chunking changes
#: no decoy (checked: identical images), but chunks of a few hundred rows run ~2.5x faster on a
#: CPU than one batch of every row.
DECOY_BATCH = 256


def optimised_quietly(model, x, layer, settings):
    """Decoys of ``x``; dropped decoys are counted in the result instead of warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return optimised_decoys(model, x, layer, settings, batch_size=DECOY_BATCH)
