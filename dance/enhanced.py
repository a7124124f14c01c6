"""Wrappers around any attribution method: :class:`DecoyEnhanced` returns decoy-enhanced maps (paper §3.2),
:class:`YehSmoothed` Yeh et al.'s (2019) smoothed explanation (their Eq. 3)."""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, List, Optional, Tuple, Union

import torch
from captum.attr import Attribution, NoiseTunnel, Saliency
from captum.log import log_usage
from torch import nn

from ._checks import (check_batch, check_choice, check_dtype, check_images, check_int, check_interval, check_logits, check_model,
                      check_number, check_range, check_seed, check_target, gradients_on, ordinary, seeded_generator)
from .decoys import BACKWARD_FORWARDS, PROGRESS_SECONDS, DecoyConfig, Decoys, generate_decoys_batch, seconds_per_image
from .layers import eval_mode, resolve_layer, split_forward_args

AGGREGATES = ("range", "mean", "std")
#: The keywords of :func:`dance.generate_decoys` that :class:`DecoyEnhanced` passes on (all of
#: :class:`dance.DecoyConfig`'s fields but ``epsilon``).
DECOY_OPTIONS = frozenset(DecoyConfig.__dataclass_fields__) - {"epsilon"}
#: Captum's forms of ``target`` for a classifier: an int or ``(k,)`` for every image, or one class
#: per image as a list of ints, a list of 1-tuples or an integer tensor.
Target = Union[int, Tuple[int], List[int], List[Tuple[int]], torch.Tensor]


#: Captum NoiseTunnel's ``nt_type`` values, which :func:`noise_tunnel_reduce` and the common noise of
#: :class:`DecoyEnhanced` reduce over the noise samples as Captum does.
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
#: Captum NoiseTunnel's own keywords (with its defaults), which ``common_noise=True`` takes over.
NOISE_TUNNEL_DEFAULTS = {"nt_type": "smoothgrad", "nt_samples": 5, "nt_samples_batch_size": None, "stdevs": 1.0,
                         "draw_baseline_from_distrib": False}


def _smoothing(total: torch.Tensor, total_sq: torch.Tensor, n: int, nt_type: str) -> torch.Tensor:
    """Captum's NoiseTunnel smoothing from the sums of the maps and of their squares over ``n`` samples."""
    mean = total * 1 / n
    if nt_type == "smoothgrad":
        return mean
    mean_sq = total_sq * 1 / n
    return mean_sq if nt_type == "smoothgrad_sq" else mean_sq - mean * mean


def noise_tunnel_reduce(samples: torch.Tensor, nt_type: str = "smoothgrad", dim: int = 1) -> torch.Tensor:
    """Reduce maps over their noise samples (axis ``dim``) as Captum's ``NoiseTunnel`` does.

    ``"smoothgrad"``: the mean; ``"smoothgrad_sq"``: the mean of the squares; ``"vargrad"``: the
    variance, computed as Captum does, ``mean(a**2) - mean(a)**2`` (population variance).

    Example:
        >>> import torch, dance.enhanced
        >>> dance.enhanced.noise_tunnel_reduce(torch.tensor([[1.0, 3.0]]), "vargrad")
        tensor([1.])
    """
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError(f"samples must be a float tensor of maps, got {type(samples).__name__}")
    check_choice(nt_type, "nt_type", NT_TYPES)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -samples.dim() <= dim < samples.dim():
        raise ValueError(f"dim must be an axis of samples (shape {tuple(samples.shape)}), got {dim!r}")
    return _smoothing(samples.sum(dim), torch.pow(samples, 2).sum(dim), samples.shape[dim], nt_type)


def _noise_options(kwargs: dict) -> Tuple[dict, dict]:
    """Split the keyword arguments of a call into NoiseTunnel's (checked, with Captum's defaults) and the
    inner method's. Raises for options that common noise cannot honour."""
    nt = {k: kwargs.get(k, v) for k, v in NOISE_TUNNEL_DEFAULTS.items()}
    rest = {k: v for k, v in kwargs.items() if k not in NOISE_TUNNEL_DEFAULTS}
    check_choice(nt["nt_type"], "nt_type", NT_TYPES)
    check_int(nt["nt_samples"], "nt_samples")
    if nt["nt_samples_batch_size"] is not None:
        check_int(nt["nt_samples_batch_size"], "nt_samples_batch_size")
    if nt["draw_baseline_from_distrib"] is not False:
        raise ValueError("draw_baseline_from_distrib=True is not supported with common noise (the baselines would be "
                         "drawn at random for each noisy copy); build DecoyEnhanced(..., common_noise=False) to use "
                         "Captum's NoiseTunnel as it is")
    stdevs = nt["stdevs"]
    if isinstance(stdevs, (tuple, list)):
        if len(stdevs) != 1:
            raise ValueError(f"stdevs must be one number, or a tuple of one (DecoyEnhanced explains a single input "
                             f"tensor), got {len(stdevs)} values")
        stdevs = stdevs[0]
    stdevs = check_number(stdevs, "stdevs")
    if stdevs < 0:
        raise ValueError(f"stdevs (the noise's standard deviation) must be >= 0, got {stdevs}")
    nt["stdevs"] = stdevs
    return nt, rest


