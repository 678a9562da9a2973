"""camsim-localize: splicing localisation of an image (or a folder: batch mode, CSV).

    camsim-localize image=suspect.jpg ckpt=outputs/artefacts/phase_b-<hash>/model.ckpt
    camsim-localize image=folder/ ckpt=... mode=reference reference=[512,768]
    camsim-localize image=authentic_photos/ ckpt=... calibrate_far=0.05   # -> calibration.json
    camsim-localize image=suspect.jpg ckpt=... decision_threshold=<calibrated>
    camsim-localize image=suspect.jpg model=shared-model   # a folder written by camsim-export
    camsim-localize image=suspect.jpg 'ckpt=[<recipe>/model.ckpt,<pixel>/model.ckpt]'   # two networks fused

model=DIR works wherever ckpt= does (checksums in its config.json are checked).

Patch size, 8-px alignment and (unless min_entropy=...) the entropy threshold come from
the checkpoint's training recipe. Graph mode runs at any photo size: above
max_graph_nodes decidable patches it solves a landmark graph and extends the cut.
The image-level threshold is uncalibrated unless decision_threshold is given.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from camsim.cli import hydra_app
from camsim.cli.export import run_with_model_dir

log = logging.getLogger("camsim")


@hydra_app("localize")
def _main(cfg: DictConfig) -> None:
    from camsim.config import to_plain
    from camsim.lit.phase_b import load_similarity
    from camsim.eval.networks import Networks
    from camsim.models.fusion import FittedFusion, check_fusion
    from camsim.localize.grid import PhotoError
    from camsim.localize.run import (check_calibrate_far, check_reference, localize_file, localize_folder,
                                     localizer_for, resolve_decision_threshold, timing_line)

    check_reference(cfg.reference)
    if cfg.eta is not None and not 0.0 < float(cfg.eta) < 1.0:
        raise ValueError(f"eta={cfg.eta}: a threshold in (0, 1) (null: the network's own)")
    if cfg.max_clipped is not None and not 0.0 <= float(cfg.max_clipped) <= 1.0:
        raise ValueError(f"max_clipped={cfg.max_clipped}: a share of a patch's pixels in [0, 1] (null: off)")
    image = Path(cfg.image)
    if not image.exists():
        raise FileNotFoundError(f"image not found: {image}")
    check_calibrate_far(cfg.calibrate_far, folder=image.is_dir())   # before the network loads
    rule = check_fusion(cfg.fusion)                                  # fit / an unknown rule: refused, one network too
    compiled = image.is_dir() if cfg.compile_scoring is None else bool(cfg.compile_scoring)  # compile pays per folder
    options = dict(batch=int(cfg.batch), compile_scoring=compiled, **to_plain(cfg.feature_pass))
    nets = Networks.load(cfg.ckpt) if isinstance(cfg.ckpt, ListConfig) or isinstance(rule, FittedFusion) else None
    sims = nets.sims if nets is not None else [load_similarity(cfg.ckpt)]
    loc = localizer_for(sims, fusion=nets.fusion(rule) if nets is not None else "logit", **options)
    if len(sims) > 1:
        log.info("%d networks, each pair's scores fused (fusion=%s)", len(sims), cfg.fusion)
    cfg.decision_threshold = resolve_decision_threshold(cfg.decision_threshold, loc, cfg)
    out_dir = Path(cfg.paths.output_dir)
    if image.is_dir():
        csv_path = localize_folder(loc, image, out_dir, cfg, int(cfg.max_pixels))
        log.info("batch results: %s", csv_path)
    else:
        save = True if cfg.save_scores is None else bool(cfg.save_scores)
        try:
            result, line = localize_file(loc, image, out_dir, cfg, int(cfg.max_pixels), save_scores=save)
        except PhotoError as err:  # the photo itself (too small, too flat), not a setting: name it
            raise PhotoError(f"{image}: {err}") from err
        log.info("%s", line)
        print(line)
        print(timing_line(result))
        log.info("%s", timing_line(result))
        log.info("outputs: %s", out_dir)


def main() -> None:
    """``camsim-localize [overrides]``; ``model=DIR`` (a camsim-export folder) becomes ``ckpt=DIR``."""
    run_with_model_dir(_main, group=None)


if __name__ == "__main__":
    main()
