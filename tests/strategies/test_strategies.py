"""The strategy protocol: clip_ accepts what the ops accept, returns ClipStats, never syncs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradclip
from tests.contracts.sync_guard import HostSyncRecorder, forbid_host_sync

SPECS = [
    "none", "norm:1.0", "norm:max_norm=0.5,norm_type=inf", "norm:1.0,norm_type=1",
    "value:0.05", "value:min=-0.01,max=0.02", "agc:0.01", "autoclip:0.5",
    "autoclip:quantile=0.9,history_length=4", "zclip:warmup_steps=3",
    "zclip:warmup_steps=2,mode=percentile,max_grad_norm=none",
    "zclip:warmup_steps=2,clip_option=mean,skip_update_on_spike=true",
    "adagc:warmup_steps=3", "adagc:warmup_steps=0,lambda_rel=1.2", "spikeskip:window=19,sigma=2",
    "agc:0.01+norm:1.0", "spikeskip:window=19+zclip:warmup_steps=3",
]
POLICIES = ["propagate", "skip"]


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def backward(model, scale=10.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model.zero_grad(set_to_none=True)
    x = torch.randn(16, 4, generator=generator)
    (model(x).pow(2).sum() * scale).backward()


def grads_of(model):
    return [p.grad.clone() for p in model.parameters()]


def test_the_sync_guard_catches_item_float_and_bool():
    for read in (lambda t: t.item(), lambda t: bool(t > 0), float, lambda t: int(t)):
        recorder = HostSyncRecorder()
        with recorder:
            read(torch.tensor(1.0))
        assert recorder.host_reads


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("spec", SPECS)
def test_clip_never_reads_a_tensor_on_the_host(spec, policy):
    model = make_model()
    clipper = gradclip.from_spec(f"{spec}{',' if ':' in spec else ':'}nonfinite={policy}")
    for step in range(6):
        backward(model, scale=10.0 ** (step % 3), seed=step)
        with forbid_host_sync():
            stats = clipper.clip_(model.parameters())
            # Reading the stats is the caller's choice; building them must not sync either.
            torch.stack([stats.total_norm.float(), stats.clipped.float(), stats.skipped.float()])


@pytest.mark.parametrize("spec", SPECS)
def test_clip_returns_stats_as_zero_dim_tensors(spec):
    model = make_model()
    backward(model)
    stats = gradclip.from_spec(spec).clip_(model.parameters())
    assert isinstance(stats, gradclip.ClipStats)
    assert stats.total_norm.shape == () and stats.total_norm.dtype.is_floating_point
    assert stats.clipped.dtype == torch.bool and stats.skipped.dtype == torch.bool
    assert stats.threshold is None or stats.threshold.shape == ()


@pytest.mark.parametrize("spec", SPECS)
def test_total_norm_is_the_global_l2_norm_before_clipping(spec):
    model = make_model()
    backward(model)
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    stats = gradclip.from_spec(spec).clip_(model.parameters())
    if "norm_type" in spec:
        return  # NormClip reports the norm of its own norm_type, checked below
    torch.testing.assert_close(stats.total_norm, expected)


@pytest.mark.parametrize("spec", SPECS)
def test_clip_accepts_tensors_named_pairs_generators_and_a_single_tensor(spec):
    results = []
    for form in ("list", "named", "generator"):
        model = make_model()
        backward(model)
        params = {"list": list(model.parameters()), "named": model.named_parameters(),
                  "generator": (p for p in model.parameters())}[form]
        gradclip.from_spec(spec).clip_(params)
        results.append(grads_of(model))
    for grads in results[1:]:
        for a, b in zip(results[0], grads, strict=True):
            assert torch.equal(a, b)
    single = torch.nn.Parameter(torch.ones(3))
    single.grad = torch.tensor([3.0, -4.0, 0.0])
    clipper = gradclip.from_spec(spec)
    norm_type = clipper.hyperparameters().get("norm_type", 2.0)
    expected = torch.linalg.vector_norm(single.grad, norm_type)
    assert clipper.clip_(single).total_norm == expected


def test_norm_clip_is_torch_clip_grad_norm_bit_for_bit():
    for norm_type in (1.0, 2.0, math.inf):
        ours, theirs = make_model(), make_model()
        backward(ours)
        backward(theirs)
        stats = gradclip.NormClip(0.3, norm_type).clip_(ours.parameters())
        expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.3, norm_type)
        assert torch.equal(stats.total_norm, expected)
        for a, b in zip(grads_of(ours), grads_of(theirs), strict=True):
            assert torch.equal(a, b)
        assert stats.threshold == 0.3 and stats.clipped


def test_value_clip_is_torch_clip_grad_value_and_reports_whether_it_clipped():
    ours, theirs = make_model(), make_model()
    backward(ours)
    backward(theirs)
    stats = gradclip.ValueClip(0.5).clip_(ours.parameters())
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.5)
    for a, b in zip(grads_of(ours), grads_of(theirs), strict=True):
        assert torch.equal(a, b)
    assert stats.clipped and stats.threshold == 0.5
    backward(ours, scale=1e-6)
    assert not gradclip.ValueClip(0.5).clip_(ours.parameters()).clipped


def test_asymmetric_value_clip_clamps_into_min_max():
    param = torch.nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor([-1.0, -0.05, 0.3, 2.0])
    stats = gradclip.ValueClip(min=-0.1, max=0.5).clip_([param])
    assert torch.equal(param.grad, torch.tensor([-0.1, -0.05, 0.3, 0.5]))
    assert stats.clipped and stats.threshold == 0.5


def test_one_sided_value_clip_leaves_the_other_side_alone():
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([-100.0, 2.0])
    gradclip.ValueClip(max=1.0).clip_([param])
    assert torch.equal(param.grad, torch.tensor([-100.0, 1.0]))


def test_no_clip_leaves_gradients_unchanged_and_has_no_threshold():
    model = make_model()
    backward(model)
    before = grads_of(model)
    stats = gradclip.NoClip().clip_(model.parameters())
    assert stats.threshold is None and not stats.clipped
    for a, b in zip(before, grads_of(model), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec", SPECS)
def test_skip_policy_zeroes_nonfinite_gradients_and_flags_the_step(spec):
    model = make_model()
    backward(model)
    model[0].weight.grad[0, 0] = math.nan
    stats = gradclip.from_spec(spec + (",nonfinite=skip" if ":" in spec else ":nonfinite=skip")).clip_(
        model.parameters()
    )
    assert stats.skipped
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads_of(model))


@pytest.mark.parametrize("spec", SPECS)
def test_error_policy_names_the_parameter_holding_nan(spec):
    model = make_model()
    backward(model)
    model[2].bias.grad[1] = math.inf
    clipper = gradclip.from_spec(spec + (",nonfinite=error" if ":" in spec else ":nonfinite=error"))
    with pytest.raises(RuntimeError, match=r"2\.bias"):
        clipper.clip_(model.named_parameters())


@pytest.mark.parametrize("spec", SPECS)
def test_finite_steps_are_never_flagged_skipped(spec):
    model = make_model()
    backward(model)
    stats = gradclip.from_spec(spec + (",nonfinite=skip" if ":" in spec else ":nonfinite=skip")).clip_(
        model.parameters()
    )
    assert not stats.skipped


@pytest.mark.parametrize(
    ("build", "argument", "value"),
    [
        (lambda: gradclip.NormClip(-1.0), "max_norm", "-1.0"),
        (lambda: gradclip.NormClip(1.0, norm_type="two"), "norm_type", "two"),
        (lambda: gradclip.ValueClip(-0.5), "clip_value", "-0.5"),
        (lambda: gradclip.ValueClip(min=1.0, max=0.5), "min", "1.0"),
        (lambda: gradclip.AGC(clipping=0.0), "clipping", "0.0"),
        (lambda: gradclip.AGC(eps=-1.0), "eps", "-1.0"),
        (lambda: gradclip.ZClip(alpha=2.0), "alpha", "2.0"),
        (lambda: gradclip.ZClip(z_thresh=-1.0), "z_thresh", "-1.0"),
        (lambda: gradclip.ZClip(warmup_steps=-3), "warmup_steps", "-3"),
        (lambda: gradclip.ZClip(mode="median"), "mode", "median"),
        (lambda: gradclip.ZClip(clip_option="max"), "clip_option", "max"),
        (lambda: gradclip.ZClip(max_grad_norm=0.0), "max_grad_norm", "0.0"),
        (lambda: gradclip.NoClip(nonfinite="ignore"), "nonfinite", "ignore"),
    ],
)
def test_constructors_reject_bad_hyperparameters_naming_argument_and_value(build, argument, value):
    with pytest.raises(ValueError, match=argument) as error:
        build()
    assert value in str(error.value)


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(1e-4, 1e4),
    max_norm=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_norm_clip_caps_the_norm_keeps_the_direction_and_is_a_no_op_below(scale, max_norm, seed):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((3, 4), (5,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * scale
    before = torch.cat([p.grad.flatten() for p in params])
    stats = gradclip.NormClip(max_norm).clip_(params)
    after = torch.cat([p.grad.flatten() for p in params])
    assert after.norm() <= max_norm * (1 + 1e-5)
    cosine = torch.nn.functional.cosine_similarity(before.double(), after.double(), dim=0)
    assert cosine > 1 - 1e-6
    if before.norm() + 1e-6 <= max_norm:
        assert torch.equal(before, after) and not stats.clipped


@pytest.mark.parametrize("spec", SPECS)
def test_clip_handles_mixed_dtypes_and_parameters_without_gradients(spec):
    clipper = gradclip.from_spec(spec)
    dtypes = (torch.bfloat16, torch.float16, torch.float64, torch.float32)
    for _ in range(3):
        params = [torch.nn.Parameter(torch.randn(3, 4).to(dtype)) for dtype in dtypes]
        for p in params[:3]:
            p.grad = torch.randn_like(p) * 10
        stats = clipper.clip_(params)
        assert torch.isfinite(stats.total_norm)
        assert all(torch.isfinite(p.grad).all() for p in params[:3]) and params[3].grad is None


@pytest.mark.parametrize("spec", SPECS)
def test_clip_of_no_gradients_reports_a_zero_norm(spec):
    assert gradclip.from_spec(spec).clip_([]).total_norm == 0
    assert gradclip.from_spec(spec).clip_([torch.nn.Parameter(torch.ones(2))]).total_norm == 0


@settings(max_examples=30, deadline=None)
@given(
    low=st.floats(-2.0, 0.0), width=st.floats(0.0, 3.0), scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_value_clip_puts_every_element_in_range_and_keeps_those_inside(low, width, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.zeros(50))
    param.grad = torch.randn(50, generator=generator) * scale
    before = param.grad.clone()
    high = low + width
    stats = gradclip.ValueClip(min=low, max=high).clip_([param])
    low32, high32 = torch.tensor(low).float(), torch.tensor(high).float()
    assert ((param.grad >= low32) & (param.grad <= high32)).all()
    inside = (before >= low32) & (before <= high32)
    assert torch.equal(param.grad[inside], before[inside])
    assert bool(stats.clipped) == bool((~inside).any())


@settings(max_examples=30, deadline=None)
@given(clipping=st.floats(1e-3, 1.0), scale=st.floats(1e-4, 1e4), seed=st.integers(0, 10_000))
def test_agc_never_leaves_a_unit_above_clipping_times_its_weight_norm(clipping, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(6, 5, generator=generator))
    weight.grad = torch.randn(6, 5, generator=generator) * scale
    gradclip.AGC(clipping=clipping).clip_([weight])
    ratio = weight.grad.norm(dim=1) / weight.detach().norm(dim=1).clamp(min=1e-3)
    assert (ratio <= clipping * (1 + 1e-5)).all()
