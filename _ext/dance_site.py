"""Reader conveniences of the book's website (a local Sphinx extension, loaded from _config.yml).

* Every chapter that is a notebook opens with a note that says how to rerun it alone
  (``make chapter CHAPTER=<name>``) and links the executed notebook (``.ipynb``) of this build.
* The executed notebooks that myst-nb writes to ``_build/jupyter_execute`` are copied into the site
  (``_notebooks/<docname>.ipynb``), so that the link works on the published site too.
* The footer says which commit the site was built from, and when.
* With ``execute_notebooks: cache``, the jupyter-cache is emptied when anything outside ``book/``
  (the ``dance`` sources, data, requirements, config) changed since it was filled: the cache matches
  a chapter on the code of its cells only, and must not serve outputs of other code.
  ``tools/execute_book.py`` (``make book``) fills it afresh every time and writes the same stamp.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import posixpath
import shutil
import subprocess
from pathlib import Path

from docutils import nodes

NOTEBOOK_DIR = "_notebooks"
STAMP = "dance-source-stamp.txt"


def _git(srcdir: str, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=srcdir, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def build_line(srcdir: str) -> str:
    """'Last built from commit abc1234 (date of the commit) on <UTC time of this build>.'"""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git(srcdir, "rev-parse", "--short=12", "HEAD")
    if not commit:
        return f"Last built on {now}, from a source tree that is not a git checkout."
    dirty = _git(srcdir, "status", "--porcelain", "--untracked-files=no")
    state = " plus uncommitted changes" if dirty else ""
    return f"Last built from commit <code>{commit}</code>{state} on {now}."


def source_stamp(root) -> str:
    """sha256 over every file of the project (tracked or new, not ignored) outside book/."""
    root = Path(root)
    listed = _git(str(root), "ls-files", "--cached", "--others", "--exclude-standard")
    if listed:
        files = sorted(set(listed.splitlines()))
    else:
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                       if not {".venv", "_build"} & set(p.parts))
    digest = hashlib.sha256()
    for name in files:
        if name.startswith("book/"):
            continue
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_source_stamp(cache_dir, root) -> None:
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    (Path(cache_dir) / STAMP).write_text(source_stamp(root) + "\n")


def _cache_dir(app, config) -> Path:
    # myst-nb's default: _build/.jupyter_cache beside _build/html
    return Path(config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache")


def _check_cache(app, config) -> None:
    if getattr(config, "nb_execution_mode", None) != "cache":
        return
    cache_dir = _cache_dir(app, config)
    stamp = cache_dir / STAMP
    app.env_stamp = current = source_stamp(app.srcdir)  # written back at the end of the build
    if cache_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != current):
        from sphinx.util import logging

        logging.getLogger(__name__).info(f"dance_site: sources changed since {cache_dir} was filled; emptied it")
        shutil.rmtree(cache_dir)


def _is_notebook(path: Path) -> bool:
    # A MyST notebook carries a kernelspec in its front matter (what jupytext and myst-nb look for).
    try:
        head = path.read_text(encoding="utf8")[:2000]
    except OSError:
        return False
    return path.suffix == ".ipynb" or "\nkernelspec:" in head


def on_config_inited(app, config) -> None:
    options = dict(config.html_theme_options or {})
    extra = options.get("extra_footer") or ""
    line = f'<p class="dance-build-info">{build_line(app.srcdir)}</p>'
    options["extra_footer"] = f"{extra}{line}"
    config.html_theme_options = options
    _check_cache(app, config)


def on_doctree_read(app, doctree) -> None:
    env = app.env
    docname = env.docname
    if not _is_notebook(Path(env.doc2path(docname))):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    name = posixpath.basename(docname)
    source = Path(env.doc2path(docname)).relative_to(app.srcdir).as_posix()
    href = posixpath.relpath(f"{NOTEBOOK_DIR}/{docname}.ipynb", posixpath.dirname(docname) or ".")

    para = nodes.paragraph()
    para += nodes.Text("Run this chapter alone: ")
    para += nodes.literal(text=f"make chapter CHAPTER={name}")
    para += nodes.Text(f" executes {source} into ")
    para += nodes.literal(text=f"_build/chapters/{name}.ipynb")
    para += nodes.Text(" (the first run of a chapter computes its results; later runs reuse them). Or ")
    ref = nodes.reference("", "", internal=False, refuri=href)
    ref["classes"].append("dance-ipynb-download")
    ref += nodes.Text(f"download this chapter as an executed notebook ({name}.ipynb)")
    para += ref
    para += nodes.Text(".")
    note = nodes.admonition(classes=["tip", "dance-rerun"])
    note += nodes.title(text="Rerun this chapter")
    note += para
    # after the chapter's title
    title = next(iter(section.findall(nodes.title)), None)
    index = section.index(title) + 1 if title is not None else 0
    section.insert(index, note)


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated <script> entries (an inline script added once with filename None, once with ""):
    sphinx-thebe's inline config is added twice in a Jupyter Book
    build, and its second `const THEBE_JS_URL` throws a SyntaxError on every page."""
    files = context.get("script_files")
    if not files:
        return
    seen, kept = set(), []
    for js in files:
        key = (getattr(js, "filename", str(js)) or "", repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    files[:] = kept  # in place: it is the builder's list, which later handlers still extend


def on_build_finished(app, exc) -> None:
    if exc is not None:
        return
    if getattr(app, "env_stamp", None):
        write_source_stamp(_cache_dir(app, app.config), app.srcdir)
    if app.builder.format != "html":
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    target = Path(app.outdir) / NOTEBOOK_DIR
    for docname in sorted(app.env.found_docs):
        src = executed / f"{docname}.ipynb"
        if src.is_file():
            dst = target / f"{docname}.ipynb"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def setup(app):
    app.connect("config-inited", on_config_inited)
    app.connect("doctree-read", on_doctree_read)
    app.connect("build-finished", on_build_finished)
    # early: html-page-context stops at the first handler that returns a template name
    app.connect("html-page-context", dedupe_scripts, priority=200)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
