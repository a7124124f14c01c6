"""Per-image cost of paper scale on this machine: VGG16 at 224 x 224 (random weights: timing only).

Measures the units every chapter is made of, on one image with the paper-scale settings
(:data:`dance_book.experiments.PAPER`: stride-1 patches, 50 SmoothGrad samples, 50 IG steps):

* the number of decoys per image (the mask family, both directions), and the time of one
  decoy's optimisation (one mask, one direction, timed alone; the batched cost per decoy is lower);
* the time of one base map (one row: an image or one decoy) per method.

Times are CPU seconds of this process on one thread (on a shared machine, what an idle core
would take), or wall seconds on a GPU: :func:`dance_book.experiments.runtime.clock_seconds`, the
book's timing helper; the machine is recorded by its :func:`~dance_book.experiments.runtime.machine_info`.

From these it extrapolates, per image, DANCE's cost (decoys + a map of every decoy) and the
cost of the paper's N (50,000 localization images). Writes ``benchmarks/results/paper_cost.json``,
which the benchmark chapter reads.

Usage: ``.venv/bin/python benchmarks/paper_cost.py [--device cuda]``
"""
import argparse
import json
from pathlib import Path

import torch

from dance_book.imagenet import imagenet
from dance_book.experiments import PAPER, mask_family, optimised_decoys, base_maps, METHODS
from dance_book.experiments.runtime import clock_seconds, machine_info
from dance_book.experiments.settings import DECOY_LAYER

OUT = Path(__file__).resolve().parent / "results" / "paper_cost.json"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = imagenet("vgg16", weights=None, device=device)  # random weights: the cost is the same
    layer = DECOY_LAYER["vgg16"]
    x = torch.rand(1, 3, 224, 224, device=device)
    target = torch.tensor([0], device=device)
    masks = mask_family(model, x, layer, PAPER)
    n_decoys = 2 * masks.shape[0]  # both directions
    print(f"{masks.shape[0]} masks per image", flush=True)
    base_maps(model, x, target, "gradient", PAPER)  # warm-up
    one_decoy = clock_seconds(lambda: optimised_decoys(model, x, layer, PAPER, n_masks=1, directions=(1,)), device)
    print(f"one decoy: {one_decoy:.2f} s", flush=True)
    per_map = {}
    for method in METHODS:
        per_map[method] = clock_seconds(lambda: base_maps(model, x, target, method, PAPER), device)
        print(f"one {method} map: {per_map[method]:.2f} s", flush=True)
    per_image = {m: n_decoys * one_decoy + (1 + n_decoys) * t for m, t in per_map.items()}
    result = dict(
        model="vgg16", size=224, device=str(device), machine=machine_info(device),
        masks_per_image=int(masks.shape[0]), decoys_per_image=int(n_decoys),
        seconds_one_decoy=one_decoy, seconds_one_map=per_map,
        seconds_dance_per_image=per_image,
        paper_localization_images=50000,
        hours_localization_gradient=50000 * per_image["gradient"] / 3600,
    )
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
