"""The maps every experiment chapter compares: base methods, with optimised or replacement decoys."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from .._layers import LayerProbe, eval_mode, resolve_layer
from ..baselines import replacement_decoys
from ..decoys import Decoys, _generate
from ..enhanced import DecoyEnhanced
from ..masks import default_masks
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


def optimised_decoys(model: nn.Module, x: torch.Tensor, layer: str, settings: Settings, **overrides) -> List[Decoys]:
    """DANCE decoys of every image of ``x`` at ``layer``, all optimised in one batched loop."""
    options = settings.decoys.options()
    # Chunks of 256 decoys give bit-identical decoys (rows are independent) and stay in cache:
    # measured 2.5x less CPU time than one huge batch on 2 cores.
    options["batch_size"] = 256
    options.update(overrides)
    epsilon = options.pop("epsilon", settings.decoys.epsilon)
    return _generate(model, x, layer, epsilon=epsilon, **options)


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
    layer = populations[0].layer
    if not layer:
        raise ValueError("populations must name their layer (build replacement decoys with model= and layer=)")
    # epsilon is unused here: the populations are given, none are optimised.
    explainer = DecoyEnhanced(attribution, layer=layer, epsilon=1.0, aggregate=aggregate)
    torch.manual_seed(seed)
    return explainer.attribute(x, target, decoys=populations, batch_size=batch_size, **kwargs)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model), torch.no_grad():
        return model(x).argmax(dim=1)
