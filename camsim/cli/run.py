"""camsim-run: the whole pipeline — data → Learning Phase A → Learning Phase B → evaluation → report."""

from omegaconf import DictConfig

from camsim.cli import hydra_app


@hydra_app("config")
def main(cfg: DictConfig) -> None:
    from camsim.pipeline import run

    run(cfg, upto="eval")


if __name__ == "__main__":
    main()
