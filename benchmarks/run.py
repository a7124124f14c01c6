"""Benchmarks of decoy generation: the four targets of issue 7 and scaling curves.

The targets, each a function here and a key of the result file (``"target1"`` ... ``"target4"``):
:func:`cost_per_decoy` (1), :func:`dance_vs_smoothgrad` (2), :func:`batched_speedup` (3) and
:func:`memory_vs_n` (4). Timing and the machine record are the book's
(:mod:`dance_book.experiments.runtime`), so the book and the benchmarks measure alike.

Run from the repository root::

    python benchmarks/run.py                 # CPU, full (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick         # smoke run, seconds
    python benchmarks/run.py --device cuda   # the same on a GPU

Every ratio is measured in one run, on the same model and input, with the two sides timed in
interleaved rounds (median over rounds), so that a machine that slows down or speeds up during
the run affects both sides alike. Results go to ``benchmarks/results/<device>[-quick].json`` and
two CSV files beside it; ``benchmarks/README.md`` explains every column.
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import dance  # noqa: E402
import dance.decoys  # noqa: E402
from dance_book.experiments.runtime import CLOCK, PAPER_RATIO, machine_info, sync, time_call  # noqa: E402
import dance_book.data  # noqa: E402
from dance_book import zoo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: The decoy settings of every measurement: the book's CI setting (tolerance 10% of max|F_l(x)|).
DECOY = dict(epsilon=0.1, relative=True)
SOLVERS = {"adam": {}, "linesearch": {"solver": "linesearch"}}
#: The parts of a run: the four targets and the scaling curves.
PARTS = ["1", "2", "3", "4", "curves"]


# ------------------------------------------------------------------------------------------
# Machine, timing, memory
# ------------------------------------------------------------------------------------------

def interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, rounds: int) -> Dict[str, List[float]]:
    """Time every function once per round (:func:`~dance_book.experiments.runtime.time_call`), the
    rounds interleaved, after one warm-up call each.

    Returns, per name, the list of per-round seconds on the primary clock
    (:data:`~dance_book.experiments.runtime.CLOCK`) and,
    under ``name + "_wall"`` / ``name + "_cpu"``, both clocks.
    """
    for fn in fns.values():
        fn()
    primary = CLOCK.get(device.type, "wall")
    times: Dict[str, List[float]] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            wall, cpu = time_call(fn, device)
            times.setdefault(name, []).append(cpu if primary == "cpu" else wall)
            times.setdefault(name + "_wall", []).append(wall)
            times.setdefault(name + "_cpu", []).append(cpu)
    return times


def quiet(fn, *args, **kwargs):
    """Call without the RuntimeWarnings about dropped decoys (their number is recorded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def decoy_kwargs(options: dict) -> dict:
    """The recorded flat options of a run (e.g. ``{"solver": "linesearch", "rtol": 0.05}``) as
    :func:`dance.generate_decoys` keywords, solver settings folded into their solver object."""
    kw = dict(options)
    solver = kw.pop("solver", "adam")
    adam = {k: kw.pop(k) for k in list(kw) if k in dance.Adam.__dataclass_fields__}
    if solver == "linesearch":
        kw["solver"] = dance.LineSearch(**({"rtol": kw.pop("rtol")} if "rtol" in kw else {}))
    else:
        kw["solver"] = dance.Adam(**adam)
    return kw


def forget_caches(model) -> None:
    """Drop the cached mask family and footprint analysis of ``model`` (to time a first call)."""
    dance.decoys.forget_mask_cache(model)


# ------------------------------------------------------------------------------------------
# Models and inputs
# ------------------------------------------------------------------------------------------

def ci_model(device: torch.device, size: int = 64, trained: bool = True):
    """The CI model: ``vgg-shapes`` (trained weights when shipped) on a Shapes image, layer
    ``features.conv2_1`` (after conv1_1 and pool1, like the paper's early VGG16 layer).
    Other sizes: the same architecture with random weights on a random image."""
    name = "vgg-shapes"
    if size == 64 and trained:
        try:
            model = zoo.load(name)
            label = "vgg-shapes (trained)"
        except Exception:  # weights missing: timing does not depend on them
            model, label = _seeded(lambda: zoo.build(name)), "vgg-shapes (random weights)"
        data = dance_book.data.shapes(1)
        x, target = data.images[:1], int(data.labels[0])
    else:
        cfg = zoo.ZOO[name]
        model = _seeded(lambda: zoo.VGGStyle(cfg["blocks"], in_channels=3, image_size=size, num_classes=6,
                                             hidden=cfg["hidden"]))
        label = f"vgg-shapes architecture at {size}x{size} (random weights)"
        x, target = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)), 0
    return dict(model=model.eval().to(device), x=x.to(device), target=target, layer="features.conv2_1",
                label=label)


