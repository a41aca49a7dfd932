"""The built site, checked as a reader sees it: in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium), served from localhost.

Build the site first, then run this file on its own (``.ci/run`` does both):

    sphinx-build -W --keep-going -b html docs docs/_build/html
    python -m pytest docs/tests -n 0

It finds the formulas rendered by MathJax (no raw ``\\frac``, ``\\partial`` or ``:math:`` left in
the text, and as many rendered formulas as the page has math), every figure loaded, no resource
fetched from anywhere but the site (no CDN), and no broken internal link; and it writes
screenshots of the lecture page and an API page to ``docs/_build/screenshots/``.
``DOCS_HTML`` names another build folder.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

DOCS = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("DOCS_HTML", DOCS / "_build" / "html"))
SCREENSHOTS = DOCS / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# The pages whose formulas must render: the lecture, the guide, the SymPy record, two API pages.
MATH_PAGES = ["lecture.html", "checking.html", "derivations.html", "api/lecture.html",
              "api/checking.html"]  # fmt: skip
RAW_TEX = re.compile(r"\\frac|\\partial|\\mathrm|\\lVert|\\sum|:math:|\$\$")


def _pages() -> list[Path]:
    if not (SITE / "index.html").exists():
        pytest.fail(
            f"no built site at {SITE}: build it first with "
            "sphinx-build -W --keep-going -b html docs docs/_build/html"
        )
    return sorted(p for p in SITE.rglob("*.html") if "_static" not in p.parts)


class _Tags(HTMLParser):
    """Every tag's attributes, and every id, of one page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if attrs.get("id"):
            self.ids.add(attrs["id"])


@functools.cache
def _parse(page: Path) -> _Tags:
    parser = _Tags()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _is_external(url: str) -> bool:
    return bool(urlsplit(url).scheme) or url.startswith("//")


# -- the built files, without a browser ---------------------------------------------------------


def test_no_page_loads_anything_from_another_site():
    """Scripts, stylesheets, fonts and images come from the site itself: no CDN."""
    remote = []
    for page in _pages():
        for tag, attrs in _parse(page).tags:
            url = attrs.get("src") if tag in ("script", "img", "iframe") else None
            if tag == "link" and attrs.get("rel") != "canonical":
                url = attrs.get("href")
            if url and _is_external(url):
                remote.append(f"{page.relative_to(SITE)}: <{tag}> {url}")
    assert not remote, "\n".join(remote)
    mathjax = SITE / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.exists(), "MathJax is not copied into the site (sphinx-mathjax-offline)"


def test_every_internal_link_resolves_to_a_page_and_its_anchor():
    """Every local ``<a href>`` names a built file (and an id in it), every ``<img>`` a file."""
    broken = []
    for page in _pages():
        for tag, attrs in _parse(page).tags:
            href = attrs.get("href") if tag == "a" else attrs.get("src") if tag == "img" else None
            if not href or _is_external(href) or href.startswith("mailto:"):
                continue
            parts = urlsplit(href)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(SITE)}: {href} (no file {target})")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _parse(target).ids:
                    broken.append(f"{page.relative_to(SITE)}: {href} (no anchor)")
    assert not broken, "\n".join(broken)


# -- in Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url():
    _pages()
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports what matters
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1600")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


_TYPESET = """
const done = arguments[arguments.length - 1];
const wait = (n) => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done(true), (e) => done(String(e)));
  } else if (n > 0) { setTimeout(() => wait(n - 1), 100); } else { done(false); }
};
wait(300);
"""

_FACTS = """
const text = (() => {  // the prose a reader sees, code blocks and rendered formulas left out
  const body = document.querySelector('article') || document.body;
  const copy = body.cloneNode(true);
  copy.querySelectorAll('pre, code, mjx-container, script, style').forEach((e) => e.remove());
  return copy.innerText;
})();
const imgs = [...document.images];
return {
  math: document.querySelectorAll('.math').length,
  rendered: document.querySelectorAll('mjx-container').length,
  errors: document.querySelectorAll('mjx-merror').length,
  text: text,
  images: imgs.map((i) => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  resources: performance.getEntriesByType('resource').map((r) => r.name),
};
"""


def _load(browser, url: str) -> dict:
    browser.get(url)
    typeset = browser.execute_async_script(_TYPESET)
    facts = browser.execute_script(_FACTS)
    facts["typeset"] = typeset
    return facts


@pytest.mark.parametrize("page", MATH_PAGES)
def test_formulas_render(browser, base_url, page):
    facts = _load(browser, base_url + page)
    assert facts["typeset"] is True, f"{page}: MathJax did not start ({facts['typeset']})"
    assert facts["math"] > 0, f"{page} has no formula"
    assert facts["rendered"] >= facts["math"], (
        f"{page}: {facts['rendered']} rendered formulas for {facts['math']} math elements"
    )
    assert facts["errors"] == 0, f"{page}: {facts['errors']} MathJax errors"
    raw = sorted(set(RAW_TEX.findall(facts["text"])))
    assert not raw, f"{page}: raw TeX left in the text: {raw}"
    print(f"{page}: {facts['rendered']} formulas rendered, no raw TeX")


@pytest.mark.parametrize("page", ["lecture.html", "checking.html"])
def test_every_figure_loads_and_nothing_comes_from_elsewhere(browser, base_url, page):
    facts = _load(browser, base_url + page)
    assert facts["images"], f"{page} has no figure"
    unloaded = [src for src, complete, width in facts["images"] if not (complete and width > 0)]
    assert not unloaded, f"{page}: images not loaded: {unloaded}"
    remote = [r for r in facts["resources"] if not r.startswith(base_url)]
    assert not remote, f"{page} fetched from elsewhere: {remote}"


@pytest.mark.parametrize(
    ("page", "name"), [("lecture.html", "lecture"), ("api/lecture.html", "api-lecture")]
)
def test_screenshots_show_rendered_formulas(browser, base_url, page, name):
    """Screenshots for a person to look at, of pages whose formulas the tests above count."""
    facts = _load(browser, base_url + page)
    assert facts["typeset"] is True and facts["rendered"] > 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = [SCREENSHOTS / f"{name}.png"]
    assert browser.save_screenshot(str(shots[0]))
    if name == "lecture":  # and the chain of the one subtlety on the slide, further down
        browser.execute_script(
            "document.documentElement.style.scrollBehavior = 'auto';"  # furo scrolls smoothly
            "document.getElementById('the-one-subtlety-on-the-slide').scrollIntoView();"
        )
        shots.append(SCREENSHOTS / f"{name}-chain.png")
        assert browser.save_screenshot(str(shots[1]))
    for path in shots:
        assert path.stat().st_size > 10_000, f"{path} is nearly empty"
        print(f"{path}: {facts['rendered']} formulas rendered on {page}")
