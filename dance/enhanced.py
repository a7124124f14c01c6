"""DecoyEnhanced: wrap any attribution method so that it returns decoy-enhanced maps (paper §3.2)."""
from __future__ import annotations

import inspect
from typing import Callable, List, Optional, Union

import torch
from torch import nn

from ._checks import check_images, check_int, check_model, check_positive, check_target
from .layers import eval_mode, resolve_layer
from .decoys import Decoys, _generate, generate_decoys

AGGREGATES = ("range", "mean", "std")
_DECOY_OPTIONS = set(inspect.signature(generate_decoys).parameters) - {"model", "x", "layer", "epsilon"}


def _captum_attribution_type():
    try:
        from captum.attr import Attribution
    except ImportError:  # pragma: no cover - captum is a dependency
        return None
    return Attribution


def _wants_signed_gradient(attribution) -> bool:
    """Captum's Saliency returns |gradient| unless told otherwise; DANCE needs signed maps."""
    from captum.attr import NoiseTunnel, Saliency

    inner = attribution.attribution_method if isinstance(attribution, NoiseTunnel) else attribution
    return isinstance(inner, Saliency)


def aggregate_maps(maps: torch.Tensor, how: str = "range") -> torch.Tensor:
    """Pixelwise statistic over a population of maps ``[N, C, H, W]`` -> ``[C, H, W]``.

    ``"range"`` is the paper's decoy-enhanced score (Eq. 3, max - min); ``"mean"`` and ``"std"``
    (population standard deviation) serve ablations.
    """
    if how == "range":
        return maps.amax(dim=0) - maps.amin(dim=0)
    if how == "mean":
        return maps.mean(dim=0)
    if how == "std":
        return maps.std(dim=0, unbiased=False)
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {how!r}")


