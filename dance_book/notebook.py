"""What every chapter sets up first, in one call: torch threads, warning filters, table display, glue.

A chapter's first (hidden) cell reads::

    from dance_book.notebook import md, setup
    setup(threads=1)

so that the chapters agree on these settings instead of each repeating them.
"""
from __future__ import annotations

import warnings

import torch

#: Captum warns when it switches on gradients for an input; harmless here, and on every map.
CAPTUM_GRAD_WARNING = "Input Tensor 0 did not already require gradients"


def setup(threads: int = 1, precision: int = 3) -> None:
    """Torch threads (one is fastest for the chapters' small batches on a shared 2-core machine),
    Captum's harmless gradient warning filtered, and pandas tables shown with ``precision`` digits."""
    import pandas as pd

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=CAPTUM_GRAD_WARNING)
    pd.set_option("display.precision", precision)


def md(name: str, text: str) -> None:
    """Glue ``text`` as Markdown under ``name`` (a computed sentence for the prose), without showing it."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)
