"""The library's layers (DESIGN.md): each imports only the ones below it, read with ast."""

from __future__ import annotations

import gradclip
import gradclip.stats
import gradclip.strategies
import gradclip.strategies.base
from tests.contracts.test_import_cycles import import_graph

BOTTOM = ["gradclip._kernels", "gradclip.stats", "gradclip.parameters"]
BELOW_STRATEGIES = [
    *BOTTOM, "gradclip.flat", "gradclip.distributed", "gradclip.nonfinite",
    "gradclip.functional", "gradclip.agc",
]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        for successor in graph[pending.pop()] - seen:
            seen.add(successor)
            pending.append(successor)
    return seen


def test_the_kernels_stats_and_parameters_import_no_other_gradclip_module():
    graph = import_graph()
    assert {module: graph[module] for module in BOTTOM} == {module: set() for module in BOTTOM}


def test_the_ops_and_the_monitor_never_reach_the_strategies():
    graph = import_graph()
    monitor = [module for module in graph if module.startswith("gradclip.monitor")]
    for module in BELOW_STRATEGIES + monitor:
        strategies = {m for m in reachable(graph, module) if m.startswith("gradclip.strategies")}
        assert not strategies, f"{module} imports {sorted(strategies)}"


def test_the_library_never_reaches_the_application():
    graph = import_graph()
    library = [m for m in graph if not m.startswith("gradclip.app") and m != "gradclip.__main__"]
    for module in library:
        app = {m for m in reachable(graph, module) if m.startswith("gradclip.app")}
        assert not app, f"{module} imports {sorted(app)}"


def test_clip_stats_is_one_class_under_every_import_path():
    assert gradclip.ClipStats is gradclip.stats.ClipStats
    assert gradclip.strategies.ClipStats is gradclip.stats.ClipStats
    assert gradclip.strategies.base.ClipStats is gradclip.stats.ClipStats
