"""Variable-length batches on CPU: pack_padded_sequence vs reversal within lengths.

Times forward + backward of a bidirectional GRU over a padded batch of token embeddings, the
two ways, and checks that they give the same pooled features. Run:

    python -m benchmarks.variable_length [--batch 64] [--steps 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gradclip.app.models import RecurrentModel, masked_max_mean_pool, valid_mask


def packed_features(gru: nn.GRU, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pooled features of a packed bidirectional GRU (the reference way)."""
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    outputs, _ = pad_packed_sequence(gru(packed)[0], batch_first=True,
                                     total_length=embedded.shape[1])
    mask = valid_mask(lengths, embedded.shape[0], embedded.shape[1], embedded.device)
    return masked_max_mean_pool(outputs, mask)


def copy_weights(gru: nn.GRU, model: RecurrentModel) -> None:
    """Give the per-direction modules of ``model`` the weights of the fused ``gru``."""
    for direction, suffix in enumerate(["", "_reverse"]):
        target = model.layers[0].directions[direction]
        for name in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]:
            getattr(target, name).data.copy_(getattr(gru, name + suffix).data)


def seconds(step, repeats: int) -> float:
    """Median wall time of ``step()`` over ``repeats`` runs after one warm-up."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = torch.randint(args.steps // 8, args.steps + 1, (args.batch,))
    lengths[0] = args.steps
    embedded = torch.randn(args.batch, args.steps, args.embed)
    gru = nn.GRU(args.embed, args.hidden, batch_first=True, bidirectional=True)
    model = RecurrentModel("gru", 1, input_size=args.embed, hidden_size=args.hidden,
                           bidirectional=True, readout="pool")
    copy_weights(gru, model)

    reference = packed_features(gru, embedded, lengths)
    ours = model.read(model.layers[0](embedded, lengths), lengths)
    difference = (reference - ours).abs().max().item()

    def packed_step():
        packed_features(gru, embedded, lengths).sum().backward()

    def reversed_step():
        model.read(model.layers[0](embedded, lengths), lengths).sum().backward()

    packed_time = seconds(packed_step, args.repeats)
    reversed_time = seconds(reversed_step, args.repeats)
    print(f"BiGRU {args.hidden}, batch {args.batch}x{args.steps}, lengths "
          f"{lengths.min().item()}..{lengths.max().item()}, {args.threads} thread(s)")
    print(f"  packed   forward+backward: {packed_time:.3f} s")
    print(f"  reversed forward+backward: {reversed_time:.3f} s "
          f"({packed_time / reversed_time:.1f}x faster)")
    print(f"  max |difference| of pooled features: {difference:.1e}")


if __name__ == "__main__":
    main()
