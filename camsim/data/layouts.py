"""Standard data-set layouts as sources, so a download is read as it comes.

* :class:`DresdenSource` -- the Dresden Image Database: one flat folder, the camera model in
  the file name (``Canon_Ixus70_0_3215.JPG`` -> ``Canon_Ixus70``: everything before the last
  two ``_``-separated fields, which are the device number and the image number).
* :class:`VisionSource` -- the VISION data set: ``Dxx_Make_Model/images/<variant>/*`` with
  the variants ``flat``, ``nat`` (camera originals), ``natFBH``, ``natFBL`` (Facebook high /
  low quality) and ``natWA`` (WhatsApp). The model name is the device folder without its
  ``Dxx_`` prefix; several devices of one model are merged into that model.
* :class:`ExifSource` -- a flat folder (or a tree) grouped by EXIF Make + Model, named by
  :func:`camera_model_name` (``<Make>_<Model>``).
* The plain ``root/<model>/`` layout is :class:`camsim.data.sources.FolderSource`.

:func:`camera_make` gives the make of a camera-model name in any of these layouts.

Like every source, these only list files; pixels are decoded later (:mod:`camsim.data.io`).
"""

from __future__ import annotations

import os
import re
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from camsim.data.io import DEFAULT_MAX_PIXELS, ImageReadError, read_exif_make_model
from camsim.data.sources import (
    IMAGE_EXTENSIONS,
    ImageIndex,
    _check_min_images,
    _check_root,
    _drop_small,
    _normalise_extensions,
)
from camsim.progress import parallel_map

#: VISION's image folders: camera originals (flat fields, natural scenes) and re-shares
VISION_VARIANTS: tuple[str, ...] = ("flat", "nat", "natFBH", "natFBL", "natWA")
#: the camera-original ones (the default)
VISION_ORIGINALS: tuple[str, ...] = ("flat", "nat")

_VISION_DEVICE = re.compile(r"^D\d+_(?P<model>.+)$")


def camera_make(model: str) -> str | None:
    """The make of a camera-model name, case-folded: the part before the first ``_``
    (``"Canon_Ixus70"`` -> ``"canon"``, ``"NIKON_D70"`` -> ``"nikon"``); ``None`` when the name
    has no ``_`` (make unknown)."""
    head, sep, tail = str(model).partition("_")
    return head.casefold() if sep and head and tail else None


def dresden_model_name(file_name: str) -> str:
    """Camera model of a Dresden file name: the stem without its last two ``_`` fields
    (``"Canon_Ixus70_0_3215.JPG"`` -> ``"Canon_Ixus70"``). ValueError (naming the file) when
    the stem has fewer than three fields or the last two are not numbers."""
    stem = Path(file_name).stem
    parts = stem.split("_")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[-2:]) or not all(parts[:-2]):
        raise ValueError(f"{file_name}: not a Dresden file name <Make>_<Model>_<device>_<number>")
    return "_".join(parts[:-2])


# ----------------------------------------------------------------------------- ExifSource

# Corporate words dropped from the end of a make ("NIKON CORPORATION" -> "NIKON"),
# compared upper-case with "." and "," removed.
_MAKE_SUFFIXES = frozenset({
    "CORPORATION", "CORP", "COMPANY", "CO", "LTD", "COLTD", "LIMITED", "INC", "INCORPORATED",
    "GMBH", "AG", "SA", "PLC", "LLC", "KK", "IMAGING", "ELECTRONICS", "OPTICAL", "COMPUTER",
    "DIGITAL", "CAMERA", "CAMERAS", "PHOTO", "PHOTOGRAPHIC",
})

