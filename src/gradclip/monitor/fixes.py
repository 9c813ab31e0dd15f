"""The fix to try for each diagnosis, worded for the run's own model, optimizer, lr and clipper.

A fix is only as good as its fit: a gated cell is no advice to an LSTM user, "clip the norm"
none to a run that already does, and "lower the learning rate" is more useful with a number.
Each function here takes the ``RunSetting`` (what is known of the run; unknown fields are
``None`` and the advice stays generic) and returns one sentence or a few joined by "; ".

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks" (clipping for exploding gradients; it cannot help vanishing ones).
    Le, Jaitly & Hinton (2015), "A Simple Way to Initialize Recurrent Networks of Rectified
    Linear Units" (identity initialisation, IRNN).
    Jozefowicz, Zaremba & Sutskever (2015), "An Empirical Exploration of Recurrent Network
    Architectures" (forget-gate bias of 1).
"""

from __future__ import annotations

from dataclasses import dataclass

GATED_CELLS = ("lstm", "gru")
VANILLA_CELLS = ("rnn", "rnn-relu")
HIGH_ADAM_LR = 0.01  # above nanoGPT's 1e-3 by 10x: Adam's steps no longer shrink with the loss
ADAPTIVE_CLIPS = ("autoclip", "zclip", "adagc", "agc", "spikeskip")
PROFILE_HINT = ("`gradclip profile` with the same options measures the norms and prints what "
                "to use: 'Recommended: --clip ...'")


@dataclass(frozen=True)
class RunSetting:
    """What the advice knows about a run; ``None`` where unknown (the advice stays generic).

    ``cell``: ``"rnn"``, ``"rnn-relu"``, ``"lstm"``, ``"gru"`` (or torch's modes ``RNN_TANH``,
    ``RNN_RELU``, ``LSTM``, ``GRU``); ``clip``: the spec string (``"none"`` or ``None``: no
    clipping).
    """

    cell: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    clip: str | None = None
    seq_len: int | None = None
    layers: int | None = None

    @property
    def cell_name(self) -> str | None:
        modes = {"rnn_tanh": "rnn", "rnn_relu": "rnn-relu"}
        return None if self.cell is None else modes.get(self.cell.lower(), self.cell.lower())

    @property
    def gated(self) -> bool:
        return self.cell_name in GATED_CELLS

    @property
    def vanilla(self) -> bool:
        """A plain recurrent cell (the gated-cell advice is for it alone, not a transformer)."""
        return self.cell_name in VANILLA_CELLS

    @property
    def clipping(self) -> bool:
        return self.clip not in (None, "", "none")

    @property
    def clip_family(self) -> str | None:
        """The strategy name of the clip spec (the last member of a ``+`` chain)."""
        if self.clip is None or not self.clipping:
            return None
        return self.clip.split("+")[-1].split(":")[0]

    def lower_lr(self) -> str:
        """"lower the learning rate" with a number when the lr is known."""
        if self.lr is None:
            return "lower the learning rate"
        return f"lower the learning rate (e.g. --lr {self.lr / 3:.2g}, a third of {self.lr:g})"


def diverged_fix(setting: RunSetting) -> str:
    """The loss diverged: clip when not clipping, else tighten or fix the adaptive one."""
    family = setting.clip_family
    if family is None:
        return (f"clip ({PROFILE_HINT}); or {setting.lower_lr()}; --nonfinite skip keeps a NaN "
                "step out of the weights")
    if family in ("autoclip", "zclip", "adagc"):
        return (f"{setting.clip} derives its threshold from the norms it has seen, so it "
                "followed them up as they grew: use a threshold measured on an unclipped start "
                f"({PROFILE_HINT}), or {setting.lower_lr()}")
    return (f"{setting.clip} bounded each gradient, yet the updates still diverged: "
            f"{setting.lower_lr()}, or lower the threshold")


def exploding_fix(setting: RunSetting) -> str:
    """Spikes or growth in the norm: clip if not clipping; say what clipping already does."""
    if not setting.clipping:
        return (f"clip the gradient (Pascanu et al. 2013; {PROFILE_HINT}); or "
                f"{setting.lower_lr()}")
    return (f"{setting.clip} already bounds each update; if the loss suffers at the spikes, "
            f"lower the threshold or {setting.lower_lr()}")


