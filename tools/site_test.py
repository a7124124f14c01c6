"""Check the built book in a real browser: headless Chromium, a local server, no network.

    python tools/site_test.py [_build/html] [--page book/claims.html ...] [--screenshots DIR]

Every page of the site (or the ``--page`` ones) is loaded from a local HTTP server into headless
Chromium, driven over the DevTools protocol. Every request the page makes to any other host is
refused (Fetch domain; Chromium also resolves no host names but 127.0.0.1), as on a machine without
internet. A page fails when

* math is left raw: a math element of the page was not typeset by MathJax, MathJax reports a TeX
  error, or the visible text (code excluded) still holds ``\\[``, ``\\(``, ``$$``, ``\\begin{``, a
  ``$...\\cmd...$`` or a ``$x_y$``;
* a Markdown list shows as one paragraph starting with its marker (pasted where only inline text is
  parsed);
* an image does not load, or an internal link points to a missing file or anchor;
* a cell shows an error (traceback), a stderr/log output, or the build left a warning in the page
  (``keep_warnings``: an unresolved glue reference, an unknown role, ...);
* a cell's output is wider than its box (cut off at the page edge), or a display equation is wider
  than the text column (the reader would scroll it sideways);
* the page requests anything from another host, a local request fails (404), or a script throws.

A full-page screenshot of each page is saved (default ``_build/site-test/screenshots``, outside git)
and listed. Exit status 1 if any page fails.
"""

from __future__ import annotations

import argparse
import base64
import functools
import html.parser
import http.server
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket  # websocket-client

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
WIDTH, HEIGHT = 1280, 900
MAX_SHOT_HEIGHT = 30000  # px; taller pages are cut there (and say so)

# Runs in the page once it has loaded: waits for MathJax and the images, then reports.
PAGE_PROBE = r"""
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    await Promise.race([mj.startup.promise, sleep(20000)]);
  }
  const imgs = Array.from(document.images);
  imgs.forEach((i) => { i.loading = "eager"; });
  await Promise.race([
    Promise.all(imgs.map((i) => (i.complete ? null : new Promise((r) => { i.onload = r; i.onerror = r; })))),
    sleep(15000),
  ]);
  const hidden = (el) => {
    for (let e = el; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === "none" || s.visibility === "hidden") return true;
    }
    return false;
  };
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight, .MathJax";
  // ... and $x_y$ / $x^y$ (a subscript or superscript between single dollars, no space: not a price)
  const rawPattern = /\\\[|\\\(|\$\$|\\begin\{|\$[^$\s][^$\n]*\\[A-Za-z]+[^$\n]*\$|\$[A-Za-z][^$\s]*[_^][^$\s]*\$/;
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (!p || p.closest(skip) || !rawPattern.test(n.textContent) || hidden(p)) continue;
    raw.push(n.textContent.trim().slice(0, 120));
  }
  // a Markdown list pasted where only inline text is parsed (an inline {glue:md}): one paragraph "- a - b"
  // (a paragraph that starts with its marker and holds a second item; a lone "* note" is a footnote)
  const flatLists = Array.from(document.querySelectorAll("p"))
    .filter((p) => !p.closest(skip) && !hidden(p) && /^([-*+]) \S.*\s\1 \S/s.test(p.innerText.trim()))
    .map((p) => p.innerText.trim().slice(0, 120));
  // Sphinx writes math as <span|div class="math ...">; MathJax replaces its content by <mjx-container>.
  const mathEls = Array.from(document.querySelectorAll(".math"));
  const untypeset = mathEls.filter((m) => !m.querySelector("mjx-container"))
                           .map((m) => m.textContent.trim().slice(0, 80));
  const texErrors = Array.from(document.querySelectorAll("mjx-merror, [data-mjx-error]"))
                         .map((e) => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 120));
  const text = (sel) => Array.from(document.querySelectorAll(sel)).map((e) => e.innerText.trim().slice(0, 160));
  // an output (console text, table) wider than its box: the reader sees it cut at the edge
  const cutOff = Array.from(document.querySelectorAll(".cell_output pre, .cell_output .output"))
    .filter((p) => !hidden(p) && p.clientWidth > 0 && p.scrollWidth > p.clientWidth + 2)
    .map((p) => `${p.innerText.split("\n").find((l) => l.length > 0)?.slice(0, 80)} (${p.scrollWidth} px in ${p.clientWidth} px)`);
  // a display equation wider than the text column: the reader has to scroll it sideways
  const wideMath = Array.from(document.querySelectorAll("mjx-container[display='true']"))
    .filter((m) => !hidden(m) && m.firstElementChild && m.clientWidth > 0
                   && m.firstElementChild.getBoundingClientRect().width > m.clientWidth + 2)
    .map((m) => `${(m.closest(".math") || m).getAttribute("id") || "equation"}: `
                + `${Math.round(m.firstElementChild.getBoundingClientRect().width)} px in ${m.clientWidth} px`);
  return {
    title: document.title, wideMath,
    math: mathEls.length,
    typeset: document.querySelectorAll("mjx-container").length,
    untypeset, texErrors, raw, cutOff, flatLists,
    images: imgs.map((i) => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll("a[href]")).map((a) => a.href),
    errors: text(".cell_output .traceback, .cell_output .output.error, div.output.traceback"),
    stderr: text(".cell_output .output.stderr"),
    warnings: text(".system-message, .problematic"),
    width: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
  };
})()
"""


