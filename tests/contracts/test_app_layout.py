"""The application's shape: commands are leaves, and nothing reaches into argparse's privates."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMMANDS = Path(__file__).resolve().parents[2] / "src" / "gradclip" / "app" / "commands"
LEAVES = sorted(path for path in COMMANDS.glob("*.py") if path.stem not in ("__init__", "options"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, lazily inside functions included."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("command", LEAVES, ids=lambda path: path.stem)
def test_no_command_imports_another_command(command):
    others = {f"gradclip.app.commands.{path.stem}" for path in LEAVES} - {
        f"gradclip.app.commands.{command.stem}"}
    assert not imported_modules(command) & others


def test_commands_are_listed_for_the_cli_and_each_is_a_module():
    from gradclip.app.commands import COMMANDS as NAMES

    assert sorted(NAMES) == [path.stem for path in LEAVES]


def test_no_module_of_the_application_touches_argparse_private_actions():
    app = COMMANDS.parent
    for path in app.rglob("*.py"):
        assert "._actions" not in path.read_text(), path