# Make (upper-case, after dropping corporate words) -> canonical spelling. The canonical
# spelling is how the manufacturer most often writes its own make; a make not listed
# here is upper-cased. Either way "SAMSUNG" and "samsung" give the same name.
MAKE_ALIASES: dict[str, str] = {
    "AGFA": "AGFA", "AGFAPHOTO": "AGFA", "APPLE": "Apple", "ASUS": "ASUS", "BLACKBERRY": "BlackBerry",
    "CANON": "Canon", "CASIO": "CASIO", "EASTMAN KODAK": "Kodak", "KODAK": "Kodak", "FUJIFILM": "FUJIFILM",
    "FUJI": "FUJIFILM", "FUJI PHOTO FILM": "FUJIFILM", "GOOGLE": "Google", "HTC": "HTC", "HUAWEI": "HUAWEI",
    "HEWLETT-PACKARD": "HP", "HP": "HP", "LEICA": "LEICA", "LENOVO": "Lenovo", "LG": "LG", "LGE": "LG",
    "MICROSOFT": "Microsoft", "MINOLTA": "Minolta", "KONICA MINOLTA": "KONICA MINOLTA", "MOTOROLA": "Motorola",
    "NIKON": "NIKON", "NOKIA": "NOKIA", "OLYMPUS": "OLYMPUS", "OM": "OM Digital Solutions",
    "OM DIGITAL SOLUTIONS": "OM Digital Solutions", "ONEPLUS": "OnePlus", "OPPO": "OPPO",
    "PANASONIC": "Panasonic", "PENTAX": "PENTAX", "PENTAX RICOH": "RICOH", "RICOH": "RICOH",
    "PRAKTICA": "Praktica", "ROLLEI": "Rollei", "SAMSUNG": "SAMSUNG", "SIGMA": "SIGMA", "SONY": "SONY",
    "XIAOMI": "Xiaomi",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9.+]+")


def _clean_text(value: str | None) -> str:
    """Cut at the first NUL, strip, collapse whitespace runs to one space."""
    value = (value or "").strip("\x00").split("\x00", 1)[0]
    return " ".join(value.split())


def canonical_make(make: str) -> str:
    """The make as used in model names: cleaned, corporate words dropped from its end,
    then :data:`MAKE_ALIASES` (case-insensitive) or upper-cased.

    ``"NIKON CORPORATION"`` -> ``"NIKON"``, ``"samsung"`` -> ``"SAMSUNG"``,
    ``"OLYMPUS IMAGING CORP."`` -> ``"OLYMPUS"``, ``"Canon"`` -> ``"Canon"``.
    """
    words = _clean_text(make).split(" ")
    while len(words) > 1 and re.sub(r"[.,]", "", words[-1]).upper() in _MAKE_SUFFIXES:
        words.pop()
    core = re.sub(r"[,]+$", "", " ".join(words)).strip()
    return MAKE_ALIASES.get(core.upper(), core.upper())


def camera_model_name(make: str | None, model: str | None) -> str:
    """A filesystem-safe camera-model name from EXIF Make and Model.

    Rules, in order: both cleaned (cut at NUL, whitespace stripped and collapsed); the make
    canonicalised by :func:`canonical_make`; a make repeated at the start of the model
    (raw, canonical or first word of the make, case-insensitive, followed by a space, "-"
    or "_") dropped once; ``f"{make}_{model}"`` with accents folded to ASCII and every run
    of characters other than letters, digits, "." and "+" replaced by "_". The model's
    own case is kept. ``("NIKON CORPORATION", "NIKON D70")`` -> ``"NIKON_D70"``,
    ``("Canon", "Canon EOS 5D")`` -> ``"Canon_EOS_5D"``, ``("samsung", "SM-J330F")`` ->
    ``"SAMSUNG_SM_J330F"``. Raises ValueError when make or model is missing or empty.
    """
    raw_make, raw_model = _clean_text(make), _clean_text(model)
    if not raw_make or not raw_model:
        missing = " and ".join(n for n, v in (("Make", raw_make), ("Model", raw_model)) if not v)
        raise ValueError(f"EXIF {missing} missing or empty (make={make!r}, model={model!r})")
    canon = canonical_make(raw_make)
    prefixes = {raw_make, canon, raw_make.split(" ")[0]}
    prefixes |= {k for k, v in MAKE_ALIASES.items() if v == canon}
    short = raw_model
    for prefix in sorted(prefixes, key=len, reverse=True):
        if len(raw_model) > len(prefix) and raw_model[: len(prefix)].upper() == prefix.upper() \
                and raw_model[len(prefix)] in " -_":
            short = raw_model[len(prefix) + 1:].strip(" -_") or raw_model
            break
    safe_make, safe_model = _safe(canon), _safe(short)
    if not safe_make or not safe_model:
        raise ValueError(f"EXIF Make/Model empty after normalisation (make={make!r}, model={model!r})")
    return f"{safe_make}_{safe_model}"


