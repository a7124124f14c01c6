"""The argument checks of every public function of ``dance``: one place, one rule.

Each failure names the argument and says how to fix it. The exception type follows one rule:
``TypeError`` when the argument is the wrong *kind* of thing (not a tensor, an integer dtype
where pixels are expected, a float where a count or a class index is expected), ``ValueError``
when it is the right kind with a wrong *value* (shape, range, NaN, length, device). Nothing here
modifies what it checks: tensors are read (and detached views returned), never written.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from types import ModuleType
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

#: What the metrics and attacks accept as ``target``: None (the predicted class), an int, a
#: sequence of ints or an integer tensor with one class per image.
TargetType = Union[None, int, Sequence[int], torch.Tensor]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool


def check_number(value, name: str) -> float:
    """A finite real number (int, float or one-element tensor), returned as a float."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_positive(value, name: str) -> float:
    """A positive finite number, returned as a float."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not (value > 0.0) or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_range(value, name: str, low: float, high: float, *, closed_low: bool = True,
                closed_high: bool = True) -> float:
    """A finite number in the interval ``[low, high]`` (open ends as asked), returned as a float."""
    v = check_number(value, name)
    ok = (v >= low if closed_low else v > low) and (v <= high if closed_high else v < high)
    if not ok:
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_int(value, name: str, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """An ``int`` (not a bool, not a float, even a whole one) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise TypeError(f"{name} must be an int {bound}, got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_seed(seed, name: str = "seed") -> int:
    """A seed is an ``int`` >= 0 (a float seed would be truncated silently)."""
    return check_int(seed, name, minimum=0)


def seeded_generator(seed, name: str = "seed") -> torch.Generator:
    """A CPU generator seeded with the checked ``seed``: random draws are made on the CPU and
    moved, so a seed gives the same numbers on every device."""
    g = torch.Generator(device="cpu")
    g.manual_seed(check_seed(seed, name))
    return g


def check_interval(value, name: str) -> Tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers with ``low < high``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = check_number(value[0], f"{name}[0]"), check_number(value[1], f"{name}[1]")
    if not low < high:
        raise ValueError(f"{name} = ({low:g}, {high:g}) must have low < high, e.g. (0.0, 1.0)")
    return low, high


def check_choice(value, name: str, choices: Sequence) -> object:
    """``value`` must be one of ``choices`` (compared by equality, strings case-sensitive)."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Optional dependencies (the "metrics" extra)
# --------------------------------------------------------------------------------------------

#: How to install the optional dependencies of dance (scikit-image, Pillow, pandas).
METRICS_EXTRA = 'pip install "dance-saliency[metrics]"'


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency of one function of dance is not installed (an ``ImportError``)."""


def optional_import(module: str, *, package: str, needed_by: str) -> ModuleType:
    """Import ``module`` (from the distribution ``package``) for the function ``needed_by``.

    A missing module is a :class:`MissingExtraError` that names the function, the package and the
    fix (``pip install "dance-saliency[metrics]"``) instead of a bare ``ModuleNotFoundError``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingExtraError(
            f"{needed_by} needs {package}, which is not installed ({err}); it is an optional dependency "
            f"of dance: {METRICS_EXTRA}",
            name=err.name or module,
        ) from err


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def check_model(model, name: str = "model") -> nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_callable_model(model, name: str = "model") -> Callable:
    """``model`` must be an ``nn.Module`` or a callable returning logits."""
    if not callable(model):
        raise TypeError(f"{name} must be a torch.nn.Module (or a callable returning logits), "
                        f"got {type(model).__name__}")
    return model


def _first_tensor(model: nn.Module) -> Optional[torch.Tensor]:
    for t in model.parameters():
        return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return None


def check_logits(out, name: str = "model") -> torch.Tensor:
    """The output of a classifier must be one ``[B, classes]`` tensor of logits."""
    if isinstance(out, (tuple, list, dict)):
        raise TypeError(
            f"{name} must return a [B, classes] tensor of logits, got a {type(out).__name__}; wrap it in an "
            f"nn.Module whose forward returns only the logits (e.g. model(x)[0] or model(x)['logits'])"
        )
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a [B, classes] tensor of logits, got {got}")
    return out


class _FirstConv(Exception):
    """Raised by the pre-hook of the first convolution the forward pass reaches."""


def expected_channels(model: nn.Module, x: Optional[torch.Tensor] = None) -> Optional[int]:
    """Input channels of the first convolution in ``model``, or None if there is none.

    Without ``x``: the first convolution *declared* (``model.modules()`` order). With ``x``
    (one image batch): the first convolution the forward pass of ``x`` *calls*, found by a
    forward pre-hook that stops the pass there (so a model that declares its head before its
    stem is judged by its stem); the declared order is the fallback when the pass fails before
    reaching a convolution.
    """
    convs = [m for m in model.modules() if isinstance(m, _CONVS)]
    if not convs:
        return None
    if x is None or len({m.in_channels for m in convs}) == 1:
        return convs[0].in_channels
    reached = []

    def hook(module, _inputs):
        reached.append(module.in_channels)
        raise _FirstConv

    handles = [m.register_forward_pre_hook(hook) for m in convs]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1])
    except _FirstConv:
        pass
    except Exception:  # the pass failed before any convolution: fall back to the declared order
        pass
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags:
            module.training = flag
    return reached[0] if reached else convs[0].in_channels


def check_device(x: torch.Tensor, model: nn.Module, name: str = "inputs") -> None:
    """``x`` must be on the device of the model's parameters (when it has any)."""
    ref = _first_tensor(model) if isinstance(model, nn.Module) else None
    if ref is not None and ref.device != x.device:
        raise ValueError(f"{name} is on {x.device} but the model's parameters are on {ref.device}; "
                         f"move one of them, e.g. {name}.to({str(ref.device)!r})")


def check_dtype(x: torch.Tensor, model, name: str = "inputs") -> None:
    """``x`` must have the floating dtype of the model's parameters (when it has any)."""
    ref = _first_tensor(model) if isinstance(model, nn.Module) else None
    if ref is not None and ref.is_floating_point() and ref.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {ref.dtype}; "
                        f"convert with {name}.to({ref.dtype}) (or the model with model.to({x.dtype}))")


