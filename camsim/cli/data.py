"""camsim-data: look at a data source before training.

    camsim-data describe data=folder data.root=/photos     # camera models and image counts
    camsim-data describe                                   # the simulated cameras (renders them once)
    camsim-data split data=cameras split=cameras           # the sets A / B / C / known and the image split
    camsim-data prepare                                    # cut (and cache) every patch set the run needs
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from camsim.cli import hydra_app

COMMANDS = ("describe", "split", "prepare")


@hydra_app("data")
def _main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from camsim.config import validate
    from camsim.pipeline import build_data

    validate(cfg)
    console = Console()
    data = build_data(cfg)
    if cfg.task == "describe":
        console.print(data.index.describe_table(title=f"{type(data.source).__name__}: {data.index.root}"))
        for path, reason in data.index.skipped:
            console.print(f"[yellow]skipped[/] {path}: {reason}")
        return
    sp = data.split
    if cfg.task == "split":
        table = Table(title="camera-model sets and image split (train / val / test images)")
        for col in ("model", "set", "known", "train", "val", "test"):
            table.add_column(col)
        for m in sp.a + sp.b + sp.c:
            im = data.images[m]
            table.add_row(m, sp.role(m).upper(), "yes" if m in sp.known else "",
                          *(str(len(im[s])) for s in ("train", "val", "test")))
        console.print(table)
        return
    summary = data.prepare()
    console.print(f"{summary['patches']} patches in {summary['patch_sets']} sets; "
                  f"{summary['low_entropy_dropped']} low-entropy cells dropped; "
                  f"{len(summary['skipped_files'])} files skipped")
    for name, (got, asked) in summary["short"].items():
        console.print(f"[yellow]{name}: {got} of {asked} patches[/]")


def main() -> None:
    """``camsim-data <command> [overrides]``: the command becomes ``task=<command>``."""
    args = sys.argv[1:]
    if not args or args[0] not in COMMANDS:
        if not any(a.startswith("-") for a in args):  # --help, --cfg … go straight to Hydra
            raise SystemExit(f"usage: camsim-data {{{','.join(COMMANDS)}}} [overrides]\n{__doc__}")
    else:
        sys.argv = [sys.argv[0], *args[1:], f"task={args[0]}"]
    _main()


if __name__ == "__main__":
    main()
