"""Check the built course website in a real browser (``make site-check``).

Run from the repository root::

    python website/check_site.py [--site build/site] [--screenshots docs/img]

It serves ``--site`` on 127.0.0.1 (a Python http.server on a free port, in a thread of this
process, always shut down) and drives Debian's Chromium (``/usr/bin/chromium``) with Playwright
for Python.  It fails (exit 1), listing each problem, unless:

* every image and internal link of every page resolves, anchors included (read from the files:
  :func:`link_problems`);
* every page loads with no console error, no page error and no failed request (:func:`page_problems`);
* the language switch on each notebook and docs page lands on the same page in the other edition;
* searching 误差反馈 in the zh edition and "error feedback" in the en edition lists the 02 page;
* a widget's static view (its note and its figure) is visible on the 02 page of each edition;
* MathJax typeset every formula of every page (no TeX source such as ``\\(``, ``$$`` left in the
  prose), at least one on the 00 page and a displayed one on the 02 page of each edition
  (:func:`math_problems`);
* no page asks for anything that is not on 127.0.0.1: the site works offline.

With ``--screenshots DIR`` it saves 1280×800 PNGs of both landing pages and both 02 pages there.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EDITIONS = ("en", "zh")
SEARCHES = {"zh": "误差反馈", "en": "error feedback"}
SEARCH_TARGET = "02_compression"
STATIC_VIEW = {"en": "Static view:", "zh": "静态视图："}
SCREENSHOTS = {"site_en_index.png": "en/index.html", "site_zh_index.png": "zh/index.html",
               "site_en_02.png": f"en/{SEARCH_TARGET}.html", "site_zh_02.png": f"zh/{SEARCH_TARGET}.html"}
VIEWPORT = {"width": 1280, "height": 800}
SKIPPED_FOLDERS = ("_static", "_sources", "_downloads", "_images")


# ----------------------------------------------------------------------------- links, from the files
class _References(HTMLParser):
    """The ids of a page and the URLs it refers to (links, images, scripts, stylesheets)."""

    ATTRIBUTES = {"a": "href", "img": "src", "script": "src", "link": "href", "source": "src", "iframe": "src"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.references: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs) -> None:
        values = dict(attrs)
        for name in ("id", "name"):
            if values.get(name):
                self.ids.add(values[name])
        attribute = self.ATTRIBUTES.get(tag)
        if attribute and values.get(attribute):
            self.references.append((tag, values[attribute]))


@functools.cache
def _parse(path: Path) -> _References:
    parser = _References()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def html_pages(site: Path) -> list[Path]:
    """Every HTML page of the site (not the theme's assets, sources or downloads)."""
    return sorted(p for p in site.rglob("*.html")
                  if not any(part in SKIPPED_FOLDERS for part in p.relative_to(site).parts))


def link_problems(site: Path) -> list[str]:
    """Each internal link, image, script or stylesheet of each page that does not resolve.

    A reference resolves when its file exists under ``site`` (a folder means its index.html) and,
    for a link with an anchor into an HTML page, when that page has an element with that id.
    External URLs (any scheme) are not followed.
    """
    _parse.cache_clear()
    site = site.resolve()
    problems = []
    for page in html_pages(site):
        where = page.relative_to(site).as_posix()
        for tag, url in _parse(page).references:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith(("data:", "javascript:")):
                continue
            path = unquote(parts.path)
            target = page if not path else (page.parent / path)
            if path.endswith("/") or target.is_dir():
                target = target / "index.html"
            try:
                target.resolve().relative_to(site)
            except ValueError:
                problems.append(f"{where}: <{tag}> {url!r} points outside the site")
                continue
            if not target.is_file():
                problems.append(f"{where}: <{tag}> {url!r} -> missing file {target.resolve().relative_to(site)}")
            elif tag == "a" and parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in _parse(target.resolve()).ids:
                problems.append(f"{where}: <a> {url!r} -> no anchor #{unquote(parts.fragment)} in "
                                f"{target.resolve().relative_to(site)}")
    return problems


# ----------------------------------------------------------------------------- server and browser
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """``site`` over HTTP on 127.0.0.1 and a free port, in a thread; yields the base URL; always shuts down."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """Debian's Chromium through Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def is_local(url: str) -> bool:
    """Whether a request stays on this machine: 127.0.0.1, or a URL that needs no network (data:, blob:)."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


@dataclass
class PageLog:
    """What went wrong while a tab loaded its pages (cleared before each page)."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    offsite_requests: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("request", lambda request: not is_local(request.url) and self.offsite_requests.append(request.url))
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(
            f"{message.text} ({message.location.get('url', '')})"))
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))
        page.on("requestfailed", lambda request: self.failed_requests.append(
            f"{request.url} ({request.failure})"))
        page.on("response", lambda response: response.status >= 400 and self.failed_requests.append(
            f"{response.url} (HTTP {response.status})"))

    def clear(self) -> None:
        self.console_errors.clear()
        self.failed_requests.clear()
        self.offsite_requests.clear()


