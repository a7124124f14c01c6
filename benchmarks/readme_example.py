"""Time the README's first call: "Use `dance` on your own model", at 224x224 on the CPU.

This script mirrors the README's example (it reads nothing from it; keep the two consistent by
hand): torchvision's ResNet-18 behind ``dance.Normalized(..., dance.IMAGENET_MEAN,
dance.IMAGENET_STD)``, one 224x224 image, and

    explainer = dance.DecoyEnhanced(Saliency(model), layer=LAYER, epsilon=0.1, relative=True,
                                    solver="linesearch")
    maps = explainer.attribute(image, target=label)

The weights are random (``resnet18(weights=None)``: the time does not depend on them, and nothing
is downloaded) and so is the image. For each torch thread count (2, then 1), in a fresh process, it
times the first call (cold: it includes the one-time mask analysis of the model and layer and
torch's own warm-up) and a second call of the same explainer (warm), in wall-clock and process
CPU seconds, with the number of decoys and the 1-minute load average (the machine may be
shared). ``--adam`` also times the paper's solver (``solver="adam"``) once, at the first thread
count (many minutes). Results go to ``benchmarks/results/readme_example.json``.

    python benchmarks/readme_example.py                  # about 2 minutes on 2 cores
    python benchmarks/readme_example.py --adam           # plus the paper's solver: about 8 minutes more
    python benchmarks/readme_example.py --layer model.layer1 --out /tmp/layer1.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import captum
import torch
import torchvision
from captum.attr import Saliency

import dance
from dance.decoys import forget_mask_cache

#: The README's example layer: the end of ResNet-18's stem (7x7 convolution, batch norm, ReLU,
#: 3x3 max pooling), the counterpart of the paper's VGG16 layer 3 (after its first convolutions).
README_LAYER = "model.maxpool"
RESULTS = Path(__file__).resolve().parent / "results" / "readme_example.json"
LABEL = 3


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def timed(call):
    load = load_average()
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
                 "load_average_1min_before": load}


def readme_model() -> torch.nn.Module:
    net = torchvision.models.resnet18(weights=None)  # random weights: timing only
    return dance.Normalized(net, dance.IMAGENET_MEAN, dance.IMAGENET_STD).eval()


def one_setting(layer: str, threads: int, adam: bool) -> dict:
    """The README's calls at one thread count, in this (fresh) process: cold, warm, optionally Adam."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = readme_model()
    image = torch.rand(1, 3, 224, 224)
    forget_mask_cache(model)  # nothing is cached in a fresh process; said for the reader
    explainer = dance.DecoyEnhanced(Saliency(model), layer=layer, epsilon=0.1, relative=True, solver="linesearch")
    (maps, decoys), cold = timed(lambda: explainer.attribute(image, target=LABEL, return_decoys=True))
    (maps, decoys), warm = timed(lambda: explainer.attribute(image, target=LABEL, return_decoys=True))
    d = decoys[0]
    assert bool((d.deviation <= d.epsilon).all()) and maps.shape == image.shape
    run = {"threads": threads, "cold": cold, "warm": warm, "decoys": len(d),
           "max_deviation_over_epsilon": round(float(d.deviation.max() / d.epsilon), 4)}
    if adam:
        paper = dance.DecoyEnhanced(Saliency(model), layer=layer, epsilon=0.1, relative=True, solver="adam")
        (maps, decoys), t = timed(lambda: paper.attribute(image, target=LABEL, return_decoys=True))
        d = decoys[0]
        run["adam"] = {"call": t, "decoys": len(d), "adam_steps": d.steps_run,
                       "max_deviation_over_epsilon": round(float(d.deviation.max() / d.epsilon), 4),
                       "note": "solver='adam' (the paper's solver, dance.Adam() defaults), after the line-search "
                               "calls (the mask family is cached; Adam needs no mask analysis)"}
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default=README_LAYER)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--adam", action="store_true", help="also time the paper's solver, at the first thread count")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one setting, JSON on stdout
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_setting(args.layer, args.threads[0], args.adam)))
        return {}

    result = {
        "example": {"model": "torchvision resnet18(weights=None) behind dance.Normalized (ImageNet mean, std)",
                    "image": [1, 3, 224, 224], "layer": args.layer, "epsilon": 0.1, "relative": True,
                    "solver": "linesearch", "base_method": "captum Saliency", "target": LABEL,
                    "calls": "cold: the first call of a fresh process (one-time mask analysis, torch warm-up); "
                             "warm: the second call of the same explainer"},
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "captum": captum.__version__,
                    "python": platform.python_version(),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "load_average_start": [round(v, 2) for v in os.getloadavg()]},
        "runs": [],
    }
    for i, threads in enumerate(args.threads):
        command = [sys.executable, __file__, "--child", "--layer", args.layer, "--threads", str(threads)]
        if args.adam and i == 0:
            command.append("--adam")
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(run), flush=True)
        if "adam" in run:
            result["adam"] = dict(run.pop("adam"), threads=threads)
        result["runs"].append(run)
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["within_a_minute"] = all(r["cold"]["wall_s"] <= 60 for r in result["runs"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
