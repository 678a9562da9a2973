"""Build real-photo folders for the transfer evaluation from public collections (issue 18).

The repository carries six real camera models (``../shared/data/cameras``); every figure measured
only there is a figure of six models. These public collections add camera models that no
network here was trained on, and neither is copied into the repository (size); this script turns
a local clone of each into the ``<Make_Model>/<photo>`` layout of ``data=folder``:

``digicam``  github.com/drewnoakes/digicam_corpus (CC0): camera-original files of ~50 camera models,
             each model shot at *all* its quality settings and resolutions — 2 to 19 JPEGs a model,
             so two photos of one model differ in quantisation table and size as real ones do.
             ``<Make>/<Model>/**.jpg`` -> ``<Make>_<Model>/``.
``mei``      github.com/drewnoakes/metadata-extractor-images ("free to use however you wish"), its
             ``jpg/`` folder: ~100 camera models, mostly one photo each — the different-model side
             (and two patches of one photo) across many makes. Kept: photos of at least
             ``--min-pixels`` with EXIF Make and Model, whose EXIF Software does not name an editor
             (:data:`EDITORS`), and not of a thermal camera or film scanner; identical files once.
             Grouped by EXIF Make + Model (:func:`camsim.data.layouts.camera_model_name`).

``list``     a list of files in public repositories, each by repository, commit, path and md5 —
             ``benchmarks/sets/phones_2026-12-07.csv``: 63 camera-original photos of 5 models (Google
             Pixel 5, Apple iPhone 7 and 11, Nokia G21, Kodak Z612) from five small projects'
             repositories, collected 2026-12-07 as a held-out set (README "Sim → real"; licences per
             file in the list, several unknown: research use only). ``src`` is a folder of clones,
             each named ``<owner>+<name>`` or ``<name>``; every file is checked against its md5
             (another version of a file: check out the listed commit).

    git clone --depth 1 https://github.com/drewnoakes/digicam_corpus
    python benchmarks/real_sets.py digicam digicam_corpus ../realdata/digicam
    camsim-eval ckpt=<phase_b>/model.ckpt data=folder data.root=../realdata/digicam
    python benchmarks/real_sets.py list <clones> ../realdata/phones --list benchmarks/sets/phones_2026-12-07.csv

Each output folder gets ``manifest.csv``: every candidate file, kept or dropped, with the reason,
its camera-model folder, pixel size and IJG-equivalent JPEG quality.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
from pathlib import Path

from PIL import Image

from camsim.data.io import ImageReadError, read_exif_make_model, read_jpeg_luma_table
from camsim.data.layouts import camera_model_name
from camsim.synth.photo import ijg_quality

#: EXIF Software values that mean the file was re-saved by an editor or converter, not the camera
EDITORS = ("photoshop", "lightroom", "gimp", "noise ninja", "photo editor", "picasa", "quicktime", "finepixviewer",
           "ofotonow", "digital photo professional", "nikon transfer", "acdsee", "paint.net", "capture one",
           "aperture", "iphoto", "snapseed", "jpeg export")
#: words in a make or model name whose files are not a camera's photos (thermal cameras, film scanners)
NOT_CAMERAS = ("flir", "noritsu", "scanner")
JPEG = (".jpg", ".jpeg")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _info(path: Path) -> dict:
    """Pixel size, EXIF Software and IJG-equivalent quality of one file (ImageReadError if unreadable)."""
    try:
        with Image.open(path) as im:
            size, software = im.size, str(im.getexif().get(0x0131, "") or "")
    except Exception as e:  # any unreadable file is dropped with its reason
        raise ImageReadError(path, f"unreadable ({type(e).__name__}: {e})") from e
    table = read_jpeg_luma_table(path)
    return {"width": size[0], "height": size[1], "software": software.strip("\x00 "),
            "jpeg_quality": "" if table is None else ijg_quality(table)}


def digicam(src: Path) -> list[dict]:
    rows = []
    for f in sorted(p for p in src.rglob("*") if p.suffix.lower() in JPEG and "metadata" not in p.parts):
        rel = f.relative_to(src)
        row = {"file": str(rel), "model": _safe(f"{rel.parts[0]}_{rel.parts[1]}") if len(rel.parts) > 2 else ""}
        try:
            row.update(_info(f))
            row["kept"], row["reason"] = bool(row["model"]), "" if row["model"] else "not in <Make>/<Model>/"
        except ImageReadError as e:
            row.update(kept=False, reason=e.reason)
        rows.append(row)
    return rows


def mei(src: Path, min_pixels: int) -> list[dict]:
    rows, seen = [], {}
    for f in sorted(p for p in (src / "jpg").iterdir() if p.is_file() and p.suffix.lower() in JPEG):
        row = {"file": str(f.relative_to(src)), "model": ""}
        rows.append(row)
        try:
            row.update(_info(f))
            make, model = read_exif_make_model(f)
            row["model"] = camera_model_name(make, model)
        except (ImageReadError, ValueError) as e:
            row.update(kept=False, reason=getattr(e, "reason", str(e)))
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        editor = next((e for e in EDITORS if e in row["software"].lower()), None)
        why = (f"{row['width']}×{row['height']} px < {min_pixels}" if row["width"] * row["height"] < min_pixels else
               f"EXIF Software {row['software']!r}: re-saved by an editor" if editor else
               "not a visible-light camera's photo" if any(n in row["model"].lower() for n in NOT_CAMERAS) else
               f"identical to {seen[digest]}" if digest in seen else "")
        seen.setdefault(digest, row["file"])
        row["kept"], row["reason"] = not why, why
    return rows


def listed(src: Path, listing: Path) -> list[dict]:
    """The files of a list (columns model, repo, commit, path, md5) found under ``src``'s clones."""
    try:
        with open(listing, newline="") as fh:
            entries = list(csv.DictReader(fh))
    except OSError as e:
        raise SystemExit(f"{listing}: cannot read the list ({e.strerror})") from e
    if not entries or not {"model", "repo", "path", "md5"} <= set(entries[0]):
        raise SystemExit(f"{listing}: not a list of files (needs the columns model, repo, path, md5)")
    rows, seen = [], {}
    for e in entries:
        owner, _, name = e["repo"].partition("/")
        row = {"file": f"{e['repo']}:{e['path']}", "model": _safe(e["model"]), "kept": False}
        rows.append(row)
        if not owner or not name or "/" in name:
            row["reason"] = f"repo {e['repo']!r}: not owner/name"
            continue
        clone = next((c for c in (src / f"{owner}+{name}", src / name) if c.is_dir()), None)
        f = None if clone is None else clone / e["path"]
        if f is None or not f.is_file():
            row["reason"] = f"no clone of {e['repo']} in {src}" if clone is None else "not in the clone"
            continue
        digest = hashlib.md5(f.read_bytes()).hexdigest()
        if digest != e["md5"].strip().lower():
            row["reason"] = f"md5 differs: another version of the file (check out {e.get('commit') or 'the listed commit'})"
            continue
        if digest in seen:  # one photo twice would give "two photos" of one model that are one
            row["reason"] = f"identical to {seen[digest]}"
            continue
        try:
            row.update(_info(f))
        except ImageReadError as err:
            row["reason"] = err.reason
            continue
        seen[digest] = row["file"]
        row["src"], row["kept"], row["reason"] = f, True, ""
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", choices=("digicam", "mei", "list"))
    ap.add_argument("src", help="a local clone of the collection's repository (list: a folder of clones)")
    ap.add_argument("out", help="the folder to create (<Make_Model>/<photo>, manifest.csv)")
    ap.add_argument("--min-pixels", type=int, default=1_000_000, help="mei: smallest photo kept (pixels)")
    ap.add_argument("--list", type=Path, default=None, help="list: the file list (model, repo, commit, path, md5)")
    a = ap.parse_args()
    src, out = Path(a.src).expanduser(), Path(a.out).expanduser()
    if not src.is_dir():
        raise SystemExit(f"{src}: not a folder (give a local clone of the collection)")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; give a new folder")
    if (a.collection == "list") != (a.list is not None):
        raise SystemExit("--list goes with the collection 'list' (and only with it)")
    rows = (digicam(src) if a.collection == "digicam" else mei(src, a.min_pixels) if a.collection == "mei"
            else listed(src, a.list))
    if not any(r["kept"] for r in rows):
        what = "a folder of the listed clones" if a.collection == "list" else f"a clone of the {a.collection} collection"
        why = sorted({r["reason"] for r in rows})
        raise SystemExit(f"{src}: no photo kept — is it {what}? Reasons: {'; '.join(why[:5])}{' …' if len(why) > 5 else ''}")
    for r in rows:
        if r["kept"]:
            name = Path(Path(r["file"].partition(":")[2]).name if "src" in r else r["file"].replace("/", "_"))
            dst = (out / r["model"] / _safe(name.stem)).with_suffix(name.suffix)
            if dst.exists():  # two repositories' files of one name in one model's folder
                dst = dst.with_name(f"{dst.stem}_{hashlib.md5(r['file'].encode()).hexdigest()[:6]}{dst.suffix}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(r.get("src", src / r["file"]), dst)
    cols = ["file", "kept", "reason", "model", "width", "height", "jpeg_quality", "software"]
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in cols} for r in rows)
    kept = [r for r in rows if r["kept"]]
    print(f"{out}: {len({r['model'] for r in kept})} camera models, {len(kept)} photos "
          f"({len(rows) - len(kept)} files dropped, reasons in manifest.csv)")


if __name__ == "__main__":
    main()
