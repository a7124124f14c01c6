"""Argument checks shared by the public functions: each failure names the argument and the fix."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def expected_channels(model: nn.Module) -> Optional[int]:
    """Input channels of the first convolution in ``model``, or None if there is none."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return module.in_channels
    return None


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_images(x, model: nn.Module, name: str = "inputs", single: bool = False) -> torch.Tensor:
    """Validate a batch ``[B, C, H, W]`` (or one image ``[C, H, W]``) of float pixels in [0, 1].

    Returns a detached 4-d view (never the caller's tensor object itself, never modified).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating-point tensor with pixel values in [0, 1], got dtype {x.dtype}; "
            f"convert with {name}.float() / 255 if it holds 8-bit pixels"
        )
    x = x.detach()  # checks must not record autograd history nor warn about it
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        want = "[C, H, W] or [1, C, H, W]" if single else "[B, C, H, W]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if single and x.shape[0] != 1:
        raise ValueError(
            f"{name} must be one image, [C, H, W] or [1, C, H, W], got a batch of {x.shape[0]}; "
            f"call once per image (dance.DecoyEnhanced handles batches)"
        )
    if x.shape[0] == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    channels = expected_channels(model)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels but the model's first convolution expects {channels}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values; pixels must be finite and in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must hold pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
            f"rescale the image and wrap a model that expects normalised inputs in dance.Normalized"
        )
    return x


def check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not (value > 0.0) or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_target(target, batch: int, n_classes: Optional[int], device) -> torch.Tensor:
    """``target``: an int or a LongTensor of length ``batch``; returns a LongTensor [batch]."""
    if isinstance(target, bool):
        raise TypeError("target must be an int or a LongTensor of length B, got a bool")
    if isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"target must be an int or a LongTensor, got a tensor of dtype {target.dtype}")
        if target.dim() == 0:
            t = target.reshape(1).expand(batch)
        elif target.dim() == 1 and target.numel() == batch:
            t = target
        else:
            raise ValueError(
                f"target must be an int or a LongTensor of length B={batch}, got shape {tuple(target.shape)}"
            )
        t = t.to(device=device, dtype=torch.long)
    else:
        raise TypeError(
            f"target must be an int or a LongTensor of length B, got {type(target).__name__}"
        )
    if n_classes is not None and (bool((t < 0).any()) or bool((t >= n_classes).any())):
        raise ValueError(f"target must be in [0, {n_classes - 1}] for this model, got {t.tolist()}")
    return t
