"""camsim-data: look at a data source before training.

usage: camsim-data {describe,split,prepare} [group=option ...] [key=value ...]

  describe   camera models and their readable images; every skipped file named with its reason
  split      the sets A / B / C / known and each model's train / val / test images
  prepare    cut (and cache) every patch set the run needs; the skipped files, once each

examples:
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
    from camsim.data.store import merge_skipped
    from camsim.pipeline import build_data

    validate(cfg)
    console = Console()
    data = build_data(cfg)
    if cfg.task == "describe":
        # headers read: an empty or corrupt file is a skipped file, not an image
        index = data.index.probe(workers=cfg.patches.get("workers"))
        console.print(index.describe_table(title=f"{type(data.source).__name__}: {index.root}"))
        for sk in merge_skipped(index.skipped):
            console.print(f"[yellow]skipped[/] {sk['file']}: {sk['reason']}", soft_wrap=True)
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
    skipped = merge_skipped(data.index.skipped, summary["skipped_files"])  # the source's own skips too
    console.print(f"{summary['patches']} patches in {summary['patch_sets']} sets; "
                  f"{summary['low_entropy_dropped']} low-entropy cells dropped; "
                  f"{len(skipped)} files skipped")
    for sk in skipped:
        console.print(f"[yellow]skipped[/] {sk['file']}: {sk['reason']}", soft_wrap=True)
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
