"""Sphinx configuration of the functional_nn site.

Build it, from the repository root, with the one command the README gives:

    pip install -e ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html

Markdown pages are read by MyST (``$...$`` and ``$$...$$`` math); the API reference is autodoc
with napoleon over the Google-style docstrings. Math renders with MathJax 3 from a local copy
(``sphinx-mathjax-offline`` copies it into ``_static/mathjax``): the site needs no network.
``docs/tests/test_site.py`` checks the built pages in headless Chromium.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # derivations/ is importable from a fresh clone, installed or not

project = "functional_nn"
author = "functional_nn contributors"
copyright = "2026, " + author  # noqa: A001 -- Sphinx's name
release = version = importlib.import_module("functional_nn").__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 served from _static/mathjax: no CDN
]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3  # README and page headings get anchors that links can name
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "tests"]

html_theme = "furo"
html_title = "functional_nn"
html_static_path = ["_static"]
html_css_files = ["site.css"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True


def _attribute_docs() -> dict[str, list[str]]:
    """The attribute docstrings (a string literal after ``name = ...``) of every module of the
    two packages, by name: autodoc reads them only in the module named, and the API reference
    names the flat ``functional_nn.NAME``, where the value was imported, not written."""
    from sphinx.pycode import ModuleAnalyzer

    docs: dict[str, list[str]] = {}
    for package in ("functional_nn", "derivations"):
        pkg = importlib.import_module(package)
        names = [package] + [
            m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")
        ]
        for name in names:
            try:
                attrs = ModuleAnalyzer.for_module(name).find_attr_docs()
            except Exception:  # noqa: BLE001 -- a module without source: nothing to read
                continue
            for (scope, attr), lines in attrs.items():
                if not scope:
                    docs.setdefault(f"{package}.{attr}", list(lines))
    return docs


_ATTRIBUTE_DOCS: dict[str, list[str]] | None = None


def _data_docstring(app, what, name, obj, options, lines):
    """A flat name's value (``functional_nn.sigmoid``, ``TOLERANCES``) gets the docstring written
    beside it in its own module, not its class's."""
    global _ATTRIBUTE_DOCS
    if what != "data":
        return
    if _ATTRIBUTE_DOCS is None:
        _ATTRIBUTE_DOCS = _attribute_docs()
    own = _ATTRIBUTE_DOCS.get(name)
    class_doc = inspect.getdoc(type(obj)) or ""
    if own is not None:
        lines[:] = own
    elif lines and "\n".join(lines).strip() == class_doc.strip():
        lines[:] = []


def setup(app):
    app.connect("autodoc-process-docstring", _data_docstring)
