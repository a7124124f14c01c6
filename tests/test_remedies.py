"""The remedies the book compares with DANCE: Yeh et al.'s smoothed explanation (``dance.YehSmoothed``), PGD
adversarial training and the book's reading of SCAAT (``dance_book.zoo.remedies`` and ``zoo.train(training=...)``)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

import dance
from dance.metrics import max_sensitivity
from dance_book import data, zoo
from dance_book.zoo.remedies import PGDSettings, ScaatReading, low_saliency_mask, pgd_linf, scaat_examples, update_q


@pytest.fixture(scope="module")
def net(make_model):
    """conftest's tiny VGG-like CNN: 12 x 12 images, 5 classes."""
    return make_model("vgg")


@pytest.fixture(scope="module")
def images(make_image):
    return make_image(12, seed=7, batch=3)


# ----------------------------------------------------------------------------- YehSmoothed


def test_yeh_smoothed_shape_and_determinism(net, images):
    smoothed = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=6, seed=3)
    a = smoothed.attribute(images, target=1, abs=False)
    b = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=6, seed=3).attribute(images, target=1, abs=False)
    assert a.shape == images.shape and torch.equal(a, b)
    other_seed = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=6, seed=4).attribute(images, target=1, abs=False)
    assert not torch.equal(a, other_seed)


def test_yeh_smoothed_is_the_mean_of_the_base_maps_over_the_ball(net, images):
    """Eq. 3 with D = L2, alpha = 2: the feature-wise mean of Phi(x + u), u uniform in the L_inf ball of radius R."""
    u = dance.enhanced.ball_noise(images.shape[1:], 0.3, 5, seed=0)
    assert float(u.abs().max()) <= 0.3 and float(u.abs().max()) > 0.2  # fills the ball, stays in it
    expected = torch.stack([Saliency(net).attribute(images + ui, target=2, abs=False) for ui in u]).mean(0)
    got = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=5, seed=0).attribute(images, target=2, abs=False)
    assert torch.allclose(got, expected, atol=1e-6)
    median = dance.YehSmoothed(Saliency(net), radius=0.3, n_samples=5, seed=0, reduce="median").attribute(
        images, target=2, abs=False)
    assert torch.allclose(median, torch.stack([Saliency(net).attribute(images + ui, target=2, abs=False)
                                               for ui in u]).median(0).values, atol=1e-6)


def test_yeh_smoothed_l2_ball(net, images):
    u = dance.enhanced.ball_noise(images.shape[1:], 0.5, 200, norm="l2", seed=1)
    norms = u.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.5 + 1e-5 and float(norms.min()) > 0.4  # in high dimension the mass sits at the rim
    maps = dance.YehSmoothed(Saliency(net), radius=0.5, n_samples=4, norm="l2").attribute(images, target=0)
    assert maps.shape == images.shape


def test_yeh_smoothed_map_of_an_image_does_not_depend_on_its_batch(net, images):
    smoothed = dance.YehSmoothed(IntegratedGradients(net), radius=0.3, n_samples=4, seed=0)
    batch = smoothed.attribute(images, target=torch.tensor([0, 1, 2]), n_steps=4)
    for b in range(images.shape[0]):
        alone = smoothed.attribute(images[b:b + 1], target=b, n_steps=4)
        assert torch.allclose(batch[b:b + 1], alone, atol=1e-6)
    chunked = smoothed.attribute(images, target=torch.tensor([0, 1, 2]), n_steps=4, batch_size=5)
    assert torch.allclose(batch, chunked, atol=1e-6)


def test_yeh_smoothed_with_radius_zero_is_the_base_method(net, images):
    base = Saliency(net).attribute(images.clone().requires_grad_(True), target=3, abs=False)
    zero = dance.YehSmoothed(Saliency(net), radius=0.0, n_samples=7).attribute(images, target=3, abs=False)
    assert torch.allclose(zero, base, atol=1e-6)
    tiny = dance.YehSmoothed(Saliency(net), radius=1e-6, n_samples=7).attribute(images, target=3, abs=False)
    assert torch.allclose(tiny, base, atol=1e-3 * float(base.abs().max()))


