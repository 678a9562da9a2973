"""Standard data-set layouts as sources, so a download is read as it comes.

* :class:`DresdenSource` -- the Dresden Image Database: one flat folder, the camera model in
  the file name (``Canon_Ixus70_0_3215.JPG`` -> ``Canon_Ixus70``: everything before the last
  two ``_``-separated fields, which are the device number and the image number).
* :class:`VisionSource` -- the VISION data set: ``Dxx_Make_Model/images/<variant>/*`` with
  the variants ``flat``, ``nat`` (camera originals), ``natFBH``, ``natFBL`` (Facebook high /
  low quality) and ``natWA`` (WhatsApp). The model name is the device folder without its
  ``Dxx_`` prefix; several devices of one model are merged into that model.
* The plain ``root/<model>/`` layout is :class:`camsim.data.sources.FolderSource`.

:func:`camera_make` gives the make of a camera-model name in any of these layouts (and of
:class:`~camsim.data.sources.ExifSource` names, which are ``<Make>_<Model>``).

Like every source, these only list files; pixels are decoded later (:mod:`camsim.data.io`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from camsim.data.sources import (
    IMAGE_EXTENSIONS,
    ImageIndex,
    _check_min_images,
    _check_root,
    _drop_small,
    _normalise_extensions,
)

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
            if f.name.startswith("."):
                continue
            if f.is_dir():
                skipped.append((f, "sub-folder (DresdenSource reads one flat folder)"))
            elif f.suffix.lower() not in self.extensions:
                skipped.append((f, f"extension {f.suffix or '(none)'!r} not in {list(self.extensions)}"))
            elif not f.is_file():
                skipped.append((f, "not a regular file (broken link?)"))
            else:
                try:
                    models[dresden_model_name(f.name)].append(f)
                except ValueError:
                    skipped.append((f, "file name is not <Make>_<Model>_<device>_<number>"))
        if not models:
            raise ValueError(f"{root}: no image named <Make>_<Model>_<device>_<number> with extensions "
                             f"{list(self.extensions)} ({len(skipped)} other file(s)/folder(s))")
        kept = _drop_small(dict(models), skipped, self.min_images)
        if not kept:
            raise ValueError(f"{root}: no camera model with at least {self.min_images} image(s)")
        return ImageIndex(root=root, models=kept, skipped=skipped)


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
                for f in sorted(folder.iterdir()):
                    if f.name.startswith("."):
                        continue
                    if not f.is_file():
                        skipped.append((f, "not a regular file (sub-folder or broken link)"))
                    elif f.suffix.lower() not in self.extensions:
                        skipped.append((f, f"extension {f.suffix or '(none)'!r} not in {list(self.extensions)}"))
                    else:
                        models[m.group("model")].append(f)
        if not models:
            raise ValueError(f"{root}: no images in {devices} VISION device folder(s) for variants "
                             f"{list(self.variants)} (expected {root}/Dxx_<Make>_<Model>/images/<variant>/*)")
        kept = _drop_small(dict(models), skipped, self.min_images)
        if not kept:
            raise ValueError(f"{root}: no camera model with at least {self.min_images} image(s)")
        return ImageIndex(root=root, models=kept, skipped=skipped)


__all__ = ["DresdenSource", "VisionSource", "VISION_VARIANTS", "VISION_ORIGINALS", "camera_make",
           "dresden_model_name"]