def _wants_signed_gradient(attribution) -> bool:
    """Captum's Saliency returns |gradient| unless told otherwise; DANCE needs signed maps."""
    inner = attribution
    while isinstance(inner, NoiseTunnel):
        inner = inner.attribution_method
    return isinstance(inner, Saliency)


def aggregate_maps(maps: torch.Tensor, how: str = "range") -> torch.Tensor:
    """Pixelwise statistic over a population of maps ``[N, C, H, W]`` -> ``[C, H, W]``.

    ``"range"`` is the paper's decoy-enhanced score (Eq. 3, max - min); ``"mean"`` and ``"std"``
    (population standard deviation) serve ablations.

    Example:
        >>> import torch, dance
        >>> dance.aggregate_maps(torch.tensor([[[[1.0]]], [[[4.0]]], [[[2.0]]]])).item()
        3.0
    """
    if how == "range":
        return maps.amax(dim=0) - maps.amin(dim=0)
    if how == "mean":
        return maps.mean(dim=0)
    if how == "std":
        return maps.std(dim=0, unbiased=False)
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {how!r}")


class DecoyEnhanced(Attribution):
    """Decoy-enhanced saliency (DANCE) around any attribution method, in the style of Captum's NoiseTunnel.

    For each image ``x`` the decoys are optimised at ``layer`` (:func:`dance.generate_decoys`), the
    base ``attribution`` is computed on ``x`` and on every decoy (the original is a valid decoy),
    and the signed maps are reduced pixelwise by their range, ``max - min`` (paper Eq. 3).

    Args:
        attribution: a Captum ``Attribution`` (``Saliency``, ``IntegratedGradients``,
            ``NoiseTunnel(...)``, ...) or a callable ``f(inputs, target) -> attributions`` of the
            inputs' shape, called with gradients enabled. Captum's ``Saliency`` is called with
            ``abs=False`` unless ``abs`` is passed to :meth:`attribute`, because DANCE works on
            signed maps.
        layer: the decoy layer, a name from ``model.named_modules()`` or the module. May be left
            out when every call passes its own ``decoys``.
        epsilon: the decoy tolerance (see :func:`dance.generate_decoys`; ``relative=True`` among
            ``decoy_options`` makes it a fraction of ``max|F_l(x)|``). May be left out when every
            call passes its own ``decoys``.
        model: the network whose layer the decoys preserve; required with a plain callable, and
            taken from the Captum attribution's ``forward_func`` otherwise.
        aggregate: ``"range"`` (the paper), ``"mean"`` or ``"std"``.
        common_noise: for a Captum ``NoiseTunnel`` (SmoothGrad, SmoothGrad², VarGrad), whether the
            image and each of its decoys get the *same* noise draws (common random numbers). None
            (the default) means True for a ``NoiseTunnel`` and False otherwise. With independent
            noise (``False``, the paper-literal reading: the base method is run as it is on every
            member of the population) the range over a population also measures the Monte-Carlo
            noise of each member's estimate; with common noise the members differ only by their
            pixels, so the range measures the decoys. See "Common noise" below.
        noise_seed: seeds the common noise (an int >= 0): the draws are
            ``stdevs * torch.randn(nt_samples, C, H, W, generator=torch.Generator().manual_seed(noise_seed))``
            (float32, on the CPU, then moved to the inputs' device and dtype). None (the default)
            draws them from torch's global CPU generator, once per call, so ``torch.manual_seed``
            makes a call reproducible as with Captum's NoiseTunnel. Only with common noise.
        **decoy_options: any keyword of :func:`dance.generate_decoys` (``relative``,
            ``patch_size``, ``stride``, ``spacing``, ``masks``, ``seed``, ``solver``, ...); all but
            ``masks`` are validated here into :attr:`config`, a :class:`dance.DecoyConfig`.

    It is a Captum ``Attribution`` (``forward_func`` is the model), so Captum's wrappers compose
    with it: ``NoiseTunnel(DecoyEnhanced(...))`` averages decoy-enhanced maps over noisy copies
    (each copy gets its own decoys). :meth:`population_maps` returns the unreduced maps of the
    image and each decoy. The model is evaluated in eval mode and its train/eval flags are
    restored afterwards.

    **Common noise.** With ``common_noise`` (the default for a ``NoiseTunnel``) the call's
    NoiseTunnel keywords (``nt_type``, ``nt_samples``, ``nt_samples_batch_size``, ``stdevs``: a
    number, or a tuple of one) are taken over: ``nt_samples`` noise draws are made once per call
    (see ``noise_seed``) and the *same* draws are added to every member (the image and each decoy)
    of every image's population; the NoiseTunnel's inner method (``attribution.attribution_method``)
    runs on the noisy copies, ``batch_size`` members (each with its noisy copies) per call, and its
    maps are reduced over the draws as Captum reduces them (:func:`noise_tunnel_reduce`): with the
    same draws the result equals Captum's. Every image of a call gets the same draws, so an image's
    map does not depend on the other images of its batch (the Monte-Carlo errors of different images
    are then correlated; explain them in separate calls with different seeds where that matters).
    ``draw_baseline_from_distrib=True`` and a NoiseTunnel inside a NoiseTunnel are refused: use
    ``common_noise=False`` for them.

    Example:
        >>> import torch, dance
        >>> from captum.attr import Saliency
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2))
        >>> explainer = dance.DecoyEnhanced(Saliency(net), layer="1", epsilon=0.1, relative=True)
        >>> explainer.attribute(torch.rand(2, 3, 16, 16), target=0).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, attribution, *, layer=None, epsilon: Optional[float] = None, model: Optional[nn.Module] = None,
                 aggregate: str = "range", common_noise: Optional[bool] = None, noise_seed: Optional[int] = None,
                 **decoy_options):
        self.common_noise, self.noise_seed = _check_common_noise(attribution, common_noise, noise_seed)
        if isinstance(attribution, Attribution):
            self._attribute_fn: Callable = attribution.attribute
            self._signed_default = _wants_signed_gradient(attribution)
            forward = attribution.forward_func
            if model is None:
                if not isinstance(forward, nn.Module):
                    raise TypeError("the attribution's forward_func is not an nn.Module; pass model=")
                model = forward
        elif callable(attribution):
            self._attribute_fn = attribution
            self._signed_default = False
            if model is None:
                raise TypeError("model is required when attribution is a plain callable: pass model=net")
        else:
            raise TypeError(
                f"attribution must be a Captum Attribution or a callable f(inputs, target), "
                f"got {type(attribution).__name__}"
            )
        super().__init__(check_model(model))
        self.model = self.forward_func
        self.attribution = attribution
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.aggregate = aggregate
        #: Explicit masks ``[N, 1, H, W]`` for every image's decoys (None: the default family).
        self.masks = decoy_options.pop("masks", None)
        unknown = set(decoy_options) - DECOY_OPTIONS
        if unknown:
            raise TypeError(f"unknown decoy option(s) {sorted(unknown)}; valid: {sorted(DECOY_OPTIONS)} (solver "
                            f"settings such as c or steps go into solver=dance.Adam(...))")
        self.layer = layer
        self.layer_name = None if layer is None else resolve_layer(self.model, layer)[0]
        #: The :class:`dance.DecoyConfig` of the decoys this explainer makes (None: decoys are passed per call).
        self.config: Optional[DecoyConfig] = None
        if (layer is None) != (epsilon is None):
            raise TypeError(f"epsilon (the decoy tolerance) and layer go together: got layer={layer!r}, "
                            f"epsilon={epsilon!r}; give both to make decoys, or neither and pass decoys= to each call")
        if epsilon is not None:
            self.config = DecoyConfig(epsilon=epsilon, **decoy_options)
        elif decoy_options or self.masks is not None:
            raise TypeError(f"decoy options {sorted(decoy_options)} need layer= and epsilon= (they make decoys)")
        self._n_classes = {}
        self._forward_seconds = {}
        self._forward_measured = set()

    #: Whether a NoiseTunnel's noise draws are shared by an image and its decoys (see "Common noise").
    common_noise: bool
    #: The seed of the common noise (None: torch's global generator).
    noise_seed: Optional[int]

    @property
    def epsilon(self) -> Optional[float]:
        """The decoy tolerance (None when decoys are passed per call)."""
        return None if self.config is None else self.config.epsilon

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return bool(getattr(self.attribution, "multiplies_by_inputs", False))

    def decoys(self, inputs: torch.Tensor, additional_forward_args=None) -> List[Decoys]:
        """The decoys of every image of ``inputs [B, C, H, W]``, optimised in one batched loop
        (``additional_forward_args`` as in :meth:`attribute`)."""
        x = check_images(inputs, self.model)
        return self._make_decoys(x, additional_forward_args)

    def _make_decoys(self, x: torch.Tensor, forward_args=None) -> List[Decoys]:
        if self.config is None or self.layer_name is None:
            raise ValueError("this DecoyEnhanced makes no decoys (it was built without layer= and epsilon=): "
                             "pass decoys= to the call, or build it with layer=... and epsilon=...")
        return generate_decoys_batch(self.model, x, self.layer_name, self.config, masks=self.masks,
                                     additional_forward_args=forward_args)

    # Captum's wrappers (NoiseTunnel) call attribute.__wrapped__, which its log_usage decorator sets.
    @log_usage()
    def attribute(self, inputs: torch.Tensor, target: Optional[Target] = None, *,
                  batch_size: Optional[int] = None, return_decoys: bool = False,
                  decoys: Optional[List[Decoys]] = None, **attribution_kwargs):
        """Decoy-enhanced attributions of a batch.

        Args:
            inputs: ``[B, C, H, W]`` float images in [0, 1] (one image ``[C, H, W]`` is accepted).
            target: the class to explain, in any of Captum's forms: an int (or ``(k,)``) for every
                image, or one class per image as a list of ints (or of 1-tuples) or a LongTensor
                of length B.
            batch_size: at most this many images (originals and decoys) per call of the base
                attribution, to bound memory; default: all at once.
            return_decoys: also return the list of :class:`Decoys`, one per image.
            decoys: the populations to use instead of optimising new ones (one :class:`Decoys`
                per image, of these very images), e.g. to compare base methods on the same decoys.
            **attribution_kwargs: passed to the base method (``n_steps``, ``nt_samples``, ...); with
                common noise, NoiseTunnel's own keywords are used here and the rest go to its inner method.
                ``baselines`` and the tensors of ``additional_forward_args`` with one entry per
                image (first axis B) are repeated for the image's decoys; the model is called as
                ``model(x, *additional_forward_args)`` by the decoy optimisation too.

        Returns:
            ``[B, C, H, W]`` decoy-enhanced maps (and the decoys if ``return_decoys``).
        """
        x, maps, decoys = self._population_maps(inputs, target, batch_size, decoys, attribution_kwargs)
        out = torch.stack([aggregate_maps(m, self.aggregate) for m in maps])
        return (out, decoys) if return_decoys else out

    def population_maps(self, inputs: torch.Tensor, target: Optional[Target] = None, *,
                        batch_size: Optional[int] = None, decoys: Optional[List[Decoys]] = None,
                        **attribution_kwargs) -> List[torch.Tensor]:
        """The unreduced maps: for each image, the base method's map of the image and of each decoy.

        Takes the arguments of :meth:`attribute`. Returns a list of ``B`` tensors
        ``[1 + N_b, C, H, W]``, the image's map first; ``dance.aggregate_maps`` of entry ``b``
        is the map :meth:`attribute` returns for image ``b``.
        """
        return self._population_maps(inputs, target, batch_size, decoys, attribution_kwargs)[1]

    def _population_maps(self, inputs, target, batch_size, decoys, kwargs):
        x = check_images(inputs, self.model)
        check_dtype(x, self.model)
        B = x.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size")
        with gradients_on(), eval_mode(self.model):  # base methods need autograd, also in inference_mode
            x = ordinary(x)
            if isinstance(target, torch.Tensor):
                target = ordinary(target)
            # The number of classes, to check target, costs one forward per input shape, once.
            key = (tuple(x.shape[1:]), x.device.type, x.dtype)
            if key not in self._n_classes:
                with torch.no_grad():
                    clock = time.perf_counter()
                    self._n_classes[key] = check_logits(self._forward(x[:1], kwargs, B)).shape[-1]
                    self._forward_seconds[key] = time.perf_counter() - clock
            t = check_target(target, B, self._n_classes[key], x.device)
            if decoys is None:
                decoys = self._make_decoys(x, kwargs.get("additional_forward_args"))
            else:
                _check_decoys_belong(decoys, x)
            maps = self._maps_of_populations(x, decoys, t, batch_size, kwargs, self._forward_seconds[key])
        return x, maps, decoys

    def _forward(self, batch: torch.Tensor, kwargs: dict, images: int):
        """The model on copies of the first of ``images`` images, with its extra forward arguments."""
        image_args = split_forward_args(kwargs.get("additional_forward_args"), images)[0]
        return self.model(batch) if image_args is None else self.model(batch, *image_args.rows(batch.shape[0]))

    def _announce(self, x: torch.Tensor, rows: int, forward_seconds: float, kwargs: dict, passes: int = 1) -> None:
        """Say on stderr what the base attribution over every image and decoy will cost, when it is long
        (estimated at ``passes`` gradients per image from a timed forward pass; see ``DecoyConfig.progress``)."""
        progress = None if self.config is None else self.config.progress
        per_gradient = (1.0 + BACKWARD_FORWARDS) * passes
        if progress is False or (progress is None and rows * per_gradient * forward_seconds <= PROGRESS_SECONDS):
            return
        key = (tuple(x.shape[1:]), x.device.type, x.dtype)
        if progress is None and key not in self._forward_measured:
            # The first forward may include one-time warm-up: measure again, once per input shape.
            again = seconds_per_image(lambda b: self._forward(b, kwargs, x.shape[0]), x[:1])
            self._forward_seconds[key] = forward_seconds = min(forward_seconds, again)
            self._forward_measured.add(key)
            if rows * per_gradient * forward_seconds <= PROGRESS_SECONDS:
                return
        method = type(self.attribution).__name__ if isinstance(self.attribution, Attribution) else "the attribution"
        per_image = "one gradient per image" if passes == 1 else f"{passes} gradients (noisy copies) per image"
        print(f"dance: {method} on {rows} images (the {x.shape[0]} image(s) and their decoys): about "
              f"{rows * per_gradient * forward_seconds:.0f} s on this machine at {per_image} (methods "
              f"that take several, such as IntegratedGradients' n_steps, take that many times longer; "
              f"progress=False hides this)", file=sys.stderr, flush=True)

    def _maps_of_populations(self, x, decoys, target, batch_size, kwargs, forward_seconds: float) -> torch.Tensor:
        # One flat batch of every original and decoy, so the base method runs in few, large calls.
        populations = [torch.cat([x[b:b + 1], d.images.to(x.device, x.dtype)]) for b, d in enumerate(decoys)]
        sizes = [p.shape[0] for p in populations]
        rows = torch.cat(populations)
        row_target = torch.cat([target[b:b + 1].expand(n) for b, n in enumerate(sizes)])
        if self._signed_default and "abs" not in kwargs:
            kwargs = dict(kwargs, abs=False)
        step = rows.shape[0] if batch_size is None else batch_size
        if self.common_noise:
            nt, kwargs = _noise_options(kwargs)
            self._announce(x, rows.shape[0], forward_seconds, kwargs, passes=nt["nt_samples"])
            kwargs, arg_rows = _per_row(kwargs, sizes, x.shape[0])
            return list(self._common_noise_maps(rows, row_target, step, nt, kwargs, arg_rows).split(sizes))
        self._announce(x, rows.shape[0], forward_seconds, kwargs)
        kwargs, arg_rows = _per_row(kwargs, sizes, x.shape[0])
        out = []
        with torch.enable_grad():
            for lo in range(0, rows.shape[0], step):
                # Our own copy, marked for gradients so that Captum need not switch it on (and warn).
                chunk = rows[lo:lo + step].clone().requires_grad_(True)
                a = self._attribute_fn(chunk, target=row_target[lo:lo + step], **_chunk(kwargs, lo, lo + step, arg_rows))
                if isinstance(a, tuple):
                    a = a[0]
                if not isinstance(a, torch.Tensor) or a.shape != chunk.shape:
                    raise ValueError(
                        f"the attribution must return a tensor of the inputs' shape {tuple(chunk.shape)}, "
                        f"got {getattr(a, 'shape', type(a).__name__)}"
                    )
                out.append(a.detach())
        return list(torch.cat(out).split(sizes))

    def draw_noise(self, inputs: torch.Tensor, nt_samples: int, stdevs: float) -> torch.Tensor:
        """The common noise of one call: ``[nt_samples, C, H, W]`` draws for images like ``inputs``
        (``[B, C, H, W]`` or ``[C, H, W]``), on their device and in their dtype (see ``noise_seed``).
        A call with ``noise_seed=None`` draws from torch's global CPU generator."""
        shape = tuple(inputs.shape[-3:]) if inputs.dim() == 4 else tuple(inputs.shape)
        generator = None if self.noise_seed is None else seeded_generator(self.noise_seed, "noise_seed")
        noise = torch.randn((check_int(nt_samples, "nt_samples"),) + shape, generator=generator) * stdevs
        return noise.to(device=inputs.device, dtype=inputs.dtype)

    def _common_noise_maps(self, rows, row_target, step, nt, kwargs, arg_rows) -> torch.Tensor:
        """NoiseTunnel's maps of every row (image or decoy), all rows sharing the same noise draws."""
        inner = self.attribution.attribution_method
        n = nt["nt_samples"]
        group = n if nt["nt_samples_batch_size"] is None else min(n, nt["nt_samples_batch_size"])
        noise = self.draw_noise(rows, n, nt["stdevs"])
        out = []
        with torch.enable_grad():
            for lo in range(0, rows.shape[0], step):
                members = rows[lo:lo + step]
                k = members.shape[0]
                chunk_kwargs = _chunk(kwargs, lo, lo + step, arg_rows)
                total = total_sq = None
                for s0 in range(0, n, group):
                    draws = noise[s0:s0 + group]
                    m = draws.shape[0]
                    with torch.no_grad():  # Captum's layout: member-major, the draws of a member together
                        noisy = members.repeat_interleave(m, dim=0) + draws.repeat(k, 1, 1, 1)
                    noisy.requires_grad_(True)
                    a = inner.attribute(noisy, target=row_target[lo:lo + step].repeat_interleave(m),
                                        **_expand_samples(chunk_kwargs, k, m))
                    if isinstance(a, tuple):
                        a = a[0]
                    if not isinstance(a, torch.Tensor) or a.shape != noisy.shape:
                        raise ValueError(
                            f"the attribution must return a tensor of the inputs' shape {tuple(noisy.shape)}, "
                            f"got {getattr(a, 'shape', type(a).__name__)}"
                        )
                    a = a.detach().view(k, m, *a.shape[1:])
                    part, part_sq = a.sum(dim=1), torch.pow(a, 2).sum(dim=1)
                    total = part if total is None else total + part
                    total_sq = part_sq if total_sq is None else total_sq + part_sq
                out.append(_smoothing(total, total_sq, n, nt["nt_type"]))
        return torch.cat(out)


