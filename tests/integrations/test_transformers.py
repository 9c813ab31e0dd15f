"""Hugging Face Trainer: GradClipCallback clips where the Trainer clips, skips for real, logs, resumes.

A tiny GPT2LMHeadModel built from a config (random weights, nothing downloaded), on the CPU.
Reference: the Trainer's own ``max_grad_norm`` clipping (transformers 5.x, accelerate 1.x).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import gradclip
import gradclip.integrations.transformers as hf_integration
from gradclip.integrations.transformers import state_from_json, state_to_json

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from gradclip.integrations.transformers import GradClipCallback  # noqa: E402


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences, each its own language-modelling target."""

    def __init__(self, rows: int = 16, length: int = 8, vocab: int = 64) -> None:
        generator = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, vocab, (rows, length), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    # initializer_range 0.2: gradient norms of about 2, so that norm:1.0 clips every step
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                        initializer_range=0.2)
    return GPT2LMHeadModel(config)


def make_trainer(output_dir, callbacks=(), model=None, **overrides) -> Trainer:
    options = dict(max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                   learning_rate=1e-2, max_grad_norm=0.0, logging_steps=1, save_strategy="no",
                   report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    options.update(overrides)
    args = TrainingArguments(str(output_dir), **options)
    return Trainer(model or tiny_gpt2(), args, train_dataset=TokenDataset(),
                   callbacks=list(callbacks))


def train(trainer: Trainer, **kwargs) -> Trainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(**kwargs)
    return trainer


def max_weight_difference(model_a, model_b) -> float:
    return max((a - b).abs().max().item()
               for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True))


def emulate_fp16_loss_scaling(trainer: Trainer, scale: float = 2.0**10) -> None:
    """The fp16 AMP path on the CPU: accelerate's GradScaler scales the loss, unscales to clip.

    accelerate only builds a scaler on an accelerator; this machine has none, so the test
    hands it a CPU GradScaler, which the Trainer's backward and optimizer step then use.
    """
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    trainer.accelerator.native_amp = True


class RecordingNormClip(gradclip.NormClip):
    """NormClip that records every call's pre-clip norm."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norms = []

    def clip_(self, parameters, loss=None):
        stats = super().clip_(parameters, loss=loss)
        self.norms.append(stats.total_norm.item())
        return stats


class StepSnapshots(TrainerCallback):
    """Per optimizer step: the largest change of any weight and of any Adam first moment."""

    def __init__(self):
        self.changes = []

    def on_step_begin(self, args, state, control, model, optimizer, **kwargs):
        self.weights = [p.detach().clone() for p in model.parameters()]
        self.moments = copy.deepcopy(optimizer.state_dict()["state"])

    def on_step_end(self, args, state, control, model, optimizer, **kwargs):
        weight_change = max((p - q).abs().max().item()
                            for p, q in zip(model.parameters(), self.weights, strict=True))
        moments = optimizer.state_dict()["state"]
        moment_change = max(((moments[k]["exp_avg"] - v["exp_avg"]).abs().max().item()
                             for k, v in self.moments.items()), default=math.nan)
        self.changes.append((weight_change, moment_change))


def nan_in_forward(model, call: int) -> None:
    """Make the ``call``-th forward pass (counting from 1) produce NaN activations."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1
        return output * math.nan if calls[0] == call else output

    model.transformer.ln_f.register_forward_hook(hook)


def assert_states_equal(expected, actual):
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(actual[key], value, rtol=0, atol=0, equal_nan=True)
        else:
            assert actual[key] == value, key


def trained(output_dir, callbacks=(), precision="fp32", **overrides) -> Trainer:
    """A Trainer built and trained at once (the data order follows the seed set at build time)."""
    options = {"fp32": {}, "bf16": {"bf16": True}, "fp16-loss-scaling": {"fp16": True}}[precision]
    trainer = make_trainer(output_dir, callbacks, **options, **overrides)
    if precision == "fp16-loss-scaling":
        emulate_fp16_loss_scaling(trainer)
    return train(trainer)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16-loss-scaling"])
def test_norm_callback_gives_the_weights_of_the_trainers_max_grad_norm_with_accumulation_2(
    tmp_path, precision
):
    reference = trained(tmp_path / "trainer", precision=precision, max_grad_norm=1.0)
    callback = GradClipCallback("norm:1.0")
    ours = trained(tmp_path / "gradclip", [callback], precision=precision)
    assert callback.last_stats.clipped.item()  # the norms are about 2: every step clipped
    assert max_weight_difference(reference.model, ours.model) <= 1e-6


