"""Find a layer by name and evaluate a model only up to it, without touching the model."""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple, Union

import torch
from torch import nn


def resolve_layer(model: nn.Module, layer: Union[str, nn.Module]) -> Tuple[str, nn.Module]:
    """Return ``(name, module)`` for a layer given by its name in ``model.named_modules()`` or as the module."""
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer in named and layer != "":
            return layer, named[layer]
        candidates = [n for n in named if n]
        # Names that contain the given one (a missing prefix, e.g. "features.3" for a wrapped
        # model's "model.features.3"), else the most similar names (a typo), else the first few.
        close = [n for n in candidates if n.endswith(layer)][:5] \
            or difflib.get_close_matches(layer, candidates, n=5, cutoff=0.6) or candidates[:8]
        raise ValueError(
            f"layer {layer!r} is not a module of the model; valid names from model.named_modules() "
            f"include {close}"
        )
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer and name != "":
                return name, module
        raise ValueError("layer is a module that is not part of the model (or is the model itself); "
                         "pass a submodule of the model or its name from model.named_modules()")
    raise TypeError(f"layer must be a module name (str) or an nn.Module, got {type(layer).__name__}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` in eval mode and restore every submodule's train/eval flag afterwards.

    Decoys and saliency maps are properties of the deployed (eval-mode) network: batch norm uses
    its running statistics and dropout is off. The caller's flags are put back exactly.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


class ImageArgs:
    """The extra forward arguments of one image (Captum's ``additional_forward_args``), for any
    number of rows that all show that image (its decoys, its NaN probes).

    ``rows(n)`` gives the arguments for ``n`` rows: the image's entry of a per-image tensor,
    expanded to ``n`` (a view), and every other argument as it was given.
    """

    def __init__(self, args: tuple, per_image: Tuple[bool, ...]):
        self.args, self.per_image = args, per_image

    def rows(self, n: int) -> tuple:
        return tuple(a.expand(n, *a.shape[1:]) if p else a for a, p in zip(self.args, self.per_image))


def split_forward_args(args, batch: int) -> List[Optional[ImageArgs]]:
    """Captum's ``additional_forward_args`` of a batch of ``batch`` images, one :class:`ImageArgs`
    per image (None for none). As in Captum, a tensor whose first axis has ``batch`` entries holds
    one entry per image; any other argument is shared by all images."""
    if args is None:
        return [None] * batch
    if not isinstance(args, tuple):
        args = (args,)
    per = tuple(isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == batch for a in args)
    return [ImageArgs(tuple(a[b:b + 1] if p else a for a, p in zip(args, per)), per) for b in range(batch)]


class _Reached(Exception):
    """Raised by the hook once the layer's output exists, so later layers never run."""


class LayerProbe:
    """Call ``probe(x)`` to get the output of ``layer`` for input ``x``, evaluating only the layers up to it.

    The forward pass is stopped by an exception raised from a forward hook on the layer, so for
    any architecture the layers after it are never evaluated (the decoy constraint only involves
    ``F_l``). If the layer runs more than once in one forward (a shared ReLU, say), its first
    output is the one used.
    """

    def __init__(self, model: nn.Module, module: nn.Module, name: str = "layer",
                 forward_args: Optional[ImageArgs] = None):
        self.model = model
        self.module = module
        self.name = name
        #: Extra forward arguments of the image every row shows (None: ``model(x)`` alone).
        self.forward_args = forward_args

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        captured = {}

        def hook(_module, _inputs, output):
            captured["out"] = output
            raise _Reached

        handle = self.module.register_forward_hook(hook)
        extra = () if self.forward_args is None else self.forward_args.rows(x.shape[0])
        try:
            self.model(x, *extra)
        except _Reached:
            pass
        finally:
            handle.remove()
        if "out" not in captured:
            raise ValueError(f"layer {self.name!r} was not called in the model's forward pass")
        out = captured["out"]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {self.name!r} must output a tensor, got {type(out).__name__}")
        return out