def vgg16_model(device: torch.device):
    """torchvision VGG16 with random weights (timing does not depend on them) on a random
    224x224 image; layer ``features.3`` = the ReLU after conv1_2, i.e. the paper's Table A2
    "l = 3" read as an index of ``vgg16.features`` (0 conv1_1, 1 relu, 2 conv1_2, 3 relu)."""
    import torchvision
    model = _seeded(lambda: torchvision.models.vgg16(weights=None))
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return dict(model=model.eval().to(device), x=x.to(device), target=0, layer="features.3",
                label="torchvision vgg16 at 224x224 (random weights)")


def _seeded(build, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------

def _decoy_stats(d) -> Dict[str, object]:
    return {
        "n_decoys": len(d),
        "dropped": d.dropped,
        "passes": d.steps_run,
        "movement_mean": float(d.movement.mean()) if len(d) else 0.0,
        "deviation_over_epsilon_max": float((d.deviation / d.epsilon).max()) if len(d) else 0.0,
    }


def cost_per_decoy(setup, device, rounds: int, solvers: Dict[str, dict]) -> List[dict]:
    """Target 1: amortised optimisation cost per decoy / one vanilla-gradient map (Captum Saliency)."""
    from captum.attr import Saliency
    model, x, target, layer = setup["model"], setup["x"], setup["target"], setup["layer"]
    saliency = Saliency(model)
    rows = []
    for solver, opts in solvers.items():
        kw = decoy_kwargs({**DECOY, **opts})
        forget_caches(model)
        start = time.perf_counter()
        d = quiet(dance.generate_decoys, model, x, layer, **kw)
        sync(device)
        first = time.perf_counter() - start
        t = interleaved({
            "decoys": lambda: quiet(dance.generate_decoys, model, x, layer, **kw),
            "saliency": lambda: quiet(saliency.attribute, x, target=target, abs=False),
        }, device, rounds)
        n = max(1, len(d))
        ratios = [a / n / b for a, b in zip(t["decoys"], t["saliency"])]
        walls = [a / n / b for a, b in zip(t["decoys_wall"], t["saliency_wall"])]
        rows.append({"clock": CLOCK.get(device.type, "wall"), "ratio_wall": statistics.median(walls),
            "model": setup["label"], "layer": layer, "solver": solver, "options": opts,
            "seconds_decoys": statistics.median(t["decoys"]), "seconds_first_call": first,
            "seconds_saliency": statistics.median(t["saliency"]),
            "seconds_per_decoy": statistics.median(t["decoys"]) / n,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "threshold": PAPER_RATIO, **_decoy_stats(d),
        })
        rows[-1]["seconds_per_pass"] = rows[-1]["seconds_decoys"] / max(1, rows[-1]["passes"])
        rows[-1]["met"] = rows[-1]["ratio"] <= PAPER_RATIO
        _print_row("T1", rows[-1])
    return rows


def dance_vs_smoothgrad(setup, device, rounds: int, solvers: Dict[str, dict]) -> List[dict]:
    """Target 2: DANCE map (gradient base, N decoys) / Captum NoiseTunnel(Saliency) SmoothGrad with N samples."""
    from captum.attr import NoiseTunnel, Saliency
    model, x, target, layer = setup["model"], setup["x"], setup["target"], setup["layer"]
    rows = []
    for solver, opts in solvers.items():
        explainer = dance.DecoyEnhanced(Saliency(model), layer=layer, **decoy_kwargs({**DECOY, **opts}))
        _, decoys = quiet(explainer.attribute, x, target, return_decoys=True)
        n = len(decoys[0])
        smooth = NoiseTunnel(Saliency(model))
        t = interleaved({
            "dance": lambda: quiet(explainer.attribute, x, target),
            "smoothgrad": lambda: quiet(smooth.attribute, x, nt_type="smoothgrad", nt_samples=n, stdevs=0.15,
                                        target=target, abs=False),
        }, device, rounds)
        ratios = [a / b for a, b in zip(t["dance"], t["smoothgrad"])]
        walls = [a / b for a, b in zip(t["dance_wall"], t["smoothgrad_wall"])]
        rows.append({"clock": CLOCK.get(device.type, "wall"), "ratio_wall": statistics.median(walls),
            "model": setup["label"], "layer": layer, "solver": solver, "options": opts, "n_decoys": n,
            "seconds_dance": statistics.median(t["dance"]), "seconds_smoothgrad": statistics.median(t["smoothgrad"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "threshold": 2.0,
        })
        rows[-1]["met"] = rows[-1]["ratio"] <= 2.0
        _print_row("T2", rows[-1])
    return rows


def batched_speedup(setup, device, rounds: int, solvers: Dict[str, dict]) -> List[dict]:
    """Target 3: batched optimiser vs the same decoys optimised one at a time (``batch_size=1``)."""
    model, x, layer = setup["model"], setup["x"], setup["layer"]
    rows = []
    for solver, opts in solvers.items():
        kw = decoy_kwargs({**DECOY, **opts})
        batched = quiet(dance.generate_decoys, model, x, layer, **kw)
        alone = quiet(dance.generate_decoys, model, x, layer, batch_size=1, **kw)
        same_set = torch.equal(batched.masks, alone.masks) and torch.equal(batched.signs, alone.signs)
        t = interleaved({
            "batched": lambda: quiet(dance.generate_decoys, model, x, layer, **kw),
            "one_at_a_time": lambda: quiet(dance.generate_decoys, model, x, layer, batch_size=1, **kw),
        }, device, rounds)
        speedups = [b / a for a, b in zip(t["batched"], t["one_at_a_time"])]
        walls = [b / a for a, b in zip(t["batched_wall"], t["one_at_a_time_wall"])]
        rows.append({"clock": CLOCK.get(device.type, "wall"), "speedup_wall": statistics.median(walls),
            "model": setup["label"], "layer": layer, "solver": solver, "options": opts,
            "n_decoys": len(batched) + batched.dropped,
            "seconds_batched": statistics.median(t["batched"]),
            "seconds_one_at_a_time": statistics.median(t["one_at_a_time"]),
            "speedup": statistics.median(speedups), "speedup_min": min(speedups), "speedup_max": max(speedups),
            "same_decoys_kept": bool(same_set),
            "max_abs_image_difference": float((batched.images - alone.images).abs().max()) if same_set else None,
            "max_abs_deviation_difference": float((batched.deviation - alone.deviation).abs().max()) if same_set else None,
            "epsilon": batched.epsilon, "threshold": 10.0,
        })
        rows[-1]["met"] = rows[-1]["speedup"] >= 10.0 and same_set
        _print_row("T3", rows[-1])
    return rows


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux >= 4.0: ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_worker(spec: Dict[str, object]) -> Dict[str, object]:
    """One memory measurement (run in a fresh process on CPU): peak memory of one call.

    CPU: after the set-up (imports, model, image, one forward pass), the process's peak resident
    set is reset (Linux ``/proc/self/clear_refs``); the peak during the call (``VmHWM``) minus the
    resident set before it is the call's peak. Where the reset is unavailable, the growth of
    ``ru_maxrss`` is used (an underestimate if the set-up peaked higher). CUDA:
    ``max_memory_allocated`` during the call minus what was allocated before it.
    """
    device = torch.device(spec["device"])
    torch.set_num_threads(int(spec.get("threads", 1)))
    setup = ci_model(device, int(spec["size"]), trained=bool(spec.get("trained", True)))
    model, x, layer = setup["model"], setup["x"], spec.get("layer", setup["layer"])
    opts = dict(spec["options"])
    with torch.no_grad():
        model(x)
    method = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        method = "torch.cuda.max_memory_allocated"
    elif _reset_peak_rss() and _rss_kb("VmHWM") is not None:
        before = _rss_kb("VmRSS") * 1024
        method = "VmHWM after clear_refs"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        method = "ru_maxrss growth"
    start = time.perf_counter()
    d = quiet(dance.generate_decoys, model, x, layer, **decoy_kwargs({**DECOY, **opts}))
    sync(device)
    seconds_first = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    elif method == "VmHWM after clear_refs":
        peak = _rss_kb("VmHWM") * 1024 - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    start = time.perf_counter()
    quiet(dance.generate_decoys, model, x, layer, **decoy_kwargs({**DECOY, **opts}))
    sync(device)
    return {"peak_mb": max(0, peak) / 2 ** 20, "seconds_first_call": seconds_first, "method": method,
            "seconds": time.perf_counter() - start, "n_decoys": len(d) + d.dropped, "passes": d.steps_run}


def measure_memory(spec: Dict[str, object], in_process: bool) -> Dict[str, object]:
    if in_process:
        return memory_worker(spec)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)],
                         capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed for {spec}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_vs_n(device, quick: bool, threads: int, in_process: bool) -> List[dict]:
    """Target 4: peak memory vs the number of decoys N, with and without ``batch_size``: one patch per mask
    (``spacing=None``, the paper's construction) on the 64x64 CI model, a seeded subset of masks."""
    n_masks = [4, 16] if quick else [16, 64, 256, 484]
    batch_sizes = [None, 16] if quick else [None, 32]
    solvers = {"linesearch": {"solver": "linesearch"},
               # Adam's peak is reached in its first step: three steps measure it.
               "adam": {"steps": 3, "max_doublings": 0}}
    rows = []
    for solver, opts in solvers.items():
        for m in n_masks:
            for bs in batch_sizes:
                spec = {"device": str(device), "size": 64, "threads": threads,
                        "options": {**opts, "spacing": None, "n_masks": m, "batch_size": bs}}
                r = measure_memory(spec, in_process)
                rows.append({"solver": solver, "n_masks": m, "n_decoys": r["n_decoys"], "batch_size": bs,
                             "peak_mb": r["peak_mb"], "seconds": r["seconds"],
                             "method": ("in-process " if in_process else "fresh process, ") + r["method"]})
                print(f"  T4 {solver:10s} N={r['n_decoys']:4d} batch_size={str(bs):5s} peak {r['peak_mb']:8.1f} MB"
                      f"  {r['seconds']:.2f}s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# Scaling curves
# ------------------------------------------------------------------------------------------

def curve_size(device, rounds: int, sizes: List[int], solvers: Dict[str, dict], adam_max_size: int = 128) -> List[dict]:
    from captum.attr import Saliency
    rows = []
    for size in sizes:
        setup = ci_model(device, size, trained=False)
        model, x, layer = setup["model"], setup["x"], setup["layer"]
        saliency = Saliency(model)
        for solver, opts in solvers.items():
            if solver == "adam" and size > adam_max_size and device.type == "cpu":
                continue  # about a minute per call at 224x224 on a CPU core
            kw = decoy_kwargs({**DECOY, **opts})
            d = quiet(dance.generate_decoys, model, x, layer, **kw)
            t = interleaved({"decoys": lambda: quiet(dance.generate_decoys, model, x, layer, **kw),
                             "saliency": lambda: quiet(saliency.attribute, x, target=0, abs=False)}, device, rounds)
            rows.append({"curve": "image size", "x": size, "solver": solver, **_curve_point(d, t)})
            print(f"  size {size:4d} {solver:10s} N={len(d):4d} {rows[-1]['seconds_decoys']:.3f}s  "
                  f"per decoy / saliency {rows[-1]['ratio_per_decoy_to_saliency']:.3f}", flush=True)
    return rows


def _curve_point(d, t: Dict[str, List[float]]) -> dict:
    """The timing columns of a scaling-curve row: decoys ``d`` and interleaved timings ``t``."""
    n = max(1, len(d))
    return {"n_decoys": len(d), "seconds_decoys": statistics.median(t["decoys"]),
            "seconds_per_decoy": statistics.median(t["decoys"]) / n,
            "seconds_saliency": statistics.median(t["saliency"]),
            "ratio_per_decoy_to_saliency": statistics.median([a / n / b for a, b in zip(t["decoys"], t["saliency"])]),
            "passes": d.steps_run, "movement_mean": float(d.movement.mean()) if len(d) else 0.0}


def curve_depth(device, rounds: int, layers: Optional[List[str]], solvers: Dict[str, dict],
                adam_max_decoys: int) -> List[dict]:
    from captum.attr import Saliency
    setup = ci_model(device, 64)
    model, x, target = setup["model"], setup["x"], setup["target"]
    saliency = Saliency(model)
    layers = layers or zoo.layers("vgg-shapes")
    rows = []
    for depth, layer in enumerate(layers, start=1):
        n_rows = None
        for solver, opts in sorted(solvers.items(), key=lambda kv: kv[0] != "linesearch"):
            if solver == "adam" and n_rows is not None and n_rows > adam_max_decoys:
                continue  # Adam on hundreds of decoys at deep layers takes minutes per call
            kw = decoy_kwargs({**DECOY, **opts})
            forget_caches(model)
            start = time.perf_counter()
            d = quiet(dance.generate_decoys, model, x, layer, **kw)
            first = time.perf_counter() - start
            n_rows = len(d) + d.dropped
            t = interleaved({"decoys": lambda: quiet(dance.generate_decoys, model, x, layer, **kw),
                             "saliency": lambda: quiet(saliency.attribute, x, target=target, abs=False)},
                            device, rounds)
            rows.append({"curve": "layer depth", "x": depth, "layer": layer, "solver": solver,
                         "dropped": d.dropped, "seconds_first_call": first, **_curve_point(d, t)})
            print(f"  depth {depth} {layer:18s} {solver:10s} N={len(d):4d} {rows[-1]['seconds_decoys']:.3f}s "
                  f"per decoy / saliency {rows[-1]['ratio_per_decoy_to_saliency']:.3f}", flush=True)
    return rows


def curve_masks(memory_rows: List[dict]) -> List[dict]:
    """Time and peak memory vs the number of masks, from the memory runs (one call each)."""
    return [{"curve": "number of masks", "x": r["n_masks"], "solver": r["solver"], "n_decoys": r["n_decoys"],
             "batch_size": r["batch_size"], "seconds_decoys": r["seconds"], "peak_mb": r["peak_mb"]}
            for r in memory_rows]


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------

def _print_row(tag: str, row: dict) -> None:
    keys = [k for k in ("ratio", "speedup") if k in row]
    value = row[keys[0]]
    print(f"  {tag} {row['model'][:38]:38s} {row['solver']:10s} {keys[0]} {value:7.3f} "
          f"(threshold {row['threshold']}) {'met' if row['met'] else 'NOT met'}", flush=True)


def summary(result: Dict[str, object]) -> str:
    """A plain-text table of the four targets."""
    lines = ["target                                              model                      solver      value   threshold  met"]
    names = {"target1": "1 optimisation per decoy / one gradient map",
             "target2": "2 DANCE(gradient, N) / SmoothGrad(N)",
             "target3": "3 speedup batched vs one at a time"}
    for key, label in names.items():
        for r in result.get(key, []):
            v = r.get("ratio", r.get("speedup"))
            lines.append(f"{label:51s} {r['model'][:26]:26s} {r['solver']:10s} {v:7.3f}  {r['threshold']:8.3f}  "
                         f"{'yes' if r['met'] else 'no'}")
    mem = result.get("target4", [])
    for solver in sorted({r["solver"] for r in mem}):
        rows = [r for r in mem if r["solver"] == solver]
        for bs in sorted({r["batch_size"] for r in rows}, key=lambda b: (b is not None, b or 0)):
            series = [f"N={r['n_decoys']}: {r['peak_mb']:.0f} MB" for r in rows if r["batch_size"] == bs]
            lines.append(f"4 peak memory, {solver}, batch_size={bs}: " + ", ".join(series))
    return "\n".join(lines)


def _write_csv(path: Path, rows: List[dict]) -> None:
    if not rows:
        return
    keys: List[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})


def run(quick: bool = False, device: str = "cpu", threads: int = 1, out: Optional[Path] = RESULTS,
        vgg16: bool = True, memory: str = "auto", only: Optional[List[str]] = None) -> Dict[str, object]:
    """Run the benchmarks; returns the result dict (also written to ``out`` unless None).

    ``only``: a subset of ``["1", "2", "3", "4", "curves"]`` (default: all), e.g. on a lent GPU
    with little time.
    """
    parts = set(only or PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"only must name parts among {PARTS}, got {sorted(unknown)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch.cuda.is_available() is False")
    torch.set_num_threads(threads)
    in_process = memory == "inprocess" or (memory == "auto" and (quick or dev.type == "cuda"))
    rounds = 1 if quick else 7
    result: Dict[str, object] = {"machine": machine_info(dev), "quick": quick, "decoy_settings": DECOY,
                                 "paper_ratio": PAPER_RATIO}
    t0 = time.perf_counter()
    print(f"machine: {result['machine']}", flush=True)
    ci = ci_model(dev, 32 if quick else 64, trained=not quick)
    setups = [ci]
    if vgg16 and not quick:
        setups.append(vgg16_model(dev))
    # --quick: a seeded subset of 4 masks (8 decoys) keeps the smoke run to seconds.
    base = {k: {**v, "n_masks": 4} for k, v in SOLVERS.items()} if quick else dict(SOLVERS)
    print("target 1: amortised optimisation cost per decoy / one vanilla-gradient map", flush=True)
    result["target1"] = []
    for s in setups if "1" in parts else []:
        big = s is not ci
        solvers = dict(base)
        if not quick:
            # quality reference: the line search run closer to convergence
            solvers["linesearch rtol=0.05"] = {"solver": "linesearch", "rtol": 0.05}
        if big and dev.type == "cpu":
            # Adam at 224x224 on a CPU: capped (its default runs until stalled: ~30 steps on the
            # CI model, up to steps * (1 + max_doublings)); recorded in the options column.
            solvers["adam"] = {"steps": 5, "max_doublings": 0}
        result["target1"] += cost_per_decoy(s, dev, 1 if big else rounds, solvers)
    print("target 2: DANCE map with N decoys / SmoothGrad with N samples", flush=True)
    result["target2"] = []
    for s in setups if "2" in parts else []:
        big = s is not ci
        solvers = {"linesearch": SOLVERS["linesearch"]} if big else dict(base)
        result["target2"] += dance_vs_smoothgrad(s, dev, 1 if big else rounds, solvers)
    print("target 3: batched vs one at a time", flush=True)
    result["target3"] = batched_speedup(ci, dev, 1 if quick else 3, base) if "3" in parts else []
    print("target 4: peak memory vs N with batch_size", flush=True)
    result["target4"] = memory_vs_n(dev, quick, threads, in_process) if "4" in parts else []
    print("scaling curves", flush=True)
    sizes = [32] if quick else [32, 64, 128, 224]
    result["scaling"] = [] if "curves" not in parts else (curve_size(dev, 1 if quick else 3, sizes, base)
                         + curve_depth(dev, 1 if quick else 3,
                                       ["features.conv1_1"] if quick else None,
                                       base, adam_max_decoys=64)
                         + curve_masks(result["target4"]))
    result["seconds_total"] = time.perf_counter() - t0
    text = summary(result)
    print(text, flush=True)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = dev.type + ("-quick" if quick else "")
        with open(out / f"{stem}.json", "w") as f:
            json.dump(result, f, indent=1, default=str)
        _write_csv(out / f"{stem}_targets.csv",
                   [{"target": k[-1], **r} for k in ("target1", "target2", "target3", "target4") for r in result[k]])
        _write_csv(out / f"{stem}_scaling.csv", result["scaling"])
        print(f"wrote {out / (stem + '.json')} and CSV files ({result['seconds_total']:.0f} s)", flush=True)
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few rounds (seconds)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON and CSV results ('' to skip)")
    p.add_argument("--no-vgg16", action="store_true", help="skip torchvision VGG16 at 224x224")
    p.add_argument("--memory", choices=["auto", "subprocess", "inprocess"], default="auto",
                   help="how CPU peak memory is measured (auto: subprocess, in-process with --quick)")
    p.add_argument("--only", help=f"comma-separated parts to run among {','.join(PARTS)} (default: all)")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return {}
    return run(quick=args.quick, device=args.device, threads=args.threads, out=Path(args.out) if args.out else None,
               vgg16=not args.no_vgg16, memory=args.memory, only=args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
