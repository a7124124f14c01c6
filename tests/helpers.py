"""Helpers the unit tests import (fixtures live in ``conftest.py``, which uses these too).

Plain functions and constants: tiny models with known answers, an independent layer probe
(a plain forward hook, deliberately not ``dance.layers.LayerProbe``), a forward-call counter, and a
snapshot of everything a caller passed ("nothing the caller passed changes").
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any, List

import numpy as np
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


# ==============================================================================================
# Snapshot of everything a caller passed (tests/test_misuse_matrix.py and others):
# "nothing the caller passed changes".
# ==============================================================================================


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape, device and values, NaN equal to NaN (meta tensors: metadata only)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if a.device.type == "meta":
        return True
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


def _tensor_record(t: torch.Tensor) -> dict:
    with torch.inference_mode(False):
        return {
            "value": t.detach().clone(),
            "version": t._version,  # in-place writes bump the version even when values come back
            "requires_grad": t.requires_grad,
            "grad": None if t.grad is None else t.grad.detach().clone(),
            "grad_fn": t.grad_fn,
        }


def _module_record(m: nn.Module) -> dict:
    return {
        "state": {k: _tensor_record(v) for k, v in m.state_dict(keep_vars=True).items()},
        "params": {k: _tensor_record(p) for k, p in m.named_parameters()},
        "flags": [(name, sub.training) for name, sub in m.named_modules()],
        "hooks": [(len(sub._forward_hooks), len(sub._forward_pre_hooks), len(sub._backward_hooks))
                  for sub in m.modules()],
        "n_modules": len(list(m.modules())),
    }


def _record(obj: Any):
    if isinstance(obj, torch.Tensor):
        return ("tensor", _tensor_record(obj))
    if isinstance(obj, nn.Module):
        return ("module", _module_record(obj))
    if isinstance(obj, (list, tuple)):
        return ("seq", type(obj), [_record(o) for o in obj])
    if isinstance(obj, dict):
        return ("dict", {k: _record(v) for k, v in obj.items()})
    try:
        return ("value", copy.deepcopy(obj))
    except Exception:  # a callable or an object we cannot copy: identity only
        return ("object", id(obj))


def _diff(before, obj, where: str) -> List[str]:
    kind = before[0]
    if kind == "tensor":
        return _diff_tensor(before[1], obj, where)
    if kind == "module":
        rec, out = before[1], []
        now = _module_record(obj)
        for key in ("flags", "hooks", "n_modules"):
            if rec[key] != now[key]:
                out.append(f"{where}: {key} changed")
        for name, t in obj.state_dict(keep_vars=True).items():
            out += _diff_tensor(rec["state"][name], t, f"{where}.{name}") if name in rec["state"] \
                else [f"{where}: new state entry {name}"]
        for name, p in obj.named_parameters():
            if name in rec["params"]:
                out += _diff_tensor(rec["params"][name], p, f"{where}.{name}")
        return out
    if kind == "seq":
        if type(obj) is not before[1] or len(obj) != len(before[2]):
            return [f"{where}: sequence changed"]
        return [d for i, (b, o) in enumerate(zip(before[2], obj)) for d in _diff(b, o, f"{where}[{i}]")]
    if kind == "dict":
        if set(obj) != set(before[1]):
            return [f"{where}: keys changed"]
        return [d for k, b in before[1].items() for d in _diff(b, obj[k], f"{where}[{k!r}]")]
    if kind == "value":
        try:
            same = before[1] == obj or repr(before[1]) == repr(obj)  # repr: NaN equals NaN
            return [] if same else [f"{where}: value changed"]
        except Exception:
            return []
    return [] if before[1] == id(obj) else [f"{where}: object replaced"]


def _diff_tensor(rec: dict, t: torch.Tensor, where: str) -> List[str]:
    out = []
    if not _same_tensor(rec["value"], t.detach()):
        out.append(f"{where}: values changed")
    if t._version != rec["version"]:
        out.append(f"{where}: written in place")
    if t.requires_grad != rec["requires_grad"]:
        out.append(f"{where}: requires_grad changed")
    if t.grad_fn is not rec["grad_fn"]:
        out.append(f"{where}: grad_fn changed")
    if (t.grad is None) != (rec["grad"] is None) or (t.grad is not None and not _same_tensor(rec["grad"], t.grad)):
        out.append(f"{where}: .grad changed")
    return out


@dataclass
class Snapshot:
    """What :func:`snapshot` saw: the objects, their records, and the global random states."""

    objects: dict
    records: dict
    rng: tuple = field(default_factory=tuple)

    def changes(self) -> List[str]:
        """Every difference between now and the snapshot, in words (empty: nothing changed)."""
        out = [d for name, obj in self.objects.items() for d in _diff(self.records[name], obj, name)]
        torch_state, np_state, py_state = self.rng
        if not torch.equal(torch_state, torch.get_rng_state()):
            out.append("torch global RNG state consumed")
        now_np = np.random.get_state()
        if np_state[0] != now_np[0] or not np.array_equal(np_state[1], now_np[1]) or np_state[2:] != now_np[2:]:
            out.append("numpy global RNG state consumed")
        if py_state != random.getstate():
            out.append("python global RNG state consumed")
        return out

    def assert_unchanged(self) -> None:
        changes = self.changes()
        assert not changes, "the call changed what the caller passed: " + "; ".join(changes)


def snapshot(**objects) -> Snapshot:
    """Record tensors (values, in-place version, ``requires_grad``, ``.grad``), modules (parameters,
    buffers, their ``.grad``, every submodule's train/eval flag, hooks), containers and plain
    values, plus the global torch / NumPy / Python random states; ``.assert_unchanged()`` later.

    Example: ``snap = snapshot(model=net, inputs=x, target=t); f(net, x, t); snap.assert_unchanged()``.
    """
    records = {name: _record(obj) for name, obj in objects.items()}
    return Snapshot(objects, records, (torch.get_rng_state(), np.random.get_state(), random.getstate()))

# ==============================================================================================
# End of the snapshot block.
# ==============================================================================================
