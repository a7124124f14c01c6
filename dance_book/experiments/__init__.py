"""Experiment code behind the book's chapters: frozen settings, the maps they compare, caching, statistics."""
from .cache import cached, code_version
from .maps import (METHODS, base_maps, base_method, enhanced_explainer, enhanced_maps, mask_family, noise_only_control,
                   optimised_decoys, predicted, replacement_populations)
from .inputs import EXPERIMENT_SEED, MASKS_MISSING, load_images, load_model, masks_unavailable, object_share, shared_decoys
from .settings import CI, DECOY_LAYER, PAPER, SMOOTHGRAD_NOISE, TABLE_A2, DecoySettings, Settings, settings
from .stats import mean_sd, paired_difference

__all__ = ["cached", "code_version", "METHODS", "base_maps", "base_method", "enhanced_explainer", "enhanced_maps",
           "noise_only_control", "mask_family", "SMOOTHGRAD_NOISE",
           "optimised_decoys", "predicted", "replacement_populations", "CI", "PAPER", "TABLE_A2", "DECOY_LAYER",
           "DecoySettings", "Settings", "settings", "mean_sd", "paired_difference",
           "EXPERIMENT_SEED", "load_images", "load_model", "shared_decoys", "MASKS_MISSING", "masks_unavailable",
           "object_share"]
