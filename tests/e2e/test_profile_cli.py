"""``gradclip profile`` end to end on a tiny adding-problem run."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

pytest.importorskip("matplotlib")

import gradclip  # noqa: E402
from gradclip.app.cli import main  # noqa: E402

TINY = ["--task", "adding", "--seq-len", "8", "--hidden-size", "8", "--batch-size", "16",
        "--steps", "30", "--progress", "never"]


def run_profile(out, *extra):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["profile", *TINY, "--out", str(out), *extra])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "run"
    code, printed = run_profile(out)
    return code, printed, out


def test_profile_prints_distribution_verdict_and_usable_recommendations(profiled):
    code, printed, _ = profiled
    assert code == 0
    lines = printed.splitlines()
    assert any(line.strip().startswith("global norm") for line in lines)
    assert "verdict:" in printed
    (recommended,) = [line for line in lines if line.startswith("Recommended:")]
    specs = re.findall(r"--clip (\S+)", recommended)
    assert specs
    for spec in specs:
        gradclip.from_spec(spec)


def test_profile_writes_histogram_and_json_into_out(profiled):
    _, _, out = profiled
    assert (out / "gradient_histogram.png").stat().st_size > 0
    record = json.loads((out / "profile.json").read_text())
    assert record["steps"] == 30
    assert len(record["global_norms"]) == 30
    assert record["recommended"]
    left_out = [entry["spec"] for entry in record["not_recommended"]]
    assert not set(left_out) & set(record["recommended"])
    assert record["norm_rule"].startswith("p90 of steps 1-")


def test_profile_norm_threshold_follows_the_chosen_percentile(tmp_path):
    run_profile(tmp_path / "a", "--percentile", "90")
    record = json.loads((tmp_path / "a" / "profile.json").read_text())
    norms = sorted(record["global_norms"])
    assert norms[len(norms) // 2] < record["norm_threshold"] <= norms[-1]


def test_profile_rejects_a_percentile_of_100_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", *TINY, "--out", str(tmp_path / "r"), "--percentile", "100"])
    assert exit_info.value.code == 2
    assert "--percentile" in capsys.readouterr().err


def test_thresholds_come_from_the_steps_before_the_norm_diverged():
    from gradclip.monitor.recommend import before_divergence

    assert before_divergence([1.0, 2.0, 0.5, 40.0, 45.0, 1e4, float("nan")]) == 5
    assert before_divergence([1.0, float("inf"), 1.0]) == 1
    assert before_divergence([0.3, 0.2, 0.4]) == 3


README_SETTING = ["--task", "adding", "--seq-len", "10", "--model", "rnn", "--lr", "0.15",
                  "--progress", "never"]


def test_profile_then_training_every_recommended_spec_on_the_readme_setting(tmp_path):
    """The README's exploding setting: profile 300 unclipped steps, then train each spec
    it recommends for a short budget; none diverges and every loss falls. (The 3-seed,
    3,000-step check is ``python -m benchmarks.advice``.)"""
    from gradclip.app.experiments.diagnosis import diagnose_result

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["profile", *README_SETTING, "--steps", "300",
                     "--out", str(tmp_path / "profile")]) == 0
    (line,) = [x for x in printed.getvalue().splitlines() if x.startswith("Recommended:")]
    specs = re.findall(r"--clip (\S+)", line)
    assert specs
    for spec in specs:
        run_dir = tmp_path / spec.replace(":", "_")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", *README_SETTING, "--steps", "600", "--clip", spec,
                         "--out", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        verdict = diagnose_result({"run_dir": str(run_dir), "summary": summary})[0]
        assert summary["status"] == "completed", spec
        assert verdict.kind not in ("diverged", "unstable", "stalled"), (spec, verdict)
