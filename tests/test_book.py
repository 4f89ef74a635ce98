"""Browser check of the built web book (``_build/html``).

Serves ``_build/html`` on 127.0.0.1 with Python's http.server and opens every page in headless Chromium
(playwright-python driving Debian's ``/usr/bin/chromium``; ``playwright install`` is never needed), then checks:

- every page loads with HTTP 200 and every resource it requests is found;
- chapter pages show their figures (images that actually decoded) and their animations;
- MathJax typeset every formula (no raw ``$$`` or ``\\(`` left);
- the console shows no error and no script raised;
- NO request goes to a host other than 127.0.0.1 (every request is recorded);
- every local ``href`` / ``src`` resolves to a file of the build (and its ``#anchor`` exists);
- the page shows the reader's content, not the machinery: no Colab install cell, no code or output line cut off at a
  1280-pixel window, every figure numbered with a caption and alt text, every folded solution saying so;
- the API reference documents every public name of every documented module;
- a screenshot of the first screen of each chapter (and of the landing page) is saved in ``_build/screenshots/``.

The book is built first (``bash tools/build_book.sh``) when ``_build/html`` is missing or older than a source
file; set ``BOOK_BUILT=1`` to use ``_build/html`` as it is (e.g. right after the build script ran).
Without Chromium (or playwright) the test is skipped, unless ``CI`` is set: then it fails.
A summary of what the browser saw is written to ``_build/browser_report.json``.
"""

from __future__ import annotations

import functools
import http.server
import inspect
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests._book_build import HTML, ROOT, ensure_built

SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser check cannot run in CI: {reason}")
    pytest.skip(f"browser check skipped: {reason} (install Debian's chromium and `pip install playwright`)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


def _local_target(url: str, base: str):
    """The file of the build that a same-site URL points to, or None if it is not a same-site URL."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != base:
        return None
    path = HTML / unquote(parts.path).lstrip("/")
    if parts.path.endswith("/") or path.is_dir():
        path = path / "index.html"
    return path


@pytest.fixture(scope="module")
def crawl():
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")

    ensure_built()
    pages = sorted(
        p for p in HTML.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts)
    )
    assert pages, f"no pages in {HTML}"

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)

    results = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for path in pages:
                rel = path.relative_to(HTML).as_posix()
                rec = {"requests": [], "console": [], "page_errors": [], "failed": [], "bad_status": []}
                page = context.new_page()
                page.on("request", lambda r, rec=rec: rec["requests"].append(r.url))
                page.on("console", lambda m, rec=rec: rec["console"].append({"type": m.type, "text": m.text}))
                page.on("pageerror", lambda e, rec=rec: rec["page_errors"].append(str(e)))
                page.on("requestfailed", lambda r, rec=rec: rec["failed"].append(f"{r.url} ({r.failure})"))
                page.on(
                    "response", lambda r, rec=rec: r.status >= 400 and rec["bad_status"].append(f"{r.status} {r.url}")
                )
                response = page.goto(f"{base}/{rel}", wait_until="networkidle")
                rec["status"] = response.status if response else None
                rec["final_url"] = page.url
                # wait until MathJax (if the page loads it) has typeset everything
                page.evaluate(
                    "() => (window.MathJax && MathJax.startup && MathJax.startup.promise) ? "
                    "MathJax.startup.promise.then(() => true) : true"
                )
                page.wait_for_load_state("networkidle")
                rec.update(page.evaluate(_DOM_PROBE))
                if rel.startswith("notebooks/") or rel == "book/intro.html":
                    shot = SHOTS / (Path(rel).stem + ".png")
                    page.screenshot(path=str(shot))
                    rec["screenshot"] = str(shot.relative_to(ROOT))
                page.close()
                results[rel] = rec
            browser.close()
    finally:
        server.shutdown()
        server.server_close()

    report = {
        "pages": len(results),
        "per_page": {
            rel: {
                "status": r["status"],
                "requests": len(r["requests"]),
                "hosts": sorted({urlsplit(u).netloc for u in r["requests"] if urlsplit(u).scheme in ("http", "https")}),
                "images": r["n_images"],
                "animations": r["n_animations"],
                "math": r["n_math"],
                "console": r["console"],
                "screenshot": r.get("screenshot"),
            }
            for rel, r in results.items()
        },
    }
    (ROOT / "_build" / "browser_report.json").write_text(json.dumps(report, indent=1))
    return {"base": base, "pages": results}


# Runs in the page after load: counts and lists the browser-side facts the tests assert on.
_DOM_PROBE = r"""() => {
  const outside = (el) => !el.closest('pre, code, script, style, .highlight');
  const imgs = [...document.querySelectorAll('img')];
  const maths = [...document.querySelectorAll('.math')];
  const textNodes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (n.parentElement && outside(n.parentElement) && /\$\$|\\\(|\\\[/.test(n.textContent)) textNodes.push(n.textContent.slice(0, 80));
  }
  const links = [];
  for (const el of document.querySelectorAll('a[href], link[href]')) links.push(el.href);
  for (const el of document.querySelectorAll('img[src], script[src], iframe[src], source[src]')) links.push(el.src);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return {
    title: document.title,
    n_images: imgs.filter(i => i.closest('.cell_output, .output')).length,
    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.src || '').slice(0, 100)),
    n_animations: document.querySelectorAll('.animation').length,
    animations_ok: [...document.querySelectorAll('.animation img')].every(i => i.complete && i.naturalWidth > 0),
    n_math: maths.length,
    untypeset_math: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    raw_tex: textNodes,
    links: links,
    ids: ids,
    widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    map_linked: [...document.querySelectorAll('li.chapter-built a')].map(a => a.href),
    map_planned_links: document.querySelectorAll('li.chapter-planned a').length,
    cut_off: [...document.querySelectorAll('div.cell_input pre, div.cell_output pre')]
      .filter(p => p.scrollWidth > p.clientWidth + 1)
      .map(p => p.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 100)),
    install_cell_shown: document.body.textContent.includes('google.colab'),
    figures: imgs.filter(i => i.closest('.cell_output') && !i.closest('.animation')).map(i => {
      const fig = i.closest('figure');
      const cap = fig ? fig.querySelector('figcaption') : null;
      return {alt: i.getAttribute('alt') || '', id: fig ? fig.id : '', numbered: !!(cap && /Figure \d/.test(cap.textContent)),
              caption: cap ? cap.textContent.trim().slice(0, 60) : ''};
    }),
    toggle_texts: [...document.querySelectorAll('details summary')]
      .map(s => s.textContent.trim()),
  };
}"""


def _chapter_pages(crawl):
    return {rel: r for rel, r in crawl["pages"].items() if rel.startswith("notebooks/")}


def test_every_page_loads(crawl):
    problems = {rel: r["status"] for rel, r in crawl["pages"].items() if r["status"] != 200}
    assert not problems, f"pages that did not load with HTTP 200: {problems}"
    missing = {
        rel: r["bad_status"] + r["failed"] for rel, r in crawl["pages"].items() if r["bad_status"] or r["failed"]
    }
    assert not missing, f"resources that failed to load: {missing}"
    assert "book/intro.html" in crawl["pages"] and "index.html" in crawl["pages"]


def test_no_request_leaves_localhost(crawl):
    external = {}
    for rel, r in crawl["pages"].items():
        bad = [
            u
            for u in r["requests"]
            if urlsplit(u).scheme not in ("data", "blob", "about") and urlsplit(u).hostname != "127.0.0.1"
        ]
        if bad:
            external[rel] = bad
    assert not external, f"requests to other hosts: {external}"


def test_no_console_errors(crawl):
    errors = {
        rel: [m["text"] for m in r["console"] if m["type"] == "error"] + r["page_errors"]
        for rel, r in crawl["pages"].items()
    }
    errors = {rel: e for rel, e in errors.items() if e}
    assert not errors, f"console errors or uncaught exceptions: {errors}"


def test_math_is_typeset(crawl):
    pages_with_math = [rel for rel, r in crawl["pages"].items() if r["n_math"]]
    assert "book/notation.html" in pages_with_math, "the notation page should contain mathematics"
    bad = {
        rel: r["untypeset_math"] + r["raw_tex"]
        for rel, r in crawl["pages"].items()
        if r["untypeset_math"] or r["raw_tex"]
    }
    assert not bad, f"mathematics that MathJax did not typeset: {bad}"


def _uses_live_widget(rel: str) -> bool:
    """Whether the chapter's notebook displays an ipywidgets explorer (then it needs a static counterpart)."""
    nb_path = ROOT / Path(rel).with_suffix(".ipynb")
    if not nb_path.is_file():
        return False
    cells = json.loads(nb_path.read_text(encoding="utf-8")).get("cells", [])
    source = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")
    return bool(re.search(r"widgets\.\w+_explorer\(|\binteractive?\(", source))


