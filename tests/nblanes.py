"""pytest plugin for the notebook tests (`make notebooks`): two lanes of notebooks, one per core.

With ``-n 2 --dist loadgroup`` each lane runs in its own worker, its notebooks one after another
in table-of-contents order (nbval needs a notebook's cells in order, in one kernel). The lanes are
balanced by the cold-run times of the chapters measured on 2 idle cores (attacks ~300 s, layers
~170 s, fidelity ~85 s, the rest under 60 s each). Chapters that need the same result do not
compute it twice: the experiments' disk cache lets one process compute while the other waits
(:mod:`dance.experiments.cache`).
"""
import pytest

#: Notebooks (by name, without the number the Makefile prefixes) of the first lane; all others
#: run in the second. The first lane starts with the chapter that makes the shared decoys.
FIRST_LANE = ("fidelity", "attacks", "sanity", "control")


def lane(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].split("_", 1)[-1]
    return "lane1" if stem in FIRST_LANE else "lane2"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.xdist_group(name=lane(str(item.fspath))))
