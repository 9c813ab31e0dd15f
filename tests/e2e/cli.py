"""Running the CLI in-process, as the e2e tests do."""

from __future__ import annotations

from gradclip.app.cli import main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
