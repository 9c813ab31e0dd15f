"""Character-level language modelling on real text, with truncated BPTT over parallel streams.

The text (``--text-file``, the ``comment_text`` column of ``--data CSV`` joined by newlines,
or a few KB of public-domain English built into the package) is split once: the first
``1 - val_fraction`` for training, the rest for validation. The vocabulary is the characters
of the training part (plus one for unknown characters). The training characters are cut into
``batch_size`` parallel streams; micro-batch ``i`` is window ``i mod windows`` of every
stream: ``seq_len`` characters in, the same shifted by one as targets. The model carries its
hidden state from one window to the next (see ``gradclip.app.language_model``).

Scores: validation cross-entropy in nats (``loss``), bits per character (``loss / ln 2``) and
perplexity (``e ** loss``), the validation text read as 8 streams with the state carried.

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks", ICML, section 4.2 (character-level Penn Treebank, the natural problem).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.tasks.base import Batch, Task
from gradclip.app.tasks.lm.builtin_text import TEXT as BUILTIN_TEXT
from gradclip.app.tasks.lm.builtin_text import TITLE as BUILTIN_TITLE

DEFAULT_SEQ_LEN = 50
VAL_FRACTION = 0.1
VALIDATION_STREAMS = 8
UNKNOWN = "\x00"  # the vocabulary's last entry stands for characters unseen in training


def bits_per_character(logits: Tensor, targets: Tensor) -> float:
    """Mean cross-entropy of ``(..., vocab)`` logits against ``targets`` ids, in bits."""
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                 targets.reshape(-1))) / math.log(2)


SOURCE_KINDS = ("builtin", "text", "csv")


def read_source(kind: str, path: str | None) -> str:
    """The text to model: built in, a plain-text file, or a CSV's comments joined by newlines."""
    from gradclip.app.tasks.text.data import read_comment_texts, read_utf8_text

    if kind == "builtin":
        return BUILTIN_TEXT
    if kind == "text":
        return read_utf8_text(Path(path), "plain text")
    return "\n".join(read_comment_texts(Path(path)))


def source_of(options: TaskOptions) -> tuple[str, str | None]:
    """``(kind, path)`` of the text the flags name (``--text-file``, ``--data``, or none)."""
    if options.text_file is not None and options.data is not None:
        raise UserError("give --text-file or --data for --task lm, not both")
    if options.text_file is not None:
        return "text", str(Path(options.text_file).resolve())
    if options.data is not None:
        return "csv", str(Path(options.data).resolve())
    return "builtin", None


class LanguageModelTask(Task):
    """Next-character prediction over a text (Pascanu et al. 2013's natural problem)."""

    name = "lm"
    input_kind = "tokens"
    readout = "next"
    metric_name = "bits_per_char"
    higher_is_better = False
    distributed = False  # the carried state belongs to one process's streams
    default_steps = 2000

    def __init__(self, settings: dict[str, Any], text: str):
        self.settings = dict(settings)
        self.seq_len, self.batch_size = int(settings["seq_len"]), int(settings["batch_size"])
        self.vocabulary = list(settings["vocabulary"])
        self.vocab_size = len(self.vocabulary)
        self.output_size = self.vocab_size
        self.pad_id = None
        ids = self.encode(text)
        cut = int(len(ids) * (1 - settings["val_fraction"]))
        self.streams = self.cut_streams(ids[:cut], self.batch_size)
        self.windows_per_epoch = (self.streams.shape[1] - 1) // self.seq_len
        self.validation = self.cut_streams(ids[cut:], VALIDATION_STREAMS)
        if self.windows_per_epoch < 1 or self.validation.shape[1] < 2:
            raise UserError(f"the text ({len(text):,} characters) is too short for "
                            f"--batch-size {self.batch_size} streams of --seq-len "
                            f"{self.seq_len}; lower them or give a longer text")
        self.batches_per_epoch = self.windows_per_epoch

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_options(cls, options: TaskOptions) -> LanguageModelTask:
        kind, path = source_of(options)
        text = read_source(kind, path)
        val_fraction = VAL_FRACTION if options.val_fraction is None else options.val_fraction
        training_part = text[:int(len(text) * (1 - val_fraction))]
        settings = {"seq_len": options.seq_len or DEFAULT_SEQ_LEN,
                    "batch_size": options.batch_size, "seed": options.seed,
                    "val_fraction": val_fraction, "source": kind, "path": path,
                    "sha256": hashlib.sha256(text.encode()).hexdigest(),
                    "vocabulary": sorted(set(training_part) - {UNKNOWN}) + [UNKNOWN]}
        return cls(settings, text)

    @classmethod
    def from_config(cls, config: dict[str, Any], run_dir: Path, training: bool = True
                    ) -> LanguageModelTask:
        if config["source"] not in SOURCE_KINDS:
            raise UserError(f"unknown lm text source {config['source']!r} in config.json")
        text = read_source(config["source"], config["path"])
        if hashlib.sha256(text.encode()).hexdigest() != config["sha256"]:
            raise UserError(f"{config['path'] or 'the built-in text'} changed since the run "
                            "started; resuming needs the same text")
        return cls(config, text)

    def encode(self, text: str) -> Tensor:
        index = {char: position for position, char in enumerate(self.vocabulary)}
        unknown = len(self.vocabulary) - 1
        return torch.tensor([index.get(char, unknown) for char in text], dtype=torch.long)

    @staticmethod
    def cut_streams(ids: Tensor, streams: int) -> Tensor:
        """``(streams, length)``: consecutive pieces of ``ids`` (the remainder dropped)."""
        length = len(ids) // streams
        return ids[:streams * length].view(streams, length)

    # --- training -------------------------------------------------------------------------

    def train_batch(self, index: int) -> Batch:
        start = (index % self.windows_per_epoch) * self.seq_len
        window = self.streams[:, start:start + self.seq_len + 1]
        return Batch(window[:, :-1], None, window[:, 1:])

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean next-character cross-entropy (nats) over every position of the window."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]),
                               batch.targets.reshape(-1).to(outputs.device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Validation loss, bits per character and perplexity, the state carried through."""
        state, total, count = None, 0.0, 0
        streams = self.validation.to(device)
        for start in range(0, streams.shape[1] - 1, self.seq_len):
            window = streams[:, start:start + self.seq_len + 1]
            logits, state = model.run(window[:, :-1], state)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                           window[:, 1:].reshape(-1), reduction="sum"))
            count += window[:, 1:].numel()
        loss = total / count
        return {"loss": loss, "bits_per_char": loss / math.log(2),
                "perplexity": math.exp(min(loss, 700.0))}

    # --- saving ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def describe(self) -> dict[str, Any]:
        source = self.settings["path"] or BUILTIN_TITLE
        return {"text": source, "train_characters": int(self.streams.numel()),
                "val_characters": int(self.validation.numel()), "vocab_size": self.vocab_size,
                "windows_per_epoch": self.windows_per_epoch}