def test_yeh_smoothed_leaves_inputs_and_model_alone(net, images):
    x = images.clone().requires_grad_(True)
    before = x.detach().clone()
    net.train()
    try:
        dance.YehSmoothed(Saliency(net), n_samples=3).attribute(x, target=0)
        assert net.training
    finally:
        net.eval()
    assert torch.equal(x.detach(), before) and x.grad is None
    assert all(p.grad is None for p in net.parameters())


def test_yeh_smoothed_composes_with_noise_tunnel(net, images):
    nt = NoiseTunnel(dance.YehSmoothed(Saliency(net), n_samples=3))
    assert nt.attribute(images, target=0, nt_samples=2, stdevs=0.0).shape == images.shape


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(radius=-0.1), ValueError, "radius"),
    (dict(radius="0.3"), TypeError, "radius"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=2.0), TypeError, "n_samples"),
    (dict(norm="l1"), ValueError, "norm"),
    (dict(reduce="max"), ValueError, "reduce"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(clamp=(1.0, 0.0)), ValueError, "clamp"),
])
def test_yeh_smoothed_refuses_bad_settings(net, kwargs, error, match):
    with pytest.raises(error, match=match):
        dance.YehSmoothed(Saliency(net), **kwargs)


def test_yeh_smoothed_refuses_bad_calls(net, images):
    smoothed = dance.YehSmoothed(Saliency(net), n_samples=2)
    with pytest.raises(TypeError, match="inputs"):
        smoothed.attribute(images.numpy(), target=0)
    with pytest.raises(ValueError, match="inputs"):
        smoothed.attribute(images[:, :2], target=0)
    with pytest.raises(ValueError, match="target"):
        smoothed.attribute(images, target=9)
    with pytest.raises(ValueError, match="batch_size"):
        smoothed.attribute(images, target=0, batch_size=0)
    with pytest.raises(TypeError, match="attribution"):
        dance.YehSmoothed("saliency")
    with pytest.raises(TypeError, match="model"):
        dance.YehSmoothed(lambda x, target: x)


# ----------------------------------------------------------------------------- PGD


def test_pgd_stays_in_the_ball_and_the_pixel_range_and_raises_the_loss(net, images):
    labels = net(images).argmax(1)
    settings = PGDSettings(epsilon=0.1, steps=5, step_size=0.05)
    x = images.clone()
    adv = pgd_linf(net, x, labels, settings=settings)
    assert torch.equal(x, images)
    assert float((adv - images).abs().max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - images).abs().max()) > 0.09  # it uses the budget
    assert F.cross_entropy(net(adv), labels) > F.cross_entropy(net(images), labels)
    assert all(p.grad is None for p in net.parameters())


def test_pgd_moves_only_masked_features(net, images):
    mask = torch.zeros(images.shape[0], 1, 12, 12, dtype=torch.bool)
    mask[:, :, :6] = True
    adv = pgd_linf(net, images, torch.tensor([0, 1, 2]), settings=PGDSettings(epsilon=0.2, steps=3, step_size=0.1), mask=mask)
    moved = (adv - images).abs().amax(dim=1, keepdim=True) > 0
    assert bool(moved[~mask.expand_as(moved)].logical_not().all()) and bool(moved[mask].any())


# ----------------------------------------------------------------------------- SCAAT


