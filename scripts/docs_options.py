"""The docs' option tables, generated from the argparse parsers (a mkdocs hook, and a script).

A page asks for a table with a marker line of its own, replaced when the site is built:

    <!-- gradclip-options: train -->      every option of `gradclip train`, as `--help` has it
    <!-- gradclip-task-defaults -->       the task-dependent flags: each one's default per task

so a page can never list a flag, a default or a choice the parser does not have (the lesson of
a hand-written table that went stale within a week). ``mkdocs.yml`` names this file under
``hooks:``; ``python scripts/docs_options.py train`` prints the table of one command.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

MARKER = re.compile(r"^<!-- gradclip-(options: (?P<command>[\w-]+)|task-defaults) -->$", re.M)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's full parser, by name, as ``gradclip`` builds it."""
    from gradclip.app.cli import build_parser

    parser = build_parser(["*"])
    subparsers = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    return dict(subparsers.choices)


MARKDOWN_ESCAPES = str.maketrans({"\\": "\\\\", "&": "&amp;", "<": "&lt;", ">": "&gt;", "*": "\\*",
                                  "_": "\\_", "`": "\\`", "[": "\\[", "|": "\\|", "\n": " "})


def cell(text: Any) -> str:
    """Plain ``text`` (a help string) shown as it is inside a Markdown table cell."""
    return str(text).translate(MARKDOWN_ESCAPES)


def shown_default(action: argparse.Action) -> str:
    """The default as a reader types it (``—``: none, or one per task that the meaning gives)."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or (default is False and not action.nargs
                                                             and action.const is True):
        return "—"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, list | tuple):
        return "`" + ",".join(str(item) for item in default) + "`"
    return f"`{default}`"


def shown_values(action: argparse.Action) -> str:
    """What the option takes: its choices, a switch, or its metavar."""
    if action.choices is not None:
        return " \\| ".join(f"`{choice}`" for choice in action.choices)
    if action.nargs == 0:
        return "switch"
    return f"`{action.metavar or action.dest.upper()}`"


def option_rows(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options and positionals, without ``--help``."""
    return [action for action in parser._actions
            if not isinstance(action, argparse._HelpAction) and action.help is not argparse.SUPPRESS]


def options_table(command: str) -> str:
    """The Markdown table of ``gradclip COMMAND``'s options: name, values, default, meaning."""
    parser = command_parsers()[command]
    lines = ["| option | takes | default | meaning |", "| --- | --- | --- | --- |"]
    for action in option_rows(parser):
        names = ", ".join(f"`{name}`" for name in action.option_strings) \
            or f"`{action.metavar or action.dest.upper()}`"
        meaning = (action.help or "") % {**vars(action), "prog": parser.prog}
        lines.append(f"| {names} | {shown_values(action)} | {shown_default(action)} "
                     f"| {cell(meaning)} |")
    return "\n".join(lines)


def task_defaults_table() -> str:
    """Each task-dependent flag's default, and every task's own setting where it differs (a
    column per task, then one per (task, model) pair with settings of its own)."""
    from gradclip.app.config import FLAG_DEFAULTS, MODEL_RECOMMENDED, recommended_settings
    from gradclip.app.tasks import TASKS

    columns = [(task, None) for task in TASKS] + list(MODEL_RECOMMENDED)

    def shown(value: Any) -> str:
        return "—" if value is None else {True: "on", False: "off"}.get(value, value) \
            if isinstance(value, bool) else f"`{value}`"

    def heading(task: str, model: str | None) -> str:
        return f"`--task {task}`" if model is None else f"`--task {task} --model {model}`"

    settings = [{**recommended_settings(task, model), **({"model": model} if model else {})}
                for task, model in columns]
    lines = ["| flag | default | " + " | ".join(heading(*column) for column in columns) + " |",
             "| --- | --- |" + " --- |" * len(columns)]
    for name, default in FLAG_DEFAULTS.items():
        lines.append(f"| `--{name.replace('_', '-')}` | {shown(default)} | "
                     + " | ".join(shown(own.get(name, default)) for own in settings) + " |")
    return "\n".join(lines)


def render(markdown: str) -> str:
    """``markdown`` with every marker line replaced by its table."""
    def table(match: re.Match) -> str:
        command = match.group("command")
        return options_table(command) if command else task_defaults_table()

    return MARKER.sub(table, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """The mkdocs hook: the page's markers replaced by the tables."""
    return render(markdown)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    for name in sys.argv[1:] or ["train"]:
        print(task_defaults_table() if name == "task-defaults" else options_table(name), "\n")
