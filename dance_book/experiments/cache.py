"""Cache experiment results by configuration and code, so chapters don't recompute each other's work.

A result is stored under a key made of its name, its configuration, a hash of the ``dance``
and ``dance_book`` source code, the versions of torch, torchvision and captum, and at paper scale
the image set (a content hash of the folder's file list and boxes, :func:`dance_book.imagenet.image_set_digest`)
and the weights: change any and it is recomputed. The default location is ``_build/.dance-cache``
in the book's checkout (a fresh clone starts empty, so CI computes everything once, in its first
pass, and the book build reuses it); ``DANCE_CACHE_DIR`` overrides it and ``DANCE_CACHE=off``
disables it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

_BOOK = Path(__file__).resolve().parents[1]
#: The packages whose sources make a result: the library and the book's code.
_PACKAGES = (Path(__import__("dance").__file__).resolve().parent, _BOOK)


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 over the ``dance`` and ``dance_book`` packages' Python sources (weights included via their files)."""
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted(package.rglob("*")):
            if path.suffix in (".py", ".pt", ".json") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(package.parent)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    env = os.environ.get("DANCE_CACHE_DIR")
    if env:
        return Path(env)
    root = _BOOK.parent
    if (root / "_config.yml").exists():
        return root / "_build" / ".dance-cache"
    return Path.home() / ".cache" / "dance"


@lru_cache(maxsize=1)
def library_versions() -> dict:
    """Versions of the libraries that compute the results (their numerics can change between releases)."""
    from importlib.metadata import version  # installed versions, without importing the packages

    return {"torch": torch.__version__, "torchvision": version("torchvision"), "captum": version("captum")}


@lru_cache(maxsize=8)
def _folder_digest(images: str, boxes, stamps) -> str:
    from ..imagenet import image_set_digest

    return image_set_digest(images, boxes)


def _stamp(folder) -> int:
    """Modification time of a folder: adding, removing or renaming a file in it re-hashes the image set."""
    return Path(folder).stat().st_mtime_ns if folder and Path(folder).is_dir() else 0


def inputs_identity() -> dict:
    """What a result depends on beyond its configuration and the code: the library versions and, at
    paper scale, the image set (folder content hash) and the weights (ImageNet or test-only random)."""
    from ..imagenet import paper_folders, weights_identity
    from ..scale import current_scale

    out = {"versions": library_versions()}
    if current_scale() == "paper":
        images, boxes = paper_folders()
        out["images"] = (_folder_digest(images, boxes, (_stamp(images), _stamp(boxes)))
                         if images and Path(images).is_dir() else None)
        out["weights"] = weights_identity()
    return out


def entry_key(name: str, config: Any) -> str:
    """The name of a result's cache entry: its name and a hash of its config, the code and the inputs."""
    blob = json.dumps({"name": name, "config": config, "code": code_version(), "inputs": inputs_identity()},
                      sort_keys=True, default=repr)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


@contextmanager
def _exclusive(path: Path):
    """Hold an advisory lock on ``path`` (POSIX): processes that run chapters side by side (the
    parallel notebook tests) compute a result once and the others wait for it, instead of
    computing it twice. Results depend on each other without cycles, so waiting cannot deadlock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst a result is computed twice
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(path: Path):
    try:
        return True, torch.load(path, weights_only=False)
    except Exception:  # a truncated file from an interrupted run: recompute
        path.unlink(missing_ok=True)
        return False, None


def cached(name: str, config: Any, compute: Callable[[], Any]) -> Any:
    """Return ``compute()``, stored on disk under (``name``, ``config``, code version).

    A result of the book (any ``name`` but those of :data:`store.NOT_STORED`) comes from the
    committed results store where it has it (:mod:`dance_book.experiments.store`)."""
    from . import store

    if name not in store.NOT_STORED and store.mode() != "off":
        return store.result(name, config, lambda: _disk_cached(name, config, compute), compute)
    return _disk_cached(name, config, compute)


def _disk_cached(name: str, config: Any, compute: Callable[[], Any]) -> Any:
    if os.environ.get("DANCE_CACHE", "on").lower() in ("off", "0", "false"):
        return compute()
    path = cache_dir() / f"{entry_key(name, config)}.pt"
    if path.exists():
        found, value = _load(path)
        if found:
            _reused(path)
            return value
    with _exclusive(path.with_suffix(".lock")):
        if path.exists():  # another process computed it while this one waited
            found, value = _load(path)
            if found:
                _reused(path)
                return value
        clock = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - clock
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
        # What the entry holds, readable without the code that keyed it (for comparing results
        # across code versions, e.g. before and after a refactoring), and what it cost to compute.
        path.with_suffix(".json").write_text(json.dumps({"name": name, "config": config,
                                                         "inputs": inputs_identity(),
                                                         "seconds": round(seconds, 2)}, sort_keys=True,
                                                        default=repr))
    return value


def _reused(path: Path) -> None:
    """Count a cache hit's recorded compute for the stored result being computed around it: a
    recheck in CI starts from an empty cache and pays it (:func:`store.note_reused`)."""
    from . import store

    try:
        seconds = float(json.loads(path.with_suffix(".json").read_text()).get("seconds", 0.0))
    except (OSError, ValueError):
        seconds = 0.0
    store.note_reused(seconds)
