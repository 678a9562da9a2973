"""camsim-train: train Learning Phase A (task=phase_a) or both phases (task=phase_b, default)."""

from omegaconf import DictConfig

from camsim.cli import hydra_app

TASKS = ("phase_a", "phase_b")


@hydra_app("train")
def main(cfg: DictConfig) -> None:
    from camsim.pipeline import run

    if cfg.task not in TASKS:
        raise ValueError(f"camsim-train: task={cfg.task!r} is not one of {TASKS}")
    run(cfg, upto=cfg.task)


if __name__ == "__main__":
    main()
