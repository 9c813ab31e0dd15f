"""Toxic-comment classification: multi-label, from a CSV in the Jigsaw format.

Rows are split into training and validation by seed (``split_rows``); a BPE tokenizer is
learnt from the training text only; each epoch's batches are drawn by length bucket (rows
shuffled by ``(seed, epoch)``, sorted by length within chunks of ``BUCKET_BATCHES`` batches,
then the batches shuffled), so a batch holds rows of similar length and little padding, and
``train_batch(index)`` is a pure function of ``(seed, index)``. Scores: per-label ROC-AUC,
accuracy at 0.5 and positives, mean ROC-AUC, binary cross-entropy.

Rare labels (a few dozen positives in thousands of rows) are learnt with a class-balanced
loss, ``pos_weight = sqrt(negatives / positives)`` per label from the training split, and the
scores undo its shift of the log-odds (see ``positive_weights``).
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
from gradclip.app.tasks.base import Batch, Task, seeded_generator
from gradclip.app.tasks.text.data import read_comments, split_rows
from gradclip.app.tasks.text.metrics import label_report
from gradclip.app.tasks.text.tokenizer import (
    PAD,
    encode_texts,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

DEFAULTS = {"vocab_size": 20_000, "max_len": 256, "val_fraction": 0.1, "batch_size": 64,
            "class_balance": "sqrt"}
CLASS_BALANCE = ("sqrt", "none")
BUCKET_BATCHES = 50
EVAL_BATCH_SIZE = 256
# Salt for the batch-order generator, distinct from the split's.
_BATCH_KEY = 0xBA7C4


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Long ``(B, T)`` token ids padded with ``pad_id`` to the longest row, and ``(B,)`` lengths."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    inputs = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for position, row in enumerate(rows):
        inputs[position, : len(row)] = torch.tensor(row, dtype=torch.long)
    return inputs, lengths


def bucketed_batches(lengths: Tensor, batch_size: int, generator: torch.Generator,
                     bucket_batches: int = BUCKET_BATCHES) -> list[Tensor]:
    """Row indices of each batch of one epoch, grouped by length to limit padding.

    Rule: shuffle all rows; cut them into chunks of ``bucket_batches * batch_size``; sort each
    chunk by length (stable); cut it into batches of ``batch_size`` (the last one of the epoch
    may be short); shuffle the batches. Gives ``ceil(rows / batch_size)`` batches.
    """
    order = torch.randperm(len(lengths), generator=generator)
    chunk_size = bucket_batches * batch_size
    batches = []
    for chunk in order.split(chunk_size):
        by_length = chunk[lengths[chunk].sort(stable=True).indices]
        batches.extend(by_length.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def positive_weights(targets: Tensor, rule: str) -> Tensor:
    """Per-label weight of the positive term of the binary cross-entropy.

    Rule ``"sqrt"``: ``w = sqrt(negatives / positives)`` (1 where a class is absent), a middle
    way between no weighting and full inverse-frequency weighting; ``"none"``: ``w = 1``.
    Weighting positives by ``w`` moves the loss's optimum to ``log w`` above the true
    log-odds, so scores subtract ``log w`` again (the prior correction for rare events) and
    stay calibrated; ROC-AUC, a ranking, is unchanged by the shift.

    References:
        King & Zeng (2001), "Logistic Regression in Rare Events Data", Political Analysis 9(2).
    """
    if rule not in CLASS_BALANCE:
        raise UserError(f"class balance must be one of {', '.join(CLASS_BALANCE)}, got {rule!r}")
    positives = targets.sum(0)
    negatives = len(targets) - positives
    if rule == "none":
        return torch.ones_like(positives)
    present = (positives > 0) & (negatives > 0)
    return torch.where(present, (negatives / positives.clamp(min=1)).sqrt(),
                       torch.ones_like(positives))


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _label_list(labels: Any) -> list[str] | None:
    """``--labels`` as a list: ``None``, a comma-separated string or a sequence of names."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = labels.split(",")
    return [name.strip() for name in labels if name.strip()]


