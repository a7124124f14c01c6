"""The layout's two rules, checked on the source: the library never imports the book's code, and no
private name crosses a module boundary.

* ``dance`` (the library a practitioner imports) must not import ``dance_book`` (the book's code).
* A name with a leading underscore belongs to its module: no other module imports it or reads it
  as an attribute. A private *module* (``dance/_checks.py``, ``dance/metrics/_registry.py``)
  belongs to its package and is imported only from inside that package.

The rules apply to the library, the book's package, the benchmarks and the chapters' code cells.
Tests are exempt: they may check internals.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dance", "dance_book")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_of(module: str, path: Optional[Path]) -> str:
    """The package a module's relative imports resolve against."""
    if path is not None and path.name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, module: str, path: Optional[Path]) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _private_module_violation(target: str, importer: str) -> Optional[str]:
    """A private module ``a.b._c`` may be imported only from inside package ``a.b``."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part) and _is_module(".".join(parts[:i + 1])):
            owner = ".".join(parts[:i])
            if not (importer == owner or importer.startswith(owner + ".")):
                return f"imports the private module {'.'.join(parts[:i + 1])} from outside {owner}"
            return None
    return None


def violations(source: str, module: str, path: Optional[Path] = None) -> List[str]:
    """Every breach of the two rules in ``source``, the code of ``module`` (``path`` its file, if any)."""
    tree = ast.parse(source)
    found = []
    aliases = {}  # local name -> the module of ours it is bound to
    in_library = module.split(".")[0] == "dance"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if in_library and a.name.split(".")[0] == "dance_book":
                    found.append(f"library module {module} imports {a.name}")
                if _is_ours(a.name):
                    bad = _private_module_violation(a.name, module)
                    if bad:
                        found.append(f"{module} {bad}")
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path)
            if not _is_ours(target):
                continue
            if in_library and target.split(".")[0] == "dance_book":
                found.append(f"library module {module} imports {target}")
            bad = _private_module_violation(target, module)
            if bad:
                found.append(f"{module} {bad}")
            for a in node.names:
                full = f"{target}.{a.name}"
                if _is_module(full):
                    bad = _private_module_violation(full, module)
                    if bad:
                        found.append(f"{module} {bad}")
                    aliases[a.asname or a.name] = full
                elif _private(a.name) and target != module:
                    found.append(f"{module} imports the private name {a.name} of {target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                owner = ".".join([aliases[value.id]] + chain[:0:-1])
                if owner != module and _is_module(owner):
                    found.append(f"{module} reads the private name {node.attr} of {owner}")
    return found


def _code_cells(markdown: str) -> Iterator[str]:
    for m in re.finditer(r"^```\{code-cell\}[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M):
        # cell options (":tags: [...]") and IPython magics are not Python
        lines = [ln for ln in m.group(1).splitlines() if not ln.startswith((":", "%", "!"))]
        yield "\n".join(lines)


def _sources() -> Iterator[Tuple[str, str, Optional[Path]]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield _module_name(path), path.read_text(), path
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        yield f"benchmarks.{path.stem}", path.read_text(), path
    for path in sorted((ROOT / "book").glob("*.md")):
        for i, cell in enumerate(_code_cells(path.read_text())):
            yield f"book.{path.stem}[cell {i}]", cell, None


def test_the_rules_hold_everywhere():
    found = [v for module, source, path in _sources() for v in violations(source, module, path)]
    assert not found, "\n".join(found)


def test_the_sources_are_all_read():
    modules = [m for m, _, _ in _sources()]
    assert "dance.decoys" in modules and "dance_book.experiments.scores" in modules
    assert any(m.startswith("book.quickstart[cell") for m in modules)
    assert any(m.startswith("benchmarks.") for m in modules)


# The checker itself, on code that breaks each rule (so that a silent checker cannot pass).
@pytest.mark.parametrize("module,source,expected", [
    ("dance.decoys", "import dance_book.zoo", "imports dance_book.zoo"),
    ("dance.enhanced", "from dance_book.experiments import maps", "imports dance_book.experiments"),
    ("dance.decoys", "from ..dance_book import zoo", "imports dance_book"),
    ("dance_book.experiments.maps", "from dance.decoys import _generate", "private name _generate"),
    ("dance_book.experiments.maps", "from ..zoo.registry import _x", "private name _x"),
    ("dance.attacks", "from .metrics._utils import check_images", "private module dance.metrics._utils"),
    ("benchmarks.run", "import dance.decoys as d\nd._SPACING_CACHE.clear()", "private name _SPACING_CACHE"),
    ("book.x[cell 0]", "import dance\ndance.decoys._check_masks(m, 1, 1)", "private name _check_masks"),
    ("book.x[cell 0]", "from dance import _checks", "private module dance._checks"),
])
def test_the_checker_finds_each_kind_of_breach(module, source, expected):
    found = violations(source, module)
    if expected is None:
        assert not found
    else:
        assert any(expected in v for v in found), found


@pytest.mark.parametrize("module,source", [
    ("dance.decoys", "from ._checks import check_int"),                 # a private module, inside its package
    ("dance.metrics.fidelity", "from ._utils import heatmaps"),
    ("dance.decoys", "x = _cell_max(y)\nobj._private = 1"),             # its own names; attributes of objects
    ("dance_book.zoo.train", "from .registry import check_name"),
    ("book.x[cell 0]", "import dance\ndance.__version__"),
])
def test_the_checker_allows_what_the_rules_allow(module, source):
    assert violations(source, module) == []


def test_importing_dance_loads_neither_the_book_nor_its_stack():
    # (matplotlib does load: captum.attr imports it, and DecoyEnhanced is a captum Attribution.)
    code = "import sys, dance; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    heavy = [m for m in out if m.split(".")[0] in ("dance_book", "seaborn", "pandas", "sklearn", "skimage")]
    assert not heavy, heavy