class Tab:
    """One browser tab that loads page after page, recording each page's problems."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport=VIEWPORT)
        self.log = PageLog()
        self.log.attach(self.page)

    def open(self, url: str):
        """Load ``url`` (and let it go idle, best effort); returns the Playwright page."""
        self.log.clear()
        self.page.goto(url, wait_until="load", timeout=60_000)
        with contextlib.suppress(Exception):  # a page that keeps a request open still counts as loaded
            self.page.wait_for_load_state("networkidle", timeout=5_000)
        return self.page

    def close(self) -> None:
        self.page.close()


BROKEN_IMAGES = """() => Promise.all(Array.from(document.images).map(img => {
    img.loading = 'eager';
    return img.decode().then(() => null, () => img.getAttribute('src'));
})).then(found => found.filter(src => src !== null))"""


# After MathJax's first typeset (its startup promise): the formulas it drew, the formulas it left as TeX
# (an element of class "math" with no mjx-container), prose text (outside code, scripts and the
# formulas) that still shows TeX delimiters, and prose that shows Markdown's ** (emphasis that
# CommonMark did not close, as around Chinese punctuation: **配置（profile）**下).
MATH_STATE = r"""async () => {
    const mathjax = window.MathJax && window.MathJax.startup ? window.MathJax : null;
    if (mathjax && mathjax.startup.promise) { await mathjax.startup.promise; }
    const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
    const raw = [], markdown = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        if (!parent || parent.closest(skip) || !parent.getClientRects().length) { continue; }
        const text = node.textContent;
        const tex = ['$$', '\\(', '\\)', '\\[', '\\]'].some(d => text.includes(d)) || /\$[^$\s][^$]*\\[a-zA-Z]+/.test(text);
        if (tex) { raw.push(text.trim().slice(0, 80)); }
        if (text.includes('**')) { markdown.push(text.trim().slice(0, 80)); }
    }
    const untypeset = Array.from(document.querySelectorAll('.math'))
        .filter(e => !e.querySelector('mjx-container') && !e.closest('mjx-container'))
        .map(e => e.textContent.trim().slice(0, 80));
    return {version: mathjax ? String(mathjax.version) : null,
            formulas: document.querySelectorAll('mjx-container').length,
            displayed: document.querySelectorAll('mjx-container[display="true"]').length,
            untypeset: untypeset, raw: raw, markdown: markdown};
}"""
MATH_PAGES = {"00_federated_baseline": "formulas", SEARCH_TARGET: "displayed"}  # what each page must show


@dataclass
class MathCount:
    """Formulas MathJax typeset on the site, and on the pages that must show some."""

    formulas: int = 0
    displayed: int = 0
    pages_with_math: int = 0
    required: dict[str, dict] = field(default_factory=dict)  # "en/00_federated_baseline.html" -> MATH_STATE
    markdown_left: list[str] = field(default_factory=list)  # "page: text" where ** shows (reported, not failed)


def math_on_page(relative: str, state: dict, count: MathCount) -> list[str]:
    """The problems of one page's formulas (``state`` from MATH_STATE); adds its formulas to ``count``."""
    problems = [f"{relative}: formula not typeset by MathJax: {text!r}" for text in state["untypeset"]]
    problems += [f"{relative}: TeX source visible in the text: {text!r}" for text in state["raw"]]
    count.markdown_left += [f"{relative}: {text!r}" for text in state.get("markdown", [])]
    count.formulas += state["formulas"]
    count.displayed += state["displayed"]
    count.pages_with_math += state["formulas"] > 0
    stem = relative.rsplit("/", 1)[-1].removesuffix(".html")
    if stem in MATH_PAGES and relative.split("/")[0] in EDITIONS:
        count.required[relative] = state
        needed = MATH_PAGES[stem]
        if state["version"] is None:
            problems.append(f"{relative}: MathJax did not load")
        elif state[needed] == 0:
            problems.append(f"{relative}: MathJax {state['version']} typeset no {'displayed ' if needed == 'displayed' else ''}"
                            f"formula, and this page has some")
    return problems


