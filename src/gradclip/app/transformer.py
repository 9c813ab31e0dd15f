"""A small causal transformer for character language modelling (``--model transformer``).

The decoder of GPT-2 at a size that trains on a CPU: token embeddings plus learned position
embeddings, ``layers`` pre-LayerNorm blocks (multi-head causal self-attention through
``torch.nn.functional.scaled_dot_product_attention``, then a GELU MLP four times as wide, each
added back to the residual stream), a final LayerNorm and an output head that shares its
weights with the token embedding. Every window starts from scratch: unlike the recurrent
language model, nothing is carried from one window to the next.

Initialisation as GPT-2's: every weight matrix and embedding ``N(0, 0.02)``, biases zero,
and the two projections that write into the residual stream (attention output, MLP output)
``N(0, 0.02 / sqrt(2 * layers))``, so the residual stream's variance does not grow with depth.

References:
    Vaswani et al. (2017), "Attention is all you need", NeurIPS; Radford et al. (2019),
    "Language models are unsupervised multitask learners" (GPT-2: pre-LayerNorm, the scaled
    residual initialisation); Karpathy, nanoGPT (2022), the CPU character configuration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

INIT_STD = 0.02
MLP_EXPANSION = 4


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t`` only."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, steps, width = x.shape
        query, key, value = (part.view(batch, steps, self.heads, width // self.heads)
                             .transpose(1, 2) for part in self.qkv(x).split(width, dim=2))
        attended = F.scaled_dot_product_attention(
            query, key, value, is_causal=True,
            dropout_p=self.dropout if self.training else 0.0)
        merged = attended.transpose(1, 2).reshape(batch, steps, width)
        return self.proj_dropout(self.proj(merged))


class FeedForward(nn.Module):
    """``width -> 4 width -> GELU -> width``, with dropout on the output."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.expand = nn.Linear(width, MLP_EXPANSION * width)
        self.proj = nn.Linear(MLP_EXPANSION * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.expand(x))))


class Block(nn.Module):
    """Pre-LayerNorm block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = FeedForward(width, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TransformerLanguageModel(nn.Module):
    """Causal decoder: ``(B, T)`` character ids to ``(B, T, vocab)`` next-character logits.

    ``forward(inputs, lengths=None)`` takes ``T <= context`` ids per row (``lengths`` is
    accepted for the task protocol and ignored: every window is full). The logits at
    position ``t`` depend on ``inputs[:, :t + 1]`` only.

    Args:
        vocab_size: characters in the vocabulary.
        context: the longest window (the number of learned positions).
        width: the model width (``--hidden-size``), a multiple of ``heads``.
        layers: transformer blocks.
        heads: attention heads per block.
        dropout: on the embeddings, the attention weights and each block's outputs.

    Raises:
        ValueError: a size below 1, ``width`` not a multiple of ``heads``, or ``dropout``
            outside ``[0, 1)``.
    """

    def __init__(self, vocab_size: int, *, context: int, width: int = 128, layers: int = 4,
                 heads: int = 4, dropout: float = 0.0):
        super().__init__()
        check_sizes(vocab_size=vocab_size, context=context, width=width, layers=layers,
                    heads=heads, dropout=dropout)
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context, width)
        self.dropout = nn.Dropout(dropout)
        blocks = [Block(width, heads, dropout) for _ in range(layers)]
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied: one matrix, two uses
        self.apply(initialise)
        residual_std = INIT_STD / math.sqrt(2 * layers)
        for block in blocks:
            for projection in (block.attention.proj, block.mlp.proj):
                nn.init.normal_(projection.weight, mean=0.0, std=residual_std)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        steps = inputs.shape[1]
        if steps > self.context:
            raise ValueError(f"inputs has {steps} positions, more than the model's context "
                             f"of {self.context}")
        positions = torch.arange(steps, device=inputs.device)
        x = self.dropout(self.token_embedding(inputs) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    def parameter_groups(self, lr: float) -> list[dict]:
        """AdamW groups as GPT-2 trains them: weight decay on the matrices and embeddings
        (``dim >= 2``), none on biases and LayerNorm gains (the optimizer's default decay
        applies to the first group)."""
        parameters = list(self.parameters())  # the tied head appears once
        return [{"params": [p for p in parameters if p.dim() >= 2]},
                {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]


def initialise(module: nn.Module) -> None:
    """GPT-2's initialisation of one module: ``N(0, 0.02)`` weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)


def check_sizes(*, vocab_size: int, context: int, width: int, layers: int, heads: int,
                dropout: float) -> None:
    """Raise ``ValueError`` naming the first size the transformer cannot be built with."""
    for name, value in (("vocab_size", vocab_size), ("context", context), ("width", width),
                        ("layers", layers), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if width % heads:
        raise ValueError(f"width must be a multiple of heads, got width {width} and "
                         f"heads {heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
