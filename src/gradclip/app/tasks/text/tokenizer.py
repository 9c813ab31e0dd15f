"""The text task's subword tokenizer: BPE learnt from the training text (Hugging Face ``tokenizers``).

Normalisation NFKC + lowercase, pre-tokenisation on whitespace and punctuation, byte-pair
merges learnt from the training split only (never the validation rows), ``[PAD]`` = id 0 and
``[UNK]`` = id 1. The tokenizer is saved as ``tokenizer.json`` in the run directory and loaded
from there for ``--resume`` and ``gradclip eval``.

References:
    Sennrich, Haddow & Birch (2016), "Neural Machine Translation of Rare Words with Subword
    Units", ACL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradclip.app.errors import UserError
from gradclip.app.training.rundir import write_text

PAD = "[PAD]"
UNK = "[UNK]"
TOKENIZER_FILE = "tokenizer.json"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError("the text task needs the 'tokenizers' package: "
                          "pip install 'gradclip[app]'") from error
    return tokenizers


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A BPE ``tokenizers.Tokenizer`` with at most ``vocab_size`` tokens, learnt from ``texts``.

    Deterministic: the same texts and ``vocab_size`` give the same vocabulary and merges.
    Merges need a pair seen at least twice, so a small corpus gives a smaller vocabulary.
    """
    if vocab_size < 8:
        raise UserError(f"--vocab-size must be at least 8, got {vocab_size}")
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(),
                                                    tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                     special_tokens=[PAD, UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def load_tokenizer(run_dir: Path) -> Any:
    """The tokenizer saved in ``run_dir``; a missing or unreadable file is a ``UserError``."""
    path = Path(run_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} has no {TOKENIZER_FILE}; is it a run directory of "
                        "--task text?")
    try:
        return _tokenizers().Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises a bare Exception on corrupt JSON
        raise UserError(f"cannot read {path}: {error}") from None


def save_tokenizer(tokenizer: Any, run_dir: Path) -> None:
    """Write ``tokenizer.json`` into ``run_dir`` (atomically, never through a link).

    Raises:
        UserError: the file system refused (a full disk), or the name is a link.
    """
    write_text(Path(run_dir) / TOKENIZER_FILE, tokenizer.to_str(pretty=True))


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Token ids of each text, cut to its first ``max_len`` tokens; never empty (``[UNK]``)."""
    unk_id = tokenizer.token_to_id(UNK)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [encoding.ids[:max_len] or [unk_id] for encoding in encodings]
