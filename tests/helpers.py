"""Helpers the unit tests import (fixtures live in ``conftest.py``, which uses these too).

Plain functions and constants: tiny models with known answers, an independent layer probe
(a plain forward hook, deliberately not ``dance.layers.LayerProbe``) and a forward-call counter.
"""
from __future__ import annotations

import torch
from torch import nn

import dance

# Decoy options for tests whose property does not need a converged optimisation.
FAST = {"solver": dance.Adam(steps=25, patience=10)}

#: Settings of the Adam solver (dance.Adam's fields) that tests pass flat for brevity.
ADAM_FIELDS = frozenset(dance.Adam.__dataclass_fields__)


def with_solver(**kw) -> dict:
    """``generate_decoys`` keywords with flat solver settings (``steps=5``, ``rtol=0.1``) folded into
    ``solver=dance.Adam(...)`` / ``dance.LineSearch(...)``, as the public API takes them."""
    adam = {k: kw.pop(k) for k in list(kw) if k in ADAM_FIELDS}
    if "rtol" in kw:
        kw["solver"] = dance.LineSearch(rtol=kw.pop("rtol"))
    elif adam:
        base = dance.decoys.as_solver(kw.get("solver", "adam"))
        kw["solver"] = dance.Adam(**{**base.__dict__, **adam})
    return kw


#: Image side per test model kind (see conftest's ``make_model``).
IMAGE_SIZE = {"vgg": 12, "bn": 12, "resnet": 32, "normalized": 12, "dropout_bn": 12}


def identity_conv(channels: int = 3) -> nn.Conv2d:
    """A 3x3 convolution that passes each channel through (plus 0.25): its feasible decoys are an
    epsilon box around the image, so the optimal decoy is known in closed form."""
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(channels):
            conv.weight[c, c, 1, 1] = 1.0
        conv.bias.fill_(0.25)
    return conv


def layer_output(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """``F_l(x)`` by a plain forward hook on the full forward pass (independent of dance's probe).

    The first call of the module is used (as documented by dance), and the output is cloned
    because a later in-place op (torchvision's ReLU(inplace=True)) may overwrite it.
    """
    module = dict(model.named_modules())[name]
    outs = []
    handle = module.register_forward_hook(lambda _m, _i, out: outs.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(x if x.dim() == 4 else x.unsqueeze(0))
    finally:
        handle.remove()
    return outs[0]


def deviations_one_at_a_time(model: nn.Module, name: str, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``||F_l(d) - F_l(x)||_inf`` for each decoy ``d`` of ``images``, each in its own forward pass."""
    ref = layer_output(model, name, x)
    return torch.stack([(layer_output(model, name, d.unsqueeze(0)) - ref).abs().max() for d in images]) \
        if images.shape[0] else torch.zeros(0)


class CallCounter:
    """Counts forward calls (and records batch sizes) of modules via forward pre-hooks."""

    def __init__(self, modules):
        self.calls = {name: 0 for name, _ in modules}
        self.batches = {name: [] for name, _ in modules}
        self._handles = []
        for name, module in modules:
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name):
        def hook(_module, inputs):
            self.calls[name] += 1
            if inputs and isinstance(inputs[0], torch.Tensor):
                self.batches[name].append(int(inputs[0].shape[0]))
        return hook

    def remove(self):
        for h in self._handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
