"""``Parallel`` under DDP, for real on two gloo processes: one gradient all-reduce per step.

Under gradient accumulation every micro-batch but the last runs in ``no_sync``, so a step of
two micro-batches all-reduces the gradients as often as a step of one; without ``no_sync``
it would all-reduce twice as often. The all-reduces are counted with a DDP comm hook that
wraps the default one.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from gradclip.app.config import ModelConfig, RunConfig, TrainConfig
from gradclip.app.tasks.adding import AddingTask
from gradclip.app.training.parallel import DataParallel, Launch
from gradclip.app.training.trainer import Trainer
from tests.distributed.spawn import run_on_two_ranks

STEPS = 3


def count_allreduces(out_dir: str, rank: int, world_size: int) -> None:
    counts = {}
    for accumulate in (1, 2):
        calls = []

        def counting_hook(state, bucket, calls=calls):
            calls.append(bucket.index())
            return allreduce_hook(state, bucket)

        config = RunConfig(task={"name": "adding"}, model=ModelConfig(hidden_size=8),
                           train=TrainConfig(total_steps=STEPS, batch_size=8, accumulate=accumulate,
                                             device="cpu", log_every=0, checkpoint_every=0))
        parallel = DataParallel(torch.device("cpu"), Launch(rank, world_size, rank))
        run_dir = Path(out_dir, f"run-{accumulate}")
        trainer = Trainer(run_dir, config, AddingTask(6, 8, seed=0), parallel)
        trainer.model.register_comm_hook(None, counting_hook)
        for _ in range(STEPS):
            trainer.train_one_step()
        counts[accumulate] = len(calls)
        dist.barrier()
    Path(out_dir, f"counts-{rank}.json").write_text(json.dumps(counts))


def test_accumulating_two_micro_batches_all_reduces_once_per_step_under_ddp(tmp_path):
    run_on_two_ranks(functools.partial(count_allreduces, str(tmp_path)))
    for rank in range(2):
        counts = json.loads((tmp_path / f"counts-{rank}.json").read_text())
        assert counts["1"] > 0
        assert counts["2"] == counts["1"], counts
    assert not any(tmp_path.glob("run-*")), "no checkpoint or log is written by a bare step"
