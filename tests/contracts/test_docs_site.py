"""`mkdocs build --strict` succeeds: no broken link, no missing anchor, no docstring reference
that does not resolve, every page in the nav (what `make docs` and `make test` run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as `mkdocs build --strict` writes it (built once for this module's tests)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    folder = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return folder


def test_docs_site_builds_strictly(site):
    assert (site / "api" / "index.html").exists()


# a Sphinx role left in a docstring: mkdocstrings renders Markdown, so it shows up raw
SPHINX_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|ref):(?:`|<code)")


def test_the_built_site_shows_no_raw_sphinx_role(site):
    found = [f"{page.relative_to(site)}: {match.group(0)}"
             for page in sorted(site.rglob("*.html"))
             for match in SPHINX_ROLE.finditer(page.read_text(encoding="utf-8"))]
    assert not found, found[:20]


def test_no_docstring_in_the_package_uses_a_sphinx_role():
    found = [f"{path.relative_to(ROOT)}:{number}"
             for path in sorted((ROOT / "src").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|ref):`", line)]
    assert not found, found


def test_api_reference_documents_every_public_name():
    import gradclip

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [name for name in gradclip.__all__ if f"::: gradclip.{name}\n" not in page]
    assert not missing, missing
