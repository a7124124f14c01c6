"""The one switch between CI scale and paper scale.

``DANCE_SCALE=ci`` (the default) runs everything on shipped small models and generated or
shipped data, on a laptop CPU in minutes. ``DANCE_SCALE=paper`` runs the same notebooks with
torchvision's ImageNet models and user-provided ImageNet images, on a GPU when one is present.
"""
from __future__ import annotations

import os

import torch

SCALES = ("ci", "paper")


def current_scale() -> str:
    """The scale chosen by the ``DANCE_SCALE`` environment variable (``"ci"`` if unset)."""
    value = os.environ.get("DANCE_SCALE", "ci").strip().lower() or "ci"
    if value not in SCALES:
        raise ValueError(f"DANCE_SCALE must be one of {SCALES}, got {value!r}")
    return value


def per_scale(ci, paper):
    """The size of a toy experiment whose code is the same at both scales: ``ci`` at CI scale and in the
    paper-scale smoke run (the test-only ``DANCE_PAPER_SMOKE=1``, which checks that the code runs), else ``paper``."""
    if current_scale() == "ci":
        return ci
    from .experiments.settings import smoke_enabled

    return ci if smoke_enabled() else paper


def default_device() -> torch.device:
    """CUDA when available at paper scale, else the CPU (CI scale is always CPU, for determinism)."""
    if current_scale() == "paper" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
