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

The model (``gradclip.app.tasks.text.model``) reads the tokens with a recurrent network and,
beside it, each row's hashed word and character n-grams with a linear path (wide & deep);
runs written before the wide path existed (no ``ngram_buckets`` in their task settings) keep
the plain recurrent model.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gradclip.app.config import TaskOptions
from gradclip.app.errors import UserError
from gradclip.app.tasks.base import Batch, Task, seeded_generator
from gradclip.app.tasks.text.data import TEXT_COLUMN, read_comments, split_rows
from gradclip.app.tasks.text.features import (
    DEFAULT_BUCKETS,
    document_frequency_idf,
    ngram_codes,
)
from gradclip.app.tasks.text.metrics import label_report
from gradclip.app.tasks.text.tokenizer import (
    PAD,
    encode_texts,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from gradclip.app.training.rundir import write_text
from gradclip.app.untrusted import DATA_LIMIT, LOG_LIMIT, read_bytes, read_text

DEFAULTS = {"vocab_size": 20_000, "max_len": 256, "val_fraction": 0.1, "batch_size": 64,
            "class_balance": "sqrt", "text_column": TEXT_COLUMN, "delimiter": ","}
# Settings of new runs' wide & deep model (absent from older runs: plain recurrent model; runs
# of the first wide & deep model lack the last four: one joint loss, no wide intercept).
# The wide path's weights get wide_lr_scale x the learning rate and Adam's eps wide_eps: with
# eps far above their gradients, Adam is momentum SGD on them (Adam's per-weight scaling gives
# a bigram seen once the same step as a common one, and overfits); its intercept gets
# wide_bias_lr_scale x the learning rate, to keep pace (see model.parameter_groups). Each path
# is trained by a loss of its own and the scores blend them, wide + deep_weight * deep (see
# the model's module doc). All measured on validation rows, never on the last 1,000 (docs:
# the text classification page).
MODEL_DEFAULTS = {"ngram_buckets": DEFAULT_BUCKETS, "ngram_min_df": 2, "spatial_dropout": 0.2,
                  "wide_lr_scale": 1000.0, "wide_eps": 0.01, "wide_intercept": True,
                  "wide_bias_lr_scale": 333.0, "separate_losses": True, "deep_weight": 0.2}
TRAINING_ROWS_FILE = "training_rows.txt"
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
    return hashlib.sha256(read_bytes(Path(path), DATA_LIMIT)).hexdigest()


def _tokens(row: Any) -> list[int]:
    """The token ids of an encoded row (``(tokens, codes)`` with a wide path)."""
    return row[0] if isinstance(row, tuple) else row


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _csv_format(settings: dict[str, Any]) -> dict[str, Any]:
    """``read_comments``'s text column and delimiter from task settings (older runs: none)."""
    return {"text_column": settings.get("text_column") or TEXT_COLUMN,
            "delimiter": settings.get("delimiter") or ","}


def _label_list(labels: Any) -> list[str] | None:
    """``--labels`` as a list: ``None``, a comma-separated string or a sequence of names."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = labels.split(",")
    return [name.strip() for name in labels if name.strip()]


def check_stored_settings(config: dict[str, Any]) -> None:
    """What only the text task knows of its ``config.json`` settings (their bounds aside).

    Raises:
        UserError: ``labels`` not a non-empty list of names, ``pos_weight`` not one positive
            finite number per label, or ``data`` not a path.
    """
    labels = config.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(name, str) and name
                                                         for name in labels)):
        raise UserError("corrupt config.json: task.labels must be a non-empty list of column "
                        "names")
    weights = config.get("pos_weight")
    if weights is not None and not (
            isinstance(weights, list) and len(weights) == len(labels)
            and all(isinstance(weight, int | float) and not isinstance(weight, bool)
                    and math.isfinite(weight) and weight > 0 for weight in weights)):
        raise UserError(f"corrupt config.json: task.pos_weight must be {len(labels)} positive "
                        "finite number(s), one per label")
    if not isinstance(config.get("data"), str):
        raise UserError("corrupt config.json: task.data must be the path of the CSV")


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
        settings.update(MODEL_DEFAULTS)
        settings.update(data=str(Path(args.data).resolve()), seed=int(args.seed),
                        labels=_label_list(getattr(args, "labels", None)))
        table = read_comments(settings["data"], settings["labels"],
                              **_csv_format(settings))
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
        check_stored_settings(config)
        task = cls(config, load_tokenizer(run_dir), tuple(config["labels"]))
        if training:
            path = Path(config["data"])
            if path.exists() and _file_sha256(path) != config.get("data_sha256"):
                raise UserError(f"{path} changed since the run started; resuming needs the "
                                "same data file")
            task._attach(read_comments(path, config["labels"], **_csv_format(config)))
        return task

    @property
    def buckets(self) -> int:
        """Hash buckets of the wide path; 0 for runs that predate it (no wide path)."""
        return int(self.settings.get("ngram_buckets", 0))

    def encode(self, texts: list[str]) -> list[Any]:
        """Model inputs of texts: token ids per row, plus n-gram codes with a wide path."""
        token_ids = encode_texts(self.tokenizer, texts, self.max_len)
        if not self.buckets:
            return token_ids
        return list(zip(token_ids, ngram_codes(texts, self.buckets), strict=True))

    def build_model(self, **architecture: Any) -> nn.Module:
        """The wide & deep model (or, for an older run, the plain recurrent one)."""
        from gradclip.app.models import RecurrentModel
        from gradclip.app.tasks.text.model import WideDeepModel

        if not self.buckets:
            return RecurrentModel(architecture.pop("cell"), self.output_size,
                                  vocab_size=self.vocab_size, pad_id=self.pad_id,
                                  readout=self.readout, **architecture)
        return WideDeepModel(architecture.pop("cell"), self.output_size,
                             vocab_size=self.vocab_size, pad_id=self.pad_id,
                             buckets=self.buckets,
                             spatial_dropout=float(self.settings["spatial_dropout"]),
                             wide_lr_scale=float(self.settings["wide_lr_scale"]),
                             wide_eps=float(self.settings["wide_eps"]),
                             idf=getattr(self, "idf", None),
                             wide_intercept=self._wide_intercept(),
                             wide_bias_lr_scale=float(self.settings.get("wide_bias_lr_scale",
                                                                        1.0)),
                             separate_losses=bool(self.settings.get("separate_losses", False)),
                             deep_weight=float(self.settings.get("deep_weight", 1.0)),
                             **architecture)

    def _wide_intercept(self) -> Tensor | None:
        """The wide path's initial intercept: the training split's log-odds per label, shifted
        by ``log pos_weight`` as the weighted loss shifts its optimum (zeros when the split is
        not loaded: the checkpoint brings the values); ``None`` for runs without one."""
        if not self.settings.get("wide_intercept"):
            return None
        targets = getattr(self, "train_targets", None)
        if targets is None:
            return torch.zeros(self.output_size)
        return torch.logit(targets.mean(0), eps=1e-4) + self.pos_weight.log()

    def _attach(self, table: Any) -> None:
        """Split the table, encode its rows and record the facts for the summary."""
        train_rows, val_rows = split_rows(len(table.texts), self.settings["val_fraction"],
                                          self.settings["seed"])
        token_ids = self.encode(table.texts)
        self.training_texts = [table.texts[i] for i in train_rows.tolist()]
        self.train_ids = [token_ids[i] for i in train_rows.tolist()]
        self.val_ids = [token_ids[i] for i in val_rows.tolist()]
        self.train_targets = table.targets[train_rows]
        self.val_targets = table.targets[val_rows]
        if self.buckets:
            self.idf = document_frequency_idf([codes for _, codes in self.train_ids],
                                              self.buckets, int(self.settings["ngram_min_df"]))
        self.train_lengths = torch.tensor([len(_tokens(row)) for row in self.train_ids])
        self.batches_per_epoch = math.ceil(len(self.train_ids) / self.batch_size)
        self.facts = {
            "rows_read": table.rows_read,
            "skipped_empty": table.skipped_empty,
            "train_rows": len(self.train_ids),
            "val_rows": len(self.val_ids),
            "vocab_size": self.vocab_size,
            "truncated_rows": sum(len(_tokens(row)) == self.max_len for row in token_ids),
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
        inputs, lengths = self.pad([self.train_ids[i] for i in rows])
        return Batch(inputs, lengths, self.train_targets[rows])

    def pad(self, rows: list) -> tuple[Tensor, Tensor]:
        """One batch's inputs (packed tokens and codes with a wide path) and token lengths."""
        if not self.buckets:
            return pad_rows(rows, self.pad_id)
        from gradclip.app.tasks.text.model import pack_inputs

        tokens, lengths = pad_rows([row[0] for row in rows], self.pad_id)
        codes, _ = pad_rows([row[1] for row in rows], -1)
        return pack_inputs(tokens, codes), lengths

    def _epoch_batches(self, epoch: int) -> list[Tensor]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = seeded_generator(self.settings["seed"], epoch, _BATCH_KEY)
            self._epoch_cache = (epoch, bucketed_batches(self.train_lengths, self.batch_size,
                                                         generator))
        return self._epoch_cache[1]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean class-balanced binary cross-entropy over rows and labels (``pos_weight``).

        Outputs of ``2 * labels`` columns are the wide and the deep path's logits of a model
        that trains each path by a loss of its own (see ``model.WideDeepModel``): the loss is
        then the sum of the two paths' losses.
        """
        pos_weight = self.pos_weight.to(outputs.device)
        paths = outputs.split(self.output_size, dim=1)
        return functools.reduce(operator.add, (
            F.binary_cross_entropy_with_logits(logits, batch.targets, pos_weight=pos_weight)
            for logits in paths))

    # --- scoring --------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Scores on the validation split (see ``gradclip.app.tasks.text.metrics.label_report``)."""
        logits = self.predict_logits(model, self.val_ids, device)
        return {**label_report(logits, self.val_targets, self.label_names),
                "rows": len(self.val_ids)}

    def evaluate_file(self, model: nn.Module, path: Path, device: torch.device
                      ) -> dict[str, Any]:
        """Scores on another CSV of the same format; labels it lacks are left out and listed."""
        table, seen = self.unseen_rows(path)
        columns = [self.label_names.index(name) for name in table.label_names]
        token_ids = self.encode(table.texts)
        training = model.training
        model.eval()
        try:
            logits = self.predict_logits(model, token_ids, device)[:, columns]
        finally:
            model.train(training)
        report = label_report(logits, table.targets, table.label_names)
        missing = [name for name in self.label_names if name not in table.label_names]
        return {**report, "rows": len(table.texts), "rows_read": table.rows_read,
                "skipped_empty": table.skipped_empty, "labels_missing": missing,
                "training_rows_skipped": seen}

    def unseen_rows(self, path: Path) -> tuple[Any, int]:
        """The rows of a labelled CSV that this run did not train on, and how many it did.

        Scoring rows the model was trained on overstates it (0.98 against a true 0.93 on
        the toxic comments), so ``gradclip eval`` leaves them out and says so.
        """
        table = read_comments(path, self.label_names, missing_ok=True,
                              **_csv_format(self.settings))
        seen = self.seen_rows(path, table.texts)
        if seen is None or not seen.any():
            return table, 0
        keep = (~seen).nonzero().flatten()
        if not len(keep):
            raise UserError(f"every row of {path} was in the run's training split; nothing "
                            "unseen to score (score another file)")
        return type(table)([table.texts[i] for i in keep.tolist()], table.targets[keep],
                           table.label_names, table.rows_read, table.skipped_empty), int(seen.sum())

    def training_split(self) -> tuple[list[str], Tensor]:
        """The texts and targets of the run's training split, read from its data file."""
        path = Path(self.settings["data"])
        if not path.is_file() or _file_sha256(path) != self.settings.get("data_sha256"):
            raise UserError(f"the run's training file {path} is missing or changed; the "
                            "baseline is fitted on the run's own training split")
        table = read_comments(path, self.label_names, **_csv_format(self.settings))
        train_rows, _ = split_rows(len(table.texts), self.settings["val_fraction"],
                                   self.settings["seed"])
        return [table.texts[i] for i in train_rows.tolist()], table.targets[train_rows]

    def seen_rows(self, path: Path, texts: list[str]) -> Tensor | None:
        """Bool per row of ``texts``: was it in this run's training split? ``None`` if unknown.

        Known from the run's ``training_rows.txt`` (a hash of each training comment, written
        by ``save``), or for an older run from ``data_sha256``: the run's own file, whose
        training rows ``split_rows`` gives.
        """
        hashes = getattr(self, "training_hashes", None)
        if hashes is not None:
            return torch.tensor([_text_hash(text) in hashes for text in texts], dtype=torch.bool)
        if _file_sha256(Path(path)) != self.settings.get("data_sha256"):
            return None
        train_rows, _ = split_rows(len(texts), self.settings["val_fraction"],
                                   self.settings["seed"])
        seen = torch.zeros(len(texts), dtype=torch.bool)
        seen[train_rows] = True
        return seen

    @torch.no_grad()
    def predict_logits(self, model: nn.Module, token_ids: list, device: torch.device) -> Tensor:
        """Calibrated CPU ``(rows, labels)`` logits (model output minus ``log pos_weight``) of
        encoded rows (``encode``), batched by length, in the rows' order."""
        lengths = torch.tensor([len(_tokens(row)) for row in token_ids])
        order = lengths.sort(stable=True).indices
        logits = torch.empty(len(token_ids), self.output_size)
        for rows in order.split(EVAL_BATCH_SIZE):
            inputs, batch_lengths = self.pad([token_ids[i] for i in rows.tolist()])
            logits[rows] = model(inputs.to(device), batch_lengths).float().cpu()
        return logits - self.pos_weight.log()

    # --- saving ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def save(self, run_dir: Path) -> None:
        save_tokenizer(self.tokenizer, run_dir)
        texts = getattr(self, "training_texts", None)
        if texts is not None:
            write_text(Path(run_dir) / TRAINING_ROWS_FILE,
                       "".join(_text_hash(text) + "\n" for text in texts))

    def load_training_hashes(self, run_dir: Path) -> None:
        """Read ``training_rows.txt`` (absent in older runs) for ``seen_rows``."""
        path = Path(run_dir) / TRAINING_ROWS_FILE
        if not path.exists():
            return
        hashes = read_text(path, LOG_LIMIT, encoding="ascii").split()
        wrong = next((number for number, line in enumerate(hashes, 1)
                      if not re.fullmatch(r"[0-9a-f]{20}", line)), None)
        if wrong is not None:
            raise UserError(f"corrupt {path}: entry {wrong} is not a row hash (20 hex digits)")
        self.training_hashes = set(hashes)

    def describe(self) -> dict[str, Any]:
        return dict(self.facts)
