"""The public names, the API reference, the changelog and the version stay in step.

Public: ``gradclip.__all__`` and the ``__all__`` of each ``gradclip.integrations.*`` module
(docs/stability.md). Each is on the API reference page (docs/api.md) and in CHANGELOG.md; the
changelog is in Keep a Changelog form, its latest release is the package's version, and the
docs show that version through their hook (scripts/docs_version.py).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

import gradclip

ROOT = Path(__file__).resolve().parents[2]
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
INTEGRATIONS = sorted(path.stem for path in (ROOT / "src/gradclip/integrations").glob("*.py")
                      if path.stem != "__init__")
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", re.M)

sys.path.insert(0, str(ROOT / "scripts"))
import docs_version  # noqa: E402


def integration_names() -> list[tuple[str, str]]:
    return [(module, name) for module in INTEGRATIONS
            for name in importlib.import_module(f"gradclip.integrations.{module}").__all__]


def test_the_api_page_documents_exactly_gradclip_all():
    documented = re.findall(r"^::: gradclip\.(\w+)$", API, re.M)
    assert sorted(documented) == sorted(gradclip.__all__)
    assert len(set(gradclip.__all__)) == len(gradclip.__all__)


@pytest.mark.parametrize(("module", "name"), integration_names())
def test_the_api_page_documents_every_public_integration_name(module, name):
    assert f"gradclip.integrations.{module}" in API and re.search(rf"\b{name}\b", API)


@pytest.mark.parametrize("name", gradclip.__all__ + [n for _, n in integration_names()])
def test_the_changelog_names_every_public_name(name):
    assert f"`{name}`" in CHANGELOG or re.search(rf"`gradclip(\.\w+)*\.{name}`", CHANGELOG)


def test_every_gradclip_path_the_changelog_names_exists():
    for path in set(re.findall(r"`(gradclip(?:\.\w+)+)`", CHANGELOG)):
        module, _, name = path.rpartition(".")
        try:
            importlib.import_module(path)
        except ImportError:
            assert hasattr(importlib.import_module(module), name), path


def test_the_changelog_is_in_keep_a_changelog_form():
    headings = re.findall(r"^## (.*)$", CHANGELOG, re.M)
    assert headings[0] == "[Unreleased]"
    assert all(RELEASE.match(f"## {heading}") for heading in headings[1:])
    versions = RELEASE.findall(CHANGELOG)
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split("."))),
                              reverse=True)
    assert set(re.findall(r"^### (.*)$", CHANGELOG, re.M)) <= SECTIONS
    for version in ["Unreleased", *versions]:  # each heading links to its diff
        assert re.search(rf"^\[{re.escape(version)}\]: https://", CHANGELOG, re.M), version


def test_the_latest_release_is_the_package_version_and_the_docs_show_it():
    assert RELEASE.search(CHANGELOG)["version"] == gradclip.__version__
    assert docs_version.package_version() == gradclip.__version__
    page = (ROOT / "docs" / "stability.md").read_text(encoding="utf-8")
    assert docs_version.MARKER in page
    assert gradclip.__version__ in docs_version.on_page_markdown(page)
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "scripts/docs_version.py" in mkdocs and "stability.md" in mkdocs


def test_the_deprecation_the_policy_shows_is_the_one_the_code_emits():
    from gradclip.strategies.base import Clipper

    with pytest.warns(DeprecationWarning, match="add 'loss=None' to its signature"):
        class OldStyle(Clipper):
            kind = "old-style"

            def clip_(self, parameters):
                raise NotImplementedError
    assert "add 'loss=None' to its signature" in (ROOT / "docs/stability.md").read_text()


def test_the_install_story_names_the_wheel_of_this_version():
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    wheels = set(re.findall(r"gradclip-(\d+\.\d+\.\d+)-py3-none-any\.whl", page))
    assert wheels == {gradclip.__version__}