def test_chapters_have_figures_and_animations(crawl):
    chapters = _chapter_pages(crawl)
    assert chapters, "no chapter page was built"
    assert "notebooks/01_from_deep_networks_to_equilibria.html" in chapters
    for rel, r in chapters.items():
        assert r["n_images"] >= 1, f"{rel}: no figure in the cell outputs"
        assert r["n_math"] > 0, f"{rel}: no mathematics"
        assert r["animations_ok"], f"{rel}: an animation frame did not decode"
        if _uses_live_widget(rel):  # its static counterpart: an animation or small multiples (a figure)
            assert r["n_animations"] + r["n_images"] >= 2, f"{rel}: a live widget and hardly any static figure"
    ch1 = chapters["notebooks/01_from_deep_networks_to_equilibria.html"]
    assert ch1["n_animations"] >= 1, "chapter 1: the animation (static counterpart of its explorer) is missing"

    broken = {rel: r["broken_images"] for rel, r in crawl["pages"].items() if r["broken_images"]}
    assert not broken, f"images that did not decode: {broken}"


def test_internal_links_resolve(crawl):
    base = crawl["base"]
    ids_by_file = {HTML / rel: set(r["ids"]) for rel, r in crawl["pages"].items()}
    broken = []
    for rel, r in crawl["pages"].items():
        for url in r["links"]:
            target = _local_target(url, base)
            if target is None:
                continue
            if not target.is_file():
                broken.append(f"{rel} -> {url} (no file)")
                continue
            frag = unquote(urlsplit(url).fragment)
            if frag and target.suffix == ".html":
                ids = ids_by_file.get(target)
                if ids is None:
                    ids = set(re.findall(r'\bid="([^"]+)"', target.read_text(encoding="utf-8", errors="replace")))
                    ids_by_file[target] = ids
                if frag not in ids:
                    broken.append(f"{rel} -> {url} (no #{frag})")
    assert not broken, "broken internal links:\n" + "\n".join(sorted(set(broken)))


def test_chapter_map_links_exactly_the_built_chapters(crawl):
    intro = crawl["pages"]["book/intro.html"]
    linked = sorted(urlsplit(u).path.lstrip("/") for u in intro["map_linked"])
    assert linked == sorted(_chapter_pages(crawl)), f"chapter map links {linked}"
    assert intro["map_planned_links"] == 0, "a chapter in preparation is linked from the landing page"


def test_screenshots_saved(crawl):
    for rel in list(_chapter_pages(crawl)) + ["book/intro.html"]:
        shot = crawl["pages"][rel].get("screenshot")
        assert shot and (ROOT / shot).stat().st_size > 10_000, f"{rel}: no usable screenshot"


def test_no_install_cell_and_no_cut_off_line(crawl):
    for rel, r in _chapter_pages(crawl).items():
        assert not r["install_cell_shown"], f"{rel}: the Colab install cell is on the page (tag it remove-cell)"
        assert not r["cut_off"], (
            f"{rel}: code or output lines wider than the cell (a reader cannot see them): {r['cut_off']}"
        )


def test_figures_are_numbered_captioned_and_described(crawl):
    for rel, r in _chapter_pages(crawl).items():
        bad = [f for f in r["figures"] if not (f["numbered"] and f["id"] and f["alt"].strip())]
        assert not bad, f"{rel}: figures without a number, name or alt text (cell metadata mystnb.figure/image): {bad}"


def test_solution_toggles_say_so(crawl):
    for rel, r in _chapter_pages(crawl).items():
        generic = [t for t in r["toggle_texts"] if "code cell" in t.lower()]
        assert not generic, f"{rel}: a folded cell with the generic toggle text {generic}: say 'Show the solution'"
        assert any("Show the solution" in t for t in r["toggle_texts"]), f"{rel}: no folded solution"


def test_api_reference_documents_every_public_name(crawl):
    import importlib

    api = crawl["pages"].get("book/api.html")
    assert api, "the API reference page was not built"
    ids = set(api["ids"])
    modules = re.findall(r"automodule:: (deqlib[.\w]*)", (ROOT / "book" / "api.md").read_text())
    assert "deqlib.solvers" in modules and "deqlib.attacks" in modules
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # submodules and constants: documented where they are described
            documented = f"{name}.{public}" in ids
            if name == "deqlib":  # the top-level names are re-exports, documented in their modules
                documented = any(i.startswith("deqlib.") and i.endswith(f".{public}") for i in ids)
            if not documented:
                missing.append(f"{name}.{public}")
    assert not missing, f"public names without an entry in the API reference: {missing}"
