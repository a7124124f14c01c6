"""Training the zoo's models with their fixed configuration (``python -m dance_book.zoo train ...``)."""
from __future__ import annotations

import sys

import io
import json
import math
import time
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F

from .. import data as _data
from .registry import WEIGHTS_DIR, ZOO, build, check_name, dataset_info, evaluate, file_sha256, heldout, layers, train_command, weights_stem
from .remedies import PGD, SCAAT, TRAININGS, PGDSettings, pgd_linf, scaat_examples, settings_of, update_q


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    # Translate each image by up to `shift` pixels (zero fill), all images at once.
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, x.shape[1], h, w + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


def train(
    name: str,
    *,
    out: Union[str, Path, None] = None,
    epochs: Optional[int] = None,
    n_train: Optional[int] = None,
    n_heldout: Optional[int] = None,
    seed: Optional[int] = None,
    threads: Optional[int] = 1,
    log=None,
    training: str = "regular",
    epsilon: Optional[float] = None,
    init: Optional[str] = None,
) -> dict:
    """Train zoo model ``name`` with its fixed configuration (:data:`ZOO`), save the weights
    to ``out/<stem>.pt`` and the record to ``out/<stem>.json``, and return the record
    (``stem`` is ``name`` for regular training, ``name-adversarial`` or ``name-scaat`` otherwise).

    Args:
        name: zoo model name.
        out: output folder (default: the package's ``weights`` folder, i.e. overwrite the
            shipped weights).
        epochs, n_train, seed: override the configuration (for quick runs and tests);
            ``n_train`` is images per epoch for Shapes, a prefix of the train split for Digits.
        n_heldout: size of the held-out set for the recorded accuracy.
        threads: ``torch.set_num_threads`` during training (restored afterwards); None keeps it.
        log: where progress lines go (default: printed).
        training: ``"regular"`` (cross-entropy on the images), ``"adversarial"`` (cross-entropy on
            :func:`~dance_book.zoo.remedies.pgd_linf` examples, settings
            :data:`~dance_book.zoo.remedies.PGD`) or ``"scaat"`` (the book's reading of the SCAAT poster,
            :data:`~dance_book.zoo.remedies.SCAAT`).
        epsilon: adversarial training only: the PGD radius instead of :data:`~dance_book.zoo.remedies.PGD`'s
            (Yeh et al.: 0.1 on MNIST, 0.03 on CIFAR-10), with the step size scaled in proportion; recorded in
            the record's ``remedy_settings`` and command.
        init: ``None`` (random weights, seeded) or ``"regular"``: start from the shipped regular model's weights
            (checked against its record) and fine-tune them with ``training``; the record names them and their
            sha256.
    """
    cfg = dict(ZOO[check_name(name)])
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {TRAININGS}, got {training!r}")
    for key, value in (("epochs", epochs), ("n_train", n_train), ("seed", seed)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
                raise ValueError(f"{key} must be a {'non-negative' if key == 'seed' else 'positive'} int, got {value!r}")
            cfg[key] = value
    pgd = PGD
    if epsilon is not None:
        if training != "adversarial":
            raise ValueError(f"epsilon applies to training='adversarial' only, got training={training!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon <= 1:
            raise ValueError(f"epsilon must be a number in (0, 1] (pixels in [0, 1]), got {epsilon!r}")
        pgd = replace(PGD, epsilon=float(epsilon), step_size=PGD.step_size * float(epsilon) / PGD.epsilon)
    if init not in (None, "regular"):
        raise ValueError(f"init must be None (random weights) or 'regular' (the shipped regular weights), got {init!r}")
    if init is not None and training == "regular":
        raise ValueError("init='regular' fine-tunes the regular model with a remedy; pass training='adversarial' or 'scaat'")
    out = Path(out or WEIGHTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        overrides = dict(epochs=epochs, n_train=n_train, n_heldout=n_heldout, seed=seed, epsilon=epsilon, init=init)
        return _train(name, cfg, out, n_heldout, log, training, overrides, pgd, init)
    finally:
        torch.set_num_threads(old_threads)


def _train(name: str, cfg: dict, out: Path, n_heldout: Optional[int], log, training: str = "regular",
           overrides: Optional[dict] = None, pgd: PGDSettings = PGD, init: Optional[str] = None) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    # The remedies' random starts have their own stream, so the data order is that of regular training.
    attack_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    fixed_pool = training == "scaat" and SCAAT.data == "fixed"
    model = build(name)
    if init == "regular":
        from .registry import load

        model.load_state_dict(load(name, frozen=False).state_dict())
        model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["dataset"] == "digits":
        train_set = _data.digits("train")
        if cfg["n_train"]:
            train_set = train_set.subset(slice(0, cfg["n_train"]))
        n_per_epoch = len(train_set)
    else:
        n_per_epoch = cfg["n_train"]
        if fixed_pool:  # q_i belongs to a sample: one fixed set, revisited every epoch
            train_set = _data.shapes(n_per_epoch, seed=_data.SHAPES_TRAIN_SEED)
    q = torch.full((n_per_epoch,), SCAAT.q_init) if training == "scaat" else None
    steps_per_epoch = math.ceil(n_per_epoch / cfg["batch_size"])
    total = cfg["epochs"] * steps_per_epoch
    # one-cycle: warm up, then cosine decay; robust without tuning per model
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=total, pct_start=0.15)
    model.train()
    for epoch in range(cfg["epochs"]):
        t_epoch = time.perf_counter()
        if cfg["dataset"] == "shapes" and not fixed_pool:
            # fresh images every epoch: a stream the held-out seed never shares
            train_set = _data.shapes(n_per_epoch, seed=_data.SHAPES_TRAIN_SEED + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start : start + cfg["batch_size"]]
            x = _random_shift(train_set.images[idx], cfg["shift"], gen)
            y = train_set.labels[idx]
            if training == "regular":
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            elif training == "adversarial":
                logits = model(pgd_linf(model, x, y, settings=pgd, generator=attack_gen))
                loss = F.cross_entropy(logits, y)
            else:
                adv = scaat_examples(model, x, y, q[idx], reading=SCAAT, generator=attack_gen)
                both = model(torch.cat([x, adv]))
                logits, adv_logits = both[: len(idx)], both[len(idx):]
                loss = SCAAT.clean_weight * F.cross_entropy(logits, y) + (1 - SCAAT.clean_weight) * F.cross_entropy(adv_logits, y)
                q[idx] = update_q(q[idx], adv_logits.argmax(1) == y, epoch + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        q_note = "" if q is None else f", q mean {float(q.mean()):.3f} (min {float(q.min()):.2f}, max {float(q.max()):.2f})"
        log(
            f"{name} epoch {epoch + 1}/{cfg['epochs']}: loss {total_loss / len(order):.4f}, "
            f"train accuracy {correct / len(order):.4f}{q_note} ({time.perf_counter() - t_epoch:.1f} s)"
        )
    train_seconds = time.perf_counter() - t_start
    model.eval()
    test = heldout(name, n_heldout)
    accuracy, _ = evaluate(model, test)
    log(f"{weights_stem(name, training)}: held-out accuracy {accuracy:.4f} on {len(test)} images ({train_seconds:.0f} s of training)")

    # Save a plain, contiguous state_dict: the file's bytes then depend only on the values.
    state = OrderedDict((k, v.detach().contiguous().clone()) for k, v in model.state_dict().items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    stem = weights_stem(name, training)
    weights_path = out / f"{stem}.pt"
    weights_path.write_bytes(buffer.getvalue())
    classes, channels, size = dataset_info(cfg["dataset"])
    rec = {
        "name": name,
        "architecture": cfg["arch"],
        "classes": list(classes),
        "input": {"channels": channels, "size": size, "range": [0.0, 1.0]},
        "layers": layers(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": (
            {
                "dataset": "dance_book.data.shapes",
                "train": (f"{n_per_epoch} fixed images, seed SHAPES_TRAIN_SEED ({_data.SHAPES_TRAIN_SEED}), revisited every epoch"
                          if fixed_pool else
                          f"{n_per_epoch} fresh images per epoch, seed SHAPES_TRAIN_SEED + epoch "
                          f"({_data.SHAPES_TRAIN_SEED} .. {_data.SHAPES_TRAIN_SEED + cfg['epochs'] - 1})"),
                "heldout": f"first {len(test)} images of seed SHAPES_TEST_SEED ({_data.SHAPES_TEST_SEED})",
            }
            if cfg["dataset"] == "shapes"
            else {
                "dataset": "dance_book.data.digits (sklearn load_digits, upsampled to 32x32, 1 channel)",
                "train": f"train split, {n_per_epoch} images, random shifts of up to {cfg['shift']} px",
                "heldout": f"test split, {len(test)} images",
            }
        ),
        "training": {
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch_size"],
            "optimizer": "AdamW",
            "lr": cfg["lr"],
            "schedule": "OneCycleLR(pct_start=0.15)",
            "weight_decay": cfg["weight_decay"],
            "seed": cfg["seed"],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "seconds": round(train_seconds, 1),
        },
        "heldout_accuracy": accuracy,
        "heldout_n": len(test),
        "file_bytes": weights_path.stat().st_size,
        "sha256": file_sha256(weights_path),
        "command": train_command(name, training, **(overrides or {})),
    }
    default_epochs = ZOO[name]["epochs"]
    if cfg["epochs"] != default_epochs:  # say so: a shorter (or longer) run than the zoo's configuration
        rec["training"]["note"] = (
            f"{cfg['epochs']} epochs, {'fewer' if cfg['epochs'] < default_epochs else 'more'} than the "
            f"{default_epochs} of the zoo's configuration (and of the regular model's record)"
        )
    if training != "regular":  # the regular records keep their format
        rec["weights"] = stem
        rec["training"]["remedy"] = training
        rec["training"]["remedy_settings"] = asdict(pgd) if training == "adversarial" else settings_of(training)
        if init == "regular":
            rec["training"]["init"] = {"from": "regular", "weights": f"{name}.pt",
                                       "sha256": file_sha256(WEIGHTS_DIR / f"{name}.pt")}
        if q is not None:
            rec["training"]["final_q"] = {"mean": float(q.mean()), "min": float(q.min()), "max": float(q.max())}
    (out / f"{stem}.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec
