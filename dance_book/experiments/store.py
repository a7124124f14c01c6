"""The results store: the book's heavy results, computed once by ``make results`` and committed.

The chapters read their heavy results (attack runs, fidelity scores, sweeps: every :func:`cached`
result except the decoys themselves, which are large and only an input) from ``results/<scale>/``
in the repository, so that the book executes in minutes; nothing in the store is edited by hand.

Trust comes from two rules:

* Every entry carries its provenance beside it (``<key>.json``): the result's name and
  configuration, the chapter that asked for it, the code version (:func:`code_version`), the
  library versions, the machine, the date and the wall time of its computation.
* Each CI run recomputes a random sample of entries with the current code while the chapters
  execute (:func:`pick_checks`, chosen afresh each run within a time budget, a few per chapter) and
  fails if one differs beyond float tolerance (:func:`differences`), so a stale or wrong store
  cannot land. The rechecked entries and their outcomes are written to a report that the claims
  chapter shows.

An entry's key is its name, its configuration and the inputs' identity (library versions, and at
paper scale the image set and the weights) -- not the code version: a code change that moves a
number is what the recheck exists to catch, and ``make results`` regenerates the whole store.

Environment: ``DANCE_RESULTS=read`` (default: use the store where it has the entry, compute
otherwise), ``write`` (``make results``: compute every entry into ``results/<scale>.new/``, which
replaces the store when the run completes; a killed run resumes there), ``off`` (ignore it);
``DANCE_RESULTS_DIR`` overrides ``results/``; ``DANCE_RESULTS_CHECK`` names a JSON list of keys to
recompute and ``DANCE_RESULTS_REPORT`` the JSON-lines file the outcomes are appended to.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

_ROOT = Path(__file__).resolve().parents[2]
#: Results that stay out of the store: large intermediate inputs, not results a chapter reports, and the
#: runtime chapter's timings (of the machine and moment of a build; the build's own cache keeps them).
NOT_STORED = frozenset({"decoys", "runtime"})
#: Float tolerance of a recheck: ``|a - b| <= ATOL + RTOL * |b|`` elementwise.
RTOL, ATOL = 1e-4, 1e-6
MODES = ("read", "write", "off")
#: Entries of a result that are timings of the run that computed it: they belong to the machine and the
#: moment, so a recheck does not compare them (the chapters show them as "measured when the store was made").
TIMING_KEYS = frozenset({"seconds", "wall_seconds"})


class StoreMismatch(RuntimeError):
    """A stored result differs from its recomputation with the current code."""


def mode() -> str:
    value = os.environ.get("DANCE_RESULTS", "read").lower()
    if value not in MODES:
        raise ValueError(f"DANCE_RESULTS must be one of {MODES}, got {value!r}")
    return value


def root() -> Path:
    """``results/`` of the book's checkout (``DANCE_RESULTS_DIR`` overrides it)."""
    env = os.environ.get("DANCE_RESULTS_DIR")
    if env:
        return Path(env)
    if (_ROOT / "_config.yml").exists():
        return _ROOT / "results"
    return Path.home() / ".cache" / "dance" / "results"


def store_dir(scale: Optional[str] = None, writing: Optional[bool] = None) -> Path:
    """The store of ``scale`` (default: the current one); ``make results`` writes beside it, into ``<scale>.new``."""
    from ..scale import current_scale

    scale = scale or current_scale()
    writing = mode() == "write" if writing is None else writing
    return root() / (f"{scale}.new" if writing else scale)


def entry_key(name: str, config: Any) -> str:
    from .cache import inputs_identity

    blob = json.dumps({"name": name, "config": config, "inputs": inputs_identity()}, sort_keys=True, default=repr)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


@lru_cache(maxsize=1)
def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _load(path: Path):
    return torch.load(path, weights_only=False)


def _save(value: Any, path: Path, provenance: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)  # the value first: an entry whose provenance exists is complete
    path.with_suffix(".json").write_text(json.dumps(provenance, sort_keys=True, indent=1, default=repr) + "\n")


def _check_keys() -> frozenset:
    path = os.environ.get("DANCE_RESULTS_CHECK")
    if not path:
        return frozenset()
    return frozenset(json.loads(Path(path).read_text()))


def _report(record: dict) -> None:
    path = os.environ.get("DANCE_RESULTS_REPORT")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


#: How many stored results are being computed around this one (a nested result is an input of another).
_depth = 0


def _computed(compute: Callable[[], Any]) -> Any:
    global _depth
    _depth += 1
    try:
        return compute()
    finally:
        _depth -= 1


#: Recorded compute of the cached inputs (decoys) that the results being computed here took from the
#: disk cache instead of computing (:func:`note_reused`).
_reused_seconds = 0.0


def note_reused(seconds: float) -> None:
    """Count ``seconds`` of compute that a cache hit saved the stored result being computed, if any."""
    global _reused_seconds
    if _depth > 0:
        _reused_seconds += seconds


def recheck_seconds(entry: dict) -> float:
    """What recomputing ``entry`` costs in a fresh clone (empty cache): its wall time plus the recorded
    compute of the cached inputs it reused (``scratch_seconds``; entries made before it was recorded
    have their wall time only)."""
    return float(entry.get("scratch_seconds", entry.get("wall_seconds", math.inf)))


#: Entries this process has rechecked (a chapter that asks for a result twice rechecks it once).
_rechecked: set = set()


def _owner(meta: Path) -> bool:
    """Whether this process runs the chapter that asked for the entry when it was made (that chapter
    rechecks it; another chapter reading it, such as the claims chapter, does not)."""
    running = os.environ.get("DANCE_CHAPTER")
    chapter = json.loads(meta.read_text()).get("chapter")
    return running is None or chapter is None or running == chapter


def result(name: str, config: Any, compute: Callable[[], Any], compute_fresh: Callable[[], Any]) -> Any:
    """A stored result: from the store where it has it (rechecked with ``compute_fresh`` when the
    run's check list names it), else ``compute()`` (written to the store by ``make results``).

    Only results that a chapter asks for itself (``top_level`` in the provenance) can be rechecked:
    a result used only inside another one is never asked for while the other comes from the store."""
    from .cache import code_version, inputs_identity

    key = entry_key(name, config)
    path = store_dir() / name / f"{key}.pt"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        value = _load(path)
        if mode() == "write" and _depth == 0:
            provenance = json.loads(meta.read_text())
            if not provenance.get("top_level"):
                provenance.update(top_level=True, chapter=os.environ.get("DANCE_CHAPTER"))
                meta.write_text(json.dumps(provenance, sort_keys=True, indent=1, default=repr) + "\n")
        if key in _check_keys() and _depth == 0 and key not in _rechecked and _owner(meta):
            _rechecked.add(key)
            clock = time.perf_counter()
            fresh = _computed(compute_fresh)
            seconds = time.perf_counter() - clock
            found = differences(value, fresh)
            _report({"key": key, "name": name, "chapter": os.environ.get("DANCE_CHAPTER"),
                     "seconds": round(seconds, 1), "matched": not found, "differences": found[:5]})
            if found:
                raise StoreMismatch(f"the stored result {key} differs from its recomputation with the current code "
                                    f"({len(found)} difference(s), first: {found[0]}); regenerate the store with "
                                    f"`make results` (and commit it)")
        return value
    if mode() != "write":
        return _computed(compute)
    top_level = _depth == 0
    clock, reused = time.perf_counter(), _reused_seconds
    value = _computed(compute)
    wall = time.perf_counter() - clock
    provenance = {"name": name, "key": key, "config": config, "chapter": os.environ.get("DANCE_CHAPTER"),
                  "top_level": top_level,
                  "code_version": code_version(), "inputs": inputs_identity(), "machine": machine(),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "wall_seconds": round(wall, 2), "scratch_seconds": round(wall + _reused_seconds - reused, 2)}
    _save(value, path, provenance)
    return value


def index(scale: Optional[str] = None) -> List[dict]:
    """The provenance of every entry of the store of ``scale``, sorted by chapter and key."""
    return index_of(store_dir(scale, writing=False))


def index_of(folder: Path) -> List[dict]:
    """The provenance of every entry in the store folder ``folder``."""
    entries = [json.loads(p.read_text()) for p in sorted(folder.glob("*/*.json"))] if folder.is_dir() else []
    return sorted(entries, key=lambda e: (str(e.get("chapter")), e["key"]))


def pick_checks(entries: List[dict], budget_seconds: float, per_chapter: int = 3,
                rng: Optional[random.Random] = None) -> List[dict]:
    """A random sample of ``entries`` to recompute: chapters in turn, each contributing a random
    entry that fits the remaining budget (by :func:`recheck_seconds`), at most ``per_chapter`` each;
    only entries a chapter asks for itself (``top_level``)."""
    rng = rng or random.Random()
    by_chapter: Dict[str, List[dict]] = {}
    for entry in (e for e in entries if e.get("top_level")):
        by_chapter.setdefault(str(entry.get("chapter")), []).append(entry)
    for group in by_chapter.values():
        rng.shuffle(group)
    chapters = sorted(by_chapter)
    rng.shuffle(chapters)
    picked, left = [], float(budget_seconds)
    for _ in range(per_chapter):
        for chapter in chapters:
            group = by_chapter[chapter]
            fits = [e for e in group if recheck_seconds(e) <= left]
            if fits:
                group.remove(fits[0])
                picked.append(fits[0])
                left -= recheck_seconds(fits[0])
    return picked


def read_report(path: Path) -> List[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return {str(c): _plain(value[c].to_numpy()) for c in value.columns}
    return value


def differences(stored: Any, fresh: Any, where: str = "result") -> List[str]:
    """Where ``fresh`` differs from ``stored`` beyond float tolerance (``RTOL``, ``ATOL``): empty if they agree.
    Timings (dict entries named in :data:`TIMING_KEYS`) are not compared."""
    a, b = _plain(stored), _plain(fresh)
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(map(str, set(a) ^ set(b)))} in only one"]
        return [d for k in a if k not in TIMING_KEYS for d in differences(a[k], b[k], f"{where}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, (np.ndarray, np.generic, float, int)) and not isinstance(a, bool) \
            and isinstance(b, (np.ndarray, np.generic, float, int)):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return [f"{where}: shape {x.shape} vs {y.shape}"]
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            x, y = x.astype(np.float64), y.astype(np.float64)
            close = np.isclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True)
            if not close.all():
                gap = np.nanmax(np.abs(x - y)[~close])
                return [f"{where}: {int((~close).sum())} of {x.size} values differ, by up to {gap:.3g}"]
            return []
        return [] if np.array_equal(x, y) else [f"{where}: values differ"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]
