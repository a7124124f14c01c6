"""Evaluate decoy-enhanced maps with Quantus: an ``explain_func`` in Quantus's array conventions.

`Quantus <https://github.com/understandable-machine-intelligence-lab/Quantus>`_ metrics take an
``explain_func(model, inputs, targets, **explain_func_kwargs) -> np.ndarray`` and call it whenever
they need maps: on the batch, on perturbed copies (``MaxSensitivity``), on a randomised copy of
the model (``MPRT``). :func:`explain` is such a function for :class:`dance.DecoyEnhanced`. It
builds the explainer for whatever model Quantus hands it (never a stale one), so every call
optimises the decoys of exactly the inputs it is given::

    import quantus
    from captum.attr import Saliency
    import dance.quantus

    metric = quantus.MaxSensitivity(nr_samples=10, lower_bound=0.05)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=dance.quantus.explain,
                    explain_func_kwargs={"method": Saliency, "layer": "features.3", "epsilon": 0.1,
                                         "relative": True, "solver": "linesearch"})

Conventions, as Quantus's own ``quantus.explain`` has them: ``inputs`` are channel-first arrays
``[B, C, H, W]`` (NumPy or torch), ``targets`` one class per image, ``device`` (which Quantus adds
when a metric is called with one) names where to compute, and the maps come back as a float32
NumPy array summed over the colour channels, ``[B, 1, H, W]`` (``reduce_axes=()`` keeps
``[B, C, H, W]``). The signed or absolute reading and the normalisation are the metric's own
settings (its ``abs=`` and ``normalise=``), applied by Quantus after the call, so the adapter
returns the raw decoy-enhanced maps.

Quantus is not a dependency of ``dance``: this module only speaks its conventions, with NumPy and
torch, and never imports it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
from captum.attr import Attribution
from torch import nn

from .enhanced import DecoyEnhanced

__all__ = ["explain"]


def _base_method(method, model: nn.Module):
    """The base attribution for ``model``: a Captum class, its name, or a factory ``model -> method``."""
    if isinstance(method, str):
        import captum.attr

        cls = getattr(captum.attr, method, None)
        if not (isinstance(cls, type) and issubclass(cls, Attribution)):
            raise ValueError(f"method {method!r} is not an attribution class of captum.attr; pass a name such as "
                             f"'Saliency' or 'IntegratedGradients', a class, or a factory model -> attribution")
        return cls(model)
    if isinstance(method, type) and issubclass(method, Attribution):
        return method(model)
    if isinstance(method, Attribution):
        raise TypeError("method must build the attribution for the model Quantus passes (it may be a perturbed or "
                        "randomised copy): pass the class (Saliency) or a factory (lambda m: NoiseTunnel(Saliency(m))), "
                        "not an instance")
    if callable(method):
        return method(model)
    raise TypeError(f"method must be a Captum attribution class, its name, or a callable model -> attribution, "
                    f"got {type(method).__name__}")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _as_tensor(inputs, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(inputs, np.ndarray):
        if not np.issubdtype(inputs.dtype, np.floating):
            raise TypeError(f"inputs must hold floating-point pixels in [0, 1], got dtype {inputs.dtype}")
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a NumPy array or torch.Tensor [B, C, H, W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a channel-first batch [B, C, H, W], got shape {tuple(inputs.shape)}")
    return inputs.detach().to(device=device, dtype=dtype)


def _as_targets(targets, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
    if t.dtype.is_floating_point:
        if not bool(torch.all(t == t.round())):
            raise ValueError(f"targets must be class indices, got non-integer values {t.flatten().tolist()[:5]}")
        t = t.long()
    t = t.flatten().to(device=device, dtype=torch.long)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"targets must hold one class per image ({batch}), got {t.numel()} values")
    return t


def explain(model: nn.Module, inputs: Union[np.ndarray, torch.Tensor], targets, *,
            method: Union[str, type, Callable] = "Saliency", layer: Union[str, None] = None,
            epsilon: Optional[float] = None, aggregate: str = "range", batch_size: Optional[int] = None,
            attribute_kwargs: Optional[Dict[str, Any]] = None, reduce_axes: Sequence[int] = (1,),
            keepdims: bool = True, device: Union[str, torch.device, None] = None,
            channel_first: Optional[bool] = None, **decoy_options) -> np.ndarray:
    """Decoy-enhanced maps of a batch, called the way Quantus calls an ``explain_func``.

    Pass the function itself as a metric's ``explain_func`` and everything after ``targets`` in
    its ``explain_func_kwargs``. Each call builds a :class:`dance.DecoyEnhanced` around
    ``method(model)`` for the model it receives, optimises the decoys of ``inputs`` and returns the
    aggregated maps; with a fixed ``seed`` among the decoy options, equal inputs give equal maps.

    Args:
        model: the ``torch.nn.Module`` to explain, taking [0, 1] images (wrap a model that expects
            standardised inputs in :class:`dance.Normalized`). Quantus's model wrappers are
            unwrapped. The model is not moved or changed; its train/eval flags are restored.
        inputs: ``[B, C, H, W]`` float pixels in [0, 1], a NumPy array or a tensor, channel first
            (as Quantus hands them). Perturbations that leave [0, 1] are rejected with a
            ``ValueError``: give the metric a ``perturb_func`` that clips.
        targets: the class of each image: a sequence, array or tensor of ``B`` ints (or one int).
        method: the base attribution: a Captum attribution class (``Saliency``), its name in
            ``captum.attr`` (``"IntegratedGradients"``), or a factory ``model -> attribution``
            (``lambda m: NoiseTunnel(Saliency(m))``) returning a Captum attribution or a callable
            ``f(inputs, target)``.
        layer: the decoy layer, a name from ``model.named_modules()`` (a name, so that it is found
            in the copies of the model that some metrics make).
        epsilon: the decoy tolerance, see :func:`dance.generate_decoys`.
        aggregate: ``"range"`` (the paper), ``"mean"`` or ``"std"``, see :class:`dance.DecoyEnhanced`.
        batch_size: images (originals and decoys) per call of the base method, see
            :meth:`dance.DecoyEnhanced.attribute`.
        attribute_kwargs: keywords for the base method's ``attribute`` (``n_steps``,
            ``nt_samples``, ...).
        reduce_axes: axes summed over, as in ``quantus.explain``: ``(1,)`` (default) sums the
            colour channels, ``()`` keeps them. The batch axis 0 cannot be reduced.
        keepdims: keep the reduced axes with length 1 (default, Quantus's ``[B, 1, H, W]``).
        device: where to compute (``"cpu"``, ``"cuda"``, a ``torch.device``); default: the
            model's device. It must be the model's device, which is left where it is.
        channel_first: Quantus's layout flag; only ``None`` or ``True`` (channel-first) is accepted.
        **decoy_options: keywords of :func:`dance.generate_decoys` (``relative``, ``patch_size``,
            ``stride``, ``seed``, ``solver``, ...).

    Returns:
        ``np.ndarray`` of float32: ``[B, 1, H, W]`` by default, ``[B, C, H, W]`` with
        ``reduce_axes=()``.

    Example:
        >>> import torch, dance.quantus
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2)).eval()
        >>> x = torch.rand(2, 3, 16, 16).numpy()
        >>> a = dance.quantus.explain(net, x, [0, 1], method="Saliency", layer="1", epsilon=0.1,
        ...                           relative=True, solver="linesearch")
        >>> a.shape, a.dtype
        ((2, 1, 16, 16), dtype('float32'))
    """
    if not isinstance(model, nn.Module) and callable(getattr(model, "get_model", None)):
        model = model.get_model()  # a Quantus ModelInterface around the network
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (or a Quantus wrapper of one), got {type(model).__name__}")
    if channel_first is False:
        raise ValueError("inputs must be channel-first [B, C, H, W] (Quantus metrics hand explain_func "
                         "channel-first arrays); transpose channel-last inputs with x.transpose(0, 3, 1, 2)")
    if layer is None or epsilon is None:
        raise TypeError("explain needs layer= (a module name) and epsilon= (the decoy tolerance): put them in the "
                        "metric's explain_func_kwargs")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name from model.named_modules() (metrics may explain copies of the "
                        f"model, where a module object is not found), got {type(layer).__name__}")
    axes = tuple(int(a) for a in reduce_axes)
    if 0 in axes:
        raise ValueError("reduce_axes must not contain the batch axis 0")
    model_device = _model_device(model)
    if device is not None and torch.device(device).type != model_device.type:
        raise ValueError(f"device={device!r} but the model is on {model_device}; move the model first "
                         f"(the adapter does not move it) or leave device out")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = _as_tensor(inputs, model_device, dtype)
    t = _as_targets(targets, x.shape[0], model_device)
    explainer = DecoyEnhanced(_base_method(method, model), layer=layer, epsilon=epsilon, model=model,
                              aggregate=aggregate, **decoy_options)
    maps = explainer.attribute(x, target=t, batch_size=batch_size, **(attribute_kwargs or {}))
    if axes:
        maps = maps.sum(dim=axes, keepdim=keepdims)
    return maps.detach().to("cpu", torch.float32).numpy()