def page_problems(browser, base: str, site: Path, math: MathCount | None = None) -> tuple[int, list[str]]:
    """Load every page: console errors, failed or off-site requests, images that do not decode, formulas."""
    problems, pages, tab = [], html_pages(site), Tab(browser)
    math = math if math is not None else MathCount()
    for path in pages:
        relative = path.relative_to(site).as_posix()
        page = tab.open(base + quote(relative))
        broken = page.evaluate(BROKEN_IMAGES)
        problems += math_on_page(relative, page.evaluate(MATH_STATE), math)
        problems += [f"{relative}: console error: {text}" for text in tab.log.console_errors]
        problems += [f"{relative}: failed request: {text}" for text in tab.log.failed_requests]
        problems += [f"{relative}: off-site request: {url}" for url in tab.log.offsite_requests]
        problems += [f"{relative}: image does not load: {src}" for src in broken]
    tab.close()
    return len(pages), problems


def notebook_stems(site: Path, edition: str) -> list[str]:
    return sorted(p.stem for p in (site / edition).glob("[0-9][0-9]_*.html"))


def doc_pages(site: Path, edition: str) -> list[str]:
    """The lasting docs' pages of an edition (``docs/energy_model``, ...), which have twins too."""
    return sorted(f"docs/{p.stem}" for p in (site / edition / "docs").glob("*.html"))


def switch_problems(browser, base: str, site: Path) -> tuple[int, list[str]]:
    """On each notebook and docs page, the language switch must land on the same page in the other edition."""
    problems, checked, tab = [], 0, Tab(browser)
    for edition in EDITIONS:
        other = next(e for e in EDITIONS if e != edition)
        for stem in notebook_stems(site, edition) + doc_pages(site, edition):
            checked += 1
            page = tab.open(f"{base}{edition}/{stem}.html")
            switch = page.locator("a.fedlab-lang-switch").first
            if switch.count() == 0 or not switch.is_visible():
                problems.append(f"{edition}/{stem}.html: no visible language switch")
                continue
            with page.expect_navigation(wait_until="load"):
                switch.click()
            landed = urlsplit(page.url).path.lstrip("/")
            language = page.evaluate("document.documentElement.lang")
            if landed != f"{other}/{stem}.html" or not language.lower().startswith(other):
                problems.append(f"{edition}/{stem}.html: the switch landed on {landed} (lang={language!r}), "
                                f"not {other}/{stem}.html")
    tab.close()
    return checked, problems


def search_problems(browser, base: str) -> tuple[dict[str, list[str]], list[str]]:
    """Sphinx's search page must list the 02 notebook for each edition's term."""
    found, problems, tab = {}, [], Tab(browser)
    for edition, term in SEARCHES.items():
        page = tab.open(f"{base}{edition}/search.html?q={quote(term)}")
        try:
            page.wait_for_function("() => { const s = document.querySelector('#search-results .search-summary');"
                                   " return s && s.textContent.trim().length > 0; }", timeout=30_000)
        except Exception as error:  # noqa: BLE001 - reported as a problem below
            problems.append(f"{edition}: searching {term!r} did not finish ({error.__class__.__name__})")
        hrefs = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
        found[edition] = [urlsplit(h).path.rsplit("/", 1)[-1] for h in hrefs]
        if not any(SEARCH_TARGET in h for h in hrefs):
            problems.append(f"{edition}: searching {term!r} did not list {SEARCH_TARGET} (found: {found[edition]})")
        problems += [f"{edition}/search.html: console error: {text}" for text in tab.log.console_errors]
    tab.close()
    return found, problems


def widget_problems(browser, base: str) -> list[str]:
    """On each 02 page, the cell with an explorer's static view must show its note and a loaded figure."""
    problems, tab = [], Tab(browser)
    for edition, note in STATIC_VIEW.items():
        page = tab.open(f"{base}{edition}/{SEARCH_TARGET}.html")
        cell = page.locator("div.cell", has_text=note).first
        if cell.count() == 0:
            problems.append(f"{edition}/{SEARCH_TARGET}.html: no widget static view ({note!r})")
            continue
        cell.scroll_into_view_if_needed()
        text_visible = cell.get_by_text(note).first.is_visible()
        image = cell.locator("img").first
        image_ok = image.count() > 0 and image.is_visible() and \
            image.evaluate("img => img.complete && img.naturalWidth > 0")
        if not (text_visible and image_ok):
            problems.append(f"{edition}/{SEARCH_TARGET}.html: widget static view not visible "
                            f"(note visible: {text_visible}, figure visible: {image_ok})")
    tab.close()
    return problems


