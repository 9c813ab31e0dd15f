"""Lightning: any gradclip strategy runs once per optimizer step, on accumulated gradients."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import gradclip
from gradclip.integrations.lightning import GradClipMixin

L = pytest.importorskip("lightning.pytorch")


class RecordingNormClip(gradclip.NormClip):
    """NormClip that records each call's pre-clip norm and the norm it left behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def clip_(self, parameters, loss=None):
        parameters = list(parameters)
        stats = super().clip_(parameters)
        after = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        self.calls.append((stats.total_norm.clone(), after))
        return stats


class TinyModule(GradClipMixin, L.LightningModule):
    def __init__(self, clipper, nan_at_batch=None):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.clipper = clipper
        self.nan_at_batch = nan_at_batch
        self.norms_after_backward = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y) * 100
        if batch_idx == self.nan_at_batch:
            loss = loss * math.nan
        return loss

    def on_after_backward(self):
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms_after_backward.append(torch.nn.utils.get_total_norm(grads))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def loader():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator)
    dataset = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(dataset, batch_size=2)


def fit(module, callbacks=(), accumulate=1, max_steps=5):
    trainer = L.Trainer(
        max_steps=max_steps, accumulate_grad_batches=accumulate, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", callbacks=list(callbacks),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader())
    return trainer


def test_mixin_clips_once_per_optimizer_step_on_the_accumulated_gradient():
    clipper = RecordingNormClip(1e-3)
    module = TinyModule(clipper)
    trainer = fit(module, accumulate=2, max_steps=5)
    assert len(clipper.calls) == 5 == trainer.global_step
    assert len(module.norms_after_backward) == 10
    # What was clipped is the gradient after the second backward of each window.
    for (before, after), accumulated in zip(clipper.calls, module.norms_after_backward[1::2], strict=True):
        assert torch.equal(before, accumulated)
        assert after <= 1e-3 * (1 + 1e-5) < before
    assert "grad/total_norm" in trainer.callback_metrics
    assert trainer.callback_metrics["grad/clipped"] == 1.0


def test_callback_skips_the_step_on_a_nan_gradient_under_skip_policy():
    from gradclip.integrations.lightning import GradClipCallback

    callback = GradClipCallback("zclip:warmup_steps=2,nonfinite=skip")
    module = TinyModule(gradclip.NoClip(), nan_at_batch=3)
    module.log_clip_stats = False
    trainer = fit(module, callbacks=[callback], max_steps=6)
    assert callback.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
    adam_state = trainer.optimizers[0].state
    # Adam never saw the skipped step: five updates in six optimizer steps.
    assert all(int(adam_state[p]["step"]) == 5 for p in module.parameters())
    assert callback.state_dict()["skipped_steps"] == 1


def test_mixin_accepts_a_spec_string_and_checkpoints_the_clipper_state():
    module = TinyModule("autoclip:0.5")
    fit(module, max_steps=4)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    restored = TinyModule("autoclip:0.5")
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.clipper.threshold(), module.clipper.threshold())


class LossRecordingClip(gradclip.NoClip):
    """NoClip that records the loss each optimizer step hands it."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def clip_(self, parameters, loss=None):
        self.losses.append(None if loss is None else loss.clone())
        return super().clip_(parameters)


@pytest.mark.parametrize("how", ["mixin", "callback"])
def test_the_window_s_loss_reaches_the_clipper_once_per_optimizer_step(how):
    from gradclip.integrations.lightning import GradClipCallback

    clipper = LossRecordingClip()
    module = TinyModule(clipper if how == "mixin" else gradclip.NoClip())
    module.log_clip_stats = False
    losses = []
    module.on_before_backward = lambda loss, original=module.on_before_backward: (
        losses.append(loss.detach().clone()), original(loss))[-1]
    callbacks = [GradClipCallback(clipper, log=False)] if how == "callback" else []
    fit(module, callbacks=callbacks, accumulate=2, max_steps=4)
    assert len(clipper.losses) == 4
    for step, seen in enumerate(clipper.losses):
        # Lightning backpropagates loss / accumulate; the clipper sees the window's sum
        torch.testing.assert_close(seen, losses[2 * step] + losses[2 * step + 1])


def test_spikeskip_through_the_mixin_skips_the_step_whose_loss_spikes():
    module = TinyModule("spikeskip:window=20,sigma=3")
    module.log_clip_stats = False
    spike_at = 30

    def training_step(batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(module.layer(x), y)
        return loss * 1e4 if module.trainer.global_step == spike_at else loss

    module.training_step = training_step
    trainer = fit(module, max_steps=40)
    assert module.skipped_steps >= 1
    assert int(trainer.optimizers[0].state[module.layer.weight]["step"]) == 40 - module.skipped_steps
