"""Model-parameter randomisation test of Adebayo et al. (2018), cascading version (DANCE paper A8).

The weights of a copy of the model are re-initialised layer by layer, from the top (logits)
down to the input, *cumulatively*; after each step the explanation is recomputed and compared
with the explanation of the trained model by SSIM and Spearman rank correlation. A method that
explains the model (and not, say, edges of the image) gives maps that drift away from the
original as the learned weights are destroyed: low similarity after randomisation is the desired
outcome. The caller's model is never modified (the randomised network is a deep copy).
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from .._checks import (TargetType, check_batch, check_model, check_seed, gradients_on, optional_import, ordinary,
                       resolve_target)
from ._registry import metric
from ._utils import forward, heatmaps
from .similarity import spearman, ssim


@dataclass
class SanityResult:
    """Outcome of :func:`cascading_randomization`.

    Attributes:
        layers: ``S + 1`` names: ``"original"``, then the layer randomised at each step (top first;
            each step keeps the randomisation of the previous ones). With ``steps`` of
            :func:`cascading_randomization`, the explained steps only, each named by its layer: the
            layer randomised last before that map.
        maps: ``[S + 1, B, H, W]`` heatmaps (:func:`dance.to_heatmap`) at each step.
        ssim: ``[S + 1, B]`` SSIM of each step's map with the original map (1 at step 0).
        spearman: ``[S + 1, B]`` Spearman rank correlation with the original map (1 at step 0).
    """

    layers: List[str]
    maps: torch.Tensor
    ssim: torch.Tensor
    spearman: torch.Tensor

    def to_frame(self):
        """Long-format :class:`pandas.DataFrame`: step, layer, image, ssim, spearman."""
        pd = optional_import("pandas", package="pandas", needed_by="dance.metrics.SanityResult.to_frame")

        rows = []
        for s, name in enumerate(self.layers):
            for i in range(self.ssim.shape[1]):
                rows.append({"step": s, "layer": name, "image": i, "ssim": float(self.ssim[s, i]),
                             "spearman": float(self.spearman[s, i])})
        return pd.DataFrame(rows)


def parameter_layers(model: nn.Module) -> List[str]:
    """Names of the modules that own parameters, top (output side) first.

    The order is the reverse of :meth:`torch.nn.Module.named_modules`, i.e. of definition order,
    which is the forward order for sequential networks such as VGG or AlexNet; pass ``layers``
    to :func:`cascading_randomization` explicitly where it is not.
    """
    check_model(model)
    names = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def randomize_(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place, identically on every device.

    PyTorch's default initialisation (``reset_parameters``) is used where the module has one;
    otherwise each parameter is redrawn from a normal distribution with the trained values' mean
    and standard deviation. The draws are made on a CPU copy under a fixed seed.
    """
    cpu = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(cpu, "reset_parameters"):
            cpu.reset_parameters()
        else:
            with torch.no_grad():
                for p in cpu.parameters(recurse=False):
                    std = float(p.float().std()) if p.numel() > 1 else 0.0
                    p.normal_(float(p.float().mean()), std if std > 0 else 0.01)
    with torch.no_grad():
        own = dict(module.named_parameters(recurse=False))
        own.update(dict(module.named_buffers(recurse=False)))
        new = dict(cpu.named_parameters(recurse=False))
        new.update(dict(cpu.named_buffers(recurse=False)))
        for key, t in own.items():
            if key in new and t is not None:
                t.copy_(new[key].to(t.device))


