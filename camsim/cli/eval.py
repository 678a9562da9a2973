"""camsim-eval: evaluate a trained similarity network.

usage: camsim-eval [task=auto|transfer|pairs|splicing] [ckpt=<Phase B checkpoint> | model=DIR] [key=value ...]

model=DIR: a folder written by camsim-export, used wherever ckpt= is (its checksums are checked).
  model=NAME stays the backbone config group when NAME is one of its options (write model=./NAME
  for a folder of that name).

task=auto (default) is transfer when ckpt=... is given, else pairs:
  transfer   the checkpoint on EVERY camera model of `data` (no split; known = trained on, from the
             checkpoint): pairs by category (same photo / other photos / other models, by make),
             image-level decisions, bootstrap intervals; transfer.md, metrics.json, scores.npz;
             ckpt=[a.ckpt,b.ckpt]: several networks, one fused score per pair (fusion=logit|mean;
             fusion=fit: weights per table relation fitted on these pairs -> fusion.json;
             fusion=<fusion.json>: those weights; one network takes fit / a fusion.json too:
             its logit reweighted per table relation)
  pairs      the evaluation pairs of this config's split (sets A / C), with the network trained
             for this config or the one given by ckpt=...
  splicing   the splicing-localisation benchmark: simulated splices (data=synth), real forgeries
             (splicing.real_dir=DIR: images/ + masks/<stem>_mask.png), authentic photos as controls
             (splicing.authentic_dir=DIR); thresholds calibrated to splicing.target_far on authentic
             images (simulated, or splicing.calibration_dir=DIR); ckpt=[a.ckpt,b.ckpt]: the networks
             localise as one (fusion=logit|mean|<fusion.json>)
main options:
  data=folder|dresden|vision|exif|cameras data.root=DIR   the photos (data.variants=[natWA]: VISION's WhatsApp copies)
  eval.eta=0.5   transfer.threshold=eta|best   transfer.image.aggregate=mean|median
  transfer.min_entropy=1.0 (default: the checkpoint's)   transfer.bootstrap.reps=500
  transfer.pairs.per_photo / per_photo_pair / photo_pairs_per_model / per_model_pair
examples:
  camsim-eval ckpt=outputs/artefacts/phase_b-<hash>/model.ckpt data=cameras
  camsim-eval ckpt=... data=dresden data.root=/data/dresden
  camsim-eval model=shared-model data=cameras   # a camsim-export folder
  camsim-eval 'ckpt=[<recipe>/model.ckpt,<pixel>/model.ckpt]' data=folder data.root=DIR   # two networks fused
  camsim-eval ckpt=... data=vision data.root=/data/VISION data.variants=[natWA]
  camsim-eval task=pairs ckpt=...   # the pairs of this config's split instead
  camsim-eval task=splicing
  camsim-eval task=splicing splicing.real_dir=../shared/data/splices splicing.authentic_dir=../shared/data/cameras
"""

from omegaconf import DictConfig

from camsim.cli import hydra_app
from camsim.cli.export import run_with_model_dir

TASKS = ("auto", "transfer", "pairs", "splicing")


def resolve_task(cfg: DictConfig) -> str:
    """The task to run: ``task``, with ``auto`` = ``transfer`` if ``ckpt`` is given, else ``pairs``."""
    if cfg.task not in TASKS:
        raise ValueError(f"camsim-eval: task={cfg.task!r} is not one of {TASKS}")
    if cfg.task == "auto":
        return "transfer" if cfg.get("ckpt") else "pairs"
    return str(cfg.task)


@hydra_app("eval")
def _main(cfg: DictConfig) -> None:
    task = resolve_task(cfg)
    cfg.task = task  # task=auto resolved: the W&B job type and the logged config name the task run
    if task == "transfer":
        from camsim.config import feature_layer
        from camsim.eval.metrics import flatten
        from camsim.eval.transfer import run_transfer
        from camsim.loggers import job_loggers, log_evaluation

        with job_loggers(cfg, feature_layer(cfg)) as loggers:
            metrics = run_transfer(cfg)
            log_evaluation(loggers, flatten(metrics), cfg.paths.output_dir)
    else:
        from camsim.pipeline import run

        run(cfg, job=task, train=False)


def main() -> None:
    """``camsim-eval [overrides]``; ``model=DIR`` (a camsim-export folder) becomes ``ckpt=DIR``."""
    run_with_model_dir(_main, group="model")


if __name__ == "__main__":
    main()
