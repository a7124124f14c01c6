"""The fake ImageNet folders of the paper-scale tests (tests/test_paper_scale.py) and of the smoke run
(tools/paper_smoke.py). Numpy and Pillow only: the smoke run's main process writes the folders without
importing torch or the book's code (its workers import those)."""
from pathlib import Path

import numpy as np

N_FAKE = 4  # the chapters' figures show up to four images


def write_fake_imagenet(root: Path, n: int = N_FAKE, boxes: bool = True) -> Path:
    """``n`` PNG images (80 x 96, a bright rectangle on noise) in WordNet-id folders, with a Pascal VOC
    XML box file beside each when ``boxes``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"n0144076{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
        x0, y0, x1, y1 = 20 + 4 * i, 16, 70, 60
        pixels[y0:y1, x0:x1] = (230, 40 + 40 * (i % 5), 30)
        Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{i:08d}.png")
        if boxes:
            (folder / f"ILSVRC2012_val_{i:08d}.xml").write_text(
                f"<annotation><size><width>96</width><height>80</height></size><object><name>{folder.name}</name>"
                f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
                f"</object></annotation>")
    return root
