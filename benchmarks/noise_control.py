"""How much of DANCE-SmoothGrad is Monte-Carlo noise, with independent and with common noise (issue 12, §1).

For the first ``--n`` CI-scale images (the book's main model, layer, decoys and SmoothGrad
settings), compares DANCE-SmoothGrad (the range over the image and its decoys) with the noise-only
control (:func:`dance_book.experiments.noise_only_control`: the range over as many SmoothGrad
draws of the image alone, no decoys), once with independent noise per member (the paper-literal
reading) and once with common noise (the book's default). Per image it prints the ratio of the
control's size to the DANCE map's size (mean over pixels, both maps are >= 0; and the L2 norm)
and the Spearman correlation of the two maps over pixels; for context, the Spearman correlation of
the DANCE map and of the control with DANCE-Gradient on the same decoys (structure all of them
share, e.g. a flat background, raises every such correlation), and how much the DANCE map moves
with another noise seed (the direct measure of its Monte-Carlo noise).

    python benchmarks/noise_control.py            # 4 images, about a minute on one CPU core
    python benchmarks/noise_control.py --n 8 --samples 32 --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from typing import Optional

import torch
from scipy.stats import spearmanr

import dance_book.experiments as E
from dance.enhanced import aggregate_maps
from dance_book.experiments.cache import library_versions
from dance_book.experiments.maps import optimised_quietly
from dance_book.experiments.scores import population_maps


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


def measure(n: int, seed: int, samples: Optional[int] = None) -> dict:
    S = E.settings("ci")
    if samples is not None:
        S = dataclasses.replace(S, smoothgrad_samples=samples)
    model = E.load_model(S.main_model)
    x = E.load_images(S, n).images.cpu()
    target = E.predicted(model, x)
    start = time.perf_counter()
    decoys = optimised_quietly(model, x, S.layer(S.main_model), S)
    sizes = [1 + len(d) for d in decoys]
    gradient = [aggregate_maps(m) for m in population_maps(model, x, target, "gradient", S, decoys)]
    out = {"images": n, "population": sizes, "smoothgrad_samples": S.smoothgrad_samples,
           "smoothgrad_std": S.smoothgrad_std, "seed": seed, "noise": {}}
    for noise in ("independent", "common"):
        s = dataclasses.replace(S, smoothgrad_noise=noise)
        dance_maps, again = ([aggregate_maps(m) for m in population_maps(model, x, target, "smoothgrad", s, decoys,
                                                                           seed=k)] for k in (seed, seed + 2))
        control = E.noise_only_control(model, x, target, s, draws=sizes, seed=seed + 1)
        out["noise"][noise] = [
            {"ratio_mean": float(control[b].mean() / dance_maps[b].mean()),
             "ratio_l2": float(control[b].norm() / dance_maps[b].norm()),
             "spearman_control": spearman(control[b], dance_maps[b]),
             "spearman_dance_gradient": spearman(dance_maps[b], gradient[b]),
             "spearman_control_gradient": spearman(control[b], gradient[b]),
             "seed_change_l2": float((again[b] - dance_maps[b]).norm() / dance_maps[b].norm()),
             "spearman_seeds": spearman(again[b], dance_maps[b])}
            for b in range(n)]
    out["seconds"] = time.perf_counter() - start
    out["versions"] = library_versions()
    out["date"] = datetime.date.today().isoformat()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="CI images (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="SmoothGrad noise seed (the control uses seed + 1)")
    parser.add_argument("--samples", type=int, help="SmoothGrad samples per map (default: the book's, 8)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = measure(args.n, args.seed, args.samples)
    print(f"{args.n} CI images, populations {out['population']}, SmoothGrad {out['smoothgrad_samples']} samples "
          f"(std {out['smoothgrad_std']}); {out['seconds']:.0f} s")
    print("columns: control/DANCE size (mean, L2); Spearman(control, DANCE); Spearman(DANCE, DANCE-Gradient); "
          "Spearman(control, DANCE-Gradient); another noise seed: |change|/|DANCE| (L2) and Spearman")
    print(f"{'noise':<12} {'image':>5} {'mean':>6} {'L2':>6} {'sp ctl':>7} {'sp grad':>8} {'ctl~grad':>9} "
          f"{'seed chg':>9} {'sp seed':>8}")
    for noise, rows in out["noise"].items():
        for b, r in enumerate(rows):
            print(f"{noise:<12} {b:>5} {r['ratio_mean']:>6.3f} {r['ratio_l2']:>6.3f} {r['spearman_control']:>7.3f} "
                  f"{r['spearman_dance_gradient']:>8.3f} {r['spearman_control_gradient']:>9.3f} "
                  f"{r['seed_change_l2']:>9.3f} {r['spearman_seeds']:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
