"""The fix text fits the model: cell type, optimizer, learning rate and clipper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradclip import GradientMonitor
from gradclip.monitor import fixes
from gradclip.monitor.fixes import RunSetting


@pytest.mark.parametrize("cell", ["lstm", "gru", "LSTM", "GRU"])
def test_a_gated_cell_is_never_told_to_use_a_gated_cell(cell):
    fix = fixes.vanishing_fix(RunSetting(cell=cell, optimizer="adam", layers=1))
    assert "gated cell (" not in fix and "--model" not in fix
    assert "already gated" in fix
    assert "truncated back-propagation" in fix


def test_an_lstm_is_told_about_the_forget_gate_bias():
    assert "forget-gate bias" in fixes.vanishing_fix(RunSetting(cell="lstm"))
    assert "forget-gate" not in fixes.vanishing_fix(RunSetting(cell="gru"))


@pytest.mark.parametrize("cell", ["rnn", "rnn-relu", "RNN_TANH", "RNN_RELU"])
def test_a_vanilla_rnn_is_told_to_try_a_gated_cell_and_recurrent_initialisation(cell):
    fix = fixes.vanishing_fix(RunSetting(cell=cell))
    assert "gated cell (nn.LSTM or nn.GRU; --model lstm|gru in the CLI)" in fix
    assert "identity initialisation" in fix


def test_sgd_users_hear_of_adam_and_adam_users_do_not():
    assert "--optimizer adam" in fixes.vanishing_fix(RunSetting(cell="gru", optimizer="sgd"))
    assert "--optimizer adam" not in fixes.vanishing_fix(RunSetting(cell="gru", optimizer="adam"))


def test_every_vanishing_fix_says_clipping_cannot_help():
    for cell in (None, "rnn", "lstm", "gru"):
        assert fixes.vanishing_fix(RunSetting(cell=cell)).startswith("clipping cannot help")


def test_a_clipping_run_is_not_told_to_start_clipping():
    fix = fixes.exploding_fix(RunSetting(clip="norm:1.0", lr=0.1))
    assert "already bounds" in fix and "--lr 0.033" in fix


def test_monitor_on_an_lstm_that_vanishes_does_not_suggest_a_gated_cell():
    torch.manual_seed(0)
    lstm = nn.LSTM(1, 16, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0.fill_(-6.0)  # forget gate shut: the memory decays at every step
    monitor = GradientMonitor(lstm)
    output, _ = lstm(torch.randn(4, 200, 1))
    output[:, -1].sum().backward()
    report = monitor.step()
    verdict = next(v for v in report.verdicts if v.kind == "vanishing")
    assert report.cells == {"(root)": "LSTM"}
    assert "already gated (lstm)" in verdict.fix
    assert "LSTM or GRU" not in verdict.fix


def test_a_transformer_is_never_told_to_use_a_gated_cell():
    setting = RunSetting(cell="transformer", optimizer="adamw", lr=0.001, layers=2)
    for fix in (fixes.vanishing_fix(setting), fixes.stalled_fix(setting, None)):
        assert "gated cell" not in fix and "--model lstm" not in fix


def test_adam_stalled_at_a_high_rate_is_told_to_lower_it_first():
    """The quick benchmark's transformer stalls at AdamW lr 0.1 under every strategy."""
    high = fixes.stalled_fix(RunSetting(cell="transformer", optimizer="adamw", lr=0.1), None)
    assert high.startswith("lower the learning rate (e.g. --lr 0.033")
    assert "a larger learning rate" not in high
    low = fixes.stalled_fix(RunSetting(cell="transformer", optimizer="adamw", lr=0.001), None)
    assert low.startswith("a larger learning rate")