def _check_common_noise(attribution, common_noise, noise_seed) -> Tuple[bool, Optional[int]]:
    """``(common_noise, noise_seed)`` of :class:`DecoyEnhanced`, checked against the attribution."""
    if common_noise is not None and not isinstance(common_noise, bool):
        raise TypeError(f"common_noise must be True, False or None (None: True for a Captum NoiseTunnel), "
                        f"got {common_noise!r}")
    tunnel = isinstance(attribution, NoiseTunnel)
    if common_noise is None:
        common_noise = tunnel
    name = type(attribution).__name__
    if common_noise and not tunnel:
        raise ValueError(f"common_noise=True shares a Captum NoiseTunnel's noise draws between an image and its "
                         f"decoys, but the attribution is a {name}: wrap it, NoiseTunnel(Saliency(model)), or leave "
                         f"common_noise out")
    if common_noise and isinstance(attribution.attribution_method, NoiseTunnel):
        raise ValueError("common_noise=True supports one NoiseTunnel around a method, not a NoiseTunnel inside a "
                         "NoiseTunnel: pass common_noise=False (independent noise) or remove one NoiseTunnel")
    if noise_seed is not None:
        if not common_noise:
            raise ValueError(f"noise_seed seeds the common noise, which is off (common_noise=False or a {name}); "
                             f"leave noise_seed out and seed the independent noise with torch.manual_seed")
        check_seed(noise_seed, "noise_seed")
    return common_noise, noise_seed


