"""The ``gradclip`` console script: arguments checked before torch is imported.

The entry point lives outside the ``gradclip`` package because importing the package imports
torch, which takes seconds. Here the package's ``__init__`` (the library API, and torch with
it) runs only once the arguments are known to be good, or when parsing first needs the library
(a clipping spec to check): ``gradclip --help``, ``--version`` and argument errors answer at
once, and a Ctrl-C while torch is still importing is one line too. It also sets
``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch loads, so that the application's own
processes never spin on a busy machine (``gradclip.app.cpus``).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import types


class DeferredPackage(types.ModuleType):
    """``gradclip`` before its ``__init__`` ran: submodules import (``__path__`` is set), and
    the first name looked up that is not there yet runs the ``__init__`` in place."""

    def __getattr__(self, name: str) -> object:
        initialize(self)
        return getattr(self, name)


def initialize(package: types.ModuleType) -> None:
    """Run the deferred package's ``__init__`` (once)."""
    if type(package) is DeferredPackage:
        package.__class__ = types.ModuleType
        package.__spec__.loader.exec_module(package)


def deferred_package(name: str) -> types.ModuleType:
    """The package ``name`` in ``sys.modules``, its ``__init__`` deferred if not yet imported."""
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = importlib.util.module_from_spec(spec)
        package.__class__ = DeferredPackage
        sys.modules[name] = package
    return sys.modules[name]


def initialize_uninterrupted(package: types.ModuleType) -> bool:
    """``initialize(package)``; ``False`` if Ctrl-C came meanwhile.

    A ``KeyboardInterrupt`` raised inside torch's import can leave a C extension half
    loaded (numpy then fails with a traceback), so the interrupt waits for the import.
    """
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        initialize(package)
    finally:
        signal.signal(signal.SIGINT, previous)
    return not interrupted


def main() -> int:
    """Parse the arguments, then import the library and run the command."""
    try:
        package = deferred_package("gradclip")
        from gradclip.app import cli
        from gradclip.app.cpus import passive_openmp

        passive_openmp()  # before torch loads its OpenMP runtime, which reads it once

        args = cli.parse()
        if not initialize_uninterrupted(package):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        print("gradclip: error: interrupted", file=sys.stderr)
        return 130
    return cli.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