@dataclass
class PageResult:
    page: str
    failures: list[str] = field(default_factory=list)
    math: int = 0
    images: int = 0
    links: int = 0
    screenshot: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------- local server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep the report readable
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# ---------------------------------------------------------------- browser over the DevTools protocol


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("site-test: no Chromium found (make site-test installs the Debian package 'chromium')")


class Browser:
    """One headless Chromium with one page, driven over a DevTools websocket."""

    def __init__(self, origin: str):
        self.origin = origin
        self.profile = tempfile.mkdtemp(prefix="site-test-chromium-")
        self.proc = subprocess.Popen(
            [find_browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--mute-audio", f"--window-size={WIDTH},{HEIGHT}",
             # no name resolves but the local server's address: the network is off
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (active.is_file() and len(active.read_text().split()) >= 2):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("site-test: Chromium did not start")
            time.sleep(0.1)
        devtools = int(active.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.external: list[str] = []
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Runtime.enable")
        self.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def _handle(self, msg: dict) -> None:
        if msg.get("method") == "Fetch.requestPaused":
            params = msg["params"]
            url = params["request"]["url"]
            if url.startswith(self.origin) or url.startswith(("data:", "blob:")):
                self._post("Fetch.continueRequest", requestId=params["requestId"])
            else:
                self.external.append(url)
                self._post("Fetch.failRequest", requestId=params["requestId"], errorReason="InternetDisconnected")
        elif "method" in msg:
            self.events.append(msg)

    def _post(self, method: str, **params) -> int:
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        return mid

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        mid = self._post(method, **params)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.time()))
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._handle(msg)
        raise TimeoutError(method)

    def wait_event(self, method: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e["method"] == method for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.time()))
            try:
                self._handle(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        self.events.clear()
        self.external.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float = 60):
        res = self.send("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                        returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text", "evaluation failed"))
        return res["result"].get("value")

    def screenshot(self, path: Path, width: int, height: int) -> int:
        # The viewport is made as tall as the page and the layout let settle before the capture
        # (capturing beyond the viewport, or at once, caught the theme's layout mid-change).
        height = max(HEIGHT, min(height, MAX_SHOT_HEIGHT))
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 300))))")
        data = self.send("Page.captureScreenshot", timeout=120, format="png")["data"]
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return height

    def close(self) -> None:
        try:
            if getattr(self, "ws", None):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------- links


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" or (tag == "a" and k == "name"):
                self.ids.add(v or "")


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf8", errors="replace"))
    return frozenset(parser.ids)


def broken_link(root: Path, origin: str, href: str) -> str | None:
    """Why an internal link is broken, or None. External links are not followed (no network)."""
    if not href.startswith(origin):
        return None
    parts = urllib.parse.urlsplit(href)
    rel = urllib.parse.unquote(parts.path).lstrip("/")
    target = root / rel
    if rel == "" or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{rel or '/'}: no such file"
    frag = urllib.parse.unquote(parts.fragment)
    if frag and target.suffix == ".html" and frag not in anchors(target):
        return f"{rel}#{frag}: no such anchor"
    return None


# ---------------------------------------------------------------- one page


