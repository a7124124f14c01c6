"""Regression tests of issue #18 (reliability) and of the validation rule of issue #11.

One test (or a few) per finding: silent wrong answers, mutations of the caller's objects, and
errors that did not say what was wrong. The bad-input matrix (tests/test_misuse_matrix.py) runs
the same catalogue of misuse over every entry point; these tests pin the named cases with the
numbers that made them findings.
"""
from __future__ import annotations

import re

import pytest
import torch
from captum.attr import Saliency
from torch import nn

import dance
from dance import attacks as A
from dance import metrics as M
from helpers import snapshot


def bn_dropout_net(classes: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                            nn.Flatten(), nn.Linear(4 * 8 * 8, classes))
        with torch.no_grad():
            net[1].running_mean.uniform_(-0.2, 0.2)
            net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture
def images():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


# ----------------------------------------------------------------------------------------------
# 2. A map with a NaN (or >= 5 % inf) became an all-zero heatmap, and S_F a finite -0.0
# ----------------------------------------------------------------------------------------------

def test_heatmap_of_a_map_with_nan_is_refused():
    a = torch.randn(1, 3, 8, 8)
    a[0, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="attributions contains 1 NaN or Inf"):
        dance.to_heatmap(a)


def test_heatmap_of_a_map_with_many_infs_is_refused():
    a = torch.randn(1, 3, 10, 10)
    a[0, 0, :1, :6] = float("inf")  # 6 % of the pixels: the 95th percentile is inf
    with pytest.raises(ValueError, match="attributions contains 6 NaN or Inf"):
        dance.to_heatmap(a)


def test_fidelity_of_a_nan_map_is_refused_not_zero(images):
    net = bn_dropout_net()
    a = torch.randn(2, 3, 8, 8)
    a[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="attributions contains 1 NaN"):
        M.fidelity(net, images, a)


# ----------------------------------------------------------------------------------------------
# 3. Metrics and attacks ran a train-mode model as it was: batch-norm statistics overwritten,
#    global RNG consumed by dropout, two identical calls differed
# ----------------------------------------------------------------------------------------------

TRAIN_MODE_CALLS = {
    "fidelity": lambda net, x: M.fidelity(net, x, torch.ones(2, 8, 8) * 0.5, 0),
    "faithfulness_correlation": lambda net, x: M.faithfulness_correlation(
        net, x, torch.ones_like(x), 0, subset_size=10, n_subsets=5),
    "aopc_morf": lambda net, x: M.aopc_morf(net, x, torch.rand(2, 8, 8, generator=torch.Generator()), 0,
                                            step=4, n_steps=3),
    "max_sensitivity": lambda net, x: M.max_sensitivity(Saliency(net).attribute, x, 0, n_samples=3),
    "topk_attack": lambda net, x: A.topk_attack(net, x, 0, iterations=2, epsilon=0.05).inputs,
    "random_sign_attack": lambda net, x: A.random_sign_attack(net, x, 0, iterations=2, epsilon=0.05).inputs,
    "gradient": lambda net, x: A.gradient(net, x, 0),
    "cascading_randomization": lambda net, x: M.cascading_randomization(net, Saliency, x, 0).ssim,
}


