"""Helpers shared by several test modules (import them: ``from helpers import ...``).

Keep each helper in its own marked block, with the test module(s) that use it named there.
"""
from __future__ import annotations

# ==============================================================================================
# Snapshot of everything a caller passed (tests/test_misuse_matrix.py and others):
# "nothing the caller passed changes".
# ==============================================================================================

import copy
import random
from dataclasses import dataclass, field
from typing import Any, List

import numpy as np
import torch
from torch import nn


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
