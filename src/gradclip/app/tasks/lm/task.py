"""Character-level language modelling on real text: truncated BPTT over parallel streams for
the recurrent models, independent random windows for the transformer.

The text (``--text-file``, the ``comment_text`` column of ``--data CSV`` joined by newlines,
or a few KB of public-domain English built into the package) is split once: the first
``1 - val_fraction`` for training, the rest for validation. The vocabulary is the characters
of the training part (plus one for unknown characters). A window is ``seq_len`` characters in
and the same shifted by one as targets. How micro-batch ``i`` is cut depends on the model:

- ``streams`` (the recurrent models): the training characters are cut into ``batch_size``
  parallel streams; micro-batch ``i`` is window ``i mod windows`` of every stream. The model
  carries its hidden state from one window to the next (see ``gradclip.app.language_model``).
  Validation reads the held-out text as 8 streams with the state carried.
- ``independent`` (the transformer): ``batch_size`` windows at random offsets of the training
  characters, drawn from a generator seeded by ``(seed, i)`` (so a resumed run draws the same
  windows); nothing is carried. Validation scores up to 1,024 consecutive non-overlapping
  windows of the held-out text (evenly spaced over it when it holds more), each from scratch.

Scores: validation cross-entropy in nats (``loss``), bits per character (``loss / ln 2``) and
perplexity (``e ** loss``).

References:
    Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural
    networks", ICML, section 4.2 (character-level Penn Treebank, the natural problem).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gradclip.app.choices import TRANSFORMER
from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.tasks.base import Batch, Task, seeded_generator
from gradclip.app.tasks.lm.builtin_text import TEXT as BUILTIN_TEXT
from gradclip.app.tasks.lm.builtin_text import TITLE as BUILTIN_TITLE

if TYPE_CHECKING:
    from gradclip.app.language_model import RecurrentLanguageModel

DEFAULT_SEQ_LEN = 50
TRANSFORMER_SEQ_LEN = 64  # the transformer's context when TaskOptions gives none
VAL_FRACTION = 0.1
VALIDATION_STREAMS = 8
VALIDATION_WINDOWS = 1024  # independent windows: the most scored (a bounded evaluation cost)
SCORING_BATCH = 64  # independent windows per forward pass when scoring
WINDOW_KINDS = ("streams", "independent")
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
    distributed = False  # why: ``not_distributed_because``
    default_steps = 2000
    windows_per_epoch = 0  # streams only

    def __init__(self, settings: dict[str, Any], text: str):
        self.settings = dict(settings)
        self.seq_len, self.batch_size = int(settings["seq_len"]), int(settings["batch_size"])
        self.seed = int(settings["seed"])
        self.windows = settings.get("windows", "streams")  # runs from before: streams
        if self.windows not in WINDOW_KINDS:
            raise UserError(f"unknown lm windows {self.windows!r} in config.json; expected "
                            f"{' or '.join(WINDOW_KINDS)}")
        self.vocabulary = list(settings["vocabulary"])
        self.vocab_size = len(self.vocabulary)
        self.output_size = self.vocab_size
        self.pad_id = None
        ids = self.encode(text)
        cut = int(len(ids) * (1 - settings["val_fraction"]))
        if self.windows == "streams":
            self.cut_text_into_streams(ids[:cut], ids[cut:], len(text))
            self.not_distributed_because = "its carried state belongs to one process's streams"
        else:
            self.keep_text_for_windows(ids[:cut], ids[cut:], len(text))
            self.not_distributed_because = ("the transformer's windows are drawn by one "
                                            "generator; splitting them over ranks is not "
                                            "built yet")

    def cut_text_into_streams(self, train_ids: Tensor, val_ids: Tensor, characters: int
                              ) -> None:
        """The recurrent models' data: ``batch_size`` training streams, 8 validation ones."""
        self.streams = self.cut_streams(train_ids, self.batch_size)
        self.windows_per_epoch = (self.streams.shape[1] - 1) // self.seq_len
        self.validation = self.cut_streams(val_ids, VALIDATION_STREAMS)
        if self.windows_per_epoch < 1 or self.validation.shape[1] < 2:
            raise UserError(f"the text ({characters:,} characters) is too short for "
                            f"--batch-size {self.batch_size} streams of --seq-len "
                            f"{self.seq_len}; lower them or give a longer text")
        self.batches_per_epoch = self.windows_per_epoch

    def keep_text_for_windows(self, train_ids: Tensor, val_ids: Tensor, characters: int
                              ) -> None:
        """The transformer's data: the two parts whole (an epoch: as many windows as the
        training part holds characters, over ``batch_size * seq_len``)."""
        self.train_ids, self.validation_ids = train_ids, val_ids
        if min(len(train_ids), len(val_ids)) < self.seq_len + 1:
            raise UserError(f"the text ({characters:,} characters) is too short for windows "
                            f"of --seq-len {self.seq_len} in both its training and its "
                            "validation part; lower --seq-len or give a longer text")
        self.batches_per_epoch = max(1, len(train_ids) // (self.batch_size * self.seq_len))

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_options(cls, options: TaskOptions) -> LanguageModelTask:
        kind, path = source_of(options)
        text = read_source(kind, path)
        val_fraction = VAL_FRACTION if options.val_fraction is None else options.val_fraction
        training_part = text[:int(len(text) * (1 - val_fraction))]
        transformer = options.model == TRANSFORMER
        default_length = TRANSFORMER_SEQ_LEN if transformer else DEFAULT_SEQ_LEN
        settings = {"seq_len": options.seq_len or default_length,
                    "batch_size": options.batch_size, "seed": options.seed,
                    "val_fraction": val_fraction, "source": kind, "path": path,
                    "sha256": hashlib.sha256(text.encode()).hexdigest(),
                    "vocabulary": sorted(set(training_part) - {UNKNOWN}) + [UNKNOWN]}
        if transformer:
            settings["windows"] = "independent"
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
        if self.windows == "independent":
            return self.random_windows(index)
        start = (index % self.windows_per_epoch) * self.seq_len
        window = self.streams[:, start:start + self.seq_len + 1]
        return Batch(window[:, :-1], None, window[:, 1:])

    def random_windows(self, index: int) -> Batch:
        """``batch_size`` windows at offsets drawn from a generator seeded by ``(seed, index)``
        (a pure function of the index: a resumed run draws the same windows)."""
        generator = seeded_generator(self.seed, index)
        starts = torch.randint(0, len(self.train_ids) - self.seq_len, (self.batch_size,),
                               generator=generator)
        window = self.train_ids[starts.unsqueeze(1) + torch.arange(self.seq_len + 1)]
        return Batch(window[:, :-1], None, window[:, 1:])

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean next-character cross-entropy (nats) over every position of the window."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]),
                               batch.targets.reshape(-1).to(outputs.device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Validation loss, bits per character and perplexity (see the module docstring)."""
        if self.windows == "independent":
            return scores(*score_windows(model, self.validation_ids, self.seq_len, device,
                                         VALIDATION_WINDOWS))
        return scores(*score_streams(model, self.validation, self.seq_len, device))

    @torch.no_grad()
    def evaluate_file(self, model: nn.Module, path: Path, device: torch.device
                      ) -> dict[str, Any]:
        """Scores of another text (``gradclip eval RUN --data FILE``): a CSV's comments, or
        a plain-text file; every window of it (characters unseen in training count as the
        unknown character)."""
        text = read_source("csv" if Path(path).suffix.lower() == ".csv" else "text", str(path))
        ids = self.encode(text)
        if len(ids) < self.seq_len + 1:
            raise UserError(f"{path} holds {len(ids)} characters, fewer than one window of "
                            f"{self.seq_len + 1}")
        if self.windows == "independent":
            total, count = score_windows(model, ids, self.seq_len, device, None)
        else:
            total, count = score_streams(model, self.cut_streams(ids, 1), self.seq_len, device)
        return {**scores(total, count), "characters": count}

    # --- saving ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def describe(self) -> dict[str, Any]:
        source = self.settings["path"] or BUILTIN_TITLE
        if self.windows == "independent":
            return {"text": source, "train_characters": len(self.train_ids),
                    "val_characters": len(self.validation_ids), "vocab_size": self.vocab_size,
                    "windows": "independent",
                    "val_windows_scored": min(VALIDATION_WINDOWS, window_count(
                        len(self.validation_ids), self.seq_len))}
        return {"text": source, "train_characters": int(self.streams.numel()),
                "val_characters": int(self.validation.numel()), "vocab_size": self.vocab_size,
                "windows_per_epoch": self.windows_per_epoch}


def scores(total: float, count: int) -> dict[str, Any]:
    """Loss (nats), bits per character and perplexity from a summed cross-entropy."""
    loss = total / count
    return {"loss": loss, "bits_per_char": loss / math.log(2),
            "perplexity": math.exp(min(loss, 700.0))}


def summed_cross_entropy(logits: Tensor, targets: Tensor) -> float:
    """The cross-entropy of ``(..., vocab)`` logits summed over every position (float64)."""
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                 targets.reshape(-1), reduction="sum"))


def score_streams(model: nn.Module, streams: Tensor, seq_len: int, device: torch.device
                  ) -> tuple[float, int]:
    """Summed cross-entropy and count over ``(S, L)`` streams, the state carried through
    consecutive windows (a recurrent model's ``run``)."""
    state, total, count = None, 0.0, 0
    streams = streams.to(device)
    for start in range(0, streams.shape[1] - 1, seq_len):
        window = streams[:, start:start + seq_len + 1]
        logits, state = cast("RecurrentLanguageModel", model).run(window[:, :-1], state)
        total += summed_cross_entropy(logits, window[:, 1:])
        count += window[:, 1:].numel()
    return total, count


def window_count(characters: int, seq_len: int) -> int:
    """Non-overlapping windows in ``characters``: each predicts ``seq_len`` characters."""
    return (characters - 1) // seq_len


def score_windows(model: nn.Module, ids: Tensor, seq_len: int, device: torch.device,
                  limit: int | None) -> tuple[float, int]:
    """Summed cross-entropy and count over consecutive non-overlapping windows of ``ids``,
    each scored from scratch; at most ``limit`` of them, evenly spaced (``None``: all)."""
    available = window_count(len(ids), seq_len)
    chosen = torch.arange(available)
    if limit is not None and available > limit:
        chosen = torch.linspace(0, available - 1, limit).round().long()
    offsets = chosen.unsqueeze(1) * seq_len + torch.arange(seq_len + 1)
    total, count = 0.0, 0
    for batch in offsets.split(SCORING_BATCH):
        window = ids[batch].to(device)
        total += summed_cross_entropy(model(window[:, :-1]), window[:, 1:])
        count += window[:, 1:].numel()
    return total, count

