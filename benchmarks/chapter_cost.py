"""One chapter at paper-scale cost: the localization chapter's experiment with the paper's settings.

Runs :func:`dance_book.experiments.localization.localization_run` with :data:`PAPER`'s settings
(VGG16 at 224 x 224, stride-1 patch masks, both directions) on ``--images`` generated images (a
bright box on noise, with Pascal VOC boxes) and **random weights** (the test-only switch: the cost
does not depend on the weights, the numbers mean nothing). The chapter's two costly units are timed
apart: the shared decoys (every chapter reads them) and the chapter's own maps and measures.

    python benchmarks/chapter_cost.py --device cuda --images 8
    python benchmarks/chapter_cost.py --smoke        # the paper-scale smoke settings (CPU, seconds)

Writes ``--out`` (default ``benchmarks/results/chapter_cost_<device>.json``). Seconds are wall
seconds of one run (on a GPU with ``torch.cuda.synchronize``): the book's
:func:`dance_book.experiments.runtime.timed_once`; the machine is its ``machine_info``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="the smoke test's miniature settings instead of PAPER")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dance-chapter-cost-"))
    # Test-only switches: random torchvision weights (nothing is downloaded) and a private cache.
    os.environ.update(DANCE_TEST_RANDOM_WEIGHTS="1", DANCE_PAPER_SMOKE="1", DANCE_SCALE="paper",
                      DANCE_CACHE_DIR=str(work / "cache"), DANCE_IMAGENET_DIR=str(work / "images"))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_paper_scale import write_fake_imagenet

    import numpy as np
    import torch
    from dance_book.experiments import PAPER, shared_decoys
    from dance_book.experiments.settings import PAPER_SMOKE
    from dance_book.experiments.localization import localization_run
    from dance_book.experiments.runtime import machine_info, timed_once

    write_fake_imagenet(work / "images", n=args.images)
    base = PAPER_SMOKE if args.smoke else PAPER
    settings = dataclasses.replace(base, n_fidelity=args.images)
    from dance_book.scale import default_device

    device = default_device()  # CUDA at paper scale when there is one
    if device.type != torch.device(args.device).type:
        raise SystemExit(f"--device {args.device} asked for, but the paper-scale device is {device}")

    decoys, t_decoys, _ = timed_once(lambda: shared_decoys(settings, settings.main_model, args.images), device)
    print(f"decoys of {args.images} images: {t_decoys:.1f} s", flush=True)
    run, t_chapter, _ = timed_once(lambda: localization_run(settings), device)
    print(f"localization maps and measures: {t_chapter:.1f} s", flush=True)
    n_decoys = [int(d.images.shape[0]) for d in decoys]
    result = dict(
        chapter="localization", settings="PAPER_SMOKE" if args.smoke else "PAPER", model=settings.main_model,
        layer=settings.layer(settings.main_model), images=args.images, crop=int(decoys[0].images.shape[-1]),
        decoys_per_image=n_decoys[0], device=str(device), machine=machine_info(device),
        seconds_decoys=t_decoys, seconds_chapter=t_chapter,
        seconds_per_image=(t_decoys + t_chapter) / args.images,
        hours_paper_localization=50000 * (t_decoys + t_chapter) / args.images / 3600,
        iou_finite=bool(all(np.isfinite(v).all() for v in run["iou"]["paper"]["decoys"].values())),
    )
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"chapter_cost_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