class TextTask(Task):
    """Multi-label toxic-comment classification from a Jigsaw-format CSV."""

    name = "text"
    input_kind = "tokens"
    readout = "pool"
    metric_name = "mean_roc_auc"
    higher_is_better = True

    def __init__(self, settings: dict[str, Any], tokenizer: Any, label_names: tuple[str, ...]):
        self.settings = dict(settings)
        self.tokenizer = tokenizer
        self.label_names = tuple(label_names)
        self.output_size = len(self.label_names)
        self.vocab_size = tokenizer.get_vocab_size()
        self.pad_id = tokenizer.token_to_id(PAD)
        self.batch_size = int(self.settings["batch_size"])
        self.max_len = int(self.settings["max_len"])
        self.pos_weight = torch.tensor(self.settings.get("pos_weight")
                                       or [1.0] * self.output_size)
        self.facts: dict[str, Any] = {}
        self._epoch_cache: tuple[int, list[Tensor]] | None = None

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_options(cls, args: TaskOptions) -> TextTask:
        if getattr(args, "data", None) is None:
            raise UserError("--task text needs --data CSV (a file with comment_text and "
                            "label columns)")
        settings = {key: getattr(args, key, None) for key in DEFAULTS}
        settings = {key: DEFAULTS[key] if value is None else value
                    for key, value in settings.items()}
        if settings["max_len"] < 1:
            raise UserError(f"--max-len must be a positive integer, got {settings['max_len']}")
        settings.update(data=str(Path(args.data).resolve()), seed=int(args.seed),
                        labels=_label_list(getattr(args, "labels", None)))
        table = read_comments(settings["data"], settings["labels"])
        settings["labels"] = list(table.label_names)
        settings["data_sha256"] = _file_sha256(Path(settings["data"]))
        train_rows, _ = split_rows(len(table.texts), settings["val_fraction"], settings["seed"])
        settings["pos_weight"] = positive_weights(table.targets[train_rows],
                                                  settings["class_balance"]).tolist()
        tokenizer = train_tokenizer([table.texts[i] for i in train_rows.tolist()],
                                    int(settings["vocab_size"]))
        task = cls(settings, tokenizer, table.label_names)
        task._attach(table)
        return task

    @classmethod
    def from_config(cls, config: dict[str, Any], run_dir: Path, training: bool = True
                    ) -> TextTask:
        task = cls(config, load_tokenizer(run_dir), tuple(config["labels"]))
        if training:
            path = Path(config["data"])
            if path.is_file() and _file_sha256(path) != config.get("data_sha256"):
                raise UserError(f"{path} changed since the run started; resuming needs the "
                                "same data file")
            task._attach(read_comments(path, config["labels"]))
        return task

    def _attach(self, table: Any) -> None:
        """Split the table, encode its rows and record the facts for the summary."""
        train_rows, val_rows = split_rows(len(table.texts), self.settings["val_fraction"],
                                          self.settings["seed"])
        token_ids = encode_texts(self.tokenizer, table.texts, self.max_len)
        self.train_ids = [token_ids[i] for i in train_rows.tolist()]
        self.val_ids = [token_ids[i] for i in val_rows.tolist()]
        self.train_targets = table.targets[train_rows]
        self.val_targets = table.targets[val_rows]
        self.train_lengths = torch.tensor([len(row) for row in self.train_ids])
        self.batches_per_epoch = math.ceil(len(self.train_ids) / self.batch_size)
        self.facts = {
            "rows_read": table.rows_read,
            "skipped_empty": table.skipped_empty,
            "train_rows": len(self.train_ids),
            "val_rows": len(self.val_ids),
            "vocab_size": self.vocab_size,
            "truncated_rows": sum(len(row) == self.max_len for row in token_ids),
            "train_positives": self._positives(self.train_targets),
            "val_positives": self._positives(self.val_targets),
        }

    def _positives(self, targets: Tensor) -> dict[str, int]:
        return {name: int(count) for name, count in zip(self.label_names,
                                                        targets.sum(0).tolist(), strict=True)}

    # --- training -------------------------------------------------------------------------

    def train_batch(self, index: int) -> Batch:
        epoch, position = divmod(index, self.batches_per_epoch)
        rows = self._epoch_batches(epoch)[position].tolist()
        inputs, lengths = pad_rows([self.train_ids[i] for i in rows], self.pad_id)
        return Batch(inputs, lengths, self.train_targets[rows])

    def _epoch_batches(self, epoch: int) -> list[Tensor]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = seeded_generator(self.settings["seed"], epoch, _BATCH_KEY)
            self._epoch_cache = (epoch, bucketed_batches(self.train_lengths, self.batch_size,
                                                         generator))
        return self._epoch_cache[1]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean class-balanced binary cross-entropy over rows and labels (``pos_weight``)."""
        return F.binary_cross_entropy_with_logits(outputs, batch.targets,
                                                  pos_weight=self.pos_weight.to(outputs.device))

    # --- scoring --------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Scores on the validation split (see ``gradclip.app.tasks.text.metrics.label_report``)."""
        logits = self.predict_logits(model, self.val_ids, device)
        return {**label_report(logits, self.val_targets, self.label_names),
                "rows": len(self.val_ids)}

    def evaluate_file(self, model: nn.Module, path: Path, device: torch.device
                      ) -> dict[str, Any]:
        """Scores on another CSV of the same format; labels it lacks are left out and listed."""
        table = read_comments(path, self.label_names, missing_ok=True)
        columns = [self.label_names.index(name) for name in table.label_names]
        token_ids = encode_texts(self.tokenizer, table.texts, self.max_len)
        training = model.training
        model.eval()
        try:
            logits = self.predict_logits(model, token_ids, device)[:, columns]
        finally:
            model.train(training)
        report = label_report(logits, table.targets, table.label_names)
        missing = [name for name in self.label_names if name not in table.label_names]
        return {**report, "rows": len(table.texts), "rows_read": table.rows_read,
                "skipped_empty": table.skipped_empty, "labels_missing": missing}

    @torch.no_grad()
    def predict_logits(self, model: nn.Module, token_ids: list[list[int]],
                       device: torch.device) -> Tensor:
        """Calibrated CPU ``(rows, labels)`` logits (model output minus ``log pos_weight``) of
        token rows, batched by length, in the rows' order."""
        lengths = torch.tensor([len(row) for row in token_ids])
        order = lengths.sort(stable=True).indices
        logits = torch.empty(len(token_ids), self.output_size)
        for rows in order.split(EVAL_BATCH_SIZE):
            inputs, batch_lengths = pad_rows([token_ids[i] for i in rows.tolist()], self.pad_id)
            logits[rows] = model(inputs.to(device), batch_lengths).float().cpu()
        return logits - self.pos_weight.log()

    # --- saving ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def save(self, run_dir: Path) -> None:
        save_tokenizer(self.tokenizer, run_dir)

    def describe(self) -> dict[str, Any]:
        return dict(self.facts)
