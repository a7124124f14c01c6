"""dance: decoy-enhanced saliency maps (Lu, Guo, Xing, Noble) for PyTorch models.

The two entry points:

- :func:`generate_decoys` optimises the decoys of one image at one layer (paper §3.1, §3.4);
- :class:`DecoyEnhanced` wraps any attribution method (Captum or a callable) and returns the
  pixelwise range of its maps over the image and its decoys (paper §3.2, Eq. 3).

Beside them, :class:`YehSmoothed` wraps any attribution method in Yeh et al.'s (2019) smoothing (their
Eq. 3), one of the remedies the book compares DANCE with.
"""
from .decoys import Adam, DecoyConfig, Decoys, LineSearch, generate_decoys, generate_decoys_batch
from .enhanced import AGGREGATES, DecoyEnhanced, YehSmoothed, aggregate_maps
from .heatmap import to_heatmap
from .masks import default_masks, lattice_masks
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized
from . import attacks, layers, metrics

__all__ = [
    "generate_decoys",
    "generate_decoys_batch",
    "DecoyConfig",
    "Adam",
    "LineSearch",
    "Decoys",
    "DecoyEnhanced",
    "YehSmoothed",
    "aggregate_maps",
    "AGGREGATES",
    "to_heatmap",
    "default_masks",
    "lattice_masks",
    "Normalized",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "attacks",
    "layers",
    "metrics",
]
__version__ = "0.1.0"
