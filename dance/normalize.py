"""Let every part of ``dance`` work in [0, 1] pixel space, whatever a model expects."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._checks import check_model

#: Channel statistics of the ImageNet training set, as torchvision's weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalized(nn.Module):
    """Wrap ``model`` so that it takes images in [0, 1] and normalises them itself.

    Decoys are optimised under the pixel-range constraint ``x~ in [0, 1]`` (paper Eq. 2),
    so ``dance`` always hands models [0, 1] images; a model trained on standardised inputs
    is wrapped once and then used everywhere.

    Args:
        model: the network that expects ``(x - mean) / std``.
        mean, std: one value per input channel (or one value for all), finite, ``std > 0``;
            copied, so the caller's sequence or tensor is never shared with the module.

    The wrapped model keeps its layer names under the prefix ``model.`` (for example
    ``model.features.3``), so a layer named for the bare network is found by
    :func:`dance.generate_decoys` with that prefix, or passed as the module itself.

    Example:
        >>> import torch, dance
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        >>> wrapped = dance.Normalized(net, dance.IMAGENET_MEAN, dance.IMAGENET_STD)
        >>> wrapped(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 2])
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        check_model(model)
        mean_t = _statistic(mean, "mean")
        std_t = _statistic(std, "std")
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(
                f"mean and std must have one value per channel and the same length, "
                f"got {mean_t.numel()} and {std_t.numel()}"
            )
        if not torch.all(std_t > 0):
            raise ValueError(f"std must be positive in every channel, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or self.mean.shape[1] not in (1, x.shape[1]):
            raise ValueError(
                f"Normalized takes [B, C, H, W] images with C = {self.mean.shape[1]} channels (one mean and std "
                f"per channel), got shape {tuple(x.shape)}"
            )
        return self.model((x - self.mean) / self.std)


def _statistic(values, name: str) -> torch.Tensor:
    """``values`` as a new float32 vector (never a view of the caller's tensor), finite."""
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{name} must hold real numbers, one per channel, got dtype {values.dtype}")
        t = values.detach().to("cpu", torch.float32, copy=True).flatten()
    else:
        try:
            t = torch.tensor(values, dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a sequence of numbers, one per channel, got {values!r}") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite in every channel, got {t.tolist()}")
    return t
