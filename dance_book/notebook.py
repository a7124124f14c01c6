"""What every chapter sets up first, in one call: torch threads, warning filters, table display, glue.

Tables: :func:`setup` makes :func:`table` the way every pandas DataFrame a chapter shows is drawn
(no meaningless 0, 1, 2 ... index column, numbers to three significant digits, verdict words as
coloured labels), so that the chapters look alike without each styling its tables.

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


#: Colours of the verdict and reading labels (the claims page's five-valued scale; green agrees with
#: the paper, red goes against it, blue is a demonstrated absence of effect, grey cannot tell).
#: "not reproduced" is the old scale's word, kept so that older pages still colour it.
LABEL_COLOURS = {"reproduced": "#1a7f37", "supports": "#1a7f37", "met": "#1a7f37", "yes": "#1a7f37",
                 "partly reproduced": "#9a6700",
                 "no effect": "#0969da",
                 "inconclusive": "#6e7781", "inconclusive (underpowered)": "#6e7781", "underpowered": "#6e7781",
                 "contradicted": "#cf222e", "not reproduced": "#cf222e", "contradicts": "#cf222e", "not met": "#cf222e",
                 "no": "#cf222e"}
LABEL_STYLE = ("display: inline-block; border-radius: 0.6em; padding: 0.05em 0.5em; font-weight: 600; "
               "color: white; text-align: center; overflow-wrap: normal; background-color: {}")


def label(text) -> str:
    """``text`` as a coloured label (HTML) when it is a verdict word of :data:`LABEL_COLOURS`, else escaped.

    Example:
        >>> label("reproduced")[:13]
        '<span style="'
        >>> label("a < b")
        'a &lt; b'
    """
    import html

    colour = LABEL_COLOURS.get(str(text).strip().lower())
    if colour is None:
        return html.escape(str(text))
    return f'<span style="{LABEL_STYLE.format(colour)}">{html.escape(str(text))}</span>'


def table(df, digits: int = 3):
    """A DataFrame styled as the book shows tables: a default ``RangeIndex`` hidden, floats to ``digits``
    significant digits, verdict words (:data:`LABEL_COLOURS`) as coloured labels.

    Returns:
        a pandas ``Styler`` (display it, or ``.to_html()``).

    Example:
        >>> import pandas as pd
        >>> html = table(pd.DataFrame({"x": [0.123456], "verdict": ["reproduced"]})).to_html()
        >>> "0.123" in html and "0.1234" not in html and "background-color" in html
        True
    """
    import pandas as pd

    styler = df.style
    if isinstance(df.index, pd.RangeIndex) and df.index.name is None:
        styler = styler.hide(axis="index")
    floats = list(df.select_dtypes("floating").columns)
    texts = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c])]
    if floats:
        styler = styler.format(f"{{:.{digits}g}}", subset=floats, na_rep="n/a")
    if texts:
        styler = styler.format(label, subset=texts)
    return styler


def setup(threads: int = 1, precision: int = 3) -> None:
    """Torch threads (one is fastest for the chapters' small batches on a shared 2-core machine),
    Captum's harmless gradient warning filtered, and pandas tables shown by :func:`table` with
    ``precision`` significant digits (inside IPython; elsewhere pandas' own display precision)."""
    import pandas as pd

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=CAPTUM_GRAD_WARNING)
    pd.set_option("display.precision", precision)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the book always has IPython
        return
    shell = get_ipython()
    if shell is not None:
        html = shell.display_formatter.formatters["text/html"]
        html.for_type(pd.DataFrame, lambda df: table(df, precision).to_html())


def md(name: str, text: str) -> None:
    """Glue ``text`` as Markdown under ``name`` (a computed sentence for the prose), without showing it."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)