def check_page(browser: Browser, root: Path, origin: str, page: str, shots: Path | None) -> PageResult:
    start = time.perf_counter()
    res = PageResult(page)
    browser.open(origin + urllib.parse.quote(page))
    info = browser.evaluate(PAGE_PROBE, timeout=90)
    f = res.failures
    res.math, res.images, res.links = info["math"], len(info["images"]), len(info["links"])
    if info["untypeset"]:
        f.append(f"{len(info['untypeset'])} of {info['math']} equations not typeset, e.g. {info['untypeset'][0]!r}")
    if info["texErrors"]:
        f.append(f"MathJax TeX error(s): {info['texErrors'][:3]}")
    if info["raw"]:
        f.append(f"raw math in the text: {info['raw'][:3]}")
    for text in info["flatLists"]:
        f.append(f"list rendered as a paragraph: {text!r}")
    for img in info["images"]:
        if not img["ok"]:
            f.append(f"image does not load: {img['src']}")
    seen = set()
    for href in info["links"]:
        why = broken_link(root, origin, href)
        if why and why not in seen:
            seen.add(why)
            f.append(f"broken internal link: {why}")
    kinds = {"errors": "error output", "stderr": "stderr/log output", "warnings": "build warning in the page"}
    for kind, what in kinds.items():
        for text in info[kind]:
            f.append(f"{what}: {text!r}")
    for line in info["wideMath"]:
        f.append(f"equation wider than the text column: {line}")
    for line in info["cutOff"]:
        f.append(f"output cut off at the page edge: {line}")
    for url in sorted(set(browser.external)):
        f.append(f"request to another host (network is off): {url}")
    for ev in browser.events:
        p = ev.get("params", {})
        # Chromium asks the origin for /favicon.ico on its own (the page names no icon); whether that request
        # lands among this page's events depends on timing, so it is no finding.
        if ev["method"] == "Network.responseReceived" and p["response"]["url"] == origin + "favicon.ico":
            continue
        if ev["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
            f.append(f"HTTP {p['response']['status']} for {p['response']['url']}")
        elif ev["method"] == "Network.loadingFailed" and not p.get("canceled") and \
                p.get("errorText") != "net::ERR_INTERNET_DISCONNECTED":
            f.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
        elif ev["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            f.append(f"script error: {d.get('exception', {}).get('description', d.get('text'))[:160]}")
    if shots is not None:
        path = shots / (page.replace("/", "__").removesuffix(".html") + ".png")
        h = browser.screenshot(path, info["width"], info["height"])
        res.screenshot = f"{path} ({WIDTH}x{h}{', cut' if info['height'] > h else ''})"
    res.seconds = time.perf_counter() - start
    return res


def redirect_of(path: Path) -> str | None:
    """The target of a <meta http-equiv="refresh"> page (Jupyter Book's index.html), else None."""
    import re

    m = re.search(r'<meta[^>]+http-equiv="refresh"[^>]+url=([^"]+)"', path.read_text(encoding="utf8")[:3000], re.I)
    return m.group(1).strip() if m else None


def pages_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(root).parts))


def check_site(root: Path, pages: list[str] | None = None, shots: Path | None = None,
               out=sys.stdout, jobs: int = 1) -> list[PageResult]:
    """Check ``pages`` (default: every page) of the site under ``root``, in ``jobs`` headless Chromiums
    side by side (each takes the next unchecked page); the results come back in the order of ``pages``."""
    root = root.resolve()
    pages = pages or pages_of(root)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int (Chromiums side by side), got {jobs!r}")
    server, origin = serve(root)
    todo, results, lock, errors = list(pages), {}, threading.Lock(), []

    def check_next(browser: Browser) -> None:
        while True:
            with lock:
                if not todo:
                    return
                page = todo.pop(0)
            target = redirect_of(root / page)
            if target is not None:  # a redirect: only its target is checked (loading it just navigates away)
                r = PageResult(page, links=1)
                why = broken_link(root, origin, urllib.parse.urljoin(origin + page, target))
                r.failures += [f"redirect to a missing page: {why}"] if why else []
            else:
                r = check_page(browser, root, origin, page, shots)
            with lock:
                results[page] = r
                status = "ok  " if not r.failures else "FAIL"
                print(f"{status} {page}: {r.math} equations, {r.images} images, {r.links} links, {r.seconds:.1f} s"
                      + (f"; screenshot {r.screenshot}" if r.screenshot else ""), file=out, flush=True)
                for why in r.failures:
                    print(f"       - {why}", file=out, flush=True)

    def worker() -> None:
        browser = Browser(origin)
        try:
            check_next(browser)
        except BaseException as exc:  # raised again in the calling thread
            errors.append(exc)
        finally:
            browser.close()

    try:
        threads = [threading.Thread(target=worker) for _ in range(min(jobs, len(pages)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.shutdown()
    if errors:
        raise errors[0]
    return [results[p] for p in pages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--page", action="append", help="check only this page (relative to the site)")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "site-test" / "screenshots")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="Chromiums side by side (default 1)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"site-test: no built site at {args.site} (run make book first)")
        return 1
    shots = None if args.no_screenshots else args.screenshots
    if shots is not None:
        shutil.rmtree(shots, ignore_errors=True)
    start = time.perf_counter()
    results = check_site(args.site, args.page, shots, jobs=args.jobs)
    failed = sum(1 for r in results if r.failures)
    print(f"site-test: {len(results)} pages in {time.perf_counter() - start:.0f} s, "
          f"{sum(r.math for r in results)} equations, {sum(r.images for r in results)} images, "
          f"{sum(r.links for r in results)} links checked"
          + (f"; screenshots in {shots}" if shots else ""))
    print(f"site-test: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