def vanishing_fix(setting: RunSetting) -> str:
    """Clipping cannot help; the remedies that apply to this cell and optimizer."""
    parts = ["clipping cannot help (it only shrinks gradients)"]
    if setting.gated:
        parts.append(f"the cell is already gated ({setting.cell_name}): use shorter sequences "
                     "or truncated back-propagation")
        if setting.cell_name == "lstm":
            parts.append("initialise the forget-gate bias to 1 so the cell keeps its memory")
    elif setting.cell_name is None:
        parts.append("use a gated cell (LSTM or GRU) if the model is a vanilla RNN, shorter "
                     "sequences or truncated back-propagation")
    elif setting.vanilla:
        parts.append("use a gated cell (nn.LSTM or nn.GRU; --model lstm|gru in the CLI), or "
                     "shorter sequences")
        parts.append("orthogonal or identity initialisation of the recurrent weights "
                     "(identity with ReLU: IRNN, Le et al. 2015)")
    if setting.layers is None or setting.layers > 1:
        parts.append("residual connections and normalisation between stacked layers")
    if setting.optimizer == "sgd":
        parts.append("an adaptive optimizer (--optimizer adam) rescales small gradients")
    return "; ".join(parts)


def stalled_fix(setting: RunSetting, clip_fraction: float | None) -> str:
    """The loss did not fall: a too-tight threshold first, then the optimizer and its rate
    (Adam at a high rate plateaus: the quick benchmark's transformer at lr 0.1)."""
    if tight(setting, clip_fraction):
        return tight_fix(setting, clip_fraction)
    parts = []
    if setting.optimizer == "sgd":
        parts.append("try --optimizer adam, or a larger learning rate if the norms stay "
                     "small and nothing diverges")
    elif setting.lr is not None and setting.lr >= HIGH_ADAM_LR:
        parts.append(f"{setting.lower_lr()} first: {setting.optimizer or 'an adaptive optimizer'}"
                     f" at {setting.lr:g} often plateaus where the loss first levels off; "
                     "if a lower rate stalls too, more steps")
    else:
        parts.append("a larger learning rate, or more steps")
    if setting.vanilla:
        parts.append("a gated cell (LSTM or GRU; --model lstm|gru) learns longer dependencies")
    return "; ".join(parts)


def learning_fix(setting: RunSetting) -> str:
    """The loss fell without reaching the task's criterion: more steps, or a calmer step."""
    calmer = "agc:0.01 bounds each unit's update relative to its weights"
    if setting.clip_family == "agc":
        calmer = "a learning-rate decay at the end (--schedule warmdown) settles the loss"
    return (f"train longer; if the loss oscillates near the goal, {setting.lower_lr()}, or "
            f"clip more calmly ({calmer})")


def tight(setting: RunSetting, clip_fraction: float | None) -> bool:
    """A fixed norm threshold that fired on at least half of the steps (a value clip fires
    whenever one entry of the gradient exceeds it: on nearly every step by design)."""
    return (setting.clip_family == "norm" and clip_fraction is not None
            and clip_fraction >= 0.5)


def tight_fix(setting: RunSetting, clip_fraction: float | None) -> str:
    """The threshold is too tight: clipping on most steps makes it a fixed step length."""
    return (f"the threshold is too tight: {setting.clip} fired on {clip_fraction:.0%} of the "
            "steps, so it shortened ordinary updates, not only spikes; raise it to about the "
            f"90th percentile of the unclipped norms, or see what {PROFILE_HINT}")


def skipping_fix(setting: RunSetting, skip_fraction: float) -> str:
    """Many skipped steps: a spike detector too eager, or NaN steps hidden by the skip."""
    if setting.clip_family == "spikeskip" or "spikeskip" in (setting.clip or ""):
        return (f"SpikeSkip skipped {skip_fraction:.0%} of the steps: raise its sigma (e.g. "
                "spikeskip:sigma=8) or its window, so that only isolated spikes are skipped")
    return (f"{skip_fraction:.0%} of the steps had non-finite gradients and were skipped: "
            f"{setting.lower_lr()}, and look for the layer where the NaN/Inf enters")


def zeroed_fix(setting: RunSetting) -> str:
    """A gradient exactly 0 all run: not vanishing, a cut signal."""
    if setting.clip_family == "value":
        return (f"with {setting.clip}, each update could still be large in norm (the value "
                "bound times the square root of the number of entries), which saturates tanh "
                "units whose derivative is then exactly 0: clip the norm instead "
                f"({PROFILE_HINT}), or raise the value threshold")
    return ("look for saturated units (tanh/sigmoid at +-1 have a derivative of exactly 0), a "
            f"detached tensor or frozen parameters; {setting.lower_lr()}")


def nonfinite_fix(setting: RunSetting) -> str:
    """NaN/Inf gradients that the run survived (skipped) or that stopped it."""
    return (f"{setting.lower_lr()}; clip with --nonfinite skip so that a NaN step is skipped; "
            "check the named layer for log(0), division by zero or overflow (fp16: GradScaler)")
