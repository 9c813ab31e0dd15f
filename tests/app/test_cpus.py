"""The application's processes share the CPUs: jobs x threads <= cores, OpenMP waits passively."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradclip.app import cpus
from gradclip.app.cli import parse
from gradclip.app.commands import compare
from gradclip.app.experiments.benchmark import SUITES, settings_for
from gradclip.app.experiments.compare import grid

SRC = Path(__file__).resolve().parents[2] / "src"


@given(threads=st.integers(1, 64), jobs=st.integers(1, 64), cores=st.integers(1, 64))
def test_jobs_times_threads_never_exceed_the_cores(threads, jobs, cores):
    jobs = cpus.parallel_jobs(jobs, cores)
    each = cpus.threads_per_job(threads, jobs, cores)
    assert 1 <= jobs <= cores and 1 <= each <= threads
    assert jobs * each <= cores


def test_threads_per_job_keeps_what_fits():
    assert cpus.threads_per_job(2, 1, cpus=4) == 2
    assert cpus.threads_per_job(2, 2, cpus=2) == 1
    assert cpus.threads_per_job(3, 2, cpus=8) == 3


@pytest.mark.parametrize(("threads", "jobs"), [(0, 1), (1, 0), (-2, 3)])
def test_threads_per_job_refuses_a_count_below_one(threads, jobs):
    with pytest.raises(ValueError, match="threads and jobs must be positive"):
        cpus.threads_per_job(threads, jobs, cpus=2)


def test_the_usable_cpus_are_the_affinity_mask_where_there_is_one():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    assert cpus.usable_cpus() == expected


def test_passive_openmp_keeps_a_policy_the_user_set():
    environ = {}
    cpus.passive_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    cpus.passive_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.parametrize("cores", [1, 2, 3, 8])
def test_compare_runs_no_more_threads_in_all_than_the_machine_has_cores(
        tmp_path, monkeypatch, cores):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: cores)
    args = parse(["compare", "--task", "adding", "--jobs", "4", "--threads", "3", "--clips",
                  "none,norm:1.0", "--out", str(tmp_path / "out")])
    compare.complete(args)
    setting = grid(args.models, args.seq_lens, args.lrs, args.clips)[0]
    run = compare.point_run(args, setting, seed=0)
    assert args.jobs * run.train.threads <= cores
    assert args.jobs == min(4, cores)


def test_benchmark_runs_one_thread_each_and_at_most_one_job_per_core(monkeypatch):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    assert cpus.parallel_jobs(6) == 2
    for setting in settings_for(SUITES["quick"], Path("comments.csv")):
        assert setting.train.threads == 1, setting.label


@pytest.mark.parametrize("entry", [
    "import gradclip_cli\ngradclip_cli.main()",  # the gradclip command
    "import runpy\nrunpy.run_module('gradclip', run_name='__main__')",  # python -m gradclip
])
def test_the_command_line_makes_openmp_wait_passively_before_torch_loads(entry):
    code = ("import os, sys\nsys.argv = ['gradclip', '--version']\ntry:\n"
            + "".join(f"    {line}\n" for line in entry.splitlines())
            + "except SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    environ = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    environ["PYTHONPATH"] = os.pathsep.join([str(SRC), environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environ, timeout=120)
    assert result.stdout.splitlines()[-1] == "PASSIVE False", result.stderr