def _safe(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE.sub("_", ascii_text).strip("_.")


def _exif_name(path: Path) -> tuple[str | None, str]:
    """(camera-model name, "") or (None, reason): one file's EXIF grouping (worker-safe)."""
    try:
        make, model = read_exif_make_model(path, DEFAULT_MAX_PIXELS)
    except ImageReadError as e:
        return None, f"unreadable: {e.reason}"
    try:
        return camera_model_name(make, model), ""
    except ValueError as e:
        return None, str(e)


class ExifSource:
    """Images in one folder (sub-folders too with ``recursive=True``) grouped by EXIF
    Make + Model, named by :func:`camera_model_name`.

    Images without a usable Make and Model (or unreadable headers) are listed in
    ``skipped`` with the reason. Names that differ only in letter case are one camera
    model (named by the first spelling in sorted order, with a warning). Hidden files
    and folders are ignored; other files and, unless recursive, sub-folders are listed
    in ``skipped``. ``workers`` > 1 reads EXIF in worker processes.
    """

    def __init__(self, root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS, recursive: bool = False,
                 min_images: int = 1, workers: int = 1) -> None:
        self.root = Path(root).expanduser()
        self.extensions = _normalise_extensions(extensions)
        self.recursive = bool(recursive)
        self.min_images = _check_min_images(min_images)
        self.workers = int(workers)

    def __repr__(self) -> str:
        return (f"ExifSource(root={str(self.root)!r}, extensions={self.extensions!r}, "
                f"recursive={self.recursive}, min_images={self.min_images})")

    def _files(self, root: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if not self.recursive:
                skipped.extend((here / d, "sub-folder (ExifSource recursive=False)") for d in dirnames)
                dirnames[:] = []
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                f = here / name
                if f.suffix.lower() not in self.extensions:
                    skipped.append((f, f"extension {f.suffix or '(none)'!r} not in {list(self.extensions)}"))
                elif not f.is_file():
                    skipped.append((f, "not a regular file (broken link?)"))
                else:
                    files.append(f)
        return files

    def index(self) -> ImageIndex:
        root = _check_root("ExifSource", self.root)
        skipped: list[tuple[Path, str]] = []
        files = self._files(root, skipped)
        if not files:
            raise ValueError(f"{root}: no image files with extensions {list(self.extensions)}"
                             + (" (sub-folders are not searched: recursive=False)" if not self.recursive else ""))
        results = parallel_map(_exif_name, files, desc="reading EXIF", workers=self.workers)
        groups: dict[str, list[Path]] = defaultdict(list)
        for f, (name, reason) in zip(files, results):
            if name is None:
                skipped.append((f, reason))
            else:
                groups[name].append(f)
        models: dict[str, list[Path]] = {}
        by_fold: dict[str, list[str]] = defaultdict(list)
        for name in sorted(groups):
            by_fold[name.casefold()].append(name)
        for spellings in by_fold.values():
            if len(spellings) > 1:
                warnings.warn(f"{root}: camera-model names {spellings} differ only in letter case; "
                              f"merged as {spellings[0]!r}", stacklevel=2)
            models[spellings[0]] = [p for s in spellings for p in groups[s]]
        models = _drop_small(models, skipped, self.min_images)
        if not models:
            no_exif = sum(1 for _, r in skipped if r.startswith("EXIF"))
            raise ValueError(f"{root}: no camera model with at least {self.min_images} image(s) having EXIF "
                             f"Make and Model ({len(files)} image file(s), {no_exif} without Make/Model)")
        return ImageIndex(root=root, models=models, skipped=skipped)


def _take_image(f: Path, extensions: Iterable[str], skipped: list[tuple[Path, str]]) -> bool:
    """Whether ``f`` is an image file to read; a non-hidden file that is not goes to ``skipped``
    with the reason (sub-folder or broken link, other extension)."""
    if f.name.startswith("."):
        return False
    if not f.is_file():
        skipped.append((f, "not a regular file (sub-folder or broken link)"))
    elif f.suffix.lower() not in extensions:
        skipped.append((f, f"extension {f.suffix or '(none)'!r} not in {list(extensions)}"))
    else:
        return True
    return False


def _index(root: Path, models: dict[str, list[Path]], skipped: list[tuple[Path, str]], min_images: int) -> ImageIndex:
    """The index of the models with at least ``min_images`` images (the others to ``skipped``)."""
    kept = _drop_small(dict(models), skipped, min_images)
    if not kept:
        raise ValueError(f"{root}: no camera model with at least {min_images} image(s)")
    return ImageIndex(root=root, models=kept, skipped=skipped)


class DresdenSource:
    """The Dresden Image Database as downloaded: one flat folder of ``<Make>_<Model>_<device>_<n>.JPG``.

    Files whose names do not follow that pattern, files with other extensions and sub-folders
    are listed in ``skipped`` with the reason; hidden files are ignored. Errors (ValueError
    naming the path): missing root, no file with a Dresden name.
    """

    def __init__(self, root: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS, min_images: int = 1) -> None:
        self.root = Path(root).expanduser()
        self.extensions = _normalise_extensions(extensions)
        self.min_images = _check_min_images(min_images)

    def __repr__(self) -> str:
        return f"DresdenSource(root={str(self.root)!r}, extensions={self.extensions!r}, min_images={self.min_images})"

    def index(self) -> ImageIndex:
        root = _check_root("DresdenSource", self.root)
        skipped: list[tuple[Path, str]] = []
        models: dict[str, list[Path]] = defaultdict(list)
        for f in sorted(root.iterdir()):
            if f.is_dir() and not f.name.startswith("."):
                skipped.append((f, "sub-folder (DresdenSource reads one flat folder)"))
            elif _take_image(f, self.extensions, skipped):
                try:
                    models[dresden_model_name(f.name)].append(f)
                except ValueError:
                    skipped.append((f, "file name is not <Make>_<Model>_<device>_<number>"))
        if not models:
            raise ValueError(f"{root}: no image named <Make>_<Model>_<device>_<number> with extensions "
                             f"{list(self.extensions)} ({len(skipped)} other file(s)/folder(s))")
        return _index(root, models, skipped, self.min_images)


class VisionSource:
    """The VISION data set as downloaded: ``root/Dxx_<Make>_<Model>/images/<variant>/*``.

    ``variants``: which image folders to read (default the camera originals ``flat`` and
    ``nat``; ``[natWA]`` asks "does it survive WhatsApp?"). Device folders of one model
    (``D01_Samsung_GalaxyS3Mini``, ``D26_Samsung_GalaxyS3Mini``) merge into one camera model.
    Listed in ``skipped``: device folders without ``images/``, folders not named ``Dxx_...``,
    a device's missing variant folder, files with other extensions. Errors (ValueError
    naming the path or key): missing root, an unknown variant, no images at all.
    """

    def __init__(self, root: str | Path, variants: Iterable[str] = VISION_ORIGINALS,
                 extensions: Iterable[str] = IMAGE_EXTENSIONS, min_images: int = 1) -> None:
        self.root = Path(root).expanduser()
        variants = [variants] if isinstance(variants, str) else list(variants)
        if not variants:
            raise ValueError(f"variants: empty; choose from {list(VISION_VARIANTS)}")
        bad = [v for v in variants if v not in VISION_VARIANTS]
        if bad:
            raise ValueError(f"variants: {bad} not VISION image folders; choose from {list(VISION_VARIANTS)}")
        self.variants = tuple(dict.fromkeys(variants))
        self.extensions = _normalise_extensions(extensions)
        self.min_images = _check_min_images(min_images)

    def __repr__(self) -> str:
        return (f"VisionSource(root={str(self.root)!r}, variants={list(self.variants)}, "
                f"extensions={self.extensions!r}, min_images={self.min_images})")

    def index(self) -> ImageIndex:
        root = _check_root("VisionSource", self.root)
        skipped: list[tuple[Path, str]] = []
        models: dict[str, list[Path]] = defaultdict(list)
        devices = 0
        for dev in sorted(root.iterdir()):
            if dev.name.startswith(".") or not dev.is_dir():
                continue
            m = _VISION_DEVICE.match(dev.name)
            if m is None:
                skipped.append((dev, "folder is not a VISION device folder Dxx_<Make>_<Model>"))
                continue
            images = dev / "images"
            if not images.is_dir():
                skipped.append((dev, "device folder has no images/ folder"))
                continue
            devices += 1
            for variant in self.variants:
                folder = images / variant
                if not folder.is_dir():
                    skipped.append((folder, f"variant folder {variant!r} missing"))
                    continue
                models[m.group("model")] += [f for f in sorted(folder.iterdir())
                                             if _take_image(f, self.extensions, skipped)]
        if not models:
            raise ValueError(f"{root}: no images in {devices} VISION device folder(s) for variants "
                             f"{list(self.variants)} (expected {root}/Dxx_<Make>_<Model>/images/<variant>/*)")
        return _index(root, models, skipped, self.min_images)


__all__ = ["DresdenSource", "VisionSource", "ExifSource", "MAKE_ALIASES", "camera_model_name", "canonical_make", "VISION_VARIANTS", "VISION_ORIGINALS", "camera_make",
           "dresden_model_name"]