def screenshots(browser, base: str, folder: Path) -> list[Path]:
    """1280×800 PNGs of both landing pages and both 02 pages (what a reader of the README sees)."""
    folder.mkdir(parents=True, exist_ok=True)
    written, tab = [], Tab(browser)
    for name, relative in SCREENSHOTS.items():
        page = tab.open(base + relative)
        page.wait_for_timeout(500)  # MathJax typesets after load
        target = folder / name
        page.screenshot(path=str(target), full_page=False)
        _shrink_png(target)
        written.append(target)
    tab.close()
    return written


def _shrink_png(path: Path) -> None:
    """Save a screenshot with a 256-colour palette, which keeps it small enough to commit."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


# ----------------------------------------------------------------------------- the whole check
def check_site(site: Path, screenshot_dir: Path | None = None) -> list[str]:
    """Run every check on the built site; prints what it measured; returns the problems."""
    site = site.resolve()
    missing = [e for e in EDITIONS if not (site / e / "index.html").is_file()]
    if missing:
        return [f"{site}/{e}/index.html is missing: run `make site` first" for e in missing]
    start = time.perf_counter()
    problems = link_problems(site)
    references = sum(len(_parse(p).references) for p in html_pages(site))
    print(f"links: {references} references in {len(html_pages(site))} pages, {len(problems)} broken")
    with serve(site) as base, chromium() as browser:
        math = MathCount()
        loaded, found = page_problems(browser, base, site, math)
        console = sum("console error" in p for p in found)
        failed = sum("failed request" in p for p in found)
        print(f"pages: {loaded} loaded in Chromium; {console} console errors, {failed} failed requests, "
              f"{sum('off-site request' in p for p in found)} off-site requests, "
              f"{sum('image does not load' in p for p in found)} images that do not load")
        print(f"formulas: MathJax typeset {math.formulas} ({math.displayed} displayed) on {math.pages_with_math} "
              f"pages; {sum('not typeset' in p or 'TeX source' in p for p in found)} left as TeX source; "
              + ", ".join(f"{page} {state['formulas']}" for page, state in sorted(math.required.items())))
        print(f"markdown: ** shown as text in {len(math.markdown_left)} places (a warning, not a failure)"
              + "".join(f"\n  warning: {where}" for where in math.markdown_left))
        missing = [f"{edition}/{stem}.html" for edition in EDITIONS for stem in MATH_PAGES
                   if f"{edition}/{stem}.html" not in math.required]
        found += [f"{page}: not checked for formulas (no such page)" for page in missing]
        problems += found
        switched, found = switch_problems(browser, base, site)
        print(f"language switch: {switched - len(found)}/{switched} notebook and docs pages land on their twin")
        problems += found
        results, found = search_problems(browser, base)
        for edition, term in SEARCHES.items():
            print(f"search {edition} {term!r}: {len(results.get(edition, []))} results, "
                  f"{SEARCH_TARGET} {'found' if any(SEARCH_TARGET in r for r in results.get(edition, [])) else 'MISSING'}")
        problems += found
        found = widget_problems(browser, base)
        print(f"widget static view: {'visible' if not found else 'NOT visible'} on the 02 page of each edition")
        problems += found
        if screenshot_dir is not None:
            for path in screenshots(browser, base, screenshot_dir):
                print(f"screenshot: {path} ({path.stat().st_size // 1024} KiB)")
    print(f"site check took {time.perf_counter() - start:.0f} s")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", default="build/site", help="the built website (default: build/site)")
    parser.add_argument("--screenshots", default=None, help="folder for the four screenshots (e.g. docs/img)")
    parser.add_argument("--links-only", action="store_true", help="check links and images from the files only")
    args = parser.parse_args(argv)
    site = Path(args.site)
    if args.links_only:
        problems = link_problems(site)
    else:
        problems = check_site(site, Path(args.screenshots) if args.screenshots else None)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"site check: {'passed' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
