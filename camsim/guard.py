"""Checks before a long job starts: a rough time estimate, and a refusal to start days of
CPU work without a word (``experiment=paper`` on a laptop).

The estimate (:func:`estimate_seconds`) counts the patch passes of the learning phases —
models × patches per model × epochs, from the config — and multiplies them by a per-patch
cost measured once on the quick recipe (:data:`REF_SECONDS_PER_PATCH`: Phase A of the quick
main job, 2 CPU cores, README "Results") and scaled by the backbone's multiply-adds per
patch relative to that reference (:func:`backbone_macs`) and by the number of cores. It is
meant to tell minutes from hours from weeks, nothing finer: caches already built (patch
sets, a trained Phase A) make a run shorter, data work (rendering, patch cutting) is not
counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig

from camsim.progress import default_workers

log = logging.getLogger("camsim")

#: seconds per training patch (forward + backward) of the reference backbone on 2 CPU cores:
#: quick recipe Phase A, 10 models × 1,700 patches × 10 epochs in 119 s (README, "Results")
REF_SECONDS_PER_PATCH = 119.0 / (10 * 1700 * 10)
#: the cores of that measurement
REF_CORES = 2
#: a forward-only pass (validation, feature extraction) costs about a third of a training step
FORWARD_SHARE = 1 / 3
#: a Phase B training pair on cached features costs about this share of a Phase A patch
#: (measured: the quick recipe's 20 epochs × 20,000 pairs, 35 s with feature extraction)
PAIR_SHARE = 0.02
#: refuse to start without a GPU above this estimate (seconds) unless the user confirms
REFUSE_ABOVE_S = 12 * 3600
#: the config key that confirms a long CPU run (the message names the exact override)
ALLOW_KEY = "allow_slow_cpu"


class SlowRunRefused(ValueError):
    """A job that would run for too long on this machine's CPU, not confirmed by the user."""


@dataclass
class Estimate:
    """Rough seconds of the learning phases on this machine's CPU (see module docstring)."""

    phase_a: float
    phase_b: float
    detail: str

    @property
    def total(self) -> float:
        return self.phase_a + self.phase_b


