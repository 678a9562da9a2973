"""The README's pointers into the code stay true: every file it names exists, and every
function or method named in "Where to look first" exists in the module named beside it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _where_to_look() -> str:
    start = README.index("Where to look first")
    return README[start:README.index("\n\n", start)]


def test_where_to_look_first_names_exist() -> None:
    text = _where_to_look().replace("\n", " ")
    # "`camsim/x.py` (`name`" or "`Class.method` in `camsim/x.py`" or "`name` in `camsim/x.py`"
    pairs = re.findall(r"`(camsim/[\w/]+\.py)` \(`([\w.]+)`", text)
    pairs += [(path, name) for name, path in re.findall(r"`([\w.]+)` in `(camsim/[\w/]+\.py)`", text)]
    pairs += [(path, name) for name, path in re.findall(r"from `(\w+)` in `(camsim/[\w/]+\.py)`", text)]
    assert len(pairs) >= 6, pairs
    for path, name in pairs:
        assert (ROOT / path).is_file(), path
        obj = importlib.import_module(path[:-3].replace("/", "."))
        for part in name.split("."):
            assert hasattr(obj, part), f"README names {name} in {path}, which has no {part}"
            obj = getattr(obj, part)


def test_every_file_the_readme_names_exists() -> None:
    for path in set(re.findall(r"`((?:camsim|conf|docs|tests|sweeps|benchmarks)/[\w/.-]+\.(?:py|yaml|md))`", README)):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
