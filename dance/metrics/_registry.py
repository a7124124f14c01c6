"""A small Quantus-style registry: every metric states which way is better and where it comes from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from .._checks import optional_import

#: The two directions a metric can have.
DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class MetricInfo:
    """What the book's tables say about one metric.

    Attributes:
        name: the function's name in :mod:`dance.metrics`.
        direction: ``"higher"`` or ``"lower"``: which values mean a better explanation.
        reference: the source of the definition (short citation).
        bibkey: the key in the book's ``references.bib`` (empty if none).
        paper_settings: the settings the source used, in words.
        function: the metric itself.
    """

    name: str
    direction: str
    reference: str
    bibkey: str
    paper_settings: str
    function: Callable


#: name -> :class:`MetricInfo`, filled by the :func:`metric` decorator at import time.
REGISTRY: Dict[str, MetricInfo] = {}


def metric(direction: str, reference: str, bibkey: str = "", paper_settings: str = ""):
    """Register a metric and attach ``.direction``, ``.reference``, ``.bibkey`` and
    ``.paper_settings`` to the function (as Quantus does with its metric classes)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")

    def wrap(func: Callable) -> Callable:
        func.direction = direction
        func.reference = reference
        func.bibkey = bibkey
        func.paper_settings = paper_settings
        REGISTRY[func.__name__] = MetricInfo(func.__name__, direction, reference, bibkey, paper_settings, func)
        return func

    return wrap


def summary():
    """The registry as a :class:`pandas.DataFrame` (one row per metric), for the book's tables.

    Columns: ``metric``, ``direction``, ``reference``, ``bibkey``, ``paper_settings``.
    """
    pd = optional_import("pandas", package="pandas", needed_by="dance.metrics.summary")

    rows = [
        {"metric": i.name, "direction": i.direction, "reference": i.reference, "bibkey": i.bibkey,
         "paper_settings": i.paper_settings}
        for i in REGISTRY.values()
    ]
    return pd.DataFrame(rows, columns=["metric", "direction", "reference", "bibkey", "paper_settings"])
