"""camsim-compare: one table (and plot) of a sweep's jobs — swept parameters vs metrics.

    camsim-compare outputs/multirun/2026-11-25/14-02-11
    camsim-compare <dir> --x split.a --metrics eval/acc/unknown_unknown eval/auc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console

    from camsim.compare import DEFAULT_METRICS, format_table, write_comparison

    p = argparse.ArgumentParser(prog="camsim-compare", description=__doc__.splitlines()[0])
    p.add_argument("multirun_dir", type=Path, help="a Hydra multirun dir (or any dir holding job dirs)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metric keys (as in metrics.json, '/'-joined)")
    p.add_argument("--x", default=None, help="swept parameter on the plot's x axis (default: the first swept one)")
    p.add_argument("--out", type=Path, default=None, help="where comparison.csv/.png go (default: the multirun dir)")
    args = p.parse_args(argv)
    try:
        csv_path, png, columns, rows = write_comparison(args.multirun_dir, args.out, args.metrics, args.x)
    except (FileNotFoundError, ValueError) as err:
        print(f"camsim-compare: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    # piped or redirected output: wide enough that no column header is cut to "…"
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(format_table(columns, rows))
    console.print(f"table: {csv_path}" + (f"\nplot: {png}" if png else ""))


if __name__ == "__main__":
    main()