def test_clips_once_per_optimizer_step_on_the_accumulated_unscaled_gradient(tmp_path):
    clipper = RecordingNormClip(max_norm=1.0)
    trainer = trained(tmp_path, [GradClipCallback(clipper)], precision="fp16-loss-scaling")
    # 4 optimizer steps of 2 micro-batches: 4 clips, each on the norm the Trainer measured
    # after unscaling (a scaled norm would be 1024 times larger)
    trainer_norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    assert clipper.norms == pytest.approx(trainer_norms, rel=1e-6)
    assert len(clipper.norms) == 4 and max(clipper.norms) < 10


def test_unscales_itself_where_the_trainer_does_not_measure_the_norm(tmp_path, monkeypatch):
    # transformers 5.0 measured (and so unscaled) the norm only when it clipped itself
    reference = RecordingNormClip(max_norm=1.0)
    trained(tmp_path / "measured", [GradClipCallback(reference)], precision="fp16-loss-scaling")
    monkeypatch.setattr(Trainer, "_get_grad_norm", lambda self, model, grad_norm=None: grad_norm)
    clipper = RecordingNormClip(max_norm=1.0)
    trained(tmp_path / "unmeasured", [GradClipCallback(clipper)], precision="fp16-loss-scaling")
    assert clipper.norms == pytest.approx(reference.norms, rel=1e-6)


def test_a_nan_forward_under_skip_leaves_weights_and_adam_moments_unchanged_and_is_counted(
    tmp_path,
):
    model = tiny_gpt2()
    nan_in_forward(model, call=3)  # the first micro-batch of the second optimizer step
    callback, snapshots = GradClipCallback("norm:1.0,nonfinite=skip"), StepSnapshots()
    trainer = train(make_trainer(tmp_path, [callback, snapshots], model=model))
    assert callback.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert snapshots.changes[1] == (0.0, 0.0)
    assert all(weights > 0 and moments > 0 for weights, moments in snapshots.changes[2:])
    logged = [entry["grad/skipped_steps"] for entry in trainer.state.log_history
              if "grad/skipped_steps" in entry]
    assert logged == [0, 1, 1, 1]


def test_statistics_are_in_log_history_every_logging_step(tmp_path):
    trainer = train(make_trainer(tmp_path, [GradClipCallback("norm:1.0")], logging_steps=2))
    entries = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in entries] == [2, 4]
    for entry in entries:
        assert entry["grad/total_norm"] == pytest.approx(entry["grad_norm"], rel=1e-6)
        assert entry["grad/threshold"] == 1.0
        assert entry["grad/clipped_fraction"] == 1.0
        assert entry["grad/skipped_steps"] == 0


def test_attach_puts_the_statistics_into_what_the_report_to_integrations_log(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    callback = GradClipCallback("zclip:warmup_steps=2")
    trainer = callback.attach(make_trainer(tmp_path, report_to=["tensorboard"]))
    assert trainer.callback_handler.callbacks[0] is callback
    train(trainer)
    (event_file,) = tmp_path.rglob("events.out.tfevents*")
    events = event_accumulator.EventAccumulator(str(event_file))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"train/grad/total_norm", "train/grad/threshold", "train/grad/clipped_fraction",
            "train/grad/skipped_steps"} <= logged
    assert len(events.Scalars("train/grad/total_norm")) == 4


def test_warns_once_when_max_grad_norm_is_positive(tmp_path):
    trainer = make_trainer(tmp_path, [GradClipCallback("norm:1.0")], max_grad_norm=1.0)
    with pytest.warns(UserWarning, match="two clippers run") as caught:
        trainer.train()
        trainer.train()
    assert sum("two clippers run" in str(w.message) for w in caught) == 1


