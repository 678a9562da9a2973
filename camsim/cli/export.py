"""camsim-export: a trained similarity network as a portable, self-describing folder.

usage: camsim-export ckpt=<Phase B checkpoint> out=DIR [overwrite=true] [onnx=true] [metrics=[PATH,...]]

Writes into DIR:
  model.safetensors   the backbone's and the similarity head's tensors
  config.json         architecture (backbone, head, patch size, feature layer), eta, the input
                      convention (green channel, uint8, patch settings, JPEG branch), camera models
                      of sets A and B, the training data and its fingerprint, library versions, and
                      the sha256 of every other file (checked whenever the folder is loaded)
  README.md           the model card: intended use and limits, training data, evaluation figures
                      with their protocol, transfer figures (or "not measured")
  features.onnx, head.onnx   with onnx=true (needs `pip install camsim[onnx]`)

Evaluation figures come from metrics.json beside the checkpoint (Phase B validation) and from the
metrics= files or run folders (a `camsim-eval` run: pairs evaluation or transfer).
Load the folder with `camsim-localize model=DIR`, `camsim-eval model=DIR`, or without camsim's
training stack: camsim.models.portable.load_exported(DIR) (README, "Share a trained network").

examples:
  camsim-export ckpt=outputs/artefacts/phase_b-<hash>/model.ckpt out=shared-model
  camsim-export ckpt=... out=shared-model metrics=[outputs/2026-01-02/10-11-12.000000] onnx=true overwrite=true
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from camsim.cli import hydra_app

#: model=V on camsim-eval / camsim-localize names a camsim-export folder when V is a folder
MODEL_KEY = "model="


def model_dir_argv(argv: list[str], group_options: set[str] | None) -> list[str]:
    """``model=DIR`` → ``ckpt=DIR`` when DIR is an existing folder (a ``camsim-export`` folder; its
    files are checked when loaded). ``group_options``: the ``model`` config group's options
    (camsim-eval: the backbone architecture) — a value that names one stays that choice (write
    ``model=./NAME`` for a folder of that name); ``None``: no such group, every ``model=`` is a folder.
    Both ``ckpt=`` and a model folder: ValueError."""
    out, folders = [], []
    for arg in argv:
        value = arg[len(MODEL_KEY):] if arg.startswith(MODEL_KEY) else None
        if value is not None and group_options is not None and value not in group_options \
                and ("/" in value or value.startswith(".")) and not Path(value).is_dir():
            raise FileNotFoundError(f"model={value}: no such folder (a camsim-export folder), nor one of the "
                                    f"model configs ({', '.join(sorted(group_options))})")
        if value is not None and (group_options is None or (value not in group_options and Path(value).is_dir())):
            folders.append(value)
            arg = f"ckpt={value}"
        out.append(arg)
    if folders and any(a.startswith(("ckpt=", "+ckpt=", "++ckpt=")) for a in argv):
        raise ValueError(f"model={folders[0]} and ckpt=... both name the network: give one of them")
    return out


def run_with_model_dir(entry, group: str | None) -> None:
    """Run a Hydra entry point (``_main`` of camsim-eval / camsim-localize) after :func:`model_dir_argv`;
    a bad combination is one line on stderr (exit status 2)."""
    from camsim.cli import CONF_DIR, EXIT_INPUT

    options = None if group is None else {p.stem for p in Path(CONF_DIR, group).glob("*.yaml")}
    try:
        sys.argv[1:] = model_dir_argv(sys.argv[1:], options)
    except (ValueError, FileNotFoundError) as err:
        print(f"camsim: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None
    entry()


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    from camsim.config import to_plain
    from camsim.eval.export import export_network

    if not isinstance(cfg.ckpt, str):
        raise ValueError(f"ckpt: camsim-export writes one network: give one Phase B checkpoint, got {cfg.ckpt}")
    metrics = cfg.metrics
    metrics = [] if metrics is None else [metrics] if isinstance(metrics, str) else list(to_plain(metrics))
    out = export_network(Path(cfg.ckpt), Path(cfg.out), overwrite=bool(cfg.overwrite), onnx=bool(cfg.onnx),
                         metrics=[Path(m) for m in metrics], eta=None if cfg.eta is None else float(cfg.eta))
    print(f"exported to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


if __name__ == "__main__":
    main()