# --------------------------------------------------------------------------------------------
# Images, maps
# --------------------------------------------------------------------------------------------

def check_images(x, model: Optional[nn.Module] = None, name: str = "inputs", single: bool = False, *,
                 batch_only: bool = False, pixel_range: bool = True) -> torch.Tensor:
    """Validate a batch ``[B, C, H, W]`` (or one image ``[C, H, W]``) of finite float pixels.

    Args:
        x: the tensor to check (never modified).
        model: if given, ``x`` must be on its device and have the channels of the first
            convolution its forward pass calls.
        name: the argument's name in the messages.
        single: ``x`` must be one image (``[C, H, W]`` or ``[1, C, H, W]``).
        batch_only: ``x`` must be 4-d (a ``[C, H, W]`` image is refused, not unsqueezed).
        pixel_range: values must lie in [0, 1] (``dance`` works in [0, 1] pixel space).

    Returns:
        A detached 4-d view (never the caller's tensor object itself).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(x).__name__}")
    if not torch.is_floating_point(x):
        hint = f"; convert with {name}.float() / 255 if it holds 8-bit pixels" if pixel_range else \
            f"; convert with {name}.float()"
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}{hint}")
    x = x.detach()  # checks must not record autograd history nor warn about it
    if x.dim() == 3 and not batch_only:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        want = "[C, H, W] or [1, C, H, W]" if single else "[B, C, H, W]"
        hint = f"; add a batch dimension with {name}.unsqueeze(0) for one image" if x.dim() == 3 else ""
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if single and x.shape[0] != 1:
        raise ValueError(
            f"{name} must be one image, [C, H, W] or [1, C, H, W], got a batch of {x.shape[0]}; "
            f"call once per image (dance.DecoyEnhanced handles batches)"
        )
    if model is not None:
        check_device(x, model, name)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values; pixels must be finite"
                         + (" and in [0, 1]" if pixel_range else ""))
    if pixel_range:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} must hold pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                f"rescale the image and wrap a model that expects normalised inputs in dance.Normalized"
            )
    if isinstance(model, nn.Module):
        channels = expected_channels(model)
        if channels is not None and x.shape[1] != channels:
            channels = expected_channels(model, x)  # the first convolution actually called
        if channels is not None and x.shape[1] != channels:
            raise ValueError(
                f"{name} has {x.shape[1]} channels but the model's first convolution expects {channels}"
            )
    return x


def check_batch(x, model=None, name: str = "inputs", *, pixel_range: bool = False) -> torch.Tensor:
    """A ``[B, C, H, W]`` batch for ``model`` (an ``nn.Module`` or any callable): finite floats,
    not empty, on the model's device, with its dtype and channels; in [0, 1] if ``pixel_range``."""
    module = model if isinstance(model, nn.Module) else None
    x = check_images(x, module, name, batch_only=True, pixel_range=pixel_range)
    if module is not None:
        check_dtype(x, module, name)
    return x


