"""The bad-input matrix: every public entry point x one catalogue of misuse.

Each cell calls one entry point with one kind of misuse (wrong rank, dtype, device, NaN/inf,
out-of-range values, empty batch, wrong target type/range/length, train-mode model, model that
returns a tuple or a dict, wrong-shape attributions, calls under ``torch.no_grad()`` /
``torch.inference_mode()``) and asserts one of three outcomes, fixed per misuse class:

* ``raises``: a ``ValueError``/``TypeError`` (the one the rule of :mod:`dance._checks` gives:
  ``TypeError`` for a wrong kind, ``ValueError`` for a wrong value) whose message names the
  argument;
* ``same``: the call works and gives the result of the clean call (train-mode model, inference
  mode, inputs that require grad, non-contiguous inputs);
* ``works``: the call works (the input is unusual but valid for this entry point, e.g. pixels
  outside [0, 1] for a metric that does not assume [0, 1]).

In every cell, whatever the outcome, a snapshot of everything the caller passed (tensors and
their ``.grad``, parameters, buffers, train/eval flags, hooks, global RNG states) must be
unchanged afterwards (:func:`helpers.snapshot`).
"""
from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Optional

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from torch import nn

import dance
from dance import attacks as A
from dance import metrics as M
from dance.baselines import replacement_decoys
from helpers import snapshot

B, C, S, K = 2, 3, 8, 5  # batch, channels, side, classes
LEAD = pytest.mark.xfail(strict=True, reason="lead: decoys/enhanced")


# ----------------------------------------------------------------------------------------------
# The caller's objects
# ----------------------------------------------------------------------------------------------

