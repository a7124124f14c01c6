"""The maps every experiment chapter compares: base methods, with optimised or replacement decoys."""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from dance.layers import LayerProbe, eval_mode, resolve_layer
from dance.baselines import replacement_decoys
from dance.decoys import Adam, DecoyConfig, Decoys, generate_decoys_batch
from dance.enhanced import DecoyEnhanced
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


def enhanced_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, settings: Settings,
                  populations: List[Decoys], aggregate: str = "range", seed: int = 0,
                  batch_size: Optional[int] = 256) -> torch.Tensor:
    """Decoy-enhanced maps ``[B, C, H, W]`` of ``method`` over given decoy populations."""
    attribution, kwargs = base_method(model, method, settings)
    explainer = DecoyEnhanced(attribution, aggregate=aggregate)  # the populations are given: no decoys made
    torch.manual_seed(seed)
    return explainer.attribute(x, target, decoys=populations, batch_size=batch_size, **kwargs)


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