def _explain_fn(explainer: Callable, model: nn.Module) -> Callable:
    """Turn ``explainer`` into ``f(inputs, target)`` for ``model``."""
    try:
        n_pos = sum(1 for p in inspect.signature(explainer).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
    except (TypeError, ValueError):
        n_pos = 1
    if n_pos >= 3:  # explainer(model, inputs, target)
        return lambda x, t: explainer(model, x, t)
    made = explainer(model)  # a factory: model -> explain callable (or a Captum Attribution)
    if hasattr(made, "attribute"):
        return lambda x, t: made.attribute(x, target=t)
    if not callable(made):
        raise TypeError("explainer(model) must return a callable explain(inputs, target) or an object "
                        "with .attribute; or pass explainer(model, inputs, target) directly")
    return made


@metric("lower", "Adebayo et al. (2018), Sanity checks for saliency maps (cascading randomisation); "
        "DANCE paper A8", "adebayo2018sanity",
        "pretrained VGG16, layers randomised from top to bottom, compared by SSIM (Fig. A9)")
def cascading_randomization(model: nn.Module, explainer: Callable, inputs: torch.Tensor, target: TargetType = None,
                            *, layers: Optional[Sequence[str]] = None, seed: int = 0, percentile: float = 95.0,
                            win_size: Optional[int] = None, steps: Optional[Sequence[int]] = None) -> SanityResult:
    """Cascading model-parameter randomisation test on a deep copy of ``model``.

    Args:
        model: the trained classifier. It is deep-copied and the copy explained in eval mode; its
            weights, ``.grad`` and train/eval mode are left as they are.
        explainer: either a factory ``explainer(model) -> explain`` with
            ``explain(inputs, target) -> attributions`` (for example
            ``lambda m: captum.attr.Saliency(m).attribute``, or a Captum class such as
            ``captum.attr.Saliency`` itself), or a function ``explainer(model, inputs, target)``.
            To check a :class:`dance.DecoyEnhanced`, build it inside the factory around the
            randomised model it receives, naming its layer by string.
        inputs: ``[B, C, H, W]`` images.
        target: class to explain; ``None`` = the class the *trained* model predicts (kept fixed
            through all steps, as in Adebayo et al.).
        layers: names of the layers to randomise, in order (top first); default all modules with
            parameters, top first (:func:`parameter_layers`).
        seed: seed of the re-initialisation (step ``s`` uses ``seed + s``).
        percentile: winsorising level of :func:`dance.to_heatmap` for the compared maps.
        win_size: SSIM window (see :func:`dance.metrics.ssim`).
        steps: the steps at which to explain, ``1`` (the first layer randomised) to ``len(layers)``
            (all of them); the others are randomised without being explained, so the cascade, its
            seeds and its last model are the same. Default: every step. Explaining is the costly
            part (a decoy-enhanced explainer re-optimises its decoys), so a quick check can explain
            the first and the last step only.

    Returns:
        :class:`SanityResult`. **Lower** similarity after randomisation is better: the map depends
        on the learned weights.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from dance.metrics import cascading_randomization
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3))
        >>> r = cascading_randomization(net, Saliency, torch.rand(2, 1, 8, 8), 0)
        >>> r.layers, tuple(r.ssim.shape)
        (['original', '3', '0'], (3, 2))
    """
    check_model(model)
    x = check_batch(inputs, model)
    check_seed(seed)
    if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
        raise TypeError(f"layers must be a sequence of module names (str), got {layers!r}")
    names = parameter_layers(model) if layers is None else list(layers)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not in model.named_modules(); available: {parameter_layers(model)}")
    if steps is None:
        wanted = set(range(1, len(names) + 1))
    else:
        if isinstance(steps, (str, bytes)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
            raise TypeError(f"steps must be a sequence of ints (cascade steps, 1 to {len(names)}), got {steps!r}")
        wanted = set(steps)
        if not wanted or not all(1 <= s <= len(names) for s in wanted):
            raise ValueError(f"steps must be non-empty and within 1..{len(names)} (the number of layers), got {steps!r}")
    t = resolve_target(forward(model, x), target)  # forward runs in eval mode

    with gradients_on():  # ordinary tensors (and copied parameters) even under torch.inference_mode()
        x, t = ordinary(x), ordinary(t)
        net = copy.deepcopy(model).eval()  # the caller's model stays untouched; explained as deployed
        net_modules = dict(net.named_modules())
        explain = _explain_fn(explainer, net)
        base = heatmaps(explain(x, t).detach(), "attributions", percentile)
        maps, explained = [base], ["original"]
        for s, name in enumerate(names, start=1):
            randomize_(net_modules[name], seed + s)
            if s in wanted:
                maps.append(heatmaps(explain(x, t).detach(), "attributions", percentile).to(base.device))
                explained.append(name)
    stacked = torch.stack(maps)  # [S+1, B, H, W]
    ssims = torch.stack([ssim(base, m, win_size=win_size) for m in maps])
    spear = torch.stack([spearman(base, m) for m in maps])
    return SanityResult(explained, stacked, ssims, spear)
