"""What the docs say about flags is what the parsers do.

The option tables are generated from argparse when the site is built (``scripts/docs_options.py``,
a mkdocs hook), so these tests check the generator against the parsers, that every command has
its table, and that the flags and defaults the prose names by hand exist and agree.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from gradclip.app.commands import COMMANDS
from gradclip.app.config import FLAG_DEFAULTS, MODEL_RECOMMENDED, RECOMMENDED

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Flags of other programs that the pages show beside gradclip's own (the repository's scripts'
# flags are read from their source below).
OTHER_PROGRAMS = {
    "--index-url": "pip", "--logdir": "tensorboard", "--strict": "mkdocs",
    "--nnodes": "torchrun", "--nproc_per_node": "torchrun", "--rdzv_endpoint": "torchrun",
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
QUOTED_DEFAULT = re.compile(r"`(--[a-z][a-z0-9-]*)[^`]*` \((default )?`?([\w.,:+-]+)`?\)")


def load_generator():
    spec = importlib.util.spec_from_file_location("docs_options", ROOT / "scripts" / "docs_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()
PARSERS = generator.command_parsers()


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {name: action for action in parser._actions for name in action.option_strings}


def table_rows(command: str) -> dict[str, list[str]]:
    """The generated table of a command: its first cell's first name -> its cells."""
    rows = {}
    for line in generator.options_table(command).splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].split(",")[0].strip("` ")] = cells
    return rows


def script_flags() -> set[str]:
    """The flags the repository's own scripts and benchmarks define."""
    flags = set()
    for path in [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        source = path.read_text(encoding="utf-8")
        flags.update(re.findall(r"""["'](--[\w-]+)""", source))
        if 'add_argument(f"--{' in source:  # flags named in a loop: for name in ("a", "b")
            flags.update(f"--{name}" for names in re.findall(r"for \w+ in \(([^)]*)\)", source)
                         for name in re.findall(r'"([\w-]+)"', names))
    return flags


def inline_code(page: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", page.read_text(encoding="utf-8"))


def test_the_commands_are_the_ones_the_parser_builds():
    assert list(PARSERS) == list(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_its_generated_option_table_in_the_docs(command):
    marker = f"<!-- gradclip-options: {command} -->"
    assert any(marker in page.read_text(encoding="utf-8") for page in PAGES), \
        f"no docs page lists gradclip {command}'s options: add the line {marker}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_generated_table_lists_every_option_with_its_default_and_choices(command):
    rows = table_rows(command)
    for action in generator.option_rows(PARSERS[command]):
        name = action.option_strings[0] if action.option_strings else \
            (action.metavar or action.dest.upper())
        assert name in rows, f"gradclip {command} {name} is missing from its table"
        _, values, default, meaning = rows[name]
        for choice in action.choices or ():
            assert f"`{choice}`" in values, (command, name, choice)
        if action.default not in (None, False, argparse.SUPPRESS):
            shown = ",".join(map(str, action.default)) \
                if isinstance(action.default, list | tuple) else str(action.default)
            assert default in (f"`{shown}`", "on"), (command, name, default)
        assert (action.help or "").split()[0].replace("_", "\\_") in meaning


def test_the_task_defaults_table_gives_every_tasks_setting():
    lines = generator.task_defaults_table().splitlines()
    columns = re.findall(r"`--task ([\w-]+)(?: --model ([\w-]+))?`", lines[0])
    assert columns[-1] == ("lm", "transformer")
    for line in lines[2:]:
        cells = [cell.strip().strip("`") for cell in line.split("|")[1:-1]]
        name = cells[0].removeprefix("--").replace("-", "_")
        for (task, model), shown in zip(columns, cells[2:], strict=True):
            own = {**RECOMMENDED.get(task, {}),
                   **(MODEL_RECOMMENDED[(task, model)] if model else {}),
                   **({"model": model} if model else {})}
            value = own.get(name, FLAG_DEFAULTS[name])
            expected = {True: "on", False: "off", None: "—"}.get(value, str(value)) \
                if value is None or isinstance(value, bool) else str(value)
            assert shown == expected, (name, task, shown, expected)


def test_every_page_marker_names_a_command_and_is_replaced():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for command in re.findall(r"^<!-- gradclip-options: ([\w-]+) -->$", text, re.M):
            assert command in COMMANDS, f"{page.name}: no command {command!r}"
        assert not re.search(r"^<!-- gradclip-.*-->$", generator.render(text), re.M), page.name


def test_every_flag_the_docs_name_exists():
    known = {name for parser in PARSERS.values() for name in options(parser)}
    known |= {"--version"} | script_flags() | set(OTHER_PROGRAMS)
    unknown = {(page.name, flag) for page in PAGES for code in inline_code(page)
               for flag in FLAG.findall(code) if flag not in known}
    assert not unknown, sorted(unknown)


def test_a_command_shown_in_inline_code_takes_the_flags_it_is_given():
    wrong = []
    for page in PAGES:
        for code in inline_code(page):
            words = code.split()
            if len(words) > 1 and words[0] == "gradclip" and words[1] in PARSERS:
                accepted = options(PARSERS[words[1]])
                wrong += [(page.name, code) for flag in FLAG.findall(code) if flag not in accepted]
    assert not wrong, wrong


def test_defaults_the_prose_quotes_are_the_parsers():
    """`` `--vocab-size` (20000) `` and `` `--percentile` (default 90) `` name real defaults."""
    def defaults(flag: str) -> set[str]:
        found = set()
        for parser in PARSERS.values():
            action = options(parser).get(flag)
            if action is None:
                continue
            found.add(str(action.default))
            found.add(str(FLAG_DEFAULTS.get(action.dest)))
            found.update(re.findall(r"default: ([^;,)\s]+|,)", action.help or ""))
        return found

    wrong = []
    for page in PAGES:
        for flag, said, value in QUOTED_DEFAULT.findall(page.read_text(encoding="utf-8")):
            if (said or _number(value)) and not _agrees(value, defaults(flag)):
                wrong.append((page.name, flag, value, sorted(defaults(flag))))
    assert not wrong, wrong


def _agrees(value: str, defaults: set[str]) -> bool:
    return value in defaults or _number(value) and any(
        float(value) == float(default) for default in defaults if _number(default))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"`gradclip --help` lists every command \(([^)]*)\)", readme)
    assert listed, "README: the sentence listing the commands is gone"
    assert sorted(re.findall(r"`(\w+)`", listed.group(1))) == sorted(COMMANDS)
