"""Parameter groups: what ``clip_`` accepts besides plain parameters, with per-group settings.

Like an optimizer, a strategy may be given a list of dicts, each with ``"params"`` and any of
the strategy's own hyper-parameters as overrides; the NFNet recipe turns AGC off for the
classifier layer and the biases::

    AGC(clipping=0.01).clip_([
        {"params": body_weights},
        {"params": head_and_biases, "clipping": None},   # None: leave this group unclipped
    ])

Keys that are not the strategy's hyper-parameters (an optimizer's ``lr``, ``betas``, ...) are
ignored, so ``optimizer.param_groups`` can be passed as is. One name is shared: in a group that
carries an ``lr`` (an optimizer's group), ``eps`` is the optimizer's (Adam's 1e-8) and is
ignored, so it never silently replaces AGC's or ZClip's ``eps``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor

from gradclip.parameters import NamedTensor, ParamsLike, named_tensors

# Keys of torch optimizers' groups that are also strategy keywords.
OPTIMIZER_KEYS = frozenset({"eps"})


@dataclass(frozen=True)
class ParamGroup:
    """Parameters sharing one set of hyper-parameters (``options``)."""

    named_params: list[NamedTensor]
    options: dict[str, Any]

    def grads(self) -> list[Tensor]:
        """The gradients of the parameters that have one."""
        return [p.grad for _, p in self.named_params if p.grad is not None]


def param_groups(
    parameters: ParamsLike | Iterable[Mapping[str, Any]] | Mapping[str, Any],
    defaults: Mapping[str, Any],
    check: Callable[..., dict[str, Any]] | None = None,
    fixed: Iterable[str] = (),
) -> list[ParamGroup]:
    """Split ``parameters`` into groups, each with ``defaults`` updated by its overrides.

    ``check(**options)`` validates and normalises a group's options (the constructor's own
    checks). A group key in ``fixed`` is a hyper-parameter the strategy cannot vary per group
    (one global threshold): a ``ValueError``.
    """
    if isinstance(parameters, Mapping):
        parameters = [parameters]
    elif isinstance(parameters, types.GeneratorType):
        items = list(parameters)
        # An empty generator goes to named_tensors as one, so that it warns as torch does.
        parameters = items if items else (item for item in items)
    elif not isinstance(parameters, Tensor) and isinstance(parameters, Iterable):
        parameters = list(parameters)
    if not (isinstance(parameters, list) and parameters and isinstance(parameters[0], Mapping)):
        # not a list of group dicts: tensors or (name, tensor) pairs, checked by named_tensors
        return [ParamGroup(named_tensors(cast(ParamsLike, parameters)), dict(defaults))]
    return [
        _group(group, index, defaults, check, frozenset(fixed))
        for index, group in enumerate(parameters)
    ]


def _group(
    group: object,
    index: int,
    defaults: Mapping[str, Any],
    check: Callable[..., dict[str, Any]] | None,
    fixed: frozenset[str],
) -> ParamGroup:
    where = f"param_groups[{index}]"
    if not isinstance(group, Mapping) or "params" not in group:
        raise TypeError(f"{where} must be a dict with a 'params' entry, got {type(group).__name__}")
    # An optimizer's group (it has an lr): its eps is the optimizer's, not the strategy's.
    ignored = OPTIMIZER_KEYS if "lr" in group else frozenset()
    for key in (fixed & group.keys()) - ignored:
        raise ValueError(
            f"{where} sets {key!r}, which this strategy keeps global (one threshold for all "
            "parameters); use one clipper per group instead"
        )
    options = dict(defaults)
    options.update({key: group[key] for key in defaults if key in group and key not in ignored})
    if check is not None:
        options = check(**options)
    return ParamGroup(named_tensors(group["params"], f"{where}['params']"), options)


def all_named_params(groups: Iterable[ParamGroup]) -> list[NamedTensor]:
    """Every group's parameters, in order."""
    return [named for group in groups for named in group.named_params]


def all_grads(groups: Iterable[ParamGroup]) -> list[Tensor]:
    """Every group's gradients, in order."""
    return [grad for group in groups for grad in group.grads()]