def test_low_saliency_mask_takes_the_q_fraction_of_least_salient_features():
    saliency = torch.tensor([[5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 6.0, 7.0, 8.0, 9.0],
                             [0.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    mask = low_saliency_mask(saliency, torch.tensor([0.3, 0.5]))
    assert mask[0].nonzero().flatten().tolist() == [1, 3, 5]
    assert mask[1].nonzero().flatten().tolist() == [0, 6, 7, 8, 9]
    assert low_saliency_mask(saliency, 0.0).sum() == 0 and low_saliency_mask(saliency, 1.0).all()
    with pytest.raises(ValueError, match="q"):
        low_saliency_mask(saliency, torch.tensor([0.3, 1.5]))


def test_scaat_perturbs_only_the_least_salient_q_fraction_of_pixels(net, images):
    labels = torch.tensor([0, 1, 2])
    q = torch.tensor([0.25, 0.5, 0.75])
    adv = scaat_examples(net, images, labels, q, reading=ScaatReading(epsilon=0.2, steps=2, step_size=0.1))
    saliency = dance.attacks.gradient(net, images, labels).abs().sum(1)  # what the reading ranks by
    moved = (adv - images).abs().amax(dim=1) > 0  # [B, H, W]
    for b in range(3):
        allowed = saliency[b].flatten().argsort(stable=True)[:round(float(q[b]) * 144)]
        outside = torch.ones(144, dtype=torch.bool)
        outside[allowed] = False
        assert not bool(moved[b].flatten()[outside].any())  # nothing moves outside the q_i least salient pixels
        assert int(moved[b].sum()) > 0.5 * len(allowed)  # and those do move


def test_q_search_follows_the_poster_rule():
    q = torch.tensor([0.5, 0.5, 0.88, 0.12])
    survived = torch.tensor([True, False, True, False])
    rule = dict(warmup=2, gamma=0.05, q_min=0.1, q_max=0.9)
    assert torch.equal(update_q(q, survived, 1, **rule), q)  # warm-up: no update
    assert torch.equal(update_q(q, survived, 2, **rule), q)  # iter <= N_warm-up
    after = update_q(q, survived, 3, **rule)
    assert after.tolist() == pytest.approx([0.55, 0.45, 0.9, 0.1])  # +gamma, -gamma, clipped at q_max / q_min
    assert q.tolist() == pytest.approx([0.5, 0.5, 0.88, 0.12])  # the input is left alone


class _Threshold(nn.Module):
    """Predicts class 1 iff the mean of the left half of the image exceeds 0.5 (logits: 0 and a steep ramp)."""

    def forward(self, x):
        s = 40.0 * (x[..., :4].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_q_search_on_a_tiny_model_rises_when_the_prediction_survives_and_falls_when_it_flips():
    """SCAAT's loop on a model whose decision rests on the left half: the right half is never salient. Image 0 is far
    from the boundary (its prediction survives any perturbation of its least salient pixels: q rises by gamma); image 1
    sits on the boundary, and q = 0.75 reaches into the left half, where the perturbation flips it: q falls by gamma."""
    model = _Threshold()
    x = torch.zeros(2, 1, 8, 8)
    x[0, :, :, :4] = 1.0  # mean 1.0: class 1, far from the boundary
    x[1, :, :, :4] = 0.52  # mean 0.52: class 1, near the boundary
    labels = torch.tensor([1, 1])
    reading = ScaatReading(epsilon=0.1, steps=3, step_size=0.05, random_start=False, gamma=0.05, q_min=0.1, q_max=0.9,
                           warmup=1)
    q = torch.tensor([0.75, 0.75])
    adv = scaat_examples(model, x, labels, q, reading=reading)
    survived = model(adv).argmax(1) == labels
    assert survived.tolist() == [True, False]
    assert update_q(q, survived, 1, warmup=reading.warmup, gamma=reading.gamma, q_min=reading.q_min,
                    q_max=reading.q_max).tolist() == pytest.approx([0.75, 0.75])  # warm-up
    new = update_q(q, survived, 2, warmup=reading.warmup, gamma=reading.gamma, q_min=reading.q_min, q_max=reading.q_max)
    assert new.tolist() == pytest.approx([0.8, 0.7])
    # with q = 0.5 only the right half may move, and the near-boundary image survives as well
    adv = scaat_examples(model, x, labels, torch.tensor([0.5, 0.5]), reading=reading)
    assert (model(adv).argmax(1) == labels).all()


# ----------------------------------------------------------------------------- adversarial training lowers sensitivity


def _fit_digits(adversarial: bool, steps: int = 100, seed: int = 0) -> nn.Module:
    """A tiny strided CNN on Digits (32 x 32, 1,347 training images), 100 Adam steps of 64 images; adversarially:
    on L_inf PGD examples of radius 0.1 (Yeh et al.'s MNIST setting), 2 steps of 0.1."""
    train = data.digits("train")
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 12, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(12 * 64, 10))
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(2)
    settings = PGDSettings(epsilon=0.1, steps=2, step_size=0.1)
    for _ in range(steps):
        idx = torch.randint(0, len(train.images), (64,), generator=g)
        x, y = train.images[idx], train.labels[idx]
        if adversarial:
            x = pgd_linf(model, x, y, settings=settings, generator=g)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_adversarial_training_lowers_the_gradients_max_sensitivity_on_a_tiny_model():
    """Yeh et al. §3.2 / Table 1: an adversarially trained model has a less sensitive gradient explanation. Measured
    with ``dance.metrics.max_sensitivity`` (r = 0.1, L_inf, 10 samples) on 16 Digits test images. Raw distances
    (``normalize=None``, the quantity Theorem 3.1 and Proposition 2.2 bound) drop about threefold in this setting;
    the unit-normalised one (Yeh et al.'s experiments) drops too here, by less, and it is the fragile one: on other
    tiny settings tried while writing this test (longer training, wider nets) it rose."""
    test = data.digits("test")
    x, y = test.images[:16], test.labels[:16]
    regular, robust = _fit_digits(False), _fit_digits(True)
    for model in (regular, robust):
        assert (model(test.images).argmax(1) == test.labels).float().mean() > 0.85  # both learned the task
    raw = [max_sensitivity(lambda v, t, m=m: dance.attacks.gradient(m, v, t), x, y, radius=0.1, n_samples=10,
                           normalize=None).mean() for m in (regular, robust)]
    unit = [max_sensitivity(lambda v, t, m=m: dance.attacks.gradient(m, v, t), x, y, radius=0.1, n_samples=10).mean()
            for m in (regular, robust)]
    assert raw[1] < 0.6 * raw[0]
    assert unit[1] < unit[0]


# ----------------------------------------------------------------------------- the zoo's trainings


@pytest.mark.parametrize("training", ["adversarial", "scaat"])
def test_zoo_trains_and_loads_a_remedy_variant(tmp_path, training):
    rec = zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=64, threads=1, log=lambda s: None, training=training)
    stem = f"vgg-digits-{training}"
    assert rec["weights"] == stem and (tmp_path / f"{stem}.pt").exists()
    assert rec["training"]["remedy"] == training and rec["command"].endswith(f"--training {training}")
    assert rec["training"]["remedy_settings"]["epsilon"] == 0.1
    assert json.loads((tmp_path / f"{stem}.json").read_text())["sha256"] == rec["sha256"]
    model = zoo.load("vgg-digits", weights_dir=tmp_path, training=training)  # its sha256 checks out
    assert model.trained_with == training
    if training == "scaat":
        assert rec["training"]["final_q"]["mean"] == pytest.approx(zoo.SCAAT.q_init)  # one epoch: all warm-up
    with pytest.raises(FileNotFoundError, match="--training"):
        zoo.load("vgg-digits", weights_dir=tmp_path, training="scaat" if training == "adversarial" else "adversarial")


def test_zoo_refuses_an_unknown_training(tmp_path):
    with pytest.raises(ValueError, match="training"):
        zoo.train("vgg-digits", out=tmp_path, epochs=1, n_train=8, training="fgsm")
    with pytest.raises(ValueError, match="training"):
        zoo.load("vgg-digits", training="fgsm")