@pytest.mark.parametrize("name", sorted(TRAIN_MODE_CALLS))
def test_train_mode_model_is_evaluated_as_deployed_and_left_alone(name, images):
    call = TRAIN_MODE_CALLS[name]
    expected = call(bn_dropout_net(), images)  # the eval-mode answer
    net = bn_dropout_net().train()
    snap = snapshot(model=net, inputs=images)
    first = call(net, images)
    second = call(net, images)
    snap.assert_unchanged()  # running statistics, flags, global RNG
    assert net.training and net[1].training and net[3].training
    assert torch.allclose(first, second, equal_nan=True)
    assert torch.allclose(first.double(), expected.double(), atol=1e-6, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# 4. faithfulness_correlation broadcast one map over two images and measured the [0, 1] clamp
# ----------------------------------------------------------------------------------------------

def test_faithfulness_refuses_one_map_for_two_images(images):
    net = bn_dropout_net()
    with pytest.raises(ValueError, match=r"attributions of shape \(1, 3, 8, 8\) do not match inputs"):
        M.faithfulness_correlation(net, images, torch.randn(1, 3, 8, 8), 0, subset_size=10, n_subsets=5)


def test_faithfulness_refuses_standardised_inputs(images):
    net = bn_dropout_net()
    standardised = (images - 0.45) / 0.225
    with pytest.raises(ValueError, match=r"inputs must hold pixel values in \[0, 1\].*dance.Normalized"):
        M.faithfulness_correlation(net, standardised, torch.randn(2, 3, 8, 8), 0, subset_size=10, n_subsets=5)


# ----------------------------------------------------------------------------------------------
# 6. The channel check used the first *declared* convolution
# ----------------------------------------------------------------------------------------------

class HeadFirst(nn.Module):
    """Declares a 4-channel head convolution before its 1-channel stem."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(4, 4, 3, padding=1)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.out = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.out(self.head(self.stem(x).relu()))


def test_model_declaring_its_head_before_its_stem_is_accepted():
    torch.manual_seed(0)
    net = HeadFirst().eval()
    x = torch.rand(2, 1, 8, 8)
    assert A.gradient(net, x, 0).shape == x.shape
    assert A.topk_attack(net, x, 0, iterations=1).inputs.shape == x.shape
    d = dance.generate_decoys(net, x[0], "stem", epsilon=0.1, relative=True, solver=dance.Adam(steps=2))
    assert d.images.shape[1:] == x.shape[1:]
    with pytest.raises(ValueError, match="inputs has 3 channels but the model's first convolution expects 1"):
        A.gradient(net, torch.rand(2, 3, 8, 8), 0)
    assert not net.training and all(not m.training for m in net.modules())


# ----------------------------------------------------------------------------------------------
# 8. Attacks accepted NaN pixels and reported success with NaN images
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", A.ATTACKS)
def test_attacks_refuse_nan_pixels(kind, images):
    x = images.clone()
    x[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="inputs contains NaN"):
        A.attack(bn_dropout_net(), x, 0, kind=kind, iterations=1)


# ----------------------------------------------------------------------------------------------
# 9. The sensitivity metrics truncated float targets (1.7 -> 1)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", [M.max_sensitivity, M.avg_sensitivity, M.sampled_sensitivities])
@pytest.mark.parametrize("target", [1.7, [1.7, 0.2], torch.tensor([1.7, 0.0])])
def test_sensitivity_metrics_refuse_float_targets(metric, target, images):
    explain = Saliency(bn_dropout_net()).attribute
    with pytest.raises(TypeError, match="target"):
        metric(explain, images, target, n_samples=2)
    with pytest.raises(TypeError, match="target"):  # also where the model cannot be found
        metric(lambda x, t: explain(x, target=t), images, target, n_samples=2)


# ----------------------------------------------------------------------------------------------
# 10. Normalized accepted a NaN mean or an infinite std, and aliased the caller's mean tensor
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mean,std,match", [
    ((0.5, float("nan"), 0.5), (0.2, 0.2, 0.2), "mean must be finite"),
    ((0.5, 0.5, 0.5), (0.2, float("inf"), 0.2), "std must be finite"),
    (("a", "b", "c"), (0.2, 0.2, 0.2), "mean must be a sequence of numbers"),
])
def test_normalized_refuses_non_finite_statistics(mean, std, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dance.Normalized(nn.Identity(), mean, std)


def test_normalized_does_not_alias_the_callers_statistics():
    mean = torch.tensor([0.1, 0.2, 0.3])
    std = torch.tensor([0.5, 0.5, 0.5])
    wrapped = dance.Normalized(nn.Identity(), mean, std)
    state = {k: torch.full_like(v, 9.0) for k, v in wrapped.state_dict().items()}
    wrapped.load_state_dict(state)
    assert torch.equal(mean, torch.tensor([0.1, 0.2, 0.3])) and torch.equal(std, torch.tensor([0.5, 0.5, 0.5]))


def test_normalized_refuses_inputs_with_other_channels():
    wrapped = dance.Normalized(nn.Identity(), dance.IMAGENET_MEAN, dance.IMAGENET_STD)
    with pytest.raises(ValueError, match="C = 3 channels"):
        wrapped(torch.rand(2, 1, 4, 4))  # would broadcast to 3 channels


# ----------------------------------------------------------------------------------------------
# 11. Unchecked ranges
# ----------------------------------------------------------------------------------------------

def test_fidelity_refuses_heatmaps_outside_unit_range(images):
    with pytest.raises(ValueError, match=r"attributions given as \[B, H, W\] heatmaps must lie in \[0, 1\]"):
        M.fidelity(bn_dropout_net(), images, torch.rand(2, 8, 8) * 3)


def test_max_sensitivity_refuses_an_empty_clamp(images):
    with pytest.raises(ValueError, match=r"clamp = \(1, 0\) must have low < high"):
        M.max_sensitivity(Saliency(bn_dropout_net()).attribute, images, 0, n_samples=2, clamp=(1, 0))


# ----------------------------------------------------------------------------------------------
# Errors that did not say what was wrong (metrics and attacks)
# ----------------------------------------------------------------------------------------------

class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = bn_dropout_net()

    def forward(self, x):
        return self.net(x), None


def attributions():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))


CALLS = {
    "fidelity": lambda net, x, t: M.fidelity(net, x, attributions(), t),
    "aopc_lerf": lambda net, x, t: M.aopc_lerf(net, x, attributions(), t, step=4, n_steps=2),
    "faithfulness_correlation": lambda net, x, t: M.faithfulness_correlation(
        net, x, attributions(), t, subset_size=4, n_subsets=3),
    "max_sensitivity": lambda net, x, t: M.max_sensitivity(Saliency(net).attribute, x, t, n_samples=2),
    "topk_attack": lambda net, x, t: A.topk_attack(net, x, t, iterations=1),
    "smoothgrad": lambda net, x, t: A.smoothgrad(net, x, t, n_samples=2),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_input_dtype_other_than_the_models(name, images):
    with pytest.raises(TypeError, match=r"inputs has dtype torch.float64 but the model's parameters are torch.float32"):
        CALLS[name](bn_dropout_net(), images.double(), 0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_model_returning_a_tuple(name, images):
    with pytest.raises(TypeError, match=r"model must return a \[B, classes\] tensor of logits, got a tuple"):
        CALLS[name](TupleOut().eval(), images, 0)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("target", [3, -1, torch.tensor([0, 7])])
def test_target_out_of_range(name, target, images):
    with pytest.raises(ValueError, match=r"target must be in \[0, 2\] for this model"):
        CALLS[name](bn_dropout_net(), images, target)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("empty", [lambda x: x[:0], lambda x: x[:, :, :0]])
def test_empty_inputs(name, empty, images):
    with pytest.raises(ValueError, match="inputs must not be empty"):
        CALLS[name](bn_dropout_net(), empty(images), 0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_calls_inside_inference_mode_work(name, images):
    net = bn_dropout_net()
    expected = CALLS[name](net, images, 0)
    expected = expected.inputs if isinstance(expected, A.AttackResult) else expected
    with torch.inference_mode():
        got = CALLS[name](net, images, 0)
    got = got.inputs if isinstance(got, A.AttackResult) else got
    assert torch.allclose(got, expected, equal_nan=True)


def test_integrated_gradients_with_per_image_baselines(images):
    net = bn_dropout_net()
    base = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ig = A.integrated_gradients(net, images, 0, baseline=base, n_steps=4)
    alone = torch.cat([A.integrated_gradients(net, images[i:i + 1], 0, baseline=base[i:i + 1], n_steps=4)
                       for i in range(2)])
    assert torch.allclose(ig, alone, atol=1e-6)
    with pytest.raises(ValueError, match=r"baseline of shape \(3, 3, 8, 8\) is not broadcastable to inputs"):
        A.integrated_gradients(net, images, 0, baseline=torch.rand(3, 3, 8, 8))


# ----------------------------------------------------------------------------------------------
# Issue #11: one exception type per mistake (TypeError = wrong kind, ValueError = wrong value)
# ----------------------------------------------------------------------------------------------

NON_INTEGER_COUNTS = [
    ("n_samples", lambda x, v: M.max_sensitivity(Saliency(bn_dropout_net()).attribute, x, 0, n_samples=v)),
    ("n_subsets", lambda x, v: M.faithfulness_correlation(bn_dropout_net(), x, torch.randn(2, 3, 8, 8), 0,
                                                          subset_size=4, n_subsets=v)),
    ("n_steps", lambda x, v: M.aopc(bn_dropout_net(), x, torch.randn(2, 3, 8, 8), 0, step=2, n_steps=v)),
    ("iterations", lambda x, v: A.attack(bn_dropout_net(), x, 0, iterations=v)),
    ("k", lambda x, v: M.topk_intersection(torch.rand(2, 8, 8), torch.rand(2, 8, 8), v)),
    ("k", lambda x, v: A.attack(bn_dropout_net(), x, 0, iterations=1, k=v)),
    ("n_samples", lambda x, v: A.smoothgrad(bn_dropout_net(), x, 0, n_samples=v)),
    ("compress_level", lambda x, v: M.saliency_size(torch.rand(2, 8, 8), compress_level=v)),
    ("seed", lambda x, v: A.random_sign_attack(bn_dropout_net(), x, 0, iterations=1, seed=v)),
    ("seed", lambda x, v: M.linf_ball_samples(x, 0.1, 2, seed=v)),
]


@pytest.mark.parametrize("name,call", NON_INTEGER_COUNTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NON_INTEGER_COUNTS)])
def test_a_non_integer_count_is_a_type_error_and_a_bad_value_a_value_error(name, call, images):
    with pytest.raises(TypeError, match=name):
        call(images, 2.0)
    with pytest.raises(TypeError, match=name):
        call(images, True)
    with pytest.raises(ValueError, match=name):
        call(images, -1)


def test_no_module_outside_metrics_imports_the_private_metrics_helpers():
    import pathlib
    import re

    root = pathlib.Path(dance.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "metrics" not in p.relative_to(root).parts
                 and re.search(r"metrics\._utils|metrics import _utils", p.read_text())]
    assert offenders == []


def test_snapshot_helper_sees_each_kind_of_change(images):
    """The helper the matrix relies on must itself be able to fail."""
    cases = [
        (lambda net, x: net(images), None),  # an eval-mode forward changes nothing
        (lambda net, x: net.train(), "flags"),
        (lambda net, x: net.train()(images), "running_mean"),
        (lambda net, x: torch.rand(1), "torch global RNG"),
        (lambda net, x: torch.no_grad()(lambda: net[0].weight.mul_(1.0))(), "written in place"),
        (lambda net, x: net(x).sum().backward(), ".grad"),
        (lambda net, x: x.detach().add_(0.0), "written in place"),
        (lambda net, x: net[0].register_forward_hook(lambda *a: None), "hooks"),
    ]
    for change, word in cases:
        net, x = bn_dropout_net(), images.clone().requires_grad_(True)
        snap = snapshot(model=net, inputs=x)
        change(net, x)
        changes = "; ".join(snap.changes())
        assert (word is None and changes == "") or (word is not None and word in changes), (word, changes)


# ----------------------------------------------------------------------------------------------
# The optional functions without their extra: a bare ModuleNotFoundError named no fix
# ----------------------------------------------------------------------------------------------

def _inpaint(x):
    from dance.baselines import replacement_decoys
    return replacement_decoys(x[0], dance.lattice_masks(8, 8, 2, 2, (2, 2)), "inpaint")


OPTIONAL = {  # function, the import it needs, the distribution that provides it
    "dance.metrics.ssim": (lambda x: M.ssim(x[:, 0], x[:, 1]), "skimage", "scikit-image"),
    "dance.metrics.saliency_size": (lambda x: M.saliency_size(x[:, 0]), "PIL", "Pillow"),
    "dance.metrics.summary": (lambda x: M.summary(), "pandas", "pandas"),
    'replacement_decoys(kind="inpaint")': (_inpaint, "skimage", "scikit-image"),
}


def _uninstall(monkeypatch, top: str) -> None:
    """Make ``import top`` (and its submodules) fail as if the distribution were not installed."""
    import sys
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")] + [top]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_a_missing_extra_names_the_function_the_package_and_the_fix(name, images, monkeypatch):
    call, module, package = OPTIONAL[name]
    call(images)  # installed here: it works
    _uninstall(monkeypatch, module)
    with pytest.raises(ImportError) as info:
        call(images)
    message = str(info.value)
    assert name in message and package in message and 'pip install "dance-saliency[metrics]"' in message, message
    assert isinstance(info.value, ModuleNotFoundError)  # what `except ModuleNotFoundError` callers catch


def test_sanity_frame_without_pandas_names_the_fix(images, monkeypatch):
    result = M.SanityResult(["original"], torch.zeros(1, 2, 8, 8), torch.ones(1, 2), torch.ones(1, 2))
    assert len(result.to_frame()) == 2
    _uninstall(monkeypatch, "pandas")
    with pytest.raises(ImportError, match=r"SanityResult\.to_frame needs pandas.*dance-saliency\[metrics\]"):
        result.to_frame()


# ----------------------------------------------------------------------------------------------
# A practitioner's first call: a long call says what it will cost before it starts
# ----------------------------------------------------------------------------------------------

def _spy(calls, function, capsys):
    """``function``, recording what was on stderr when it was first called."""
    def wrapper(*args, **kwargs):
        if not calls:
            calls.append(capsys.readouterr().err)
        return function(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("solver", ["linesearch", "adam"])
def test_a_long_call_says_what_it_will_cost_before_it_starts(make_model, make_image, monkeypatch, capsys, solver):
    import dance.decoys as D
    import dance.enhanced as E
    net, x = make_model("vgg"), make_image(12)
    e = dance.DecoyEnhanced(Saliency(net), layer="3", epsilon=0.1, relative=True, seed=0,
                            solver=solver if solver == "linesearch" else dance.Adam(steps=2, max_doublings=0))
    # Every call counts as long; the machine's speed does not enter the test.
    monkeypatch.setattr(D, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(E, "PROGRESS_SECONDS", 0.0)
    D.forget_mask_cache(net)
    before_solver, before_attribution = [], []
    solver_fn = "_linesearch" if solver == "linesearch" else "_optimise"
    monkeypatch.setattr(D, solver_fn, _spy(before_solver, getattr(D, solver_fn), capsys))
    before_analysis = []
    monkeypatch.setattr(D, "group_footprints", _spy(before_analysis, D.group_footprints, capsys))
    e._attribute_fn = _spy(before_attribution, e._attribute_fn, capsys)
    _, decoys = e.attribute(x, target=1, return_decoys=True)
    n = len(decoys[0])
    announced = (before_analysis or before_solver)[0]
    assert f"dance: optimising {n} decoys of 1 image(s) of (3, 12, 12) at layer '3'" in announced
    assert re.search(r"about \d+ s", announced) and "progress=False" in announced
    if solver == "linesearch":
        assert "one-time analysis of the masks" in announced
    else:
        assert "Adam (the paper's solver)" in announced and "up to 2 steps" in announced
    assert f"dance: Saliency on {n + 1} images" in before_attribution[0]
    assert re.search(r"about \d+ s on this machine at one gradient per image", before_attribution[0])


def test_progress_false_silences_the_estimate_and_short_calls_say_nothing(make_model, make_image, monkeypatch, capsys):
    import dance.decoys as D
    import dance.enhanced as E
    net, x = make_model("vgg"), make_image(12)
    options = {"layer": "3", "epsilon": 0.1, "relative": True, "solver": "linesearch"}
    dance.DecoyEnhanced(Saliency(net), **options).attribute(x, target=1)  # a tiny model: seconds below 10
    assert "dance:" not in capsys.readouterr().err
    monkeypatch.setattr(D, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(E, "PROGRESS_SECONDS", 0.0)
    dance.DecoyEnhanced(Saliency(net), progress=False, **options).attribute(x, target=1)
    assert capsys.readouterr().err == ""
