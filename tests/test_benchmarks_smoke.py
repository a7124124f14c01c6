"""Smoke test: the benchmark script runs end to end in --quick mode and writes its results.

No timing is asserted (timings belong to the machine); only that every target is measured, the
files are written, and the decoys the benchmark timed kept their guarantees.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("dance_benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_runs_and_writes_results(tmp_path):
    bench = _load_benchmark()
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    for name in ("cpu-quick.json", "cpu-quick_targets.csv", "cpu-quick_scaling.csv"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "cpu-quick.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["quick"] is True
    solvers = {"adam", "linesearch"}
    for key, field in (("target1", "ratio"), ("target2", "ratio"), ("target3", "speedup")):
        rows = saved[key]
        assert {r["solver"] for r in rows} == solvers, key
        assert all(math.isfinite(r[field]) and r[field] > 0 for r in rows), key
        assert all(isinstance(r["met"], bool) for r in rows), key
    for r in saved["target1"]:
        assert r["n_decoys"] > 0 and r["deviation_over_epsilon_max"] <= 1.0
    # Batched and one-at-a-time runs optimise the same decoys to the same images (float order aside).
    for r in saved["target3"]:
        assert r["same_decoys_kept"] and r["max_abs_image_difference"] <= 1e-3
    assert {(r["solver"], r["batch_size"]) for r in saved["target4"]} >= {("linesearch", None), ("linesearch", 16)}
    assert {r["curve"] for r in saved["scaling"]} == {"image size", "layer depth", "number of masks"}
    assert "1 optimisation per decoy" in bench.summary(result)


def test_committed_results_read_in_todays_machine_fields():
    """Result files written before the benchmarks shared the book's machine record (run.py's
    ``cpu_cores``/``load_average_1min``, paper_cost's top-level ``threads``/``device_name``) read in
    :func:`machine_info`'s field names."""
    from dance_book.experiments.runtime import machine_info, read_machine

    results = ROOT / "benchmarks" / "results"
    now = set(machine_info("cpu")) | {"gpu"}
    for name in ("cpu.json", "gpu/cuda.json"):
        machine = read_machine(json.loads((results / name).read_text()))
        assert machine["cores"] >= 1 and machine["load_1min"] >= 0 and set(machine) <= now, name
    cost = read_machine(json.loads((results / "paper_cost.json").read_text()))
    assert cost["device"] == "cpu" and cost["torch_threads"] == 1 and cost["load_1min"] >= 0 and set(cost) <= now
    gpu = read_machine(json.loads((results / "gpu" / "paper_cost_cuda.json").read_text()))
    assert gpu["gpu"].startswith("NVIDIA") and "cpu" not in gpu
    fresh = {"machine": machine_info("cpu")}
    assert read_machine(fresh) == fresh["machine"]
    with pytest.raises(TypeError, match="record must be a dict"):
        read_machine([("cpu", "x")])