def check_maps(maps, name: str = "maps") -> torch.Tensor:
    """A real, finite, non-empty tensor of maps (any rank); returns it detached."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {maps.dtype}; convert with {name}.float()")
    if maps.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(maps.shape)}")
    maps = maps.detach()
    if maps.is_floating_point():
        bad = ~torch.isfinite(maps)
        if bool(bad.any()):
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or Inf value(s) of {maps.numel()}; a map must be finite "
                f"(the attribution method failed on these inputs: check the model and the inputs)"
            )
    return maps


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

def _check_class_range(t: torch.Tensor, n_classes: Optional[int]) -> None:
    if n_classes is not None and t.numel() and (bool((t < 0).any()) or bool((t >= n_classes).any())):
        raise ValueError(f"target must be in [0, {n_classes - 1}] for this model, got {t.tolist()}")


def _class_index(value, what: str) -> int:
    """One class index given the Captum way: an int, or a 1-tuple ``(k,)`` (an index into a
    ``[B, classes]`` output's only non-batch axis)."""
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(f"{what} is a tuple {value!r}: Captum reads a tuple as an index into the model's "
                             f"output axes after the batch, and a classifier's [B, classes] output has one; "
                             f"pass (k,) or k for one class, or a list / LongTensor with one class per image")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer class index, got {value!r} ({type(value).__name__})")
    return value


def check_target(target, batch: int, n_classes: Optional[int], device) -> torch.Tensor:
    """``target`` in any of Captum's forms for a ``[B, classes]`` output; returns a LongTensor [batch].

    Accepted: an int or a 1-tuple ``(k,)`` (one class for every image); a LongTensor of one or
    ``batch`` values; a list of ``batch`` ints or of ``batch`` 1-tuples (one class per image).
    """
    if isinstance(target, bool):
        raise TypeError("target must be an int or a LongTensor of length B, got a bool")
    if isinstance(target, (int, tuple)):
        t = torch.full((batch,), _class_index(target, "target"), dtype=torch.long, device=device)
    elif isinstance(target, list):
        if len(target) != batch:
            raise ValueError(f"target is a list of {len(target)} classes, but inputs hold {batch} images: "
                             f"give one class per image (or one int for all)")
        t = torch.tensor([_class_index(v, f"target[{i}]") for i, v in enumerate(target)], dtype=torch.long,
                         device=device)
    elif isinstance(target, torch.Tensor):
        if target.dtype not in _INTEGER_DTYPES:
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
            f"target must be an int, a list of ints or a LongTensor of length B, got {type(target).__name__}"
        )
    _check_class_range(t, n_classes)
    return t


def as_target(target: TargetType, batch: int, device, n_classes: Optional[int] = None) -> Optional[torch.Tensor]:
    """Class indices per image as a ``LongTensor[batch]`` (None stays None).

    Accepts an int, a sequence of ints or an integer tensor of one or ``batch`` values; a float,
    a bool or a float tensor is a ``TypeError`` (a class index is never rounded), a wrong length
    or a class outside ``[0, n_classes)`` a ``ValueError``.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, a sequence of ints or a LongTensor[B], got a bool")
    if isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long, device=device)
    else:
        if isinstance(target, torch.Tensor):
            t = target.detach()
        elif isinstance(target, (list, tuple)):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
                raise TypeError(f"target must hold integer class indices, got {list(target)!r}")
            t = torch.tensor(list(target), dtype=torch.long)
        else:
            raise TypeError(f"target must be None, an int, a sequence of ints or a LongTensor[B], "
                            f"got {type(target).__name__}")
        if t.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}; "
                            f"class indices are never rounded, pass target.long() if that is meant")
        t = t.to(device=device, dtype=torch.long).flatten()
        if t.numel() == 1:
            t = t.expand(batch).clone()
        elif t.numel() != batch:
            raise ValueError(f"target must have one class per image ({batch}), got {t.numel()} values")
    _check_class_range(t, n_classes)
    return t


def resolve_target(logits: torch.Tensor, target: TargetType) -> torch.Tensor:
    """The class per image as a ``LongTensor[B]``, given the model's ``logits`` ``[B, classes]``
    of the images: ``None`` = the predicted class; otherwise :func:`as_target` with the range
    checked against the number of classes."""
    if target is None:
        return logits.argmax(dim=1)
    return as_target(target, logits.shape[0], logits.device, logits.shape[1])


# --------------------------------------------------------------------------------------------
# Running a model the way dance does: eval mode, gradients available, nothing left behind
# --------------------------------------------------------------------------------------------

@contextmanager
def evaluating(*models) -> Iterator[None]:
    """Eval mode for every ``nn.Module`` among ``models`` (others are ignored), with every
    submodule's train/eval flag restored afterwards, as :func:`dance.layers.eval_mode` does for
    one model: batch norm uses its running statistics (and leaves them alone) and dropout is off
    (so no global random numbers are drawn and two equal calls give equal answers)."""
    flags = [(m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()]
    for model in models:
        if isinstance(model, nn.Module):
            model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd available even when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` (tensors made inside are ordinary tensors)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def ordinary(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``x`` usable by autograd even if ``x`` was made in inference mode."""
    with torch.inference_mode(False):
        return x.detach().clone()


def model_of(explain) -> Optional[nn.Module]:
    """The ``nn.Module`` behind an explanation callable when it can be found: the ``forward_func``
    of a Captum attribution (or its bound ``attribute``), the ``model`` of a
    :class:`dance.DecoyEnhanced`, or a ``functools.partial`` over a module; None otherwise."""
    owner = getattr(explain, "__self__", explain)
    candidates = [owner, getattr(owner, "attribution_method", None)]  # Captum's NoiseTunnel wraps one
    for obj in candidates:
        for attr in ("forward_func", "model"):
            if isinstance(getattr(obj, attr, None), nn.Module):
                return getattr(obj, attr)
    for arg in getattr(explain, "args", ()):  # functools.partial(f, model, ...)
        if isinstance(arg, nn.Module):
            return arg
    return None
