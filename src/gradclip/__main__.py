"""``python -m gradclip``: the command line, as fast as the console script.

Python imports the package before this module; the package imports its names lazily, so
torch is not imported before the arguments are parsed.
"""

from gradclip_cli import main

raise SystemExit(main())
