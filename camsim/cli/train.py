"""camsim-train: train Learning Phase A (task=phase_a) or both phases (task=phase_b, default).

usage: camsim-train [task=phase_a|phase_b] [group=option ...] [key=value ...]

The trained networks are artefacts under outputs/artefacts/phase_a-<hash>/ and phase_b-<hash>/
(model.ckpt, metrics.json); camsim-run and camsim-eval with the same settings reuse them.

main options:
  task=phase_a|phase_b        train only the camera-model classifier, or both phases (default)
  experiment=quick|paper|cameras, data=..., split.*, model=..., trainer=cpu|gpu|ddp (as camsim-run)
  phase_a.max_epochs=N, phase_b.max_epochs=N, phase_a.resume=false (start over instead of resuming)

examples:
  camsim-train task=phase_a
  camsim-train experiment=cameras
  camsim-train experiment=paper trainer=ddp trainer.devices=4 data=folder data.root=/data/cameras
"""

from omegaconf import DictConfig

from camsim.cli import hydra_app

TASKS = ("phase_a", "phase_b")


@hydra_app("train")
def main(cfg: DictConfig) -> None:
    from camsim.guard import check_run
    from camsim.pipeline import run

    if cfg.task not in TASKS:
        raise ValueError(f"camsim-train: task={cfg.task!r} is not one of {TASKS}")
    check_run(cfg, upto=cfg.task)
    run(cfg, job=cfg.task)


if __name__ == "__main__":
    main()
