"""camsim-run: the whole pipeline — data → Learning Phase A → Learning Phase B → evaluation → report.

usage: camsim-run [group=option ...] [key=value ...]      (-m: a sweep, one job per combination)

Writes report.md, metrics.json, the similarity matrix and ROC plots and run.json to its run dir
(outputs/<date>/<time>/); trained networks and caches go to outputs/artefacts/ and are reused.

main options:
  experiment=quick|paper|cameras   the recipe: sizes, epochs, optimisers (default quick: 2 CPU cores, minutes)
  data=synth|folder|exif|cameras   where images come from (data=folder data.root=/photos: root/<model>/*.jpg)
  split.a / split.b / split.c / split.known   camera-model sets: counts or lists of model names
  model=...  phase_b.feature_layer=...       Phase A backbone and the layer feeding Phase B
  trainer=cpu|gpu|ddp               where to train;  eval.eta=0.5|auto   the decision threshold
  debug=fast                        a seconds-long run of the chosen experiment, to check a config

examples:
  camsim-run                                          # the quick recipe on simulated cameras
  camsim-run debug=fast                               # check the pipeline in seconds
  camsim-run experiment=cameras                       # the real-photo demo (../shared/data/cameras)
  camsim-run experiment=paper trainer=gpu data=folder data.root=/data/cameras   # ≥ 65 camera models
  camsim-run -m +sweep=thresholds eval.eta=0.3,0.5,0.7
"""

from omegaconf import DictConfig

from camsim.cli import hydra_app


@hydra_app("config")
def main(cfg: DictConfig) -> None:
    from camsim.guard import check_run
    from camsim.pipeline import run

    check_run(cfg, upto="eval")
    run(cfg, job="run")


if __name__ == "__main__":
    main()
