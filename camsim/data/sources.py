"""Camera sources: which image files belong to which camera model.

A source turns a collection of photos into an :class:`ImageIndex` (camera-model name ->
sorted image paths, plus the files it skipped and why). Every source gives the same
semantics, so splits, patch extraction and the DataModules never care where images
came from:

* :class:`FolderSource` -- ``root/<camera_model>/<images>`` (Dresden, VISION, and
  ``../shared/data/cameras/``); also what the simulated cameras are rendered into.
* :class:`ExifSource` -- a flat (optionally nested) folder grouped by EXIF Make + Model,
  normalised by :func:`camera_model_name`.

Indexing only lists files (and, for EXIF, reads headers); pixels are decoded later by
:mod:`camsim.data.io`, where unreadable images are reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.table import Table

from camsim.artefacts import cached_dir, file_identity
from camsim.data.io import ImageReadError, image_size
from camsim.plain import file_sha256
from camsim.progress import parallel_map
from camsim.synth.render import (FORMAT, catalogue_files, check_catalogue, check_image_size, render_catalogue,
                                 render_missing)
from camsim.synth.settings import cache_key, settings_dict, synth_settings
from camsim.synth.traits import catalogue

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


# ----------------------------------------------------------------------------- the index


@dataclass
class ImageIndex:
    """Camera-model name -> sorted image paths, with the files left out and why.

    Invariants (checked on construction): at least one model, every model has at least
    one image, model names sorted, each model's paths sorted, no path under two models.
    """

    root: Path
    models: dict[str, list[Path]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.models:
            raise ValueError(f"{self.root}: no camera models in the index")
        owner: dict[Path, str] = {}
        models: dict[str, list[Path]] = {}
        for name in sorted(self.models):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{self.root}: camera-model name {name!r} must be a non-empty string")
            paths = sorted(Path(p) for p in self.models[name])
            if not paths:
                raise ValueError(f"{self.root}: camera model {name!r} has no images")
            for p in paths:
                if p in owner:
                    raise ValueError(f"{p}: listed under camera models {owner[p]!r} and {name!r}")
                owner[p] = name
            models[name] = paths
        self.models = models
        self.skipped = sorted(((Path(p), str(r)) for p, r in self.skipped), key=lambda t: str(t[0]))

    def model_names(self) -> list[str]:
        """Sorted camera-model names."""
        return list(self.models)

    def counts(self) -> dict[str, int]:
        """Images per camera model."""
        return {name: len(paths) for name, paths in self.models.items()}

    def fingerprint(self) -> dict[str, list[list]]:
        """Per model, ``[path relative to root, size, mtime_ns]`` of each image, for cache keys
        (see :func:`camsim.artefacts.file_identity`): any added, removed, renamed or
        rewritten file changes it; moving the whole root does not."""
        out: dict[str, list[list]] = {}
        for name, paths in self.models.items():
            rows = []
            for p in paths:
                _, size, mtime_ns = file_identity(p)
                try:
                    rel = p.relative_to(self.root).as_posix()
                except ValueError:
                    rel = p.resolve().as_posix()
                rows.append([rel, size, mtime_ns])
            out[name] = rows
        return out

    def describe_table(self, title: str | None = None) -> Table:
        """A rich table: camera models with their image counts, total and skipped files."""
        table = Table(title=title or f"camera models in {self.root}")
        table.add_column("camera model")
        table.add_column("images", justify="right")
        for name, n in self.counts().items():
            table.add_row(name, str(n))
        table.add_section()
        table.add_row(f"{len(self.models)} models", str(sum(self.counts().values())), style="bold")
        if self.skipped:
            table.add_row("skipped files", str(len(self.skipped)), style="yellow")
            reasons = defaultdict(int)
            for _, reason in self.skipped:
                reasons[reason] += 1
            top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            table.caption = "skipped: " + "; ".join(f"{n} x {r}" for r, n in top) + (
                " ..." if len(reasons) > 3 else "")
        return table

    def probe(self, workers: int | None = 1) -> ImageIndex:
        """A copy without the image files whose header cannot be read (empty, truncated before
        the size, not an image), each moved to ``skipped`` with its reason; a model left with
        no readable image is dropped (its folder listed). What ``camsim-data describe`` counts,
        so it never counts an unreadable file as an image."""
        paths = [p for ps in self.models.values() for p in ps]
        reasons = dict(zip(paths, parallel_map(_probe_reason, paths, desc="reading image headers", workers=workers)))
        skipped = list(self.skipped)
        models: dict[str, list[Path]] = {}
        for name, ps in self.models.items():
            ok = [p for p in ps if not reasons[p]]
            skipped.extend((p, reasons[p]) for p in ps if reasons[p])
            if ok:
                models[name] = ok
            else:
                skipped.append((ps[0].parent, f"camera model {name!r} has no readable image"))
        if not models:
            raise ValueError(f"{self.root}: no camera model has a readable image ({len(paths)} file(s) unreadable)")
        return ImageIndex(root=self.root, models=models, skipped=skipped)

    def check_duplicates(self) -> list[tuple[Path, Path]]:
        """Find files with identical content (sha256 of the bytes).

        The same picture under two different camera-model names is an error (the label
        would be wrong for one of them, and the picture would leak across sets): raises
        ValueError naming both paths and both models. Duplicates within one model only
        warn (they cannot mislabel, but a split should keep them on the same side) and
        are returned as ``(first, duplicate)`` pairs. Only files of equal size and equal first and
        last 64 KiB are hashed whole (a camera's uncompressed TIFFs all have one size: reading every
        byte of a collection at each job's start is what this spares); empty files are no one's
        copies (they are unreadable files).
        """
        by_size: dict[int, list[tuple[Path, str]]] = defaultdict(list)
        for name, paths in self.models.items():
            for p in paths:
                by_size[p.stat().st_size].append((p, name))
        by_ends: dict[tuple[int, str], list[tuple[Path, str]]] = defaultdict(list)
        for size, group in by_size.items():
            if len(group) > 1 and size:  # empty files are not copies of each other: unreadable, named so
                for p, name in group:
                    by_ends[(size, _ends_sha256(p, size))].append((p, name))
        by_hash: dict[str, list[tuple[Path, str]]] = defaultdict(list)
        for group in by_ends.values():
            if len(group) > 1:
                for p, name in group:
                    by_hash[file_sha256(p)].append((p, name))
        cross, same = [], []
        for group in by_hash.values():
            first, first_model = group[0]
            for p, name in group[1:]:
                (cross if name != first_model else same).append((first, first_model, p, name))
        if cross:
            lines = [f"{a} (model {ma!r}) and {b} (model {mb!r})" for a, ma, b, mb in cross]
            raise ValueError(f"{len(cross)} image(s) with identical content under different camera models: "
                             + "; ".join(lines))
        for a, model, b, _ in same:
            warnings.warn(f"{b}: identical content to {a}, both under camera model {model!r}; left out", stacklevel=2)
        return [(a, b) for a, _, b, _ in same]

    def without_copies(self) -> ImageIndex:
        """This index less every copy of a photo of the same model (:meth:`check_duplicates`; the
        same bytes under two models raise), each copy listed in ``skipped`` with its original: a copy
        would put one photo on both sides of a split, or count its pairs as two photos."""
        copies = dict((b, a) for a, b in self.check_duplicates())
        if not copies:
            return self
        return ImageIndex(self.root, {m: [p for p in ps if p not in copies] for m, ps in self.models.items()},
                          self.skipped + [(b, f"identical content to {a.name} (a copy: one photo counted as two)")
                                          for b, a in copies.items()])


def _probe_reason(path: Path) -> str:
    """"" if the image header of ``path`` reads, else why not (worker-safe)."""
    try:
        image_size(path)
    except ImageReadError as e:
        return f"unreadable: {e.reason}"
    return ""


def _ends_sha256(path: Path, size: int, span: int = 1 << 16) -> str:
    """sha256 of a file's first and last ``span`` bytes (the whole file when it is that small)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(span))
        if size > span:
            fh.seek(max(span, size - span))
            h.update(fh.read(span))
    return h.hexdigest()


class ImageSource(Protocol):
    """Anything that lists camera models and their images."""

    def index(self) -> ImageIndex: ...


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for ext in extensions:
        ext = str(ext).strip().lower()
        if not ext or ext == ".":
            raise ValueError(f"extensions: empty extension in {list(extensions)!r}")
        out.append(ext if ext.startswith(".") else "." + ext)
    if not out:
        raise ValueError("extensions: no extension given")
    return tuple(dict.fromkeys(out))


def model_key(name: str) -> str:
    """A camera-model name as data sets spell it differently — case and separators ignored:
    ``Canon_PowerShot_G2`` = ``canon_powershot_g2`` = ``Canon PowerShot G2``."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _check_root(kind: str, root: Path) -> Path:
    """The root as an absolute path without ``..`` (so its photos are named the same from any working
    directory, in caches, reports and ``scores.npz``), checked to be a readable folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ValueError(f"{kind} root {root}: does not exist")
    if not root.is_dir():
        raise ValueError(f"{kind} root {root}: is not a directory")
    return Path(os.path.abspath(root))


def _check_min_images(min_images: int) -> int:
    if not isinstance(min_images, int) or isinstance(min_images, bool) or min_images < 1:
        raise ValueError(f"min_images: must be an integer >= 1, got {min_images!r}")
    return min_images


def _drop_small(models: dict[str, list[Path]], skipped: list[tuple[Path, str]], min_images: int,
                where: dict[str, Path] | None = None) -> dict[str, list[Path]]:
    kept = {}
    for name, paths in models.items():
        if len(paths) < min_images:
            what = where[name] if where else name
            reason = f"camera model {name!r} has {len(paths)} image(s) < min_images={min_images}"
            warnings.warn(f"{what}: {reason}; skipped", stacklevel=3)
            skipped.extend((p, reason) for p in paths)
        else:
            kept[name] = paths
    return kept


# ----------------------------------------------------------------------------- FolderSource


class FolderSource:
    """``root/<camera_model>/<image files>``: one folder per camera model, named by it.

    Within a model folder only files directly inside are images (no recursion); names
    starting with "." are ignored; extensions match case-insensitively. Listed in
    ``skipped``: image files at the root (other files there are metadata and ignored), sub-folders of model folders, files with other
    extensions, empty model folders (also warned) and models with fewer than
    ``min_images`` images (warned). Errors (ValueError naming the path): missing root,
    no model folders, a model folder whose files are none of them images.
    """

    def __init__(self, root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS, min_images: int = 1) -> None:
        self.root = Path(root).expanduser()
        self.extensions = _normalise_extensions(extensions)
        self.min_images = _check_min_images(min_images)

    def __repr__(self) -> str:
        return f"FolderSource(root={str(self.root)!r}, extensions={self.extensions!r}, min_images={self.min_images})"

    def index(self) -> ImageIndex:
        root = _check_root("FolderSource", self.root)
        skipped: list[tuple[Path, str]] = []
        models: dict[str, list[Path]] = {}
        folders: dict[str, Path] = {}
        entries = [e for e in sorted(root.iterdir()) if not e.name.startswith(".")]
        model_dirs = [e for e in entries if e.is_dir()]
        # image files at the root are probably misplaced (listed); other files there are the
        # collection's metadata (README, MANIFEST.tsv, cameras.json ...) and are ignored
        skipped.extend((e, "image file at the root, not inside a camera-model folder") for e in entries
                       if not e.is_dir() and e.suffix.lower() in self.extensions)
        if not model_dirs:
            raise ValueError(f"{root}: no camera-model folders (expected {root}/<camera_model>/<images>)")
        for folder in model_dirs:
            images, others, subdirs = [], [], []
            for f in sorted(folder.iterdir()):
                if f.name.startswith("."):
                    continue
                if f.is_dir():
                    subdirs.append(f)
                    skipped.append((f, "sub-folder of a camera-model folder (FolderSource does not recurse)"))
                elif not f.is_file():
                    others.append(f)
                    skipped.append((f, "not a regular file (broken link?)"))
                elif f.suffix.lower() in self.extensions:
                    images.append(f)
                else:
                    others.append(f)
                    skipped.append((f, f"extension {f.suffix or '(none)'!r} not in {list(self.extensions)}"))
            if images:
                models[folder.name] = images
                folders[folder.name] = folder
            elif others:
                raise ValueError(f"{folder}: camera-model folder has no images with extensions "
                                 f"{list(self.extensions)} ({len(others)} other file(s), e.g. {others[0].name!r})")
            else:
                what = "only sub-folders (FolderSource does not recurse)" if subdirs else "empty"
                warnings.warn(f"{folder}: camera-model folder is {what}; skipped", stacklevel=2)
                skipped.append((folder, f"camera-model folder is {what}"))
        models = _drop_small(models, skipped, self.min_images, folders)
        alike: dict[str, list[str]] = defaultdict(list)
        for name in models:
            alike[model_key(name)].append(name)
        for names in alike.values():
            if len(names) > 1:  # the folder is the label: not merged, but their pairs would be mislabelled
                warnings.warn(f"{root}: camera-model folders {names} name one model (case and separators ignored): "
                              "their pairs count as different-model pairs — merge them or rename one", stacklevel=2)
        if not models:
            raise ValueError(f"{root}: no camera-model folder with at least {self.min_images} image(s) "
                             f"({len(skipped)} file(s)/folder(s) skipped)")
        return ImageIndex(root=root, models=models, skipped=skipped)


class SynthSource:
    """Simulated cameras (:mod:`camsim.synth`) rendered to the folder layout, then read as
    photos — the rest of camsim cannot tell them from real ones.

    The catalogue is cached in ``<cache_dir>/synth-<hash>/`` (hash of these arguments, every
    non-default ``synth`` setting and the simulator's format version); each image is rendered
    once, when a job first needs it, and written atomically under the catalogue's lock.
    ``synth``: the realism traits (``data.synth``, :mod:`camsim.config.synth`; validated here,
    at start). ``jpeg_presets``: deprecated alias of
    ``synth.jpeg.presets_per_model`` (FutureWarning); ``self.jpeg_presets`` is the effective count.
    """

    def __init__(self, num_models: int, num_families: int, images_per_model: int, image_size: Iterable[int],
                 seed: int = 0, workers: int | None = None, cache_dir: str | Path = "outputs/artefacts",
                 jpeg_presets: int = 1, synth: Mapping | None = None) -> None:
        self.num_models, self.num_families = int(num_models), int(num_families)
        self.images_per_model, self.seed, self.workers = int(images_per_model), int(seed), workers
        if self.num_models < 1 or not 1 <= self.num_families <= self.num_models:
            raise ValueError(f"data.num_models={self.num_models}, data.num_families={self.num_families}: at least one "
                             "model, and 1 to num_models families (each family holds at least one model)")
        for key, value, least in (("images_per_model", self.images_per_model, 1), ("seed", self.seed, 0)):
            if value < least:
                raise ValueError(f"data.{key}={value}: must be ≥ {least}")
        if workers is not None and int(workers) < 0:
            raise ValueError(f"data.workers={workers}: null (every core), 0 or 1 (in this process) or a count ≥ 2")
        try:
            self.image_size = check_image_size(list(image_size))
        except ValueError as err:
            raise ValueError(f"data.{err}") from None
        self.cache_dir = Path(cache_dir)
        self.synth = synth_settings(synth, prefix="data.synth")
        if jpeg_presets != 1:
            per_model = self.synth.jpeg.presets_per_model
            if per_model not in (1, jpeg_presets):
                raise ValueError(f"data.jpeg_presets={jpeg_presets} and data.synth.jpeg.presets_per_model={per_model}: "
                                 "two values for one setting; set only data.synth.jpeg.presets_per_model")
            warnings.warn(f"data.jpeg_presets is deprecated: use data.synth.jpeg.presets_per_model={jpeg_presets}",
                          FutureWarning, stacklevel=2)
            plain = settings_dict(self.synth)
            plain["jpeg"]["presets_per_model"] = jpeg_presets
            self.synth = synth_settings(plain, prefix="data.synth (from data.jpeg_presets)")
        self.jpeg_presets = self.synth.jpeg.presets_per_model
        # every camera's parameters within their ranges, before anything is rendered (milliseconds);
        # what a cached render is checked against (:meth:`root`)
        self.cameras = catalogue(self.num_models, self.num_families, self.seed, self.synth)
        self._checked: Path | None = None

    def __repr__(self) -> str:
        return (f"SynthSource({self.num_models} models, {self.num_families} families, "
                f"{self.images_per_model} images of {self.image_size[0]}x{self.image_size[1]}, seed {self.seed})")

    def model_names(self) -> list[str]:
        """The camera-model names, without rendering anything (for early split validation)."""
        return sorted(self.families())

    def families(self) -> dict[str, str]:
        """Camera model → family (models of one family share most traits), without rendering."""
        return {c.name: c.family for c in self.cameras}

    def cache_key(self) -> dict:
        """What the rendered catalogue depends on: the arguments, every ``synth`` setting (only
        when set, so catalogues rendered before the settings existed keep their key) and the
        simulator's format version."""
        return {"format": FORMAT, "num_models": self.num_models, "num_families": self.num_families,
                "images_per_model": self.images_per_model, "image_size": list(self.image_size), "seed": self.seed,
                **({"jpeg_presets": self.jpeg_presets} if self.jpeg_presets != 1 else {}), **cache_key(self.synth)}

    def root(self) -> Path:
        """The catalogue's folder: ``cameras.json`` and one folder per model, created on first use;
        its images are rendered when first needed (:meth:`render`, :meth:`index`). A cached one
        is checked once against what this code draws (:func:`~camsim.synth.render.check_catalogue`)."""
        root = cached_dir(self.cache_dir, "synth", self.cache_key(), lambda tmp: render_catalogue(
            tmp, self.num_models, self.num_families, self.images_per_model, self.image_size, self.seed,
            workers=self.workers, synth=self.synth, images=False))
        if self._checked != root:
            check_catalogue(root, self.cameras)
            self._checked = root
        return root

    def planned_index(self) -> ImageIndex:
        """Every image the catalogue holds once rendered, rendered or not — what
        :class:`~camsim.data.datamodules.CameraData` splits, rendering only the images a stage needs
        (a training job never reads B's test or C's training photos: the quick recipe renders 78 %)."""
        return ImageIndex(root=self.root(), models=catalogue_files(self.root()))

    def render(self, paths: Iterable[str | Path]) -> int:
        """Render the images among ``paths`` not rendered yet (:func:`~camsim.synth.render.render_missing`)."""
        return render_missing(self.root(), list(paths), workers=self.workers)

    def index(self) -> ImageIndex:
        """The whole catalogue, every image rendered, read as a photo folder."""
        self.render(p for ps in self.planned_index().models.values() for p in ps)
        return FolderSource(self.root()).index()


def listed_images(source: ImageSource) -> ImageIndex:
    """The images of ``source`` as listed before any is read: a rendering source's planned index
    (the simulator: nothing rendered yet — :func:`render_images` renders what is read), else its index."""
    planned = getattr(source, "planned_index", None)
    return planned() if callable(planned) else source.index()


def render_images(source: ImageSource, paths: Iterable[str | Path]) -> None:
    """Render those of ``paths`` a rendering source has not rendered yet (no-op for photo folders)."""
    render = getattr(source, "render", None)
    if callable(render):
        render(list(paths))


__all__ = ["IMAGE_EXTENSIONS", "ImageIndex", "ImageSource", "FolderSource", "SynthSource", "listed_images", "render_images",
           "model_key"]
