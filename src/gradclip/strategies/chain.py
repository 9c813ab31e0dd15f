"""Chains: several clippers applied in turn, as one (``agc:0.01+norm:1.0``)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from gradclip.nonfinite import check_policy
from gradclip.parameters import ParamsLike
from gradclip.strategies.base import Clipper, ClipStats
from gradclip.strategies.state import KIND, check_state


class Chain(Clipper):
    """Apply ``clippers`` in order, each to the gradients the previous one left.

    ``Chain(AGC(0.01), NormClip(1.0))`` is AGC's unit-wise limits with a global cap on top
    (optax's ``chain``); ``Chain(SpikeSkip(), ZClip())`` skips outlier steps and clips the
    rest. ``loss=`` reaches every member (only those that watch it use it). The result is
    exactly that of calling each member's ``clip_`` in turn; members after one that skipped
    a step see its zeroed gradients (a norm of 0) and, if adaptive, record it.

    Combined stats: ``total_norm`` from the first member (the norm before any clipping),
    ``threshold`` from the last member that has one, ``clipped`` and ``skipped`` OR-ed.
    Nested chains are flattened. ``state_dict()`` nests the members' states, in order.

    Args:
        *clippers: the members, at least one.

    Raises:
        TypeError: a member that is not a ``Clipper``.
        ValueError: no member.
    """

    kind = "chain"

    def __init__(self, *clippers: Clipper) -> None:
        if not clippers:
            raise ValueError("Chain needs at least one clipper, got none")
        members: list[Clipper] = []
        for clipper in clippers:
            if not isinstance(clipper, Clipper):
                raise TypeError(f"Chain members must be gradclip Clippers, got {clipper!r}")
            members.extend(clipper.clippers if isinstance(clipper, Chain) else [clipper])
        self.clippers: tuple[Clipper, ...] = tuple(members)

    # Clipper's plain attribute becomes a read-only property: the members hold the policies.
    @property
    def nonfinite(self) -> str:  # type: ignore[override]  # the members decide
        """The strongest of the members' policies: ``skip``, then ``error``, then ``propagate``."""
        policies = {clipper.nonfinite for clipper in self.clippers}
        return next(policy for policy in ("skip", "error", "propagate") if policy in policies)

    @property
    def process_group(self) -> Any:
        """The members' ``process_group``; setting it sets every member's."""
        return self.clippers[0].process_group

    @process_group.setter
    def process_group(self, group: Any) -> None:
        for clipper in self.clippers:
            clipper.process_group = group

    @property
    def may_skip(self) -> bool:
        return any(clipper.may_skip for clipper in self.clippers)

    @torch.no_grad()
    def clip_(self, parameters: ParamsLike, loss: Tensor | None = None) -> ClipStats:
        all_stats = [clipper.clip_(given, loss=loss)
                     for clipper, given in zip(self.clippers, _reusable(parameters, len(self.clippers)),
                                               strict=True)]
        device = all_stats[0].total_norm.device
        thresholds = [stats.threshold for stats in all_stats if stats.threshold is not None]
        clipped = torch.stack([stats.clipped.to(device) for stats in all_stats]).any()
        skipped = torch.stack([stats.skipped.to(device) for stats in all_stats]).any()
        threshold = thresholds[-1] if thresholds else None
        return ClipStats(all_stats[0].total_norm, threshold, clipped, skipped)

    def state_dict(self) -> dict[str, Any]:
        return {KIND: self.kind, "members": [clipper.state_dict() for clipper in self.clippers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore every member's state; each member checks its own.

        Raises:
            ValueError: not a chain's state, one of another length, or a member's state
                refused by that member.
        """
        entries = check_state(self, state_dict, {"members": self._check_members})
        for clipper, member_state in zip(self.clippers, entries["members"], strict=True):
            clipper.load_state_dict(member_state)

    def _check_members(self, members: object) -> str | None:
        if not isinstance(members, (list, tuple)) or len(members) != len(self.clippers):
            return f"must be a list of {len(self.clippers)} member states, got {members!r}"
        return None

    def with_nonfinite(self, nonfinite: str) -> Chain:
        nonfinite = check_policy(nonfinite)  # once, before any member is rebuilt
        return Chain(*(clipper.with_nonfinite(nonfinite) for clipper in self.clippers))

    def __repr__(self) -> str:
        return f"Chain({', '.join(map(repr, self.clippers))})"


def _reusable(parameters: ParamsLike, count: int) -> list[Any]:
    """``parameters`` once per member: an iterator (a generator) is read once; an empty
    generator goes to the first member only, which warns as torch does."""
    if isinstance(parameters, Iterator):
        items = list(parameters)
        if not items and isinstance(parameters, types.GeneratorType):
            return [(item for item in items)] + [items] * (count - 1)
        parameters = items
    return [parameters] * count