def _expand_samples(kwargs: dict, rows: int, samples: int) -> dict:
    """The inner method's keywords for ``rows`` members with ``samples`` noisy copies each, expanded as
    Captum's NoiseTunnel expands them: per-row ``baselines`` and every tensor of
    ``additional_forward_args`` (not 0-d) repeated for each copy, in place."""
    out = dict(kwargs)
    value = out.get("baselines")
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows and rows > 1:
        out["baselines"] = value.repeat_interleave(samples, dim=0)
    args = _forward_args(out)
    if args is not None:
        out["additional_forward_args"] = tuple(a.repeat_interleave(samples, dim=0)
                                               if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)
    return out


#: The neighbourhoods :class:`YehSmoothed` averages over: the ball of ``rho = L_inf`` (Yeh et al.'s
#: experiments) or of ``rho = L2``.
BALL_NORMS = ("linf", "l2")
#: How :class:`YehSmoothed` reduces the maps of the samples: the feature-wise mean (Eq. 3 with
#: ``D = L2, alpha = 2``) or median (``D = L1, alpha = 1``), Yeh et al.'s Proposition 3.1.
SMOOTHING_REDUCTIONS = ("mean", "median")


def ball_noise(shape, radius: float, n_samples: int, *, norm: str = "linf", seed: int = 0,
               dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    r"""``n_samples`` offsets ``u`` drawn uniformly from the ball :math:`\{u : \rho(u, 0) \le R\}` in ``shape``.

    ``norm="linf"``: every coordinate uniform in ``[-R, R]``. ``norm="l2"``: a Gaussian direction
    scaled to length :math:`R\,U^{1/d}` (``d`` = the number of coordinates, ``U`` uniform in [0, 1]),
    which is uniform in the :math:`L_2` ball. Drawn on the CPU from a generator seeded with ``seed``
    (in float32, then cast), so a seed gives the same offsets on every device and dtype.

    Returns:
        ``[n_samples, *shape]`` tensor.

    Example:
        >>> import dance
        >>> u = dance.enhanced.ball_noise((3, 4, 4), 0.3, 5, seed=0)
        >>> u.shape, bool(u.abs().max() <= 0.3)
        (torch.Size([5, 3, 4, 4]), True)
    """
    radius = check_range(radius, "radius", 0.0, float("inf"), closed_high=False)
    n_samples = check_int(n_samples, "n_samples")
    check_choice(norm, "norm", BALL_NORMS)
    g = seeded_generator(seed)
    shape = tuple(shape)
    if norm == "linf":
        u = (2 * torch.rand((n_samples,) + shape, generator=g) - 1) * radius
    else:
        d = math.prod(shape)
        direction = torch.randn((n_samples, d), generator=g)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(torch.finfo(direction.dtype).tiny)
        length = radius * torch.rand((n_samples, 1), generator=g) ** (1.0 / d)
        u = (direction * length).view((n_samples,) + shape)
    return u.to(device=device, dtype=dtype)


class YehSmoothed(Attribution):
    r"""Yeh et al.'s smoothed explanation (2019, §3.1, Eq. 3), around any attribution method, in the style of
    Captum's NoiseTunnel.

    **The reading.** Eq. 3 (average version) defines the smoothed explanation of ``x`` as the
    :math:`\bar\Phi(x)` minimising :math:`E_{\rho(u,0) \le R}\, D(\bar\Phi(x), \Phi(x + u))^\alpha`,
    the expectation over offsets ``u`` uniform in the ball of radius ``R`` (§2: "we chose
    :math:`P_x` as the uniform distribution over the neighborhood of radius r"). By their
    Proposition 3.1 the minimiser is the feature-wise **mean** of :math:`\Phi(x + u)` for
    ``D = L2, alpha = 2`` (``reduce="mean"``, the default; SmoothGrad with uniform instead of
    Gaussian noise) and the feature-wise **median** for ``D = L1, alpha = 1`` (``reduce="median"``).
    Their experiments take :math:`\rho = L_\infty` (``norm="linf"``, the default) and ``R = 0.3``
    on MNIST and CIFAR-10 in [0, 1] pixels (the default ``radius``). The expectation is estimated
    by Monte Carlo over ``n_samples`` offsets (the paper does not give its number; 50 is the number
    of samples of its sensitivity estimates). The offsets are not clipped to the pixel range (Eq. 3
    has no clipping; pass ``clamp=(0.0, 1.0)`` to clip). ``R = 0`` gives the base method's map
    (the paper: "when R = 0, the smoothed explanation equals the original").

    Every image of a batch is smoothed with the **same** ``n_samples`` offsets (drawn from
    ``seed``), so an image's map does not depend on the batch it comes in, and two calls with the
    same seed give the same maps.

    Args:
        attribution: a Captum ``Attribution`` (``Saliency``, ``IntegratedGradients``, ...) or a
            callable ``f(inputs, target) -> attributions`` of the inputs' shape. Its keyword
            arguments pass through unchanged (Captum's ``Saliency`` returns :math:`|\nabla|` unless
            ``abs=False`` is passed to :meth:`attribute`).
        radius: ``R >= 0``, the radius of the ball (Yeh et al.: 0.3).
        n_samples: Monte Carlo offsets per image.
        norm: ``"linf"`` or ``"l2"``, the input distance :math:`\rho` of the ball (:data:`BALL_NORMS`).
        reduce: ``"mean"`` or ``"median"`` (:data:`SMOOTHING_REDUCTIONS`).
        seed: seed of the offsets.
        clamp: ``None`` (Eq. 3) or ``(low, high)`` to clip ``x + u`` to a pixel range.
        model: the network; required with a plain callable, taken from the Captum attribution's
            ``forward_func`` otherwise.

    The model is evaluated in eval mode and its train/eval flags are restored afterwards; the
    inputs are never modified.

    Example:
        >>> import torch, dance
        >>> from captum.attr import Saliency
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2))
        >>> smoothed = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=8, seed=0)
        >>> maps = smoothed.attribute(torch.rand(2, 3, 16, 16), target=0, abs=False)
        >>> maps.shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, attribution, *, radius: float = 0.3, n_samples: int = 50, norm: str = "linf",
                 reduce: str = "mean", seed: int = 0, clamp: Optional[Tuple[float, float]] = None,
                 model: Optional[nn.Module] = None):
        if isinstance(attribution, Attribution):
            self._attribute_fn: Callable = attribution.attribute
            if model is None:
                if not isinstance(attribution.forward_func, nn.Module):
                    raise TypeError("the attribution's forward_func is not an nn.Module; pass model=")
                model = attribution.forward_func
        elif callable(attribution):
            self._attribute_fn = attribution
            if model is None:
                raise TypeError("model is required when attribution is a plain callable: pass model=net")
        else:
            raise TypeError(f"attribution must be a Captum Attribution or a callable f(inputs, target), "
                            f"got {type(attribution).__name__}")
        super().__init__(check_model(model))
        self.model = self.forward_func
        self.attribution = attribution
        self.radius = check_range(radius, "radius", 0.0, float("inf"), closed_high=False)
        self.n_samples = check_int(n_samples, "n_samples")
        self.norm = check_choice(norm, "norm", BALL_NORMS)
        self.reduce = check_choice(reduce, "reduce", SMOOTHING_REDUCTIONS)
        self.seed = check_seed(seed)
        self.clamp = None if clamp is None else check_interval(clamp, "clamp")
        self._n_classes = {}

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return bool(getattr(self.attribution, "multiplies_by_inputs", False))

    @log_usage()
    def attribute(self, inputs: torch.Tensor, target: Optional[Target] = None, *,
                  batch_size: Optional[int] = None, **attribution_kwargs) -> torch.Tensor:
        """Smoothed attributions of a batch.

        Args:
            inputs: ``[B, C, H, W]`` float tensor (any real values; never modified).
            target: the class to explain in any of Captum's forms (an int or ``(k,)``, a list of one
                class per image, a LongTensor of length B), or None for a model with one output.
            batch_size: at most this many perturbed inputs per call of the base attribution (to
                bound memory); default: all ``B * n_samples`` at once.
            **attribution_kwargs: passed to the base method (``abs``, ``n_steps``, ...);
                ``baselines`` and the tensors of ``additional_forward_args`` with one entry per
                image are repeated for that image's samples.

        Returns:
            ``[B, C, H, W]`` smoothed maps, detached.
        """
        x = check_batch(inputs, self.model)
        B, n = x.shape[0], self.n_samples
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size")
        with gradients_on(), eval_mode(self.model):
            x = ordinary(x)
            t = None
            if target is not None:
                if isinstance(target, torch.Tensor):
                    target = ordinary(target)
                key = (tuple(x.shape[1:]), x.device.type, x.dtype)
                if key not in self._n_classes:
                    with torch.no_grad():
                        image_args = split_forward_args(attribution_kwargs.get("additional_forward_args"), B)[0]
                        first = x[:1]
                        out = self.model(first) if image_args is None else self.model(first, *image_args.rows(1))
                        self._n_classes[key] = check_logits(out).shape[-1]
                t = check_target(target, B, self._n_classes[key], x.device).repeat_interleave(n)
            u = ball_noise(x.shape[1:], self.radius, n, norm=self.norm, seed=self.seed, dtype=x.dtype, device=x.device)
            rows = (x.unsqueeze(1) + u.unsqueeze(0)).flatten(0, 1)  # image-major: image b's samples are rows b*n ..
            if self.clamp is not None:
                rows = rows.clamp(*self.clamp)
            kwargs, arg_rows = _per_row(attribution_kwargs, [n] * B, B)
            step = rows.shape[0] if batch_size is None else batch_size
            out = []
            for lo in range(0, rows.shape[0], step):
                chunk = rows[lo:lo + step].clone().requires_grad_(True)
                a = self._attribute_fn(chunk, target=None if t is None else t[lo:lo + step],
                                       **_chunk(kwargs, lo, lo + step, arg_rows))
                if isinstance(a, tuple):
                    a = a[0]
                if not isinstance(a, torch.Tensor) or a.shape != chunk.shape:
                    raise ValueError(f"the attribution must return a tensor of the inputs' shape {tuple(chunk.shape)}, "
                                     f"got {getattr(a, 'shape', type(a).__name__)}")
                out.append(a.detach())
        maps = torch.cat(out).view(B, n, *x.shape[1:])
        if self.reduce == "mean":
            return maps.mean(dim=1)
        ordered = maps.sort(dim=1).values  # the median of an even count: the mean of the two middle values
        return (ordered[:, (n - 1) // 2] + ordered[:, n // 2]) / 2


#: Keyword arguments of base methods that may hold one entry per image (Captum's convention).
PER_IMAGE_KWARGS = ("baselines", "additional_forward_args")


def _forward_args(kwargs: dict) -> Optional[tuple]:
    args = kwargs.get("additional_forward_args")
    return None if args is None else args if isinstance(args, tuple) else (args,)


def _per_row(kwargs: dict, sizes: List[int], batch: int) -> Tuple[dict, Tuple[bool, ...]]:
    """Per-image entries repeated for every member of each image's population: ``baselines
    [B, C, H, W]`` and the tensors of ``additional_forward_args`` with a first axis of B (as in
    Captum). Returns the keyword arguments and which forward arguments now hold one entry per row."""
    out = dict(kwargs)
    value = out.get("baselines")
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == batch and batch > 1:
        out["baselines"] = torch.cat([value[b:b + 1].expand(n, *value.shape[1:]) for b, n in enumerate(sizes)])
    elif isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] not in (1, batch):
        raise ValueError(f"baselines must hold one entry per image ({batch}) or one for all, "
                         f"got {value.shape[0]}")
    args = _forward_args(out)
    if args is None:
        return out, ()
    rows = tuple(isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == batch for a in args)
    out["additional_forward_args"] = tuple(
        torch.cat([a[b:b + 1].expand(n, *a.shape[1:]) for b, n in enumerate(sizes)]) if r else a
        for a, r in zip(args, rows))
    return out, rows


def _chunk(kwargs: dict, lo: int, hi: int, arg_rows: Tuple[bool, ...]) -> dict:
    """The rows ``lo:hi`` of the per-row keyword arguments (left whole when they are shared)."""
    out = dict(kwargs)
    value = out.get("baselines")
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] > 1:
        out["baselines"] = value[lo:hi]
    if arg_rows:
        out["additional_forward_args"] = tuple(a[lo:hi] if r else a
                                               for a, r in zip(out["additional_forward_args"], arg_rows))
    return out


def _check_decoys_belong(decoys, x: torch.Tensor) -> None:
    """Decoys passed to a call must be one :class:`Decoys` per image, made from that very image."""
    B = x.shape[0]
    if not isinstance(decoys, (list, tuple)) or len(decoys) != B or not all(isinstance(d, Decoys) for d in decoys):
        raise ValueError(f"decoys must be a list of {B} Decoys objects, one per image of inputs")
    for b, d in enumerate(decoys):
        original = d.original.to(x.device, x.dtype)
        if original.shape != x[b:b + 1].shape or not torch.equal(original, x[b:b + 1]):
            raise ValueError(f"decoys[{b}] were made for another image (Decoys.original differs from inputs[{b}]); "
                             f"pass the decoys of these inputs, in the same order")
