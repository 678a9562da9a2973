"""camsim-data: look at a data source before training.

usage: camsim-data {describe,split,prepare,difficulty} [group=option ...] [key=value ...]

  describe    camera models and their readable images; every skipped file named with its reason
  split       the sets A / B / C / known and each model's train / val / test images
  prepare     cut (and cache) every patch set the run needs; the skipped files, once each
  difficulty  how far hand-made statistics alone (global, residual, JPEG block-DCT) tell the
              source's camera models apart: accuracy and mean pairwise separability, photos
              alternately train / test (difficulty.max_models=6 compares sources at one model
              count; difficulty.photos_per_model, difficulty.patches_per_photo, patches.min_entropy);
              and what its pixels look like to a residual filter (residual σ, green-lattice and
              JPEG-grid ratios, residual autocorrelation), to set a simulator beside real photos.
              Models with a single photo are left out (and counted).

examples:
    camsim-data describe data=folder data.root=/photos     # camera models and image counts
    camsim-data describe                                   # the simulated cameras (renders them once)
    camsim-data split data=cameras split=cameras           # the sets A / B / C / known and the image split
    camsim-data prepare                                    # cut (and cache) every patch set the run needs
    camsim-data difficulty data=cameras patches.min_entropy=1.0   # real photos ...
    camsim-data difficulty difficulty.max_models=6               # ... beside the simulator at 6 models
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from camsim.cli import hydra_app

COMMANDS = ("describe", "split", "prepare", "difficulty")


@hydra_app("data")
def _main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from camsim.config import validate
    from camsim.data.splits import MIN_SPLIT_IMAGES
    from camsim.data.store import merge_skipped
    from camsim.pipeline import build_data

    validate(cfg)
    if cfg.task not in COMMANDS:  # e.g. through the multirun route, task=diffculty: not a silent prepare
        raise ValueError(f"camsim-data: task={cfg.task!r} is not one of {', '.join(COMMANDS)}")
    console = Console()
    if cfg.task == "difficulty":
        _difficulty(cfg, console)
        return
    data = build_data(cfg)
    if cfg.task == "describe":
        # headers read: an empty or corrupt file is a skipped file, not an image
        data.render([p for ps in data.index.models.values() for p in ps])
        index = data.index.probe(workers=cfg.patches.get("workers"))
        console.print(index.describe_table(title=f"{type(data.source).__name__}: {index.root}"))
        for sk in merge_skipped(index.skipped):
            console.print(f"[yellow]skipped[/] {sk['file']}: {sk['reason']}", soft_wrap=True)
        few = {m: n for m, n in index.counts().items() if n < MIN_SPLIT_IMAGES}
        if few:
            console.print(f"[yellow]{len(few)} model(s) with fewer than {MIN_SPLIT_IMAGES} images[/] "
                          f"({', '.join(f'{m} ({n})' for m, n in few.items())}): training splits each model's "
                          f"photos into train / val / test and needs {MIN_SPLIT_IMAGES} — data.min_images="
                          f"{MIN_SPLIT_IMAGES} leaves them out; the transfer evaluation (camsim-eval ckpt=...) "
                          "uses every photo", soft_wrap=True)
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


def _difficulty(cfg: DictConfig, console) -> None:
    """``camsim-data difficulty``: :func:`camsim.eval.difficulty.source_difficulty` on ``data``;
    the table on screen, the figures in ``<run dir>/difficulty.json``."""
    from pathlib import Path

    import hydra

    from camsim.artefacts import atomic_write_json
    from camsim.config import to_plain
    from camsim.data.datamodules import families_of
    from camsim.data.sources import listed_images, render_images
    from camsim.data.store import PatchSettings
    from camsim.eval.difficulty import source_difficulty

    source = hydra.utils.instantiate(cfg.data, _convert_="all")
    index = listed_images(source)  # the simulator renders only the photos drawn
    # families: the simulator's; for real photos the make (the model name's part before "_")
    families = families_of(source, index.models) or None
    d = cfg.difficulty
    out, text = source_difficulty(index, PatchSettings.from_config(cfg.patches), Path(cfg.paths.artefact_dir),
                                  max_models=d.max_models, photos_per_model=d.photos_per_model,
                                  patches_per_photo=int(d.patches_per_photo), seed=int(d.seed),
                                  workers=cfg.patches.get("workers"), families=families,
                                  render=lambda paths: render_images(source, paths))
    console.print(f"{type(source).__name__}: {index.root}")
    console.print(text, soft_wrap=True)
    path = Path(cfg.paths.output_dir) / "difficulty.json"
    atomic_write_json(path, {"source": repr(source), "root": str(index.root), "settings": to_plain(d),
                             "patches": to_plain(cfg.patches), **out})  # out names the models and photos drawn
    console.print(f"figures: {path}")


def main() -> None:
    """``camsim-data <command> [overrides]``: the command becomes ``task=<command>``."""
    args = sys.argv[1:]
    if not args or args[0] not in COMMANDS:
        if not any(a.startswith("-") for a in args):  # --help, --cfg … go straight to Hydra
            print(f"usage: camsim-data {{{','.join(COMMANDS)}}} [overrides]\n{__doc__}", file=sys.stderr)
            raise SystemExit(2)
    else:
        sys.argv = [sys.argv[0], *args[1:], f"task={args[0]}"]
    _main()


if __name__ == "__main__":
    main()
