"""Pooling before vs after the activation (``ConvBlock.pool_first``), measured in one process.

Max pooling commutes with tanh / ReLU, so a block may pool first and evaluate its activation
on a quarter of the elements (camsim/models/backbone.py). This script times both orders on the
same weights and inputs, alternating them so that a drifting machine affects both alike, and
prints patches/s and the ratio:

    python benchmarks/pool_order.py                        # quick model and MISLnet at 64 px
    python benchmarks/pool_order.py --models mislnet --patch 256 --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from camsim.bench.plan import recipe
from camsim.bench.rows_model import make_classifier, random_batch
from camsim.models.constrained import project_constrained_layers_


def measure(model_name: str, patch: int, batch: int, rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """patches/s (best and median over ``rounds``) of training steps and inference, per order."""
    clf = make_classifier(recipe(model=model_name)["model"], patch, "channels_last")  # the bench's rows build the same
    model = clf.backbone
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x, y = random_batch(batch, patch)
    x = x.contiguous(memory_format=torch.channels_last)
    can_pool_first = {name: block.pool_first for name, block in model.blocks.items()}  # as the model decided

    def set_order(pool_first: bool) -> None:
        for name, block in model.blocks.items():
            block.pool_first = pool_first and can_pool_first[name]

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        project_constrained_layers_(model)

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        model(x)

    rates: dict[str, dict[bool, list[float]]] = {"training": {True: [], False: []}, "inference": {True: [], False: []}}
    for kind, fn in (("training", train), ("inference", infer)):
        for order in (False, True):  # warm-up of both
            set_order(order)
            fn()
        for _ in range(rounds):
            for order in (False, True):
                set_order(order)
                t = time.perf_counter()
                for _ in range(steps):
                    fn()
                rates[kind][order].append(batch * steps / (time.perf_counter() - t))
    return {kind: {"act_first_best": max(r[False]), "pool_first_best": max(r[True]),
                   "act_first_median": statistics.median(r[False]), "pool_first_median": statistics.median(r[True])}
            for kind, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mislnet_small", "mislnet"], help="conf/model/*.yaml names")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6, help="alternations of the two orders")
    ap.add_argument("--steps", type=int, default=5, help="calls per timing")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.patch} px, batch {args.batch}, "
          "eager channels_last; patches/s, best / median of the rounds")
    for name in args.models:
        res = measure(name, args.patch, args.batch, args.rounds, args.steps)
        for kind, r in res.items():
            print(f"{name:14s} {kind:9s}  activation first {r['act_first_best']:7.0f} / {r['act_first_median']:7.0f}"
                  f"   pool first {r['pool_first_best']:7.0f} / {r['pool_first_median']:7.0f}"
                  f"   ratio {r['pool_first_best'] / r['act_first_best']:.2f} / "
                  f"{r['pool_first_median'] / r['act_first_median']:.2f}")


if __name__ == "__main__":
    main()
