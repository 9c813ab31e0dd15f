"""Sizes that cannot fit: estimated before anything is allocated, and caught if they still fail.

The estimate is deliberately rough (it must only tell a typo such as ``--batch-size
5000000000`` from a real setting): weights, gradients and two optimizer moments of the
recurrent model, the activations that backward keeps for one micro-batch, and the synthetic
tasks' validation set. A setting estimated above this machine's physical memory is refused
with one line naming the sizes.
"""

from __future__ import annotations

import os

import torch

from gradclip.app.config import ModelConfig, TaskOptions
from gradclip.app.errors import UserError

BYTES = 4  # float32
GATES = {"rnn": 1, "rnn-relu": 1, "lstm": 4, "gru": 3}
DEFAULT_LENGTHS = {"adding": 10, "temporal-order": 20, "lm": 50}
LM_VOCAB = 256  # characters: an upper estimate before the text is read
SYNTHETIC_FEATURES = 8  # at least the input width of every synthetic task
VALIDATION_ROWS = 1000
DEFAULT_MAX_LEN, DEFAULT_VOCAB = 256, 20_000


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or ``None`` where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def estimated_bytes(options: TaskOptions, model: ModelConfig) -> int:
    """Rough bytes one training step of this task and model needs (see the module docstring)."""
    text, lm = options.name == "text", options.name == "lm"
    length = (options.max_len or DEFAULT_MAX_LEN) if text else (
        options.seq_len or DEFAULT_LENGTHS.get(options.name, 10))
    tokens = text or lm
    features = model.embed_dim if tokens else SYNTHETIC_FEATURES
    directions = 2 if model.bidirectional else 1
    gates = GATES.get(model.cell, 4)
    hidden = model.hidden_size
    vocab = LM_VOCAB if lm else (options.vocab_size or DEFAULT_VOCAB)
    weights = vocab * model.embed_dim if tokens else 0
    width = features
    for _ in range(model.layers):
        weights += directions * gates * hidden * (width + hidden + 2)
        width = directions * hidden
    logits = vocab if lm else 0
    activations = options.batch_size * length * (features + 2 * model.layers * directions
                                                 * gates * hidden + logits)
    validation = 0 if tokens else VALIDATION_ROWS * length * (features + width)
    return BYTES * (4 * weights + 3 * activations + validation)


def check_fits_in_memory(options: TaskOptions, model: ModelConfig) -> None:
    """Refuse sizes estimated above the machine's physical memory.

    Raises:
        UserError: naming ``--batch-size``, ``--hidden-size``, the length and the estimate.
    """
    available = physical_memory()
    needed = estimated_bytes(options, model)
    if available is None or needed <= available:
        return
    length = (f"--max-len {options.max_len or DEFAULT_MAX_LEN}" if options.name == "text"
              else f"--seq-len {options.seq_len or DEFAULT_LENGTHS.get(options.name, 10)}")
    raise UserError(f"--batch-size {options.batch_size}, --hidden-size {model.hidden_size}, "
                    f"--layers {model.layers} and {length} need about {gib(needed)} of memory, "
                    f"more than this machine's {gib(available)}; choose smaller sizes")


def gib(count: int) -> str:
    value = count / 2**30
    return f"{value:,.0f} GiB" if value >= 100 else f"{value:.3g} GiB"


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure (torch's OOM, a CPU allocator refusal, Python's MemoryError)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in message or "not enough memory" in message
        or "out of memory" in message)