def build_net() -> nn.Module:
    """Batch norm and dropout, so that train mode would change both the answer and the model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(C, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),   # 0-3
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # 4-7
            nn.Linear(16, K),                                                                # 8
        )
        with torch.no_grad():
            net[1].running_mean.uniform_(-0.2, 0.2)
            net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


class TupleOut(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x.mean()


class DictOut(TupleOut):
    def forward(self, x):
        return {"logits": self.net(x)}


@dataclass
class Args:
    model: Any
    inputs: Any
    target: Any
    attributions: Any
    maps: Any
    mean: Any = (0.5, 0.5, 0.5)
    std: Any = (0.25, 0.25, 0.25)
    context: Callable = nullcontext


def clean_args() -> Args:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(B, C, S, S, generator=g)
    return Args(model=build_net(), inputs=x, target=torch.tensor([0, 3]),
                attributions=torch.randn(B, C, S, S, generator=g), maps=torch.rand(B, S, S, generator=g))


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------

@dataclass
class Entry:
    name: str
    call: Callable[[Args], Any]
    roles: frozenset
    names: Dict[str, str] = field(default_factory=dict)  # role -> argument name in messages
    pixel_range: bool = False   # inputs must lie in [0, 1]
    has_model: bool = True      # inputs are checked against a model (device, dtype, channels)

    def arg(self, role: str) -> str:
        return self.names.get(role, role)


def _layer(model):
    """The decoy layer (the first ReLU) as a module, so wrapped models name it the same way."""
    inner = getattr(model, "net", model)
    return inner[2] if isinstance(inner, nn.Sequential) else "2"


def _one(x):
    return x[:1] if isinstance(x, torch.Tensor) and x.dim() == 4 else x


def _masks():
    m = torch.zeros(4, 1, S, S, dtype=torch.bool)
    for i in range(4):
        m[i, 0, (i // 2)::2, (i % 2)::2] = True
    return m


def _gt_masks():
    m = torch.zeros(B, S, S, dtype=torch.bool)
    m[:, 2:5, 2:6] = True
    return m


MODEL_INPUT_TARGET = frozenset({"model", "inputs", "target", "context"})
WITH_ATTR = MODEL_INPUT_TARGET | {"attributions"}
DECOYS = dict(epsilon=0.1, relative=True, solver=dance.Adam(steps=2))
AOPC = dict(step=4, n_steps=3)

ENTRIES = [
    Entry("generate_decoys", lambda a: dance.generate_decoys(a.model, _one(a.inputs), _layer(a.model), **DECOYS),
          frozenset({"model", "inputs", "context"}), {"inputs": "x"}, pixel_range=True),
    Entry("DecoyEnhanced.attribute",
          lambda a: dance.DecoyEnhanced(Saliency(a.model), layer=_layer(a.model), **DECOYS).attribute(a.inputs, a.target),
          MODEL_INPUT_TARGET, pixel_range=True),
    Entry("DecoyEnhanced.attribute[common_noise]",
          lambda a: dance.DecoyEnhanced(NoiseTunnel(Saliency(a.model)), layer=_layer(a.model), noise_seed=0,
                                        **DECOYS).attribute(a.inputs, a.target, nt_samples=2, stdevs=0.1),
          MODEL_INPUT_TARGET, pixel_range=True),
    Entry("to_heatmap", lambda a: dance.to_heatmap(a.attributions), frozenset({"attributions", "context"}),
          has_model=False),
    Entry("Normalized", lambda a: dance.Normalized(a.model, a.mean, a.std)(a.inputs),
          frozenset({"stats", "model_kind"})),
    Entry("baselines.replacement_decoys",
          lambda a: replacement_decoys(_one(a.inputs), _masks(), "blur", model=a.model, layer=_layer(a.model)),
          frozenset({"model", "inputs", "context"}), {"inputs": "x"}, pixel_range=True),
    *[Entry(f"attacks.attack[{kind}]",
            lambda a, kind=kind: A.attack(a.model, a.inputs, a.target, kind=kind, iterations=1, epsilon=0.05),
            MODEL_INPUT_TARGET, pixel_range=True) for kind in A.ATTACKS],
    Entry("attacks.adaptive_attack",
          lambda a: A.adaptive_attack(a.model, a.inputs, a.target, layer=_layer(a.model), epsilon_decoy=0.1,
                                      decoy_options=dict(relative=True, solver=dance.Adam(steps=2)), iterations=1,
                                      epsilon=0.05),
          MODEL_INPUT_TARGET, pixel_range=True),
    Entry("attacks.gradient", lambda a: A.gradient(a.model, a.inputs, a.target), MODEL_INPUT_TARGET),
    Entry("attacks.smoothgrad", lambda a: A.smoothgrad(a.model, a.inputs, a.target, n_samples=2),
          MODEL_INPUT_TARGET),
    Entry("attacks.integrated_gradients", lambda a: A.integrated_gradients(a.model, a.inputs, a.target, n_steps=3),
          MODEL_INPUT_TARGET),
    Entry("attacks.softplus_copy", lambda a: A.softplus_copy(a.model), frozenset({"model_kind"})),
    Entry("metrics.fidelity", lambda a: M.fidelity(a.model, a.inputs, a.attributions, a.target), WITH_ATTR),
    Entry("metrics.faithfulness_correlation",
          lambda a: M.faithfulness_correlation(a.model, a.inputs, a.attributions, a.target, subset_size=8,
                                               n_subsets=4), WITH_ATTR, pixel_range=True),
    *[Entry(f"metrics.{fn.__name__}", lambda a, fn=fn: fn(a.model, a.inputs, a.attributions, a.target, **AOPC),
            WITH_ATTR) for fn in (M.aopc, M.aopc_morf, M.aopc_lerf, M.aopc_rel)],
    Entry("metrics.cascading_randomization",
          lambda a: M.cascading_randomization(a.model, Saliency, a.inputs, a.target, win_size=3),
          MODEL_INPUT_TARGET),
    *[Entry(f"metrics.{fn.__name__}",
            lambda a, fn=fn: fn(Saliency(a.model).attribute, a.inputs, a.target, n_samples=2), MODEL_INPUT_TARGET)
      for fn in (M.max_sensitivity, M.avg_sensitivity, M.sampled_sensitivities)],
    Entry("metrics.sensitivity",
          lambda a: M.sensitivity(a.attributions, a.attributions.flip(-1) if isinstance(a.attributions, torch.Tensor)
                                  else a.attributions, a.inputs, a.inputs * 0.5 if isinstance(a.inputs, torch.Tensor)
                                  and a.inputs.is_floating_point() else a.inputs),
          frozenset({"inputs", "attributions", "context"}), has_model=False),
    Entry("metrics.linf_ball_samples", lambda a: M.linf_ball_samples(a.inputs, 0.1, 2),
          frozenset({"inputs", "context"}), has_model=False),
    *[Entry(f"metrics.{fn.__name__}", lambda a, fn=fn: fn(a.maps), frozenset({"maps", "context"}), has_model=False)
      for fn in (M.saliency_entropy, M.saliency_size, M.to_uint8, M.threshold_mask, M.saliency_box,
                 M.center_of_mass)],
    *[Entry(f"metrics.{fn.__name__}", lambda a, fn=fn: fn(a.maps, torch.tensor([[2, 2, 6, 5]] * B)),
            frozenset({"maps", "context"}), has_model=False) for fn in (M.localization_iou, M.localization_success)],
    *[Entry(f"metrics.{fn.__name__}", lambda a, fn=fn: fn(a.maps, _gt_masks()), frozenset({"maps", "context"}),
            has_model=False) for fn in (M.mass_in_mask, M.pointing_game)],
    *[Entry(f"metrics.{fn.__name__}", lambda a, fn=fn, extra=extra: fn(a.maps, torch.rand(
        B, S, S, generator=torch.Generator().manual_seed(1)), *extra),
            frozenset({"maps", "context"}), {"maps": "maps_a"}, has_model=False)
      for fn, extra in ((M.spearman, ()), (M.center_shift, ()), (M.topk_intersection, (5,)))],
    Entry("metrics.ssim", lambda a: M.ssim(a.maps, a.maps.flip(-1) if isinstance(a.maps, torch.Tensor) else a.maps,
                                           win_size=3), frozenset({"maps", "context"}), {"maps": "maps_a"},
          has_model=False),
    Entry("metrics.parameter_layers", lambda a: M.parameter_layers(a.model), frozenset({"model_kind"})),
]
ENTRY = {e.name: e for e in ENTRIES}


def test_the_matrix_covers_every_public_entry_point():
    metric_functions = {n for n in M.__all__ if callable(getattr(M, n)) and not isinstance(getattr(M, n), type)}
    metric_functions -= {"summary", "tightest_box", "box_iou", "box_mask"}  # covered in test_box_helpers_misuse
    covered = {e.name.split(".", 1)[1] for e in ENTRIES if e.name.startswith("metrics.")}
    assert metric_functions <= covered, sorted(metric_functions - covered)
    attack_functions = {"attack", "adaptive_attack", "gradient", "smoothgrad", "integrated_gradients", "softplus_copy"}
    assert attack_functions <= {e.name.split(".", 1)[1].split("[")[0] for e in ENTRIES if e.name.startswith("attacks.")}
    assert {"generate_decoys", "DecoyEnhanced.attribute", "to_heatmap", "Normalized"} <= set(ENTRY)


# ----------------------------------------------------------------------------------------------
# The catalogue of misuse
# ----------------------------------------------------------------------------------------------

@dataclass
class Misuse:
    name: str
    role: str
    apply: Callable[[Args], Args]
    outcome: Callable[[Entry], Optional[tuple]]  # entry -> ("raises", exc, regex) / ("same",) / ("works",) / None


def _raise(exc, role, extra=""):
    return lambda e: ("raises", exc, e.arg(role) + extra)


def _same(e):
    return ("same",)


def _train(a):
    model = copy.deepcopy(a.model).train()
    return replace(a, model=model)


def _set(role, fn):
    def apply(a):
        return replace(a, **{role: fn(getattr(a, role))})
    return apply


def _nan(t):
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


def _inf(t):
    t = t.clone()
    t.view(-1)[5] = float("inf")
    return t


def _model_checked(outcome):
    """An outcome for entries that check inputs against a model; others take the input as it is."""
    return lambda e: outcome(e) if e.has_model else ("works",)


def _pixels(outcome):
    """An outcome for entries that need pixels in [0, 1]; others take any finite values."""
    return lambda e: outcome(e) if e.pixel_range else ("works",)


DECOYS_ONLY = ("generate_decoys", "baselines.replacement_decoys")

MISUSES = [
    # inputs
    Misuse("inputs not a tensor", "inputs", _set("inputs", lambda x: x.tolist()), _raise(TypeError, "inputs")),
    Misuse("inputs rank 2", "inputs", _set("inputs", lambda x: x[0, 0]), _raise(ValueError, "inputs")),
    Misuse("inputs rank 5", "inputs", _set("inputs", lambda x: x[None]), _raise(ValueError, "inputs")),
    Misuse("inputs uint8", "inputs", _set("inputs", lambda x: (x * 255).to(torch.uint8)),
           _raise(TypeError, "inputs", ".*floating")),
    Misuse("inputs float64 for a float32 model", "inputs", _set("inputs", lambda x: x.double()),
           _model_checked(_raise(TypeError, "inputs", ".*dtype"))),
    Misuse("inputs NaN", "inputs", _set("inputs", _nan), _raise(ValueError, "inputs", ".*NaN")),
    Misuse("inputs inf", "inputs", _set("inputs", _inf), _raise(ValueError, "inputs", ".*Inf")),
    Misuse("inputs above 1", "inputs", _set("inputs", lambda x: x * 3), _pixels(_raise(ValueError, "inputs", r".*\[0, 1\]"))),
    Misuse("inputs below 0", "inputs", _set("inputs", lambda x: x - 0.5), _pixels(_raise(ValueError, "inputs", r".*\[0, 1\]"))),
    Misuse("inputs empty batch", "inputs", _set("inputs", lambda x: x[:0]), _raise(ValueError, "inputs", ".*empty")),
    Misuse("inputs zero-size image", "inputs", _set("inputs", lambda x: x[:, :, :0]),
           _raise(ValueError, "inputs", ".*empty")),
    Misuse("inputs wrong channels", "inputs", _set("inputs", lambda x: x[:, :1]),
           _model_checked(_raise(ValueError, "inputs", ".*channels"))),
    Misuse("inputs on another device", "inputs", _set("inputs", lambda x: x.to("meta")),
           lambda e: ("raises", ValueError, e.arg("inputs") + ".*meta") if e.has_model else None),
    Misuse("inputs require grad", "inputs", _set("inputs", lambda x: x.clone().requires_grad_(True)), _same),
    Misuse("inputs non-contiguous", "inputs",
           _set("inputs", lambda x: x.transpose(2, 3).contiguous().transpose(2, 3)), _same),
    # target
    Misuse("target float 1.7", "target", _set("target", lambda t: 1.7), _raise(TypeError, "target")),
    Misuse("target float tensor", "target", _set("target", lambda t: t.float()), _raise(TypeError, "target")),
    Misuse("target bool", "target", _set("target", lambda t: True), _raise(TypeError, "target")),
    Misuse("target string", "target", _set("target", lambda t: "cat"), _raise(TypeError, "target")),
    Misuse("target out of range", "target", _set("target", lambda t: K), _raise(ValueError, "target")),
    Misuse("target negative", "target", _set("target", lambda t: torch.tensor([0, -1])), _raise(ValueError, "target")),
    Misuse("target wrong length", "target", _set("target", lambda t: torch.tensor([0, 1, 2])),
           _raise(ValueError, "target")),
    # model
    Misuse("model in train mode", "model", _train, _same),
    # (decoys only run the model up to the decoy layer: its output does not matter)
    Misuse("model returns a tuple", "model", _set("model", TupleOut),
           lambda e: ("works",) if e.name in DECOYS_ONLY else _raise(TypeError, "model", ".*tuple")(e)),
    Misuse("model returns a dict", "model", _set("model", DictOut),
           lambda e: ("works",) if e.name in DECOYS_ONLY else _raise(TypeError, "model", ".*dict")(e)),
    Misuse("model not a module", "model_kind", _set("model", lambda m: "resnet"), _raise(TypeError, "model")),
    # attributions
    Misuse("attributions not a tensor", "attributions", _set("attributions", lambda a: a.tolist()),
           _raise(TypeError, "attributions")),
    Misuse("attributions one for two images", "attributions", _set("attributions", lambda a: a[:1]),
           lambda e: ("works",) if e.name == "to_heatmap" else ("raises", ValueError, e.arg("attributions"))),
    # (to_heatmap takes any size; S_S compares two maps of one size, whatever the inputs' size)
    Misuse("attributions wrong size", "attributions", _set("attributions", lambda a: a[:, :, :5]),
           lambda e: ("works",) if e.name in ("to_heatmap", "metrics.sensitivity")
           else ("raises", ValueError, e.arg("attributions"))),
    Misuse("attributions NaN", "attributions", _set("attributions", _nan),
           _raise(ValueError, "attributions", ".*NaN")),
    Misuse("attributions inf", "attributions", _set("attributions", _inf),
           _raise(ValueError, "attributions", ".*Inf")),
    Misuse("attributions empty", "attributions", _set("attributions", lambda a: a[:0]),
           _raise(ValueError, "attributions")),
    # maps ([B, H, W] heatmaps)
    Misuse("maps not a tensor", "maps", _set("maps", lambda m: m.tolist()), _raise(TypeError, "maps")),
    Misuse("maps rank 2", "maps", _set("maps", lambda m: m[0]), _raise(ValueError, "maps")),
    Misuse("maps NaN", "maps", _set("maps", _nan), _raise(ValueError, "maps", ".*NaN")),
    Misuse("maps inf", "maps", _set("maps", _inf), _raise(ValueError, "maps", ".*Inf")),
    Misuse("maps negative", "maps", _set("maps", lambda m: m - 0.5), _raise(ValueError, "maps", ".*non-negative")),
    Misuse("maps empty", "maps", _set("maps", lambda m: m[:0]), _raise(ValueError, "maps")),
    Misuse("maps bool", "maps", _set("maps", lambda m: m > 0.5), _raise(TypeError, "maps")),
    # Normalized statistics
    Misuse("mean NaN", "stats", lambda a: replace(a, mean=(0.5, float("nan"), 0.5)), _raise(ValueError, "mean")),
    Misuse("std inf", "stats", lambda a: replace(a, std=(0.2, float("inf"), 0.2)), _raise(ValueError, "std")),
    Misuse("std zero", "stats", lambda a: replace(a, std=(0.2, 0.0, 0.2)), _raise(ValueError, "std")),
    Misuse("mean of strings", "stats", lambda a: replace(a, mean=("a", "b", "c")), _raise(TypeError, "mean")),
    Misuse("mean and std lengths differ", "stats", lambda a: replace(a, std=(0.2, 0.2)),
           _raise(ValueError, "mean and std")),
    Misuse("stats for 3 channels, 1-channel inputs", "stats", lambda a: replace(a, inputs=a.inputs[:, :1]),
           _raise(ValueError, "channels")),
    # how it is called
    Misuse("called under torch.no_grad()", "context", lambda a: replace(a, context=torch.no_grad), _same),
    Misuse("called under torch.inference_mode()", "context", lambda a: replace(a, context=torch.inference_mode),
           _same),
]

# Cells that fail because of code in dance/decoys.py, dance/enhanced.py, dance/masks.py or
# dance/layers.py, marked strict xfail until fixed (none left).
LEAD_CELLS: set = set()  # all fixed in dance/decoys.py and dance/enhanced.py


def _cells():
    for entry in ENTRIES:
        for misuse in MISUSES:
            if misuse.role not in entry.roles:
                continue
            outcome = misuse.outcome(entry)
            if outcome is None:
                continue
            marks = [LEAD] if (entry.name, misuse.name) in LEAD_CELLS else []
            yield pytest.param(entry.name, misuse.name, id=f"{entry.name}|{misuse.name}", marks=marks)


MISUSE = {m.name: m for m in MISUSES}


def _tensors(result):
    """Every tensor of a result (a tensor, a tuple/list, a dataclass such as Decoys or AttackResult)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, nn.Module):
        return [t for t in result.state_dict().values()]
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in _tensors(r)]
    if dataclasses.is_dataclass(result):
        return [t for f in dataclasses.fields(result) for t in _tensors(getattr(result, f.name))]
    return []


