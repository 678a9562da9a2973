"""Camera sources (camsim.data.sources): folder layout, EXIF grouping, index semantics."""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from camsim.artefacts import content_hash
from camsim.data.layouts import ExifSource, camera_model_name, canonical_make
from camsim.data.sources import FolderSource, ImageIndex

DATA = Path("/work/shared/data")
for _cand in (Path(__file__).resolve().parents[2] / "shared" / "data", DATA):
    if (_cand / "cameras").is_dir():
        DATA = _cand
        break
CAMERAS = DATA / "cameras"
needs_real = pytest.mark.skipif(not CAMERAS.is_dir(), reason=f"real photos not found under {CAMERAS}")
FOLDERS = ["LG_D605", "NIKON_D200", "NIKON_D70", "NIKON_D70s", "SAMSUNG_GT_I9300", "samsung_SM_J330F"]


def manifest() -> dict[str, tuple[str, str]]:
    """cameras/<folder>/<file> -> (EXIF make, EXIF model) as listed in MANIFEST.tsv."""
    with open(DATA / "MANIFEST.tsv", newline="") as fh:
        return {r["path"]: (r["make"], r["model"]) for r in csv.DictReader(fh, delimiter="\t")
                if r["path"].startswith("cameras/")}


def small_jpeg(path: Path, seed: int = 0, make: str | None = None, model: str | None = None) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    kw = {}
    if make is not None or model is not None:
        exif = Image.Exif()
        if make is not None:
            exif[0x010F] = make
        if model is not None:
            exif[0x0110] = model
        kw["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90, **kw)
    return path


def render(table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


# ---- FolderSource -------------------------------------------------------------------------


@needs_real
def test_folder_source_on_real_cameras():
    idx = FolderSource(CAMERAS).index()
    assert idx.model_names() == FOLDERS
    assert idx.counts() == {name: 12 for name in FOLDERS}
    assert idx.skipped == []
    for name, paths in idx.models.items():
        assert paths == sorted(paths) and all(p.parent == CAMERAS / name for p in paths)
    text = render(idx.describe_table())
    assert all(name in text for name in FOLDERS) and "72" in text
    fp = idx.fingerprint()
    assert fp["NIKON_D70"][0][0] == "NIKON_D70/NIKON_D70_01.jpg"
    assert fp["NIKON_D70"][0][1] == (CAMERAS / "NIKON_D70/NIKON_D70_01.jpg").stat().st_size
    assert isinstance(content_hash(fp), str)
    assert idx.check_duplicates() == []


def test_folder_source_layout_rules(tmp_path):
    small_jpeg(tmp_path / "CamA" / "a1.JPG", 1)
    small_jpeg(tmp_path / "CamA" / "a2.jpeg", 2)
    small_jpeg(tmp_path / "CamA" / ".hidden.jpg", 3)
    small_jpeg(tmp_path / "CamA" / "nested" / "deep.jpg", 4)
    (tmp_path / "CamA" / "notes.txt").write_text("x")
    small_jpeg(tmp_path / "CamB" / "b1.jpg", 5)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "CamB" / "b2.PNG")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("x")  # collection metadata at the root: ignored
    small_jpeg(tmp_path / "stray.jpg", 6)  # an image at the root: misplaced, listed
    idx = FolderSource(tmp_path).index()
    assert idx.counts() == {"CamA": 2, "CamB": 2}
    assert [p.name for p in idx.models["CamA"]] == ["a1.JPG", "a2.jpeg"]
    reasons = {p.relative_to(tmp_path).as_posix(): r for p, r in idx.skipped}
    assert set(reasons) == {"CamA/nested", "CamA/notes.txt", "stray.jpg"}
    assert "does not recurse" in reasons["CamA/nested"] and "'.txt'" in reasons["CamA/notes.txt"]
    assert "skipped" in render(idx.describe_table())
    with pytest.raises(ValueError, match=f"{tmp_path / 'CamA'}: camera-model folder has no images"):
        FolderSource(tmp_path, extensions=["PNG"]).index()  # CamA holds files, none of them .png
    shutil.rmtree(tmp_path / "CamA")
    assert FolderSource(tmp_path, extensions=["PNG"]).index().counts() == {"CamB": 1}

def test_folder_source_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'}: does not exist"):
        FolderSource(tmp_path / "missing").index()
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a directory"):
        FolderSource(tmp_path / "file.jpg").index()
    with pytest.raises(ValueError, match=f"{tmp_path}: no camera-model folders"):
        FolderSource(tmp_path).index()
    (tmp_path / "CamA").mkdir()
    (tmp_path / "CamA" / "raw.NEF").write_bytes(b"x")
    with pytest.raises(ValueError, match=f"{tmp_path / 'CamA'}: camera-model folder has no images.*raw.NEF"):
        FolderSource(tmp_path).index()
    with pytest.raises(ValueError, match="min_images"):
        FolderSource(tmp_path, min_images=0)
    with pytest.raises(ValueError, match="extensions"):
        FolderSource(tmp_path, extensions=[""])


def test_empty_model_folder_warns_and_is_skipped(tmp_path):
    small_jpeg(tmp_path / "CamA" / "a.jpg")
    (tmp_path / "CamEmpty").mkdir()
    with pytest.warns(UserWarning, match="CamEmpty: camera-model folder is empty"):
        idx = FolderSource(tmp_path).index()
    assert idx.model_names() == ["CamA"]
    assert (tmp_path / "CamEmpty", "camera-model folder is empty") in idx.skipped


def test_min_images_drops_small_models_with_a_warning(tmp_path):
    for i in range(3):
        small_jpeg(tmp_path / "Big" / f"{i}.jpg", i)
    small_jpeg(tmp_path / "Small" / "0.jpg", 9)
    with pytest.warns(UserWarning, match="Small.*1 image\\(s\\) < min_images=2"):
        idx = FolderSource(tmp_path, min_images=2).index()
    assert idx.model_names() == ["Big"]
    assert [p.name for p, _ in idx.skipped] == ["0.jpg"]
    with pytest.raises(ValueError, match="at least 5 image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FolderSource(tmp_path, min_images=5).index()


def test_fingerprint_changes_with_content_not_with_root(tmp_path):
    small_jpeg(tmp_path / "a" / "CamA" / "x.jpg", 1)
    small_jpeg(tmp_path / "a" / "CamB" / "y.jpg", 2)
    fp = FolderSource(tmp_path / "a").index().fingerprint()
    assert fp["CamA"][0][0] == "CamA/x.jpg"
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy2)
    assert content_hash(FolderSource(tmp_path / "b").index().fingerprint()) == content_hash(fp)
    st = (tmp_path / "a" / "CamA" / "x.jpg").stat()
    os.utime(tmp_path / "a" / "CamA" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert content_hash(FolderSource(tmp_path / "a").index().fingerprint()) != content_hash(fp)


# ---- duplicates -------------------------------------------------------------------------


@needs_real
def test_duplicate_across_models_names_both(tmp_path):
    src = CAMERAS / "NIKON_D70" / "NIKON_D70_01.jpg"
    shutil.copy(src, (tmp_path / "NIKON_D70").mkdir() or tmp_path / "NIKON_D70" / "a.jpg")
    shutil.copy(CAMERAS / "NIKON_D70" / "NIKON_D70_02.jpg", tmp_path / "NIKON_D70" / "b.jpg")
    shutil.copy(src, (tmp_path / "NIKON_D70s").mkdir() or tmp_path / "NIKON_D70s" / "c.jpg")
    idx = FolderSource(tmp_path).index()
    with pytest.raises(ValueError, match="identical content under different camera models") as e:
        idx.check_duplicates()
    msg = str(e.value)
    for part in ("NIKON_D70/a.jpg", "'NIKON_D70'", "NIKON_D70s/c.jpg", "'NIKON_D70s'"):
        assert part in msg


def test_files_of_one_size_are_read_whole_only_where_their_ends_agree(tmp_path, monkeypatch):
    """A camera's uncompressed files all have one size: the duplicate check reads 64 KiB at each end
    of each, and whole only the ones whose ends agree — which finds a copy, and tells apart files
    that differ only in the middle."""
    import camsim.data.sources as sources

    rng = np.random.default_rng(0)
    body = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    for model, name, data in (("CamA", "a.tif", body), ("CamA", "b.tif", rng.bytes(300_000)),
                              ("CamA", "a_copy.tif", body),
                              ("CamB", "mid.tif", body[:150_000] + bytes([body[150_000] ^ 1]) + body[150_001:])):
        (tmp_path / model).mkdir(exist_ok=True)
        (tmp_path / model / name).write_bytes(data)
    whole = []
    monkeypatch.setattr(sources, "file_sha256", lambda p, f=sources.file_sha256: whole.append(p.name) or f(p))
    idx = sources.ImageIndex(root=tmp_path, models={"CamA": sorted((tmp_path / "CamA").iterdir()),
                                                   "CamB": [tmp_path / "CamB" / "mid.tif"]}, skipped=[])
    with pytest.warns(UserWarning, match="a_copy.tif: identical content"):
        pairs = idx.check_duplicates()
    assert pairs == [(tmp_path / "CamA" / "a.tif", tmp_path / "CamA" / "a_copy.tif")]   # mid.tif: no copy
    assert sorted(whole) == ["a.tif", "a_copy.tif", "mid.tif"]                          # b.tif's ends differ


def test_a_copy_within_one_model_is_left_out_and_named(tmp_path):
    a = small_jpeg(tmp_path / "CamA" / "a.jpg", 1)
    shutil.copy(a, tmp_path / "CamA" / "a_copy.jpg")
    small_jpeg(tmp_path / "CamA" / "c.jpg", 3)
    small_jpeg(tmp_path / "CamB" / "b.jpg", 2)
    idx = FolderSource(tmp_path).index()
    with pytest.warns(UserWarning, match="a_copy.jpg: identical content to .*a.jpg.*'CamA'"):
        pairs = idx.check_duplicates()
    assert pairs == [(tmp_path / "CamA" / "a.jpg", tmp_path / "CamA" / "a_copy.jpg")]
    # the index a split or an evaluation uses: the copy out (it would sit on both sides of a split)
    with pytest.warns(UserWarning, match="identical content"):
        kept = idx.without_copies()
    assert kept.models["CamA"] == [tmp_path / "CamA" / "a.jpg", tmp_path / "CamA" / "c.jpg"]
    assert [(p.name, r.split(" (")[0]) for p, r in kept.skipped] == [("a_copy.jpg", "identical content to a.jpg")]
    assert idx.models["CamA"][1].name == "a_copy.jpg"  # the original index is left as it was


def test_two_folders_naming_one_model_are_warned_about(tmp_path):
    small_jpeg(tmp_path / "Canon_A" / "a.jpg", 1)
    small_jpeg(tmp_path / "canon-a" / "b.jpg", 2)
    small_jpeg(tmp_path / "Nikon_B" / "c.jpg", 3)
    with pytest.warns(UserWarning, match=r"folders \['Canon_A', 'canon-a'\] name one model"):
        idx = FolderSource(tmp_path).index()
    assert idx.model_names() == ["Canon_A", "Nikon_B", "canon-a"]  # the folders are the labels: not merged


# ---- ImageIndex invariants ---------------------------------------------------------------


def test_image_index_sorts_and_validates(tmp_path):
    idx = ImageIndex(root=tmp_path, models={"b": [tmp_path / "2", tmp_path / "1"], "a": [tmp_path / "3"]})
    assert idx.model_names() == ["a", "b"] and idx.models["b"] == [tmp_path / "1", tmp_path / "2"]
    with pytest.raises(ValueError, match="'empty' has no images"):
        ImageIndex(root=tmp_path, models={"empty": []})
    with pytest.raises(ValueError, match="no camera models"):
        ImageIndex(root=tmp_path, models={})
    with pytest.raises(ValueError, match="listed under camera models 'a' and 'b'"):
        ImageIndex(root=tmp_path, models={"a": [tmp_path / "x"], "b": [tmp_path / "x"]})


# ---- ExifSource ---------------------------------------------------------------------------


@pytest.mark.parametrize("make, model, name", [
    ("NIKON CORPORATION", "NIKON D70", "NIKON_D70"),
    ("NIKON CORPORATION", "NIKON D70s", "NIKON_D70s"),
    ("Canon", "Canon EOS 5D", "Canon_EOS_5D"),
    ("CANON", "CANON EOS 5D", "Canon_EOS_5D"),
    ("samsung", "SM-J330F", "SAMSUNG_SM_J330F"),
    ("SAMSUNG", "GT-I9300", "SAMSUNG_GT_I9300"),
    ("LG Electronics", "LG-D605", "LG_D605"),
    (" NIKON\x00\x00 ", "NIKON   D200\x00\x00garbage", "NIKON_D200"),
    ("OLYMPUS IMAGING CORP.", "E-M10 Mark II", "OLYMPUS_E_M10_Mark_II"),
    ("EASTMAN KODAK COMPANY", "KODAK EASYSHARE C813 ZOOM DIGITAL CAMERA", "Kodak_EASYSHARE_C813_ZOOM_DIGITAL_CAMERA"),
    ("CASIO COMPUTER CO.,LTD.", "EX-Z150", "CASIO_EX_Z150"),
    ("Apple", "iPhone 6 Plus", "Apple_iPhone_6_Plus"),
    ("Wiko", "Lenny2", "WIKO_Lenny2"),
    ("Citroën", "Modèle/1 (x)", "CITROEN_Modele_1_x"),
    ("Canon", "Canon", "Canon_Canon"),
])
def test_camera_model_name_normalisation(make, model, name):
    assert camera_model_name(make, model) == name


def test_camera_model_name_rejects_missing():
    for make, model in ((None, "D70"), ("NIKON", ""), ("\x00\x00", "D70"), ("NIKON", "///")):
        with pytest.raises(ValueError, match="EXIF"):
            camera_model_name(make, model)
    assert canonical_make("samsung") == canonical_make("SAMSUNG") == "SAMSUNG"
    assert canonical_make("NIKON CORPORATION") == "NIKON"


@needs_real
def test_exif_source_groups_real_photos_like_the_folders(tmp_path):
    """Two photos of each real camera, copied flat, regroup into the six cameras."""
    listed = manifest()
    flat = tmp_path / "flat"
    flat.mkdir()
    truth = {}
    for folder in FOLDERS:
        for f in sorted((CAMERAS / folder).glob("*.jpg"))[:2]:
            shutil.copy(f, flat / f.name)
            truth[f.name] = (folder, camera_model_name(*listed[f"cameras/{folder}/{f.name}"]))
    small_jpeg(flat / "no_exif.jpg", 1)
    small_jpeg(flat / "make_only.jpg", 2, make="Canon")
    (flat / "garbage.jpg").write_bytes(b"not a jpeg at all" * 20)
    (flat / "notes.txt").write_text("x")
    (flat / "sub").mkdir()
    small_jpeg(flat / "sub" / "deep.jpg", 3, make="Canon", model="Canon EOS 5D")

    idx = ExifSource(flat).index()
    assert idx.model_names() == sorted(["LG_D605", "NIKON_D200", "NIKON_D70", "NIKON_D70s", "SAMSUNG_GT_I9300",
                                        "SAMSUNG_SM_J330F"])
    assert idx.counts() == {name: 2 for name in idx.model_names()}
    for name, paths in idx.models.items():
        for p in paths:
            folder, expected = truth[p.name]
            assert name == expected and name.casefold() == folder.casefold()
    reasons = {p.name: r for p, r in idx.skipped}
    assert set(reasons) == {"no_exif.jpg", "make_only.jpg", "garbage.jpg", "notes.txt", "sub"}
    assert "EXIF Make and Model missing" in reasons["no_exif.jpg"]
    assert "EXIF Model missing" in reasons["make_only.jpg"]
    assert reasons["garbage.jpg"].startswith("unreadable:")
    assert "recursive=False" in reasons["sub"]

    deep = ExifSource(flat, recursive=True).index()
    assert deep.models["Canon_EOS_5D"] == [flat / "sub" / "deep.jpg"]
    assert deep.fingerprint()["Canon_EOS_5D"][0][0] == "sub/deep.jpg"


def test_exif_source_merges_make_spellings_and_case(tmp_path):
    small_jpeg(tmp_path / "1.jpg", 1, make="Canon", model="Canon EOS 5D")
    small_jpeg(tmp_path / "2.jpg", 2, make="CANON", model="CANON EOS 5D")
    small_jpeg(tmp_path / "3.jpg", 3, make="Canon Inc.", model="EOS 5D")
    small_jpeg(tmp_path / "4.jpg", 4, make="Canon", model="Canon EOS 5d")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "5.png", exif=_exif("samsung", "SM-J330F"))
    with pytest.warns(UserWarning, match="differ only in letter case"):
        idx = ExifSource(tmp_path).index()
    assert idx.counts() == {"Canon_EOS_5D": 4, "SAMSUNG_SM_J330F": 1}


def _exif(make: str, model: str) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    return exif


def test_exif_source_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ExifSource(tmp_path / "missing").index()
    with pytest.raises(ValueError, match="no image files"):
        ExifSource(tmp_path).index()
    small_jpeg(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"no camera model .* 1 without Make/Model"):
        ExifSource(tmp_path).index()
