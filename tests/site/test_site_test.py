"""make site-test's checker fails when it should: each kind of breakage, once, on a copy of the built site.

Run by `make site-test` after the checker has passed on the real site (needs `make book` first and a
Chromium; `make unit` leaves this folder out). Each test breaks one thing in a copy of _build/html —
as the broken thing would look in a real build — and runs the same checker on the broken page.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
sys.path.insert(0, str(ROOT / "tools"))
import site_test  # noqa: E402

if not (SITE / "index.html").is_file():
    pytest.fail("no built site in _build/html: run make book before these tests", pytrace=False)


@pytest.fixture
def site(tmp_path) -> Path:
    """A copy of the built site (_static, large and untouched here, is linked, not copied)."""
    copy = tmp_path / "html"
    shutil.copytree(SITE, copy, ignore=shutil.ignore_patterns("_static"))
    (copy / "_static").symlink_to(SITE / "_static", target_is_directory=True)
    return copy


def check(site: Path, page: str) -> list[str]:
    results = site_test.check_site(site, [page], shots=None, out=io.StringIO())
    return results[0].failures


def edit(site: Path, page: str, old: str, new: str, count: int = 1) -> None:
    path = site / page
    text = path.read_text(encoding="utf8")
    assert old in text, f"{old!r} not in {page}"
    path.write_text(text.replace(old, new, count), encoding="utf8")


def inject(site: Path, page: str, html: str) -> None:
    # at the start of the chapter's article, where a cell's output would be
    path = site / page
    text = path.read_text(encoding="utf8")
    m = re.search(r'<article class="bd-article"[^>]*>', text)
    assert m, f"no article in {page}"
    path.write_text(text[:m.end()] + html + text[m.end():], encoding="utf8")


def has(failures: list[str], *fragments: str) -> bool:
    return any(all(f in line for f in fragments) for line in failures)


def test_the_unbroken_pages_pass(site):
    for page in ("book/intro.html", "book/claims.html"):
        assert check(site, page) == [], page


def test_math_from_a_cdn_is_left_raw_offline(site):
    # the state before this check: MathJax loaded from a CDN, which a machine without internet cannot reach
    edit(site, "book/intro.html", 'src="../_static/mathjax/tex-chtml.js',
         'src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js')
    failures = check(site, "book/intro.html")
    assert has(failures, "equations not typeset"), failures
    assert has(failures, "request to another host", "cdn.jsdelivr.net"), failures


def test_raw_dollar_math_in_the_text_fails(site):
    # inline math that the parser did not take as math (dollarmath off, a stray escape) reaches the page
    # as text; MathJax does not treat single dollars as delimiters, so the reader sees the TeX source
    inject(site, "book/intro.html", r"<p>The decoy satisfies $\lVert F(\tilde x) - F(x)\rVert \le \epsilon$.</p>")
    assert has(check(site, "book/intro.html"), "raw math in the text"), "raw $...$ not reported"


def test_raw_subscript_math_fails(site):
    # a glued Markdown sentence pasted inline (commonmark, no dollarmath) leaves $S_F$ as text
    inject(site, "book/intro.html", "<p>Decoys lower $S_F$ for every method.</p>")
    assert has(check(site, "book/intro.html"), "raw math in the text", "$S_F$"), "raw $S_F$ not reported"


def test_list_rendered_as_a_paragraph_fails(site):
    # a glued Markdown list pasted with the inline {glue:md} role: one paragraph that starts with its marker
    inject(site, "book/intro.html", "<p>- <strong>Gradient</strong>: supports - <strong>IG</strong>: no effect</p>")
    assert has(check(site, "book/intro.html"), "list rendered as a paragraph", "Gradient"), "flat list not reported"


def test_tex_error_fails(site):
    inject(site, "book/intro.html", r'<div class="math notranslate nohighlight">\[\begin{nosuchenv} x \end{nosuchenv}\]</div>')
    assert has(check(site, "book/intro.html"), "MathJax TeX error"), "TeX error not reported"


def test_missing_image_fails(site):
    page = next(p for p in site_test.pages_of(site)
                if re.search(r'<img[^>]+src="\.\./_images/', (site / p).read_text(encoding="utf8")))
    src = re.search(r'<img[^>]+src="\.\./(_images/[^"]+)"', (site / page).read_text(encoding="utf8")).group(1)
    (site / src).unlink()
    failures = check(site, page)
    assert has(failures, "image does not load", src), failures


def test_broken_internal_links_fail(site):
    inject(site, "book/intro.html", '<p><a href="no-such-chapter.html">gone</a> and '
                                     '<a href="theory.html#no-such-section">moved</a></p>')
    failures = check(site, "book/intro.html")
    assert has(failures, "broken internal link", "book/no-such-chapter.html: no such file"), failures
    assert has(failures, "broken internal link", "book/theory.html#no-such-section: no such anchor"), failures


def test_error_output_fails(site):
    # what myst-nb writes for a cell that raised (allow_errors would let the build through)
    inject(site, "book/intro.html",
           '<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb '
           'notranslate"><div class="highlight"><pre><span></span>Traceback (most recent call last):\n'
           'ZeroDivisionError: division by zero</pre></div></div></div>')
    assert has(check(site, "book/intro.html"), "error output", "ZeroDivisionError"), "traceback not reported"


def test_unresolved_glue_fails(site):
    # what Sphinx writes with keep_warnings when a {glue:text} key is missing
    inject(site, "book/intro.html",
           '<aside class="system-message"><p class="system-message-title">System Message: WARNING/2 '
           '(<span class="docutils literal">book/claims.md</span>, line 80)</p>'
           "<p>No key 'claims_total' found in glue data for this document.</p></aside>")
    assert has(check(site, "book/intro.html"), "build warning in the page", "claims_total"), "glue not reported"


def test_progress_log_on_stderr_fails(site):
    inject(site, "book/intro.html",
           '<div class="cell_output docutils container"><div class="output stderr highlight-myst-ansi notranslate">'
           '<div class="highlight"><pre><span></span>layer 1/10: features.conv1_1</pre></div></div></div>')
    assert has(check(site, "book/intro.html"), "stderr/log output", "layer 1/10"), "stderr output not reported"


def test_output_cut_off_at_the_page_edge_fails(site):
    line = "verdict of the measure: " + "NOT_m" * 80
    inject(site, "book/intro.html",
           '<div class="cell_output docutils container"><div class="output stream highlight-myst-ansi notranslate">'
           f'<div class="highlight"><pre style="white-space: pre; overflow-wrap: normal">{line}</pre></div></div></div>')
    assert has(check(site, "book/intro.html"), "output cut off at the page edge"), "overflow not reported"


def test_equation_wider_than_the_column_fails(site):
    # one display equation with many terms on one line, as the theory chapter's were before they were broken
    terms = "+".join(f"\\mathbf x_{{{i}}}" for i in range(80))
    inject(site, "book/intro.html", f'<div class="math notranslate nohighlight" id="equation-wide">\\[{terms}\\]</div>')
    assert has(check(site, "book/intro.html"), "equation wider than the text column", "equation-wide"), \
        "wide equation not reported"
