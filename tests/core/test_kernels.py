"""gradclip._kernels: the one door to torch's private foreach helpers, and its fallback.

The fallback is forced by re-importing the module while ``torch.utils._foreach_utils``
cannot be imported, as it would be if a torch release moved it; every op built on the
kernels must then still equal torch.nn.utils (torch 2.13) bit for bit.
"""

from __future__ import annotations

import ast
import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

import gradclip
from gradclip import _kernels
from tests.core.torch_parity import assert_grads_equal, clone_params, make_params

SRC = Path(__file__).resolve().parents[2] / "src" / "gradclip"
PRIVATE_HELPERS = "torch.utils._foreach_utils"
NORM_TYPES = [0.5, 1.0, 2.0, 3.0, math.inf]
# One or two (device, dtype) groups: the fallback's group order cannot change the total norm.
DTYPE_MIXES = [
    [torch.float32] * 4,
    [torch.float32, torch.float64, torch.float32],
    [torch.bfloat16, torch.float32, torch.bfloat16],
]


@pytest.fixture
def python_kernels(monkeypatch):
    """gradclip._kernels as imported where torch.utils._foreach_utils does not exist."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, PRIVATE_HELPERS, None)  # None in sys.modules: ImportError
        patch.delattr(torch.utils, "_foreach_utils")
        importlib.reload(_kernels)
    try:
        yield _kernels
    finally:
        importlib.reload(_kernels)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def params_with_grads(dtypes):
    shapes = [(index + 2, 3) for index in range(len(dtypes))]
    return make_params(shapes, dtypes, seed=0, scale=3.0)


def test_kernels_is_the_only_module_that_imports_torchs_private_foreach_helpers():
    importers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(name.startswith(PRIVATE_HELPERS) for name in imports_of(path))
    )
    assert importers == ["_kernels.py"]


def test_kernels_fall_back_to_python_when_torchs_private_helpers_cannot_be_imported(
    python_kernels,
):
    assert python_kernels.TORCH_FOREACH_UTILS is None


@pytest.mark.parametrize("dtypes", DTYPE_MIXES, ids=["one_group", "two_dtypes", "bf16_fp32"])
@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_fallback_clip_grad_norm_equals_torch_bit_for_bit(python_kernels, norm_type, foreach, dtypes):
    ours = params_with_grads(dtypes)
    theirs = clone_params(ours)
    our_norm = gradclip.clip_grad_norm_(ours, 1.0, norm_type, foreach=foreach)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, foreach=foreach)
    assert our_norm.dtype == their_norm.dtype
    assert torch.equal(our_norm, their_norm)
    assert_grads_equal(ours, theirs)


@pytest.mark.parametrize("foreach", [None, False, True])
def test_fallback_clip_grad_value_equals_torch_bit_for_bit(python_kernels, foreach):
    ours = params_with_grads(DTYPE_MIXES[1])
    theirs = clone_params(ours)
    gradclip.clip_grad_value_(ours, 0.5, foreach=foreach)
    torch.nn.utils.clip_grad_value_(theirs, 0.5, foreach=foreach)
    assert_grads_equal(ours, theirs)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_fallback_per_tensor_clip_equals_the_clip_with_torchs_helpers(norm_type):
    dtypes = [torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.float32]
    with_helpers = params_with_grads(dtypes)
    without = clone_params(with_helpers)
    norms_with = gradclip.clip_grad_norm_per_tensor_(with_helpers, 1.0, norm_type)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kernels, "TORCH_FOREACH_UTILS", None)
        norms_without = gradclip.clip_grad_norm_per_tensor_(without, 1.0, norm_type)
    assert torch.equal(norms_with, norms_without)
    assert_grads_equal(with_helpers, without)


@pytest.mark.parametrize("device", ["cpu", "cuda", "xpu", "meta", "mps"])
def test_fallback_foreach_choice_is_torchs_rule(python_kernels, device):
    from torch.utils import _foreach_utils as torch_rule

    device = torch.device(device)
    plain, parameter = torch.zeros(2), torch.nn.Parameter(torch.zeros(2))
    assert python_kernels.device_has_foreach_support(device) == (
        torch_rule._device_has_foreach_support(device)
    )
    for tensors in ([plain], [parameter], [plain, parameter], []):
        assert python_kernels.has_foreach_support(tensors, device) == (
            torch_rule._has_foreach_support(tensors, device)
        )


def test_fallback_refuses_foreach_true_where_torch_does(python_kernels):
    with pytest.raises(RuntimeError, match="can't use the foreach API on meta tensors"):
        python_kernels.use_foreach([], torch.device("meta"), True)


def test_fallback_groups_hold_the_tensors_torch_groups_together(python_kernels):
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

    dtypes = [torch.float32, torch.float64, torch.float16, torch.float32, torch.float16]
    tensors = [torch.zeros(1, dtype=dtype) for dtype in dtypes]
    ours = python_kernels.group_by_device_and_dtype(tensors)
    theirs = _group_tensors_by_device_and_dtype([tensors], with_indices=True)
    assert [indices for _, _, indices in ours] == [[0, 3], [1], [2, 4]]  # first appearance
    assert {tuple(indices) for _, _, indices in ours} == {tuple(i) for _, i in theirs.values()}
    for _, group, indices in ours:
        assert all(t is tensors[i] for t, i in zip(group, indices, strict=True))
