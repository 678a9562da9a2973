"""``camsim-export``: a trained similarity network as a portable, self-describing folder.

:func:`export_network` writes ``model.safetensors``, ``config.json`` (read back by
:mod:`camsim.models.portable`) and ``README.md``, the model card: intended use and limits, the
training data, and the evaluation figures with their protocol — Phase B validation from
``metrics.json`` beside the checkpoint, a pairs evaluation and a transfer evaluation from the
``metrics.json`` of ``camsim-eval`` runs given as ``metrics=`` — or "not measured".
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file

import camsim
from camsim.artefacts import _TMP_RE, _host, _is_stale, _pid_alive, atomic_dir, atomic_write_json, content_hash, \
    honour_umask
from camsim.config import to_plain
from camsim.eval.metrics import flatten
from camsim.eval.report import SCENARIO_ROWS, md_table
from camsim.lit.phase_b import ForensicSimilarity, load_similarity
from camsim.models.portable import CARD, CONFIG, FORMAT, FORMAT_VERSION, WEIGHTS, PortableSimilarity, check_onnx, \
    export_onnx, file_sha256, load_state, save_weights, weights_file

log = logging.getLogger("camsim")

#: the loading snippet of the model card and of README "Share a trained network" (tests/test_export.py
#: runs the README's copy and checks that the two agree); MODEL_DIR, PHOTO_1, PHOTO_2 are placeholders
SNIPPET = '''\
from camsim.data.io import read_green  # camsim's decoding: the green channel as stored
from camsim.data.patches import patch_entropy
from camsim.models.portable import load_exported  # torch + safetensors: no Lightning, no Hydra

net = load_exported("MODEL_DIR")  # checks the weights against config.json's sha256
p = net.patch_size
green_1, green_2 = read_green("PHOTO_1"), read_green("PHOTO_2")
a, b = green_1[None, :p, :p], green_2[None, :p, :p]  # one patch each, on the 8-px JPEG grid
if min(patch_entropy(a)[0], patch_entropy(b)[0]) <= net.min_entropy:
    print("a patch is too flat to decide (entropy <= net.min_entropy nats): take another")
s = net.score(a, b)  # S in [0, 1]
print(f"S = {float(s[0]):.4f}:", "same camera model" if s[0] > net.eta else "different camera models")
'''


def snippet(channels: int) -> str:
    """:data:`SNIPPET` for a network taking ``channels`` input channels (3: RGB patches ``[N, 3, P, P]``,
    whose entropy filter reads their green plane)."""
    if channels == 1:
        return SNIPPET
    return (SNIPPET.replace("import read_green  # camsim's decoding: the green channel as stored",
                            "import read_rgb  # camsim's decoding: RGB as stored")
            .replace('green_1, green_2 = read_green("PHOTO_1"), read_green("PHOTO_2")',
                     'rgb_1, rgb_2 = (read_rgb(f).transpose(2, 0, 1) for f in ("PHOTO_1", "PHOTO_2"))')
            .replace("green_1[None, :p, :p], green_2[None, :p, :p]", "rgb_1[None, :, :p, :p], rgb_2[None, :, :p, :p]")
            .replace("patch_entropy(a)[0], patch_entropy(b)[0]", "patch_entropy(a[:, 1])[0], patch_entropy(b[:, 1])[0]"))


# ----------------------------------------------------------------------------- config.json


def eta_record(hparams: Mapping[str, Any], eta: float | None = None) -> dict:
    """η of the exported network — ``eta`` (the export's option), else the checkpoint's
    (``hparams.eta``: the threshold its training accuracies were taken at), else the default 0.5 —
    and which."""
    training = {"training": float(hparams.get("eta") or 0.5)}  # where Phase B's accuracies were taken
    if eta is not None:
        if not 0.0 < float(eta) < 1.0:
            raise ValueError(f"eta={eta}: a threshold in (0, 1) (null: the checkpoint's)")
        return {"value": float(eta), "source": "export option eta", **training}
    if hparams.get("eta") is not None:
        return {"value": float(hparams["eta"]), "source": "checkpoint", **training}
    return {"value": 0.5, "source": "default (the checkpoint records none)", **training}


def export_config(sim: ForensicSimilarity, ckpt: Path, files: Mapping[str, dict], eta: float | None = None) -> dict:
    """``config.json`` of the exported network (the layout :func:`camsim.models.portable.read_config` reads)."""
    hp = sim.hparams
    backbone = to_plain(hp.phase_a["backbone"])
    training = to_plain(hp.get("training")) or {}
    patches = sim.patch_settings or {}
    raw = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.is_file() else {}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "architecture": {"backbone": backbone, "class_names": list(hp.phase_a["class_names"]),
                         "patch_size": sim.patch_size, "head": to_plain(hp.head), "feature_layer": sim.feature_layer},
        "eta": eta_record(hp, eta),
        "input": {"channel": "green" if sim.backbone.in_channels == 1 else "rgb", "dtype": "uint8", "range": [0, 255],
                  "shape": ["N", sim.backbone.in_channels, sim.patch_size, sim.patch_size],
                  "align": patches.get("align"), "min_entropy": patches.get("min_entropy"),
                  "jpeg_branch": backbone.get("jpeg")},
        "training": {**training, "sets": {**training.get("sets", {}), **sim.training_sets}},
        "training_data_fingerprint": None if sim.data_fingerprint is None else content_hash(sim.data_fingerprint),
        "finetune": to_plain(hp.get("finetune")),
        "versions": {"camsim": camsim.__version__, "python": platform.python_version(), "torch": torch.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__,
                     "lightning (trained with)": raw.get("pytorch-lightning_version")},
        "source": {"checkpoint": ckpt.name, "sha256": file_sha256(ckpt) if ckpt.is_file() else None},
        "files": dict(files),
    }


# ----------------------------------------------------------------------------- figures


def read_metrics(paths: Sequence[Path], ckpt: Path) -> dict[str, list[tuple[Path, dict]]]:
    """Evaluation figures of the network by kind: ``validation`` (Phase B's ``metrics.json`` beside
    the checkpoint), ``pairs`` (a ``camsim-eval`` pairs run: an ``eval`` section), ``transfer``.
    ``paths``: metrics.json files or run folders holding one; a missing or unreadable one is an error."""
    found: dict[str, list[tuple[Path, dict]]] = {"validation": [], "pairs": [], "transfer": []}
    beside = ckpt.parent / "metrics.json" if ckpt.is_file() else None
    given = [p / "metrics.json" if p.is_dir() else p for p in paths]
    for path in ([beside] if beside is not None and beside.is_file() else []) + given:
        if not path.is_file():
            raise FileNotFoundError(f"metrics: {path} not found (give metrics.json files or the run folders holding them)")
        try:
            m = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"metrics: {path} is not valid JSON ({err})") from err
        if isinstance(m.get("transfer"), Mapping):
            found["transfer"].append((path, m["transfer"]))
        if isinstance(m.get("eval"), Mapping):
            found["pairs"].append((path, m))
        if any(str(k).startswith("phase_b/val/") for k in m):
            found["validation"].append((path, m))
        if path != beside and not any(path == p for v in found.values() for p, _ in v):
            raise ValueError(f"metrics: {path} holds no evaluation of a similarity network "
                             "(expected camsim-eval's metrics.json: an 'eval' or 'transfer' section)")
    return found


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * float(v):.1f} %"


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.3f}"


def _ci(fig: Any) -> str:
    if not isinstance(fig, Mapping):
        return _num(fig)
    lo, hi = fig.get("lo"), fig.get("hi")
    return _num(fig.get("value")) + ("" if lo is None or hi is None else f" [{_num(lo)}, {_num(hi)}]")


def validation_section(found: list[tuple[Path, dict]], training_eta: float = 0.5) -> list[str]:
    """Phase B's validation figures; its accuracy was taken at ``training_eta`` (the checkpoint's
    ``hparams.eta``), which need not be the η this export decides at."""
    lines = ["### Phase B validation (during training)", ""]
    if not found:
        return lines + ["Not measured (no metrics.json beside the checkpoint).", ""]
    path, m = found[0]
    epoch = m.get("best_epoch")
    which = (f"the figures of the kept epoch, epoch {int(epoch)} (counted from 0): the one with the best validation "
             "figure, whose weights are exported" if isinstance(epoch, (int, float)) and not isinstance(epoch, bool)
             else "the last training epoch's figures (the exported weights are the epoch with the best validation "
             "figure, which need not be the last)")
    return lines + [f"From `{path.name}` beside the checkpoint: {which}. Protocol: patch pairs from the "
                    "validation photos of the set-B models (the held-out `b_val` models where the training record "
                    "lists them), half of them same-model; accuracy at the η training took accuracies at, "
                    f"{training_eta:g}.", "",
                    md_table(["figure", "value"], [[f"accuracy at η = {training_eta:g}", _pct(m.get("phase_b/val/acc"))],
                                                   ["ROC AUC", _num(m.get("phase_b/val/auc"))],
                                                   ["loss", _num(m.get("phase_b/val/loss"))]]), ""]


def pairs_section(found: list[tuple[Path, dict]]) -> list[str]:
    lines = ["### Source differentiation (camsim-eval task=pairs)", ""]
    if not found:
        return lines + ["Not measured (give the run's metrics.json with metrics=...).", ""]
    for path, m in found:
        systems = [("proposed", flatten(m["eval"]))] + ([("baseline (Bray–Curtis)", flatten(m["baseline"]))]
                                                         if isinstance(m.get("baseline"), Mapping) else [])
        ev = systems[0][1]
        rows = [[label, str(ev.get(n_key, "–")), *[_pct(f.get(f"acc/{key}")) for _, f in systems]]
                for key, label, n_key in SCENARIO_ROWS]
        lines += [f"From `{path}`. Protocol (docs/method.md, Mayer & Stamm 2018): patch pairs of the test photos; "
                  "*known* = camera models of set A (seen in Phase A), *unknown* = set C (never trained on); "
                  f"\"same camera model\" iff S > η = {_num(ev.get('eta'))}; the baseline thresholds the "
                  "Bray–Curtis similarity of the Phase A classifier's outputs at the same false-alarm rate.", "",
                  md_table(["accuracy", "pairs", *[s for s, _ in systems]], rows), "",
                  f"ROC AUC {_num(ev.get('auc'))}, EER {_pct(ev.get('eer'))}, false alarms {_pct(ev.get('far'))}, "
                  f"false rejections {_pct(ev.get('frr'))} at η.", ""]
    return lines


def transfer_section(found: list[tuple[Path, dict]]) -> list[str]:
    lines = ["### Transfer to other photos and cameras (camsim-eval task=transfer)", ""]
    if not found:
        return lines + ["Not measured (give a transfer run's metrics.json with metrics=...).", ""]
    for path, t in found:
        best = t.get("threshold") == "best"
        rule = ("each row at its own threshold, the one that maximises its balanced accuracy on these very pairs "
                "(transfer.threshold=best: an oracle, optimistic)" if best else f"η = {_num(t.get('eta'))}")
        lines += [f"From `{path}` (network `{t.get('checkpoint', '?')}`): source `{t.get('source', '?')}`, "
                  f"{rule}.", "",
                  "Protocol:", "", *[f"- {p}" for p in t.get("protocol") or []], ""]
        rows = [[level, key, t[level][key].get("n_pos", "–"), t[level][key].get("n_neg", "–"),
                 _ci(t[level][key].get("auc")), *([_num(t[level][key].get("eta"))] if best else []),
                 _ci(t[level][key].get("tpr")), _ci(t[level][key].get("tnr")), _ci(t[level][key].get("eer"))]
                for level in ("patch", "image") if isinstance(t.get(level), Mapping) for key in t[level]]
        at = "at the row's threshold" if best else "at η"
        lines += [md_table(["level", "same-model pairs vs different", "n same", "n different", "ROC AUC [95 % CI]",
                            *(["threshold (oracle)"] if best else []), f"TPR {at}", f"TNR {at}", "EER"], rows,
                           align="llrrr" + ("r" if best else "") + "rrr"), ""]
    return lines


def other_networks(found: Mapping[str, list], sha256: str | None, weights_sha256: str | None = None
                   ) -> list[tuple[Path, str]]:
    """Given evaluations that name the network they scored (a transfer run's ``checkpoint``, a
    pairs run's ``run.json``: ``eval_checkpoint``; in older ones, written only with ``ckpt=``, the
    network the job trained or reused: ``finetune``'s artefact, else ``phase_b``'s — with a
    fine-tuned network ``phase_b`` may be its frozen head stage) where that is
    not the exported network: ``(metrics file, the network it names)``. A checkpoint is compared by
    its sha256 with ``sha256`` (the exported checkpoint's); an exported folder or its weights file
    with ``weights_sha256`` (the weights this export writes); several networks fused never match."""
    named = [(path, t.get("checkpoint")) for path, t in found.get("transfer", [])]
    for path, _ in found.get("pairs", []):
        try:
            run = json.loads((path.parent / "run.json").read_text())
        except (OSError, ValueError):
            continue  # none recorded
        own = (run.get("finetune") or {}).get("artefact") or (run.get("phase_b") or {}).get("artefact")
        named.append((path, run.get("eval_checkpoint") or (str(Path(own) / "model.ckpt") if own else None)))
    out = []
    for path, ckpt in named:
        if not isinstance(ckpt, str) or not ckpt:
            continue
        file = weights_file(ckpt) if " + " not in ckpt else None
        want = weights_sha256 if file is not None and file.suffix == ".safetensors" else sha256
        if file is None or want is None or not file.is_file() or file_sha256(file) != want:
            out.append((path, ckpt))
    return out


def evaluated_etas(found: Mapping[str, list]) -> list[tuple[Path, float]]:
    """The η each given evaluation (pairs, transfer) decided at."""
    out = [(path, m["eval"].get("eta")) for path, m in found.get("pairs", [])]
    out += [(path, t.get("eta")) for path, t in found.get("transfer", [])]
    return [(path, float(v)) for path, v in out if isinstance(v, (int, float))]


def with_a_note(sets: Mapping[str, Any], finetune: Mapping[str, Any] | None) -> str:
    """Which training pairs also came from set A's models: the head's (``phase_b.with_a``, the
    record's ``b_with_a``), the fine-tuning epochs' (``phase_b.finetune.with_a``: ``b_finetune_with_a``,
    and ``with_a`` in the ``finetune`` record). Fine-tuned checkpoints saved before the two were
    recorded apart set ``b_with_a`` for either: the head's is then unknown."""
    ft = finetune is not None and bool(finetune.get("with_a") or sets.get("b_finetune_with_a"))
    head = bool(sets.get("b_with_a"))
    if not ft:
        return "" if not head else ("; its training pairs also from set A's models (`phase_b.with_a`)" if finetune is None
                                    else "; the head's training pairs also from set A's models (`phase_b.with_a`), "
                                    "the fine-tuning epochs' from set B's only")
    if "b_finetune_with_a" not in sets:
        return ("; the fine-tuning epochs' training pairs also from set A's models (`phase_b.finetune.with_a`); "
                "whether the head's were too (`phase_b.with_a`) is not recorded")
    return ("; the head's and the fine-tuning epochs' training pairs also from set A's models (`phase_b.with_a`, "
            "`phase_b.finetune.with_a`)" if head else "; the fine-tuning epochs' training pairs also from set A's "
            "models (`phase_b.finetune.with_a`), the head's from set B's only")


def model_card(cfg: Mapping[str, Any], found: Mapping[str, list], name: str) -> str:
    """``README.md`` of an exported network (the model card)."""
    arch, tr, eta = cfg["architecture"], cfg["training"], cfg["eta"]
    sets = tr.get("sets") or {}
    head = arch["head"]
    fp = tr.get("data")
    lines = [
        f"# {name}: forensic camera-model similarity network (camsim)", "",
        "Given two image patches, the network gives S in [0, 1]: the similarity of their camera models' traces "
        "(Mayer & Stamm, \"Learned forensic source similarity for unknown camera models\", ICASSP 2018). "
        f"The decision is \"same camera model\" iff S > η = {eta['value']:g} (η from the {eta['source']}).", "",
        "## Intended use", "",
        "- Deciding whether two patches come from the same camera model, including models the network never saw.",
        "- Splicing localisation (`camsim-localize model=<this folder> image=...`): regions whose patches do not "
        "match the rest of the image.",
        "- A forensic *indication* for an analyst, with the figures below as its known error rates; not proof, and "
        "not a device identifier (it tells camera models apart, not two devices of one model).", "",
        "## Limits", "",
        f"- Input: {'the green channel' if cfg['input']['channel'] == 'green' else 'the RGB channels'} of the image "
        "as stored (uint8, no EXIF rotation, no resizing), "
        f"{arch['patch_size']} x {arch['patch_size']} patches"
        + (f" on the {cfg['input']['align']}-px JPEG grid" if cfg["input"].get("align") else "")
        + (f"; patches of entropy ≤ {cfg['input']['min_entropy']:g} nats (flat regions) are undecidable"
           if cfg["input"].get("min_entropy") is not None else "") + ".",
        "- Resizing, rotation, re-compression (e.g. by messaging apps or social networks) and heavy editing change "
        "the traces the network reads; figures measured on camera originals do not carry over to them.",
        "- Accuracy depends on the camera models and the photos; data unlike the training data (below) can do "
        "worse: see the transfer figures, or measure them with `camsim-eval model=<this folder> data=...`.",
        f"- η = {eta['value']:g} is not calibrated to a false-alarm rate on your data.",
        *[f"- The evaluation in `{path}` decided at η = {other:g}, this network decides at η = {eta['value']:g}: "
          f"its rates at η are not this network's (export with `eta={other:g}` to decide as it did)."
          for path, other in evaluated_etas(found) if abs(other - eta["value"]) > 1e-9],
        *[f"- The figures of `{path}` were measured with `{ckpt}`, not with the checkpoint exported here "
          "(another file, or several networks fused)." for path, ckpt in other_networks(found, cfg["source"].get("sha256"),
                                                                          cfg["files"].get(WEIGHTS, {}).get("sha256"))],
        "",
        "## Architecture", "",
        md_table(["part", "setting"], [
            ["backbone", f"`{json.dumps(arch['backbone'])}`"],
            ["patch size", arch["patch_size"]], ["feature f(X)", f"`{arch['feature_layer']}`"],
            ["similarity head", f"`{json.dumps(head)}`"],
            ["JPEG branch", "none" if not cfg["input"].get("jpeg_branch") else f"`{json.dumps(cfg['input']['jpeg_branch'])}`"],
            ["fine-tuned end to end", "no" if not cfg.get("finetune") else f"`{json.dumps(cfg['finetune'])}`"]],
            align="ll"), "",
        "## Training data", "",
        f"- Set A (Phase A, the feature extractor; {len(sets.get('a') or [])} camera models): "
        f"{', '.join(sets.get('a') or []) or 'not recorded'}.",
        f"- Set B (Phase B, the similarity head): "
        f"{'not recorded' if sets.get('b') is None else ', '.join(sets['b']) or 'none'}"
        + (f"; validated on {', '.join(sets['b_val'])}" if sets.get("b_val") else "")
        + with_a_note(sets, cfg.get("finetune"))
        + ("; the head's pairs balanced by JPEG table (`phase_b.table_balance`)" if sets.get("b_table_balance") else "") + ".",
        f"- Data: {'not recorded' if fp is None else f'`{json.dumps(fp)}`'}"
        + (f" (fingerprint {cfg['training_data_fingerprint']})" if cfg.get("training_data_fingerprint") else "") + ".",
        "- Patches: " + ("not recorded" if not tr.get("patches") else f"`{json.dumps(tr['patches'])}`") + ".", "",
        "## Evaluation", "",
        *validation_section(found["validation"], float(eta.get("training", 0.5))), *pairs_section(found["pairs"]), *transfer_section(found["transfer"]),
        "## Load it", "",
        "With the camsim package installed (no GPU needed); loading and scoring import torch, numpy and "
        "safetensors, not Lightning or Hydra:", "",
        "```python", snippet(int(cfg["input"]["shape"][1])).replace("MODEL_DIR", name).rstrip("\n"), "```", "",
        "Or `camsim-localize model=<this folder> image=...`, `camsim-eval model=<this folder> data=...`.", "",
        "## Files", "",
        md_table(["file", "sha256", "bytes"], [[f, v["sha256"], v["bytes"]] for f, v in sorted(cfg["files"].items())]
                 + [[CONFIG, "(this record)", "–"]], align="llr"), "",
        f"Library versions: {', '.join(f'{k} {v}' for k, v in cfg['versions'].items() if v)}. "
        f"Exported from `{cfg['source']['checkpoint']}`"
        + (f" (sha256 {cfg['source']['sha256']})" if cfg["source"].get("sha256") else "") + ".", "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the export


def check_out(out: Path, ckpt: Path, overwrite: bool) -> None:
    """``out`` may be written: new, empty, or (``overwrite``) replaced — never a folder holding ``ckpt``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"out={out}: the folder exists and is not empty; choose a new folder or pass "
                             "overwrite=true (replaces everything in it)")
        if out.resolve() in ckpt.resolve().parents or out.resolve() == ckpt.resolve():
            raise ValueError(f"out={out}: holds the checkpoint {ckpt}, which overwrite=true would delete; "
                             "choose another folder")


def write_export(tmp: Path, sim: ForensicSimilarity, ckpt: Path, onnx: bool, metrics: Sequence[Path],
                 name: str, eta: float | None = None) -> dict:
    """Every file of the export into ``tmp``; returns the config."""
    files = {WEIGHTS: save_weights(sim.state_dict(), tmp / WEIGHTS)}
    cfg = export_config(sim, ckpt, files, eta)
    if onnx:  # from the very tensors written: the portable network, loaded back
        net = PortableSimilarity(cfg)
        load_state(net, load_file(str(tmp / WEIGHTS)), tmp / WEIGHTS)
        cfg["files"].update(export_onnx(net, tmp))
        cfg["onnx_check"] = check_onnx(net, tmp)  # the graphs written score as the network does
    found = read_metrics(metrics, ckpt)
    atomic_write_json(tmp / CONFIG, cfg)
    (tmp / CARD).write_text(model_card(cfg, found, name))
    for f in cfg["files"]:
        honour_umask(tmp / f)
    return cfg


def leftovers(out: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """What exports into ``out`` left beside it: ``(previous folders, staged folders, those of a live
    export)``. An export stages the new folder as ``.<out>.new-<host>-<pid>`` (written through
    atomic_dir's temp ``..<out>.new-<host>-<pid>.tmp-<host>-<pid>-…``, whose writer is judged as
    atomic_dir judges its own temps: :func:`camsim.artefacts.clean_stale_temps`) and sets the previous
    one aside as ``.<out>.old-<host>-<pid>`` for the swap; an older camsim named them ``.<out>.new`` and
    ``.<out>.old-<pid>``. Only those names count (a user's ``.<out>.old-2024`` is not one). A process
    of another host, or one still running here, may be writing its own: "live", left alone."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?P<kind>new|old)(?:-(?:(?P<host>\w+)-)?(?P<pid>\d+))?$", re.ASCII)
    old, new, live = [], [], []
    now = time.time()
    for entry in sorted(out.parent.iterdir()) if out.parent.is_dir() else ():
        if (tmp := _TMP_RE.match(entry.name)) is not None:  # a staged folder being written, or half written
            staged = pattern.match(tmp["name"])
            if staged is not None and staged["kind"] == "new" and tmp["pid"] is not None:
                (new if _is_stale(entry, False, now) else live).append(entry)
            continue
        if (m := pattern.match(entry.name)) is None:
            continue
        if (m["kind"] == "new" and m["pid"] and not m["host"]) or (m["kind"] == "old" and not m["pid"]):
            continue  # no camsim wrote such a name
        host, pid = m["host"], m["pid"]
        if pid is not None and (host not in (None, _host()) or (int(pid) != os.getpid() and _pid_alive(int(pid)))):
            live.append(entry)
        else:
            (old if m["kind"] == "old" else new).append(entry)
    return old, new, live


def recover_leftovers(out: Path) -> None:
    """Put right what an export into ``out`` killed midway (its process gone) left beside it: with
    ``out`` missing (killed between setting the previous folder aside and moving the new one in),
    the previous folder goes back in place; beside a complete export (killed before it removed the
    folder it replaced) that folder is removed; staged folders, complete or not, are removed (the
    export writing them never finished). Only exports (a folder with ``config.json``) are put back
    or removed, and nothing is put back while another export into ``out`` is under way; anything
    else is left, with a warning saying where it is."""
    old, new, live = leftovers(out)
    for entry in new:
        shutil.rmtree(entry, ignore_errors=True)
    old = [p for p in old if (p / CONFIG).is_file()]
    if old and not live and not os.path.lexists(out):  # the most recently set aside: the folder out last was
        back = max(old, key=lambda p: p.lstat().st_ctime)
        os.replace(back, out)
        old.remove(back)
        log.warning("%s: put back the folder an earlier export had set aside as %s (it was killed while "
                    "replacing it)", out, back.name)
    for entry in old:
        if (out / CONFIG).is_file():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            log.warning("%s: left by an earlier export into %s, which is not a complete export now: "
                        "move it back or remove it", entry, out)
    for entry in live:
        log.warning("%s: another export into %s is under way (or one of another host): left as it is", entry, out)


def replace_folder(staged: Path, out: Path) -> None:
    """``staged`` takes ``out``'s place; an existing ``out`` is set aside as ``.<out>.old-<host>-<pid>``
    meanwhile (:func:`recover_leftovers` puts it back if the process dies there), then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{_host()}-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staged, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_network(ckpt: Path, out: Path, overwrite: bool = False, onnx: bool = False,
                   metrics: Sequence[Path] = (), eta: float | None = None) -> Path:
    """Write the network of Phase B checkpoint ``ckpt`` to folder ``out`` (module docstring). The
    folder appears complete or not at all; with ``overwrite`` an existing one is replaced only
    once the new one is written. ``out`` a symbolic link: the folder it points to is written (the
    link stays); returns the folder written."""
    ckpt, given = Path(ckpt).expanduser(), Path(out).expanduser()
    out = given.resolve()  # `.`, `..`, a link: the folder itself (its name, its parent for the staging)
    if not out.name:
        raise ValueError(f"out={given}: the file system's root cannot be an export folder")
    if given.is_symlink():
        log.info("out=%s is a symbolic link: exporting to the folder it points to, %s", given, out)
    recover_leftovers(out)
    check_out(out, ckpt, overwrite)
    sim = load_similarity(ckpt)
    read_metrics(metrics, ckpt)  # bad metrics= paths fail before any work
    eta_record(sim.hparams, eta)  # and a bad eta=
    # the new folder is written whole beside ``out`` first; only then does it take ``out``'s place
    staged = out.with_name(f".{out.name}.new-{_host()}-{os.getpid()}")
    with atomic_dir(staged) as tmp:
        write_export(tmp, sim, ckpt, onnx, metrics, Path(os.path.abspath(given)).name or out.name, eta)
    replace_folder(staged, out)
    return out
