"""``python -m camsim.bench``: see :mod:`camsim.bench.cli`."""

from __future__ import annotations

from camsim.bench.cli import main

if __name__ == "__main__":
    main()
