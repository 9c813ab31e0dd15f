"""The package's types are for its users: ``py.typed`` ships, and no check is silenced blindly.

mypy itself runs in ``make test`` (the ``typecheck`` target; tests/contracts/test_makefile.py);
here, each ``# type: ignore`` in the package names its error code and says why, on its line
or in a comment just above.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<code>\[[\w,-]+\])?(?P<after>.*)$")


def test_the_package_is_marked_typed():
    assert (SRC / "gradclip" / "py.typed").is_file()


def test_every_type_ignore_names_its_code_and_its_reason():
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = IGNORE.search(line)
            if match is None:
                continue
            reason_after = match["after"].strip().startswith("#")
            reason_above = number > 0 and lines[number - 1].strip().startswith("#")
            if match["code"] is None or not (reason_after or reason_above):
                unexplained.append(f"{path.relative_to(SRC)}:{number + 1}")
    assert not unexplained, unexplained
