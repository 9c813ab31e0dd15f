"""``python -m gradclip``: the command line."""

from gradclip.app.cli import main

raise SystemExit(main())
