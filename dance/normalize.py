"""Let every part of ``dance`` work in [0, 1] pixel space, whatever a model expects."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

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
        mean, std: one value per input channel.

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
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
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
        return self.model((x - self.mean) / self.std)
