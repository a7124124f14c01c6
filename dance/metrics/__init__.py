"""Evaluation metrics for saliency maps: what the DANCE paper and its related work measure.

Every metric is a function that takes batches (``[B, C, H, W]`` images, ``[B, C, H, W]``
attributions or ``[B, H, W]`` heatmaps) and returns one value per image (``[B]``) on the inputs'
device. Each carries ``.direction`` (``"higher"`` or ``"lower"``: which values are better),
``.reference`` and ``.paper_settings``; :data:`REGISTRY` lists them and :func:`summary` gives the
table as a DataFrame.

================================  =========  ==============================================
metric                            direction  source
================================  =========  ==============================================
:func:`fidelity` (S_F)            lower      DANCE §4.2 (Dabkowski & Gal); see its caveat
:func:`sensitivity` (S_S)         lower      DANCE §4.2 (Alvarez-Melis & Jaakkola)
:func:`max_sensitivity`           lower      Yeh et al. 2019, Def. 2.1
:func:`avg_sensitivity`           lower      Yeh et al. 2019, Def. 2.2
:func:`faithfulness_correlation`  higher     Yeh et al. 2019, §4
:func:`saliency_entropy`          lower      SCAAT
:func:`saliency_size`             lower      SCAAT (PNG bytes)
:func:`aopc_morf`                 higher     SCAAT / Samek et al.
:func:`aopc_lerf`                 lower      SCAAT / Samek et al.
:func:`aopc_rel`                  higher     SCAAT
:func:`localization_iou`          higher     DANCE A12 (Fong & Vedaldi)
:func:`localization_success`      higher     DANCE A12 (IoU > 0.5)
:func:`mass_in_mask`              higher     Quantus RelevanceMassAccuracy
:func:`pointing_game`             higher     Zhang et al. 2018
:func:`cascading_randomization`   lower      DANCE A8 (Adebayo et al.)
:func:`spearman`                  higher     similarity of two maps (robustness reading)
:func:`topk_intersection`         higher     Ghorbani et al. 2019
:func:`center_shift`              lower      Ghorbani et al. 2019
:func:`ssim`                      higher     similarity of two maps (robustness reading)
================================  =========  ==============================================
"""
from ._registry import DIRECTIONS, REGISTRY, MetricInfo, summary
from .faithfulness import faithfulness_correlation
from .fidelity import fidelity
from .localization import (box_iou, box_mask, localization_iou, localization_success, mass_in_mask,
                           pointing_game, saliency_box, threshold_mask, tightest_box)
from .sanity import SanityResult, cascading_randomization, parameter_layers
from .scaat import aopc, aopc_lerf, aopc_morf, aopc_rel, saliency_entropy, saliency_size, to_uint8
from .sensitivity import avg_sensitivity, linf_ball_samples, max_sensitivity, sampled_sensitivities, sensitivity
from .similarity import center_of_mass, center_shift, spearman, ssim, topk_intersection

__all__ = [
    "REGISTRY", "DIRECTIONS", "MetricInfo", "summary",
    "fidelity",
    "sensitivity", "max_sensitivity", "avg_sensitivity", "sampled_sensitivities", "linf_ball_samples",
    "faithfulness_correlation",
    "saliency_entropy", "saliency_size", "to_uint8", "aopc", "aopc_morf", "aopc_lerf", "aopc_rel",
    "threshold_mask", "tightest_box", "saliency_box", "box_iou", "box_mask", "localization_iou",
    "localization_success", "mass_in_mask", "pointing_game",
    "cascading_randomization", "SanityResult", "parameter_layers",
    "spearman", "topk_intersection", "center_of_mass", "center_shift", "ssim",
]
