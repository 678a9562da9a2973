"""camsim: learned forensic camera-model similarity (Mayer & Stamm, ICASSP 2018)."""

__version__ = "0.1.0"