def test_no_warning_when_the_trainer_does_not_clip(tmp_path):
    trainer = make_trainer(tmp_path, [GradClipCallback("norm:1.0")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", module="(transformers|accelerate|torch)")
        trainer.train()


def test_resuming_from_a_trainer_checkpoint_restores_the_clipper_state(tmp_path):
    spec = "zclip:warmup_steps=2,nonfinite=skip"

    class StateAtSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved[state.global_step] = copy.deepcopy(first.clipper.state_dict())

    saved = {}
    first = GradClipCallback(spec)
    train(make_trainer(tmp_path, [first, StateAtSave()], save_strategy="steps", save_steps=2))

    class StateAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            restored.update(copy.deepcopy(resumed.clipper.state_dict()))

    restored = {}
    resumed = GradClipCallback(spec)
    train(make_trainer(tmp_path, [resumed, StateAtStart()], save_strategy="no"),
          resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert_states_equal(saved[2], restored)
    # and the resumed run ends where the uninterrupted one ended
    assert_states_equal(first.clipper.state_dict(), resumed.clipper.state_dict())


def test_restore_callback_states_from_checkpoint_rebuilds_the_callback_with_its_clipper_state(
    tmp_path,
):
    first = GradClipCallback("zclip:warmup_steps=2")
    train(make_trainer(tmp_path, [first], save_strategy="steps", save_steps=4))
    trainer = make_trainer(tmp_path, [GradClipCallback("zclip:warmup_steps=2")], max_steps=5,
                           restore_callback_states_from_checkpoint=True)
    train(trainer, resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    (rebuilt,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GradClipCallback)]
    assert rebuilt.clipper.calls == first.clipper.calls + 1 == 5


def test_the_json_state_round_trip_is_exact_for_nan_inf_and_every_dtype():
    state = {
        "calls": 3,
        "history": torch.tensor([1.0 / 3.0, math.nan, math.inf, -0.0], dtype=torch.float32),
        "mean": torch.tensor(math.pi, dtype=torch.float64),
        "collected": torch.tensor([[1, 2], [3, 4]]),
        "initialized": torch.tensor(True),
        "nested": {"window": [torch.tensor(2.5, dtype=torch.bfloat16), None, "word"]},
    }
    import json

    restored = state_from_json(json.loads(json.dumps(state_to_json(state))))
    for key in ("history", "mean", "collected", "initialized"):
        assert restored[key].dtype == state[key].dtype
        torch.testing.assert_close(restored[key], state[key], rtol=0, atol=0, equal_nan=True)
    assert restored["calls"] == 3
    assert restored["nested"]["window"][1:] == [None, "word"]
    assert restored["nested"]["window"][0].dtype == torch.bfloat16


def test_a_non_string_state_key_is_refused_rather_than_silently_renamed():
    with pytest.raises(TypeError, match="keys must be strings"):
        state_to_json({0: torch.zeros(())})


def test_a_clipper_without_spec_cannot_be_rebuilt_by_restore_callback_states(tmp_path):
    class CustomClip(gradclip.NormClip):
        pass

    with pytest.raises(ValueError, match="no spec string"):
        make_trainer(tmp_path, [GradClipCallback(CustomClip(1.0))],
                     restore_callback_states_from_checkpoint=True)


def test_a_bad_spec_is_a_value_error():
    with pytest.raises(ValueError, match="unknown strategy"):
        GradClipCallback("nrom:1.0")


def test_without_transformers_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    hf_integration._callback_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=re.escape("gradclip[transformers]")):
            hf_integration.GradClipCallback  # noqa: B018
    finally:
        hf_integration._callback_class.cache_clear()


def fsdp2_scenario(rank: int, world_size: int, checkpoint: str, results: str) -> None:
    """Train the checkpoint twice, sharded by transformers' own FSDP2 (DTensor parameters).

    accelerate's FSDP path (``TrainingArguments(fsdp=...)``) needs an accelerator; on the CPU
    the Trainer runs the model that ``from_pretrained(distributed_config=...)`` sharded with
    ``fully_shard`` over a gloo mesh, through the same loop and the same DTensor gradients.
    SGD: Adam would turn a last-bit difference of the norm into a visible one on parameters
    whose gradient is rounding noise (GPT-2's attention key bias).
    """
    from torch.distributed.tensor import Shard
    from transformers.distributed.configuration_utils import DistributedConfig

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    config = DistributedConfig(fsdp_size=world_size, fsdp_plan={"transformer.h.*": "free_full_weight"})
    outcome = {}
    for name, max_grad_norm, callbacks in [("trainer", 1.0, []),
                                           ("gradclip", 0.0, [GradClipCallback("norm:1.0")])]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GPT2LMHeadModel.from_pretrained(checkpoint, distributed_config=config)
        assert all(isinstance(p.placements[0], Shard) for p in model.parameters())
        trainer = train(make_trainer(Path(results) / name, callbacks, model=model, optim="sgd",
                                     max_grad_norm=max_grad_norm))
        outcome[name] = {key: value.full_tensor().detach()
                         for key, value in trainer.model.named_parameters()}
        outcome[name + "_norms"] = [entry.get("grad/total_norm", entry.get("grad_norm"))
                                    for entry in trainer.state.log_history if "loss" in entry]
    torch.save(outcome, Path(results) / f"rank{rank}.pt")


def test_fsdp2_dtensor_gradients_give_the_weights_of_the_trainers_clipping(tmp_path):
    from tests.distributed.spawn import run_on_two_ranks

    pytest.importorskip("transformers.distributed.configuration_utils")
    checkpoint = tmp_path / "tiny-gpt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_gpt2().save_pretrained(checkpoint)
    run_on_two_ranks(functools.partial(fsdp2_scenario, checkpoint=str(checkpoint),
                                       results=str(tmp_path)))
    for rank in range(2):
        outcome = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert outcome["gradclip_norms"] == pytest.approx(outcome["trainer_norms"], rel=1e-6)
        assert max((outcome["trainer"][k] - outcome["gradclip"][k]).abs().max().item()
                   for k in outcome["trainer"]) <= 1e-6