def _run(entry: Entry, a: Args):
    with a.context():
        return entry.call(a)


@pytest.mark.parametrize("entry_name,misuse_name", list(_cells()))
def test_misuse(entry_name, misuse_name):
    entry, misuse = ENTRY[entry_name], MISUSE[misuse_name]
    outcome = misuse.outcome(entry)
    a = misuse.apply(clean_args())
    snap = snapshot(model=a.model, inputs=a.inputs, target=a.target, attributions=a.attributions, maps=a.maps,
                    mean=a.mean, std=a.std)
    if outcome[0] == "raises":
        _, exc, pattern = outcome
        with pytest.raises(exc, match=pattern) as info:
            _run(entry, a)
        assert type(info.value) in (ValueError, TypeError)
    else:
        result = _run(entry, a)
        if outcome[0] == "same":
            clean = _run(entry, clean_args())
            got, want = _tensors(result), _tensors(clean)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.shape == w.shape
                assert torch.allclose(g.detach().double(), w.detach().double(), atol=1e-6, equal_nan=True)
    snap.assert_unchanged()


@pytest.mark.parametrize("entry_name", [e.name for e in ENTRIES if e.name != "Normalized"])
def test_clean_call_changes_nothing_and_repeats(entry_name):
    entry = ENTRY[entry_name]
    a = clean_args()
    snap = snapshot(model=a.model, inputs=a.inputs, target=a.target, attributions=a.attributions, maps=a.maps)
    first, second = _run(entry, a), _run(entry, a)
    snap.assert_unchanged()
    if not _tensors(first):  # a result without tensors (a list of layer names)
        assert first == second
        return
    first, second = _tensors(first), _tensors(second)
    assert all(torch.equal(f, s) or torch.allclose(f.double(), s.double(), equal_nan=True)
                         for f, s in zip(first, second))


# ----------------------------------------------------------------------------------------------
# Box helpers (boxes and masks rather than images)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: M.tightest_box([[True]]), TypeError, "mask"),
    (lambda: M.tightest_box(torch.ones(2, 2, dtype=torch.bool)), ValueError, "mask"),
    (lambda: M.box_iou([[0, 0, 2, 2]], torch.tensor([[0, 0, 2, 2]])), TypeError, "boxes"),
    (lambda: M.box_iou(torch.tensor([[0, 0, 2]]), torch.tensor([[0, 0, 2, 2]])), ValueError, "boxes"),
    (lambda: M.box_iou(torch.tensor([[0, 0, 2, 2]]), torch.tensor([[0, 0, float("nan"), 2]])), ValueError, "boxes"),
    (lambda: M.box_mask(torch.tensor([[0, 0, 2, 2]]), 4.0, 4), TypeError, "height"),
    (lambda: M.box_mask([], 4, 4), ValueError, "boxes"),
    (lambda: M.mass_in_mask(torch.rand(1, 4, 4), torch.full((1, 4, 4), 0.3)), ValueError, "masks"),
    (lambda: M.pointing_game(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), tolerance=float("nan")),
     ValueError, "tolerance"),
])
def test_box_helpers_misuse(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
