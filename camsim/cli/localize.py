"""camsim-localize: splicing localisation of an image (or a folder: batch mode, CSV).

    camsim-localize image=suspect.jpg ckpt=outputs/artefacts/phase_b-<hash>/model.ckpt
    camsim-localize image=folder/ ckpt=... mode=reference reference=[512,768]
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from camsim.cli import hydra_app

log = logging.getLogger("camsim")


@hydra_app("localize")
def main(cfg: DictConfig) -> None:
    from camsim.config import to_plain
    from camsim.lit.phase_b import load_similarity
    from camsim.localize.run import Localizer, check_reference, localize_file, localize_folder

    check_reference(cfg.reference)
    image = Path(cfg.image)
    if not image.exists():
        raise FileNotFoundError(f"image not found: {image}")
    loc = Localizer(load_similarity(cfg.ckpt), batch=int(cfg.batch), **to_plain(cfg.feature_pass))
    out_dir = Path(cfg.paths.output_dir)
    if image.is_dir():
        csv_path = localize_folder(loc, image, out_dir, cfg, int(cfg.max_pixels))
        log.info("batch results: %s", csv_path)
    else:
        _, line = localize_file(loc, image, out_dir, cfg, int(cfg.max_pixels))
        log.info("%s", line)
        print(line)
        log.info("outputs: %s", out_dir)


if __name__ == "__main__":
    main()
