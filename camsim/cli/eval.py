"""camsim-eval: evaluate a trained similarity network.

    camsim-eval                          # source differentiation (task=pairs) with the models trained for this config
    camsim-eval ckpt=path/to/model.ckpt  # ... with a given similarity checkpoint
    camsim-eval task=splicing            # the splicing-localisation benchmark
"""

from omegaconf import DictConfig

from camsim.cli import hydra_app

TASKS = ("pairs", "splicing")


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    if cfg.task not in TASKS:
        raise ValueError(f"camsim-eval: task={cfg.task!r} is not one of {TASKS}")
    if cfg.task == "pairs":
        from camsim.pipeline import run

        run(cfg, upto="eval", train=False)
    else:
        from camsim.localize.benchmark import run_splicing

        run_splicing(cfg)


if __name__ == "__main__":
    main()