def human_duration(seconds: float) -> str:
    """``"3 min"``, ``"5.2 h"``, ``"31 days"``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{round(seconds / 86400)} days"


def _conv_out(size: float, kernel: int, stride: int, padding: Any) -> float:
    if padding == "same":
        return math.ceil(size / stride)
    pad = 0 if padding in (None, "valid") else int(padding)
    return max(1.0, math.floor((size + 2 * pad - kernel) / stride) + 1)


def backbone_macs(model: Any, patch: int) -> float:
    """Approximate multiply-adds of one forward pass of a ``model`` config (the conv tower's
    convolutions and pools; the JPEG branch and the fully connected layers are small)."""
    size, cin, macs = float(patch), int(model.get("in_channels", 1) or 1), 0.0
    con = model.get("constrained")
    if con:
        k, n = int(con.get("kernel_size", 5)), int(con.get("kernels", 3))
        size = _conv_out(size, k, 1, con.get("padding", "valid"))
        macs += size * size * k * k * cin * n
        cin = n
    for block in model.get("blocks") or []:
        k, cout, stride = int(block.get("kernel_size", 3)), int(block["out_channels"]), int(block.get("stride", 1))
        size = _conv_out(size, k, stride, block.get("padding", "same"))
        macs += size * size * k * k * cin * cout
        cin = cout
        pool = block.get("pool")
        if pool:
            size = _conv_out(size, int(pool.get("kernel", 2)), int(pool.get("stride", 2)), pool.get("padding", 0))
    return max(macs, 1.0)


#: multiply-adds of mislnet_small (conf/model/mislnet_small.yaml) on a 64-px patch
_REF_MODEL = {"in_channels": 1, "constrained": {"kernels": 3, "kernel_size": 5, "padding": "valid"}, "blocks": [
    {"out_channels": 32, "kernel_size": 7, "stride": 2, "padding": "same", "pool": {"kernel": 3, "stride": 2, "padding": 0}},
    {"out_channels": 32, "kernel_size": 5, "stride": 1, "padding": "same", "pool": {"kernel": 3, "stride": 2, "padding": 0}},
    {"out_channels": 32, "kernel_size": 5, "stride": 1, "padding": "same", "pool": {"kernel": 3, "stride": 2, "padding": 0}},
    {"out_channels": 128, "kernel_size": 1, "stride": 1, "padding": "same", "pool": {"kernel": 3, "stride": 2, "padding": 0}}]}
REF_MACS = backbone_macs(_REF_MODEL, 64)


def _count(value: Any, fallback: int) -> int:
    if isinstance(value, (list, ListConfig)):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return fallback


def _cores() -> int:
    return default_workers()


def estimate_seconds(cfg: DictConfig, upto: str = "eval", cores: int | None = None) -> Estimate:
    """Rough CPU seconds of Learning Phases A and B for ``cfg`` (module docstring)."""
    sp, n = cfg.split, cfg.patches.per_model
    n_b, n_c = _count(sp.b, 1), _count(sp.c, 1)
    total_models = int(cfg.data.get("num_models", 0) or 0) if "num_models" in cfg.data else 0
    n_a = _count(sp.a, max(total_models - n_b - n_c, n_b))  # a=rest: the models left over
    cores = cores or _cores()
    per_patch = REF_SECONDS_PER_PATCH * backbone_macs(cfg.model, int(cfg.patches.size)) / REF_MACS
    per_patch *= REF_CORES / max(1, min(cores, 16))  # conv throughput grows with cores, up to a point
    epochs_a, epochs_b = int(cfg.phase_a.max_epochs), int(cfg.phase_b.max_epochs)
    a_passes = n_a * epochs_a * (int(n.train_a) + FORWARD_SHARE * int(n.val_a)) + n_a * FORWARD_SHARE * int(n.test)
    phase_a = a_passes * per_patch
    phase_b = 0.0
    if upto != "phase_a":
        features = n_b * (int(n.train_b) + int(n.val_b)) * FORWARD_SHARE * per_patch
        pairs = epochs_b * (int(cfg.phase_b.train_pairs) + FORWARD_SHARE * int(cfg.phase_b.val_pairs))
        phase_b = features + pairs * PAIR_SHARE * per_patch
        ft = cfg.phase_b.get("finetune")
        if ft is not None and ft.get("enabled"):  # both patches of a pair through the backbone (whole: an upper bound)
            ft_pairs = int(ft.max_epochs) * (int(ft.train_pairs) + FORWARD_SHARE * int(cfg.phase_b.val_pairs))
            phase_b += 2 * ft_pairs * per_patch
    ft_note = ", fine-tuned end to end" if cfg.phase_b.get("finetune") is not None and \
        cfg.phase_b.finetune.get("enabled") and upto != "phase_a" else ""
    detail = (f"Phase A: {n_a} models × {int(n.train_a):,} patches × {epochs_a} epochs, "
              f"Phase B: {int(cfg.phase_b.train_pairs):,} pairs × {epochs_b} epochs{ft_note}, "
              f"{int(cfg.patches.size)}-px patches, {cores} CPU core(s)")
    return Estimate(phase_a, phase_b, detail)


def gpu_available() -> bool:
    """A CUDA (or Apple MPS) device torch can use."""
    import torch

    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 units (AVX512-BF16 or AMX): where it has none, oneDNN emulates bf16
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` says yes on any AVX-512 CPU) and
    ``trainer.precision=bf16-mixed`` runs many times slower than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def trains_on_cpu(cfg: DictConfig, has_gpu: bool) -> bool:
    acc = str(cfg.trainer.get("accelerator", "auto")).lower()
    return acc == "cpu" or (acc == "auto" and not has_gpu)


def check_run(cfg: DictConfig, upto: str = "eval", has_gpu: bool | None = None) -> Estimate | None:
    """Before a job that trains: log the estimate; refuse a job that would train for more than
    :data:`REFUSE_ABOVE_S` on the CPU unless ``allow_slow_cpu=true``; refuse ``trainer=gpu``
    on a machine without a GPU. Raises :class:`SlowRunRefused` / ``ValueError`` with one line."""
    if upto not in ("phase_a", "phase_b", "eval"):
        return None
    has_gpu = gpu_available() if has_gpu is None else has_gpu
    acc = str(cfg.trainer.get("accelerator", "auto")).lower()
    if acc in ("gpu", "cuda", "mps") and not has_gpu:
        raise ValueError(f"trainer.accelerator={acc} but torch sees no GPU on this machine (CUDA not available): "
                         "run with trainer=cpu (or trainer=default), or install the CUDA build of torch "
                         "(README, \"CPU or GPU torch\")")
    if not trains_on_cpu(cfg, has_gpu):
        return None
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("bf16") and not cpu_has_bf16():
        log.warning("trainer.precision=%s on a CPU without bf16 units (lscpu flags avx512_bf16 / amx_bf16 absent): "
                    "expect it several times slower than 32-true (README, \"CPU or GPU torch\")", precision)
    est = estimate_seconds(cfg, upto)
    if est.total > REFUSE_ABOVE_S and not bool(cfg.get(ALLOW_KEY, False)):
        override = f"{ALLOW_KEY}=true" if ALLOW_KEY in cfg else f"+{ALLOW_KEY}=true"
        where = "no GPU found" if not has_gpu else "trainer.accelerator=cpu"
        raise SlowRunRefused(
            f"this run would train for about {human_duration(est.total)} on this CPU ({where}; {est.detail}). "
            f"Run it on a GPU (trainer=gpu), shrink it (debug=fast, fewer patches or epochs), "
            f"or start it anyway with {override} (also the way to rerun a job whose networks are already "
            f"trained under paths.artefact_dir: they are reused, nothing trains)")
    log.info("estimated training time on this CPU where no trained network is reused: about %s (%s; rough, "
             "see camsim/guard.py)",
             human_duration(est.total), est.detail)
    return est


__all__ = ["Estimate", "SlowRunRefused", "estimate_seconds", "check_run", "backbone_macs", "human_duration",
           "gpu_available", "cpu_has_bf16", "ALLOW_KEY"]
