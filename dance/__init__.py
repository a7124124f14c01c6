"""dance: decoy-enhanced saliency maps (Lu, Guo, Xing, Noble) for PyTorch models."""
from .heatmap import to_heatmap
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized
from .scale import current_scale, default_device

__all__ = [
    "to_heatmap",
    "Normalized",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "current_scale",
    "default_device",
]
__version__ = "0.1.0"
