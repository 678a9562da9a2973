"""camsim-compare: a sweep's jobs side by side, or two transfer evaluations compared paired.

A multirun dir: one table (and plot), swept parameters vs metrics. ``--paired``: two transfer
evaluations on the same photos, with paired bootstrap intervals of their difference.

    camsim-compare outputs/multirun/2026-11-25/14-02-11
    camsim-compare <dir> --x split.a --metrics eval/acc/unknown_unknown eval/auc
    camsim-compare <dir> --over seed      # each setting's mean [min, max] over the training seeds
    camsim-compare --paired <transfer run A> <transfer run B> [--reps 1000] [--out DIR]
    camsim-compare --paired <run>:baseline <run>      # the head against its own Bray–Curtis baseline
    camsim-compare --paired <A seed 0> <B seed 0> --paired <A seed 1> <B seed 1> …   # and across the pairs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="camsim-compare", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[5:]))
    p.add_argument("multirun_dir", type=Path, nargs="?", help="a Hydra multirun dir (or any dir holding job dirs)")
    p.add_argument("--metrics", nargs="+", default=None, help="metric keys (as in metrics.json, '/'-joined)")
    p.add_argument("--x", default=None, help="swept parameter on the plot's x axis (default: the first swept one)")
    p.add_argument("--over", nargs="+", default=(), metavar="PARAM",
                   help="swept parameters to average over (e.g. seed): one row per setting of the others, each "
                        "metric's mean [min, max] and the job count; also written to comparison_over.csv")
    p.add_argument("--out", type=Path, default=None,
                   help="where comparison.csv/.png go (default: the multirun dir); with --paired: where "
                        "paired.md/.json go (default: print only)")
    p.add_argument("--paired", nargs=2, metavar=("RUN_A", "RUN_B"), action="append", default=None,
                   help="two transfer evaluation run dirs (camsim-eval ckpt=… data=…) on the same photos; "
                        "RUN:baseline for a run's Bray–Curtis baseline. Repeated (one pair per training seed, "
                        "say): each pair compared, then a summary across the pairs")
    p.add_argument("--reps", type=int, default=1000, help="paired bootstrap replicates (--paired)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (--paired)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (--paired)")
    args = p.parse_args(argv)
    if (args.paired is None) == (args.multirun_dir is None):
        p.error("give either a multirun dir or --paired RUN_A RUN_B")
    if args.paired and args.over:
        p.error("--over averages a multirun dir's jobs; it does not go with --paired")
    try:
        if args.paired:
            _paired(args)
        else:
            _sweep(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"camsim-compare: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def _sweep(args: argparse.Namespace) -> None:
    from rich.console import Console

    from camsim.compare import format_table, write_comparison

    csv_path, png, columns, rows = write_comparison(args.multirun_dir, args.out, args.metrics,
                                                    args.x, args.over)
    # piped or redirected output: wide enough that no column header is cut to "…"
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(format_table(columns, rows, args.over))
    console.print(f"table: {csv_path}" + (f"\nplot: {png}" if png else ""))


def _paired(args: argparse.Namespace) -> None:
    from camsim.artefacts import atomic_write_bytes, atomic_write_json
    from camsim.eval.paired import (across_pairs, comparable, left_out, markdown, markdown_across, paired_bootstrap,
                                    read_scores)

    pairs = [tuple(read_scores(s) for s in pair) for pair in args.paired]  # every file read before any work
    for k, ((a, b), (pa, pb)) in enumerate(zip(pairs, args.paired)):  # and every pair checked
        try:
            comparable(a, b)
        except ValueError as err:
            raise ValueError(f"pair {k + 1} ({pa}, {pb}): {err}" if len(pairs) > 1 else str(err)) from err
    results, texts = [], []
    for k, (a, b) in enumerate(pairs):
        results.append(paired_bootstrap(a, b, args.reps, args.level, args.seed))
        text = markdown(a, b, results[-1], args.reps, args.level)
        texts.append(text if len(pairs) == 1 else f"## Pair {k + 1}: {a.label} → {b.label}\n\n{text}")
        print(texts[-1] + ("\n" if len(pairs) > 1 else ""))
    record = {"reps": args.reps, "level": args.level, "seed": args.seed}
    if len(pairs) == 1:
        record.update({"a": str(args.paired[0][0]), "b": str(args.paired[0][1]), "contrasts": results[0]})
    else:
        summary, left = across_pairs(results, pairs), left_out(results, pairs)
        texts.append(f"## Across the {len(pairs)} pairs\n\n" + markdown_across(pairs, summary, args.reps, args.level, left))
        print(texts[-1])
        record.update({"pairs": [{"a": str(pa), "b": str(pb), "contrasts": r} for (pa, pb), r in zip(args.paired, results)],
                       "summary": summary, "left_out": dict(left)})
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "paired.md", ("\n\n".join(texts) + "\n").encode())
        atomic_write_json(args.out / "paired.json", record)
        print(f"written: {args.out / 'paired.md'}, {args.out / 'paired.json'}")


if __name__ == "__main__":
    main()
