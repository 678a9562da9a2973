"""Structured configs: the schema of every config node, registered in Hydra's ConfigStore.

Each YAML file of a group starts from its schema (``defaults: [/schema/<group>/<name>@_here_]``),
so Hydra rejects an unknown key or a wrong type at start, naming it. Fields typed ``Any``
hold values that are either a number or a list (e.g. ``split.a: 10`` or ``split.a: [m1, m2]``)
or ``_target_`` sub-configs (optimisers); :func:`camsim.config.checks.validate` checks those
by hand. The data's nodes (sources, split, patches, ``difficulty``) are
:mod:`camsim.config.schema_data`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from camsim.config.schema_data import (
    DifficultyConfig,
    DresdenDataConfig,
    ExifDataConfig,
    FolderDataConfig,
    PatchConfig,
    SplitConfig,
    SynthDataConfig,
    VisionDataConfig,
)

#: the localisation engine's modes (:mod:`camsim.localize.engine`; ``splicing.modes``, ``localize.mode``)
LOCALIZATION_MODES = ("graph", "reference")

# --------------------------------------------------------------------------- paths


@dataclass
class PathsConfig:
    root: str = "${oc.env:CAMSIM_ROOT,.}"
    #: run directory of this job (Hydra's), metrics/report/plots go here
    output_dir: str = "${hydra:runtime.output_dir}"
    #: shared cache of artefacts reused across runs and sweep jobs (rendered catalogues,
    #: patch sets, Phase A/B checkpoints, features)
    artefact_dir: str = "${paths.root}/outputs/artefacts"
    log_dir: str = "${paths.root}/outputs"


# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """The Phase A backbone (``camsim.models.backbone.Backbone``'s arguments; see its docstring
    and ``conf/model/*.yaml``). The defaults are the Backbone's."""

    _target_: str = "camsim.models.backbone.Backbone"
    #: 1: green-channel patches (the paper's); 3: RGB patches, cut at the same cells (the JPEG
    #: branch then reads their luma); the patch cache, evaluation and localisation follow it
    in_channels: int = 1
    #: null (no constrained layer) or {kernels, kernel_size, padding}
    constrained: Any = None
    #: [{out_channels, kernel_size, stride, padding, pool}, ...]
    blocks: Any = field(default_factory=list)
    fc: Any = field(default_factory=lambda: [200, 200])
    activation: str = "tanh"
    batch_norm: bool = True
    init: str = "xavier"
    fit_pools: bool = False
    #: null, or the JPEG branch's settings ({coefficients, half_range})
    jpeg: Any = None
    #: deprecated: the feature layer is Phase B's choice, ``phase_b.feature_layer``
    feature_layer: Optional[str] = None


# --------------------------------------------------------------------------- learning phases


@dataclass
class LoaderConfig:
    batch_size: int = 128
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False


@dataclass
class PhaseAConfig:
    """Learning Phase A: the camera-model classifier on set A (docs/method.md)."""

    max_epochs: int = 30
    optimizer: Any = field(default_factory=lambda: {
        "_target_": "torch.optim.SGD", "_partial_": True,
        "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4})
    scheduler: Any = field(default_factory=lambda: {
        "_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 3, "gamma": 0.5})
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    #: metric that picks the best checkpoint
    monitor: str = "phase_a/val/acc"
    #: channels_last memory format and torch.compile (speed only; results agree with eager)
    channels_last: bool = False
    compile: bool = False
    #: train the constrained layer and conv1 as one convolution on CPU (exact maths, no gradient
    #: through the constrained layer's output; GPUs and models without that pair train as they
    #: are). Speed only.
    compose_first_layers: bool = True
    #: in training on CPU, each conv block's batch norm and max pooling as one step (the same maths,
    #: one full-size pass instead of five; camsim.models.batch_norm_pool). Speed only.
    fuse_batch_norm_pool: bool = True
    #: resume an interrupted Phase A from its last checkpoint
    resume: bool = True
    #: null (off): Phase A keeps its best validation epoch (``monitor``). An epoch index k: from epoch
    #: k on, the uniform average of the weights (and batch-norm statistics) after every optimiser
    #: step; validation from epoch k on sees the average, and Phase A keeps the last epoch's — the
    #: whole average (weight averaging, SWA-like; docs/experiments.md, "Weight averaging in Phase A")
    average_from: Optional[int] = None


@dataclass
class FeaturePassConfig:
    """The frozen backbone's inference pass (``camsim.models.feature_pass.FeaturePass``): speed only."""

    #: NHWC convolutions (same maths, faster on CPU: docs/performance.md)
    channels_last: bool = True
    #: torch.compile with inductor freezing (batch norm folded into the convs): ~15 s to compile,
    #: pays off on large patch sets (paper recipe, 256 px) and on many localised images
    compile: bool = False


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning after Phase B's frozen head stage (Mayer & Stamm, TIFS 2019): patch
    pairs of B flow through the unfrozen backbone (camsim/lit/phase_b.py says how)."""

    enabled: bool = False
    #: null: the whole backbone (constrained layer included); else a stage or layer name of
    #: ``Backbone.layer_names`` (``fc_a1``, ``fc_a1.pre``, ``conv3`` …): it and every stage after it
    from_layer: Optional[str] = None
    max_epochs: int = 3
    #: patch pairs per epoch (redrawn per epoch with ``phase_b.resample_pairs``); validation: ``phase_b.val_pairs``
    train_pairs: int = 10000
    #: draw these pairs from set A's models too (their Phase A training images), as ``phase_b.with_a``
    with_a: bool = False
    #: the head's optimiser for these epochs; the backbone gets the same one at ``backbone_lr``
    optimizer: Any = field(default_factory=lambda: {
        "_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4, "betas": [0.9, 0.99], "eps": 1e-6})
    #: the unfrozen backbone's own (smaller) learning rate; null: the optimiser's
    backbone_lr: Optional[float] = 5e-5
    scheduler: Any = field(default_factory=lambda: {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
        "T_max": "${phase_b.finetune.max_epochs}"})
    loader: LoaderConfig = field(default_factory=lambda: LoaderConfig(batch_size=64))
    #: NHWC convolutions in the backbone while fine-tuning (speed only)
    channels_last: bool = True


@dataclass
class RecompressConfig:
    """Phase B's training patches re-saved at a second JPEG quality (issue 18): a real camera
    model saves its photos at several qualities, so two photos of one model often differ in
    their JPEG lattice. A share of B's training patches get a twin — the same pixels re-encoded
    as a greyscale JPEG at a quality drawn uniformly from ``quality`` — and pairs are drawn
    over patches and twins alike, for same-model and different-model pairs the same way."""

    #: fraction of training patches that get a twin (0: off, the recipe's default)
    share: float = 0.0
    #: [low, high] IJG quality of the twins, both inclusive, 1-100
    quality: list[int] = field(default_factory=lambda: [60, 95])


@dataclass
class PhaseBConfig:
    """Learning Phase B: the similarity network on set B, backbone frozen (docs/method.md)."""

    max_epochs: int = 60
    #: the backbone layer whose output is the feature f(X) (the paper: fc_a2 pre-activation);
    #: ``camsim.models.backbone.Backbone.layer_names`` lists them
    feature_layer: str = "fc_a2.pre"
    #: pairs per epoch, half same-model and half different-model (paper: 250k + 250k)
    train_pairs: int = 20000
    val_pairs: int = 4000
    #: also draw training pairs from set A's models (their Phase A training images): A's models
    #: are the known ones, so this trades nothing unseen away — C stays unseen — but leaves the
    #: paper's disjoint A / B (docs/method.md); validation stays on B (or ``split.b_val``)
    with_a: bool = False
    #: draw the pairs (training and validation) so that two photos sharing a JPEG luminance table
    #: says nothing of the label: a quarter each of same / different model × identical / different
    #: table (off: the natural pairs, where a simulated head sees P(same | identical table) ≈ 0.9
    #: and learns the table; docs/experiments.md, "Phase B pairs balanced by JPEG table")
    table_balance: bool = False
    #: draw fresh training pairs every epoch (from the seed sequence [seed, epoch]) instead of one fixed set
    resample_pairs: bool = False
    #: training patches re-saved at a second JPEG quality (off by default; RecompressConfig)
    recompress: RecompressConfig = field(default_factory=RecompressConfig)
    optimizer: Any = field(default_factory=lambda: {
        "_target_": "torch.optim.Adam", "_partial_": True,
        "lr": 5e-4, "betas": [0.9, 0.99], "eps": 1e-6})
    scheduler: Any = None
    loader: LoaderConfig = field(default_factory=lambda: LoaderConfig(batch_size=256))
    monitor: str = "phase_b/val/auc"
    #: the backbone is frozen: compute f(X) of every Phase B patch once and train the head on it
    cache_features: bool = True
    #: how those features are computed (also for evaluation and the splicing benchmark)
    feature_pass: FeaturePassConfig = field(default_factory=FeaturePassConfig)
    #: Phase B's own seed (head initialisation, dropout, pair draws); null: the job's ``seed``.
    #: ``-m phase_b.seed=1,2,3`` measures Phase B's spread on one Phase A network.
    seed: Optional[int] = None
    resume: bool = True
    #: then train end to end (off by default: ``conf/sweep/finetune.yaml`` compares the settings)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class EvalConfig:
    """Source-differentiation evaluation (docs/method.md, "Evaluation") and the Bondi baseline."""

    #: decision threshold η (C = 1 iff S > η), or "auto": chosen on Phase B validation pairs (the
    #: pairs evaluation; a transfer evaluation has none and takes the η recorded with the network)
    eta: Any = 0.5
    #: how "auto" chooses: max_acc (pair-weighted accuracy), eer, or balanced ((TPR + TNR) / 2)
    eta_rule: str = "max_acc"
    #: pairs per cell of the model × model matrix (every pair of models and every self pair)
    pairs_per_cell: int = 200
    #: the Self cells' pairs: any two test patches of the model (the paper's pairs: some are two
    #: patches of one photo, the report says how many), or two_photos: two patches of two photos
    self_pairs: str = "any"
    seed: int = 0
    baseline: bool = True
    sweep_etas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])


@dataclass
class SplicingConfig:
    """The splicing benchmark (``camsim-eval task=splicing``)."""

    #: simulated spliced images from two different evaluation cameras (known and unknown)
    num_images: int = 40
    image_size: list[int] = field(default_factory=lambda: [384, 512])
    #: share of unspliced controls (for the image-level detection AUC)
    control_fraction: float = 0.25
    seed: int = 0
    modes: list[str] = field(default_factory=lambda: ["graph", "reference"])
    #: patch stride (default half a patch: 50 % overlap)
    stride: Optional[int] = None
    #: patches at or below this entropy (nats) are undecidable; null: the network's training
    #: recipe (needed for networks fused with ``ckpt=[a, b]`` whose recipes differ)
    min_entropy: Optional[float] = None
    #: patches with more than this share of clipped (near-white) pixels are undecidable; null: off
    max_clipped: Optional[float] = None
    #: pictures of this many spliced images per mode in the report
    examples: int = 4
    #: real forgeries: <real_dir>/images/* with <real_dir>/masks/<stem>_mask.png
    real_dir: Optional[str] = None
    #: authentic photos (any layout, searched recursively), the real set's controls
    authentic_dir: Optional[str] = None
    #: image-level thresholds calibrated on authentic images to this false-alarm rate, per mode
    target_far: float = 0.05
    #: the calibration set: this many simulated unspliced images from the evaluation cameras
    #: (other scenes than the benchmark's; 0 = no calibration, the engine's defaults) …
    calibration_images: int = 20
    #: … or a folder of authentic images (any layout), when given
    calibration_dir: Optional[str] = None


# --------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    """``lightning.Trainer`` arguments (max_epochs comes from ``phase_a`` / ``phase_b``)."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    sync_batchnorm: bool = False
    use_distributed_sampler: bool = True
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    val_check_interval: Any = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int = 0
    deterministic: Any = False
    benchmark: Optional[bool] = None
    enable_model_summary: bool = False
    #: null, "simple" or "advanced": Lightning's time per hook (training step, optimiser step,
    #: loaders, validation), printed when a phase ends; ``debug=profile`` sets it
    profiler: Optional[str] = None
    default_root_dir: str = "${paths.output_dir}"


# --------------------------------------------------------------------------- top level


@dataclass
class CamsimConfig:
    """The whole run. Groups with a schema of their own are typed ``Any`` here."""

    task: str = "run"
    seed: int = 0
    #: tags for the logger (split composition, model, feature layer are added automatically)
    tags: list[str] = field(default_factory=list)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: Any = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    #: the ``model`` group's file merges onto these defaults (unknown keys fail at start)
    model: ModelConfig = field(default_factory=ModelConfig)
    similarity: Any = MISSING
    phase_a: PhaseAConfig = field(default_factory=PhaseAConfig)
    phase_b: PhaseBConfig = field(default_factory=PhaseBConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    splicing: SplicingConfig = field(default_factory=SplicingConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None
    callbacks: Any = None
    #: start a run estimated at over 12 h on a machine without a GPU (camsim.guard refuses it otherwise)
    allow_slow_cpu: bool = False
    #: checkpoint of a trained similarity network (camsim-eval / camsim-localize), or null
    #: to take the one the pipeline trains for this config; for camsim-eval's transfer and
    #: splicing tasks also a list of them, whose pair scores are fused (``fusion``;
    #: camsim.eval.networks.Networks)
    ckpt: Any = None
    #: with several networks (``ckpt=[a, b]``): how their scores of a pair make one
    #: (camsim.models.fusion): "logit" σ(mean logit), "mean" the mean of their S; "fit" (transfer
    #: task) fits weights per table relation on the pairs and writes fusion.json; a fusion.json applies them
    #: ("fit" and a fusion.json take one network too: its logit reweighted per table relation)
    fusion: str = "logit"


@dataclass
class LocalizeConfig:
    """``camsim-localize`` (conf/localize.yaml)."""

    image: str = MISSING
    #: a Phase B checkpoint, or a list of them whose pair scores are fused (``fusion``)
    ckpt: Any = MISSING
    #: with several networks: "logit" σ(mean logit), "mean" the mean of their S, or the fusion.json
    #: of camsim-eval's fusion=fit (its identical-table weights; one network's too) (camsim.models.fusion)
    fusion: str = "logit"
    mode: str = "graph"
    reference: Any = None
    stride: Optional[int] = None
    #: null: the checkpoint's training recipe (``patch_settings``), else 4.0
    min_entropy: Optional[float] = None
    #: patches with more than this share of clipped (near-white) pixels are undecidable; null: off
    max_clipped: Optional[float] = None
    #: reference mode's patch threshold; null: the network's (an exported folder's, a checkpoint's)
    eta: Optional[float] = None
    #: null: the uncalibrated default (graph 0.25, reference 1 - eta); calibrate_far sets one; a number,
    #: or the calibration.json a folder run with calibrate_far wrote (checked against this run's setting)
    decision_threshold: Any = None
    #: graph mode: "spectral" (1 - lambda2) or "modularity" (2Q) image score
    graph_method: str = "spectral"
    #: graph mode: patches solved exactly; above, this many landmark patches + Nystrom extension
    max_graph_nodes: int = 2048
    #: border patches aligned down to the 8-px grid (an uncovered margin < 8 px); false: dropped
    cover_border: bool = True
    #: scores.npy (float16 patch grid): null = for a single image yes, for a folder no
    save_scores: Optional[bool] = None
    #: overlay.png: a preview of at most this many pixels per side; 0 = the image's full resolution
    overlay_max_side: int = 2048
    #: batch mode on authentic images: print/write the threshold with this false-alarm rate
    calibrate_far: Optional[float] = None
    batch: int = 256
    feature_pass: FeaturePassConfig = field(default_factory=FeaturePassConfig)
    #: pair scoring by the head's compiled fused kernel (~3x faster after a one-off ~2-8 s compile);
    #: null: for a folder yes, for one image no
    compile_scoring: Optional[bool] = None
    max_pixels: int = 200_000_000
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class TransferPairsConfig:
    """Patch-level pairs of the transfer evaluation, sampled per stratum (photo, photo pair, model pair)."""

    #: pairs of two patches of one photo, per photo
    per_photo: int = 50
    #: pairs of patches of two photos of one model, per photo pair
    per_photo_pair: int = 20
    #: photo pairs per model at most (drawn with the seed), so a model with many photos does not swamp the figures
    photo_pairs_per_model: int = 30
    #: pairs of patches of two models, per model pair (a photo of each drawn uniformly, then a patch)
    per_model_pair: int = 100


@dataclass
class TransferImageConfig:
    """Image-level decisions: one per pair of photos (or of the two halves of one photo)."""

    #: patch pairs behind one decision
    patch_pairs: int = 64
    #: "mean" or "median" of those patch-pair scores
    aggregate: str = "mean"
    #: different-model photo pairs per model pair
    photo_pairs_per_model_pair: int = 4


@dataclass
class TransferBootstrapConfig:
    """Bootstrap intervals, resampling camera models and, within each, its photos."""

    reps: int = 500
    level: float = 0.95


@dataclass
class TransferConfig:
    """``camsim-eval task=transfer``: a Phase B checkpoint on every camera model of a source."""

    #: patches cut per photo (at most; fewer where the entropy filter drops cells)
    patches_per_image: int = 64
    #: entropy filter override; null: the checkpoint's patch settings (else ``patches.min_entropy``)
    min_entropy: Optional[float] = None
    #: "eta": the fixed threshold ``eval.eta`` (auto: the one recorded with the network); "best": per
    #: contrast, the threshold of highest balanced accuracy on the evaluated pairs themselves (an oracle)
    threshold: str = "eta"
    pairs: TransferPairsConfig = field(default_factory=TransferPairsConfig)
    image: TransferImageConfig = field(default_factory=TransferImageConfig)
    bootstrap: TransferBootstrapConfig = field(default_factory=TransferBootstrapConfig)
    #: makes from model names ("Make_Model": the part before the first "_"); false: makes unknown
    makes_from_names: bool = True
    #: JPEG-quality band rows: same-model categories also scored among photos at IJG-equivalent
    #: quality ≥ this ("fine": the JPEG lattice nearly gone) and below it; null: no band rows
    fine_jpeg_quality: Optional[int] = 97
    #: with the JPEG-quality rows, two photos of one model also scored with both photos of every
    #: pair (positives and negatives) at least this many IJG quality steps apart; null: no such row
    far_jpeg_gap: Optional[int] = 4
    seed: int = 0


@dataclass
class EvalJobConfig(CamsimConfig):
    """``camsim-eval`` (conf/eval.yaml): the whole run plus the transfer evaluation's settings."""

    transfer: TransferConfig = field(default_factory=TransferConfig)


def eval_job_schema() -> DictConfig:
    """:class:`EvalJobConfig` with every field it inherits left unset (``???``), so conf/eval.yaml
    can merge it *after* ``config``: unset values keep what the recipe composed, and the
    result is typed :class:`EvalJobConfig` (its ``transfer`` node checked like any other)."""
    node = OmegaConf.structured(EvalJobConfig)
    for key in list(node.keys()):
        if key != "transfer":
            node[key] = MISSING
    return node


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="camsim_schema", node=CamsimConfig)
    cs.store(name="localize_schema", node=LocalizeConfig)
    cs.store(group="schema/data", name="synth", node=SynthDataConfig)
    cs.store(group="schema/data", name="folder", node=FolderDataConfig)
    cs.store(group="schema/data", name="exif", node=ExifDataConfig)
    cs.store(group="schema/data", name="dresden", node=DresdenDataConfig)
    cs.store(group="schema/data", name="vision", node=VisionDataConfig)
    cs.store(name="camsim_eval_schema", node=eval_job_schema())
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)


register_configs()
