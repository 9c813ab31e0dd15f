"""The torch-free names the parser offers (gradclip.app.choices, task_flags) are the registries'."""

from __future__ import annotations

from gradclip.app import choices
from gradclip.app.cells import CELLS
from gradclip.app.experiments.benchmark import SUITES
from gradclip.app.task_flags import TASK_FLAGS
from gradclip.app.tasks import TASKS


def test_the_cell_names_are_the_cells_registry_in_its_order():
    assert tuple(CELLS) == choices.CELL_NAMES


def test_the_suite_names_are_the_benchmark_suites():
    assert tuple(SUITES) == choices.SUITE_NAMES


def test_every_task_named_in_the_task_flags_table_exists():
    assert {task for tasks in TASK_FLAGS.values() for task in tasks} <= set(TASKS)
