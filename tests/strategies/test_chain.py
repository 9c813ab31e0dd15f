"""``Chain``: its members applied in turn, combined stats, ``+`` in specs, nested state."""

from __future__ import annotations

import pytest
import torch

import gradclip
from gradclip import Chain

MEMBERS = [
    "agc:0.01+norm:1.0", "spikeskip:window=19,sigma=2+zclip:warmup_steps=3",
    "adagc:warmup_steps=3+value:0.05", "autoclip:0.5+agc:0.05+norm:0.3",
]


def spiky_grads(step, params):
    generator = torch.Generator().manual_seed(step)
    scale = 40.0 if step % 9 == 8 else 1.0
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * scale
    return torch.tensor(1.0 + scale)


def make_params():
    return [torch.nn.Parameter(torch.ones(shape)) for shape in ((6, 4), (6,), (3, 6))]


@pytest.mark.parametrize("spec", MEMBERS)
def test_a_chain_equals_its_members_applied_in_turn_for_40_steps(spec):
    chain = gradclip.from_spec(spec)
    members = [gradclip.from_spec(member) for member in spec.split("+")]
    assert isinstance(chain, Chain) and len(chain.clippers) == len(members)
    chained, separate = make_params(), make_params()
    for step in range(40):
        loss = spiky_grads(step, chained)
        spiky_grads(step, separate)
        stats = chain.clip_(chained, loss=loss)
        member_stats = [member.clip_(separate, loss=loss) for member in members]
        for p, q in zip(chained, separate, strict=True):
            assert torch.equal(p.grad, q.grad)
        assert torch.equal(stats.total_norm, member_stats[0].total_norm)
        thresholds = [s.threshold for s in member_stats if s.threshold is not None]
        if thresholds:
            assert torch.equal(stats.threshold, thresholds[-1])
        else:
            assert stats.threshold is None
        assert bool(stats.clipped) == any(bool(s.clipped) for s in member_stats)
        assert bool(stats.skipped) == any(bool(s.skipped) for s in member_stats)


def test_the_loss_reaches_a_member_that_watches_it():
    chain = gradclip.from_spec("spikeskip:window=19,sigma=3+norm:1.0")
    params = make_params()
    for step in range(25):
        spiky_grads(0, params)  # the same gradient every step: only the loss can spike
        stats = chain.clip_(params, loss=torch.tensor(100.0 if step == 24 else 1.0 + step % 2))
    assert bool(stats.skipped)
    assert all(torch.count_nonzero(p.grad) == 0 for p in params)


def test_a_chain_state_nests_its_members_and_round_trips():
    chain = gradclip.from_spec("autoclip:0.5+zclip:warmup_steps=3")
    params = make_params()
    for step in range(10):
        spiky_grads(step, params)
        chain.clip_(params)
    state = chain.state_dict()
    assert state["kind"] == "chain" and [m["kind"] for m in state["members"]] == ["autoclip", "zclip"]
    resumed = gradclip.from_spec("autoclip:0.5+zclip:warmup_steps=3")
    resumed.load_state_dict(state)
    twin = make_params()
    spiky_grads(10, params)
    spiky_grads(10, twin)
    assert torch.equal(chain.clip_(params).threshold, resumed.clip_(twin).threshold)


def test_a_chain_refuses_the_state_of_another_chain_or_strategy():
    chain = gradclip.from_spec("agc:0.01+norm:1.0")
    with pytest.raises(ValueError):
        chain.load_state_dict(gradclip.from_spec("zclip").state_dict())
    with pytest.raises(ValueError):
        chain.load_state_dict(gradclip.from_spec("agc:0.01+norm:1.0+value:1").state_dict())


def test_nested_chains_flatten_and_bad_members_are_refused():
    inner = Chain(gradclip.AGC(0.01), gradclip.NormClip(1.0))
    assert len(Chain(inner, gradclip.ValueClip(0.1)).clippers) == 3
    with pytest.raises(ValueError):
        Chain()
    with pytest.raises(TypeError):
        Chain(gradclip.NormClip(1.0), "norm:1.0")


def test_a_plus_in_an_exponent_stays_the_number_s():
    assert isinstance(gradclip.from_spec("norm:1e+3"), gradclip.NormClip)
    chain = gradclip.from_spec("value:1e+2+norm:2E+1")
    assert [type(c).__name__ for c in chain.clippers] == ["ValueClip", "NormClip"]
    assert chain.clippers[1].max_norm == 20.0


@pytest.mark.parametrize("spec", ["norm:1.0+", "+norm:1.0", "norm:1.0++agc"])
def test_an_empty_member_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="invalid clipping spec"):
        gradclip.from_spec(spec)