class DecoyEnhanced:
    """Decoy-enhanced saliency (DANCE) around any attribution method, in the style of Captum's NoiseTunnel.

    For each image ``x`` the decoys are optimised at ``layer`` (:func:`dance.generate_decoys`), the
    base ``attribution`` is computed on ``x`` and on every decoy (the original is a valid decoy),
    and the signed maps are reduced pixelwise by their range, ``max - min`` (paper Eq. 3).

    Args:
        attribution: a Captum ``Attribution`` (``Saliency``, ``IntegratedGradients``,
            ``NoiseTunnel(...)``, ...) or a callable ``f(inputs, target) -> attributions`` of the
            inputs' shape, called with gradients enabled. Captum's ``Saliency`` is called with
            ``abs=False`` unless ``abs`` is passed to :meth:`attribute`, because DANCE works on
            signed maps.
        layer: the decoy layer, a name from ``model.named_modules()`` or the module.
        epsilon: the decoy tolerance (see :func:`dance.generate_decoys`; ``relative=True`` among
            ``decoy_options`` makes it a fraction of ``max|F_l(x)|``).
        model: the network whose layer the decoys preserve; required with a plain callable, and
            taken from the Captum attribution's ``forward_func`` otherwise.
        aggregate: ``"range"`` (the paper), ``"mean"`` or ``"std"``.
        **decoy_options: any keyword of :func:`dance.generate_decoys` (``patch_size``, ``stride``,
            ``spacing``, ``c``, ``steps``, ``seed``, ...).

    The model is evaluated in eval mode and its train/eval flags are restored afterwards.

    Example:
        >>> import torch, dance
        >>> from captum.attr import Saliency
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2))
        >>> explainer = dance.DecoyEnhanced(Saliency(net), layer="1", epsilon=0.1, relative=True)
        >>> explainer.attribute(torch.rand(2, 3, 16, 16), target=0).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, attribution, *, layer, epsilon, model: Optional[nn.Module] = None,
                 aggregate: str = "range", **decoy_options):
        Attribution = _captum_attribution_type()
        if Attribution is not None and isinstance(attribution, Attribution):
            self._attribute_fn: Callable = attribution.attribute
            self._signed_default = _wants_signed_gradient(attribution)
            forward = attribution.forward_func
            if model is None:
                if not isinstance(forward, nn.Module):
                    raise TypeError("the attribution's forward_func is not an nn.Module; pass model=")
                model = forward
        elif callable(attribution):
            self._attribute_fn = attribution
            self._signed_default = False
            if model is None:
                raise TypeError("model is required when attribution is a plain callable: pass model=net")
        else:
            raise TypeError(
                f"attribution must be a Captum Attribution or a callable f(inputs, target), "
                f"got {type(attribution).__name__}"
            )
        self.model = check_model(model)
        self.attribution = attribution
        self.layer_name, _ = resolve_layer(self.model, layer)
        self.layer = layer
        self.epsilon = check_positive(epsilon, "epsilon")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.aggregate = aggregate
        unknown = set(decoy_options) - _DECOY_OPTIONS
        if unknown:
            raise TypeError(f"unknown decoy option(s) {sorted(unknown)}; valid: {sorted(_DECOY_OPTIONS)}")
        self.decoy_options = decoy_options
        self._n_classes = {}

    def decoys(self, inputs: torch.Tensor) -> List[Decoys]:
        """The decoys of every image of ``inputs [B, C, H, W]``, optimised in one batched loop."""
        x = check_images(inputs, self.model)
        return _generate(self.model, x, self.layer_name, epsilon=self.epsilon, **self.decoy_options)

    def attribute(self, inputs: torch.Tensor, target: Union[int, torch.Tensor], *,
                  batch_size: Optional[int] = None, return_decoys: bool = False,
                  decoys: Optional[List[Decoys]] = None, **attribution_kwargs):
        """Decoy-enhanced attributions of a batch.

        Args:
            inputs: ``[B, C, H, W]`` float images in [0, 1] (one image ``[C, H, W]`` is accepted).
            target: the class to explain: an int, or a LongTensor of length B.
            batch_size: at most this many images (originals and decoys) per call of the base
                attribution, to bound memory; default: all at once.
            return_decoys: also return the list of :class:`Decoys`, one per image.
            decoys: reuse decoys from an earlier call (one :class:`Decoys` per image), e.g. to
                compare base methods on the same decoys.
            **attribution_kwargs: passed to the base method (``n_steps``, ``nt_samples``, ...).

        Returns:
            ``[B, C, H, W]`` decoy-enhanced maps (and the decoys if ``return_decoys``).
        """
        x = check_images(inputs, self.model)
        B = x.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size")
        with eval_mode(self.model):
            # The number of classes, to check target, costs one forward per input shape, once.
            key = (tuple(x.shape[1:]), x.device.type, x.dtype)
            if key not in self._n_classes:
                with torch.no_grad():
                    self._n_classes[key] = self.model(x[:1]).shape[-1]
            t = check_target(target, B, self._n_classes[key], x.device)
            if decoys is None:
                decoys = _generate(self.model, x, self.layer_name, epsilon=self.epsilon, **self.decoy_options)
            elif len(decoys) != B or not all(isinstance(d, Decoys) for d in decoys):
                raise ValueError(f"decoys must be a list of {B} Decoys objects, one per image of inputs")
            maps = self._maps_of_populations(x, decoys, t, batch_size, attribution_kwargs)
        return (maps, decoys) if return_decoys else maps

    def _maps_of_populations(self, x, decoys, target, batch_size, kwargs) -> torch.Tensor:
        # One flat batch of every original and decoy, so the base method runs in few, large calls.
        populations = [torch.cat([x[b:b + 1], d.images.to(x.device, x.dtype)]) for b, d in enumerate(decoys)]
        sizes = [p.shape[0] for p in populations]
        rows = torch.cat(populations)
        row_target = torch.cat([target[b:b + 1].expand(n) for b, n in enumerate(sizes)])
        if self._signed_default and "abs" not in kwargs:
            kwargs = dict(kwargs, abs=False)
        step = rows.shape[0] if batch_size is None else batch_size
        out = []
        with torch.enable_grad():
            for lo in range(0, rows.shape[0], step):
                # Our own copy, marked for gradients so that Captum need not switch it on (and warn).
                chunk = rows[lo:lo + step].clone().requires_grad_(True)
                a = self._attribute_fn(chunk, target=row_target[lo:lo + step], **kwargs)
                if isinstance(a, tuple):
                    a = a[0]
                if not isinstance(a, torch.Tensor) or a.shape != chunk.shape:
                    raise ValueError(
                        f"the attribution must return a tensor of the inputs' shape {tuple(chunk.shape)}, "
                        f"got {getattr(a, 'shape', type(a).__name__)}"
                    )
                out.append(a.detach())
        maps = torch.cat(out).split(sizes)
        return torch.stack([aggregate_maps(m, self.aggregate) for m in maps])
