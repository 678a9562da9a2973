"""Thin Hydra entry points: compose config → instantiate → run a pipeline stage.

:func:`hydra_app` wraps every entry point the same way:

- ``--help`` / ``-h``: what the command does, its main options and examples (the entry
  module's docstring, or the ``help`` text given), then its config groups and options;
  Hydra's own flags stay under ``--hydra-help``.
- Errors a user can fix (bad input, a missing mandatory value, ``trainer=gpu`` without a
  GPU, a full disk, an unwritable run dir) are one line on stderr naming the cause and the
  fix, with a non-zero exit status and no traceback; ``CAMSIM_DEBUG=1`` or
  ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
- Ctrl-C stops the job with one line (exit status 130).
- At the start of a job, leftovers of killed runs in the artefact folder are removed
  (:func:`camsim.artefacts.clean_artefact_dir`), and ``debug=fast`` shrinks the chosen
  experiment (:func:`shrink_for_debug`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from camsim.machine import others_busy_cores, tune_malloc

#: other processes' CPU use (cores, on this process's CPUs) at start from which OpenMP threads
#: wait passively
BUSY_CORES = 0.5


def choose_omp_wait_policy(environ: dict | None = None) -> str:
    """How torch's OpenMP threads wait between operations, chosen before torch loads; returns
    the sentence the job logs. The user's ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` win. Else,
    if other processes keep ≥ :data:`BUSY_CORES` of this process's CPUs busy at start (or that
    cannot be measured), ``OMP_WAIT_POLICY=PASSIVE``: a spinning thread then steals the core
    another runnable thread needs. On a quiet machine the threads keep libgomp's default short
    spin, which is faster for the quick model's small operations (docs/performance.md, "How torch's
    threads wait", has the figures)."""
    env = os.environ if environ is None else environ
    mine = [f"{k}={env[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in env]
    if mine:
        return f"OpenMP waits: {' '.join(mine)} (set by you)"
    if "torch" in sys.modules:
        return "OpenMP waits: torch's defaults (torch was loaded before camsim's CLI)"
    others = others_busy_cores()
    if others is not None and others < BUSY_CORES:
        return (f"OpenMP waits: threads spin briefly between operations (the machine was quiet at start: "
                f"others used {others:.2f} cores); set OMP_WAIT_POLICY=PASSIVE if it will be shared")
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = "the machine's load could not be read" if others is None else f"others used {others:.2f} cores at start"
    return (f"OpenMP waits: passive ({busy}; spinning threads would steal their cores); on a quiet "
            "machine GOMP_SPINCOUNT=300000 lets them spin, which is faster")


# Before torch loads its OpenMP runtime (docs/performance.md, "How torch's threads wait")
OMP_WAIT_NOTE = choose_omp_wait_policy()
MALLOC_NOTE = tune_malloc()

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

import camsim.config  # noqa: F401  (registers the structured configs)

# noise from Lightning's own code under torch 2.13, nothing a user can act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

#: the config tree: <repo>/conf (camsim is installed in editable mode, see README)
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

log = logging.getLogger("camsim")

#: exit statuses: a fixable input/config error, an environment error (disk, permissions), Ctrl-C
EXIT_INPUT, EXIT_ENV, EXIT_INTERRUPT = 2, 1, 130

INTERRUPTED = ("interrupted (Ctrl-C): stopped. Finished artefacts are kept; run the same command "
               "again to go on (an interrupted learning phase resumes from its last checkpoint)")


def show_tracebacks() -> bool:
    """``CAMSIM_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``: full tracebacks instead of one line."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("CAMSIM_DEBUG", "HYDRA_FULL_ERROR"))


# --------------------------------------------------------------------------- errors → one line


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while err is not None and err not in out and len(out) < 16:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _where(e: OSError) -> str:
    return f" ({e.filename})" if getattr(e, "filename", None) else ""


def explain(err: BaseException) -> tuple[str, int] | None:
    """One line naming the cause and the fix of ``err``, with the exit status; None for an
    error camsim does not know (a bug: its traceback is shown)."""
    from omegaconf.errors import MissingMandatoryValue

    from hydra.errors import CompactHydraException

    chain = _chain(err)
    for e in chain:
        if isinstance(e, SweepJobFailed):
            return e.msg, e.code
        if isinstance(e, KeyboardInterrupt):
            return INTERRUPTED, EXIT_INTERRUPT
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"disk full{_where(e)}: {e.strerror or 'no space left on device'}. Free space there (old "
                    "runs in outputs/, unused artefacts in outputs/artefacts/) or point paths.artefact_dir / "
                    "hydra.run.dir at a bigger disk, then run the same command again (finished artefacts "
                    "are kept)", EXIT_ENV)
        if isinstance(e, RuntimeError) and "PytorchStreamWriter failed writing" in str(e):
            return ("could not write a checkpoint (file write failed: is the disk full?). Free space under "
                    "paths.artefact_dir or point it at a bigger disk, then run the same command again", EXIT_ENV)
        if isinstance(e, MissingMandatoryValue):
            key = getattr(e, "full_key", None) or "a mandatory value"
            return (f"{key} is not set (it has no default): add {key}=<value> to the command line", EXIT_INPUT)
        if type(e).__name__ == "MisconfigurationException":
            msg = " ".join(str(e).split())
            if any(w in msg for w in ("GPU", "CUDA", "cuda", "accelerator", "MPS")):
                return ("trainer asks for a GPU but torch sees none on this machine (" + msg[:160] + "). "
                        "Run with trainer=cpu (or trainer=default, which picks what is there), or install the "
                        "CUDA build of torch (README, \"CPU or GPU torch\")", EXIT_INPUT)
            return f"Lightning trainer setting: {msg}", EXIT_INPUT
    for k, e in enumerate(chain):
        if isinstance(e, ValueError) and "Unable to configure handler 'file'" in str(e):
            cause = next((c for c in chain if isinstance(c, OSError)), None)
            what = f"{cause.strerror}{_where(cause)}" if cause else str(e)
            return (f"cannot write the run's log file: {what}. hydra.run.dir (hydra.sweep.dir for -m) must be "
                    "a folder you can write: pass hydra.run.dir=<writable dir>, or launch from a writable "
                    "folder (run dirs default to ./outputs/)", EXIT_ENV)
        if isinstance(err, (ValueError, CompactHydraException)) and any(isinstance(w, ValueError) for w in chain[:k]):
            break  # camsim's own message already says what could not be read or written, and why
        if isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.ENOTDIR)):
            return (f"cannot write{_where(e)}: {e.strerror}. Choose writable folders (hydra.run.dir=..., "
                    "paths.artefact_dir=...) or fix the permissions", EXIT_ENV)
    if isinstance(err, (ValueError, FileNotFoundError, KeyError)):
        return str(err), EXIT_INPUT
    if isinstance(err, CompactHydraException):
        inner = next((c for c in chain[1:] if isinstance(c, (ValueError, FileNotFoundError))), None)
        text = str(inner) if inner is not None and type(err).__name__ == "InstantiationException" else str(err)
        return " ".join(text.split()) if inner is not None else text, EXIT_INPUT
    return None


class SweepJobFailed(RuntimeError):
    """A ``-m`` sweep job's known error, already reported in its line: raised as an ordinary exception
    so that Hydra records it and runs the sweep's other jobs (a SystemExit would stop the sweep),
    then re-raises the first one when the sweep ends."""

    def __init__(self, msg: str, code: int):
        super().__init__(msg, code)
        self.msg, self.code = msg, code

    def __str__(self) -> str:
        return self.msg


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra job here
        return False


def _fail(err: BaseException) -> None:
    """Report ``err`` in one line and exit, or re-raise it (unknown error, or tracebacks asked for)."""
    known = explain(err)
    if known is None or show_tracebacks():
        raise err
    msg, code = known
    if isinstance(err, SweepJobFailed):  # the sweep ended; its jobs' lines were printed as they failed
        print(f"camsim: error: a sweep job failed ({msg}); the sweep's other jobs ran", file=sys.stderr)
        raise SystemExit(code) from None
    _log_to_files(msg)
    print(f"camsim: {'error: ' if code != EXIT_INTERRUPT else ''}{msg}", file=sys.stderr)
    if code != EXIT_INTERRUPT and _in_multirun():
        raise SweepJobFailed(msg, code) from None
    if code == EXIT_INTERRUPT:  # worker pools the signal killed can fail at interpreter exit ("Exception
        sys.unraisablehook = lambda _: None  # ignored in ... threading"): noise after the one line, not news
    raise SystemExit(code) from None


def _log_to_files(msg: str) -> None:
    """The error line into the run's log file (Hydra's file handler), not a second time on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, msg, (), None)
    for lg in (log, logging.getLogger()):
        for handler in lg.handlers:
            if isinstance(handler, logging.FileHandler):
                with contextlib.suppress(Exception):
                    handler.handle(record)


class _SigintFlag:
    """Records that Ctrl-C was pressed (Lightning turns it into ``sys.exit(1)`` after its own
    shutdown, so the exit alone does not say why)."""

    pressed = False

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.pressed = True
        raise KeyboardInterrupt


# --------------------------------------------------------------------------- --help


def _defaults_groups(config_name: str, seen: set[str] | None = None) -> dict[str, None]:
    """Config groups chosen in ``conf/<config_name>.yaml``'s defaults list (and the configs it includes)."""
    import yaml

    seen = seen if seen is not None else set()
    if config_name in seen:
        return {}
    seen.add(config_name)
    path = Path(CONF_DIR, f"{config_name}.yaml")
    if not path.is_file():
        return {}
    groups: dict[str, None] = {}
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []) or []:
        if isinstance(entry, str):
            groups.update(_defaults_groups(entry, seen))
        elif isinstance(entry, dict):
            for key in entry:
                name = str(key).replace("optional ", "").replace("override ", "").strip().lstrip("/").split("@")[0]
                if name and not name.startswith(("hydra", "schema")):
                    groups[name] = None
    return groups


def groups_text(config_name: str) -> str:
    """The config groups this command composes and their options (internal ``schema/*`` hidden)."""
    lines = []
    for group in _defaults_groups(config_name):
        options = sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))
        if options:
            lines.append(f"  {group}: {', '.join(options)}")
    return "\n".join(lines)


def help_text(prog: str, config_name: str, text: str | None) -> str:
    body = (text or f"{prog}").strip("\n")
    groups = groups_text(config_name)
    parts = [body]
    if groups:
        parts.append("config groups (group=option on the command line):\n" + groups)
    parts.append(f"Any key can be overridden (key=value); `{prog} --cfg job` prints the composed config, "
                 f"`{prog} --hydra-help` Hydra's own flags (-m for sweeps, --cfg, --info). Errors are one line; "
                 "CAMSIM_DEBUG=1 shows the traceback.")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- debug=fast

#: what ``debug=fast`` makes of the experiment's data and sets (see conf/debug/fast.yaml):
#: simulated cameras rendered smaller, sets drawn by count cut to fit them
DEBUG_SYNTH = {"num_models": 8, "num_families": 3, "images_per_model": 6, "image_size": [192, 256]}
DEBUG_SPLIT = {"a": 4, "b": 2, "c": 2, "known": 2}
DEBUG_FRACTIONS = [0.5, 0.17, 0.33]  # 6 images: 3 train, 1 val, 2 test


def _choices_and_overrides() -> tuple[dict, set[str]]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, set()
    hc = HydraConfig.get()
    given = {str(o).split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
    return dict(hc.runtime.choices), given


def shrink_for_debug(cfg: DictConfig, choices: dict | None = None, given: set[str] | None = None) -> list[str]:
    """``debug=fast``: shrink the chosen experiment's simulated catalogue and count-drawn sets
    (a real photo folder and explicit sets are kept); values given on the command line win.
    Returns the changes as ``"key: old → new"``."""
    if choices is None or given is None:
        choices, given = _choices_and_overrides()
    if choices.get("debug") != "fast":
        return []
    changes = []

    def setv(node: DictConfig, prefix: str, key: str, new) -> None:
        old = node[key]
        old_plain = OmegaConf.to_container(old) if isinstance(old, (DictConfig, ListConfig)) else old
        if f"{prefix}.{key}" in given or old_plain == new:
            return
        node[key] = new
        changes.append(f"{prefix}.{key}: {old_plain} → {new}")

    data = cfg.get("data")
    shrunk_data = False
    if isinstance(data, DictConfig) and str(data.get("_target_", "")).endswith("SynthSource"):
        for key, new in DEBUG_SYNTH.items():
            old = data.get(key)
            smaller = new if not isinstance(new, list) else [min(int(o), n) for o, n in zip(old, new)]
            if key != "image_size" and isinstance(old, int) and old <= new:
                continue
            setv(data, "data", key, smaller)
        shrunk_data = bool(changes)
    split = cfg.get("split")
    if isinstance(split, DictConfig):
        for key, new in DEBUG_SPLIT.items():
            old = split.get(key)
            if isinstance(old, int) and not isinstance(old, bool) and old > new:
                setv(split, "split", key, new)
        if shrunk_data:
            setv(split, "split", "image_fractions", DEBUG_FRACTIONS)
    if changes:
        log.info("debug=fast changed: %s (data source %s and split %s kept)", "; ".join(changes),
                 choices.get("data", "?"), choices.get("split", "?"))
    return changes


# --------------------------------------------------------------------------- the wrapper


def _missing(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        more = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ValueError(f"{key} is not set (it has no default): add {key}=<value> to the command line{more}")


def _clean_leftovers(cfg: DictConfig) -> None:
    from camsim.artefacts import clean_artefact_dir

    try:
        root = cfg.paths.artefact_dir if "paths" in cfg and "artefact_dir" in cfg.paths else None
        removed = clean_artefact_dir(Path(root)) if root else []
    except OSError as err:  # housekeeping must never stop a run
        log.warning("could not clean leftovers in the artefact folder: %s", err)
        return
    if removed:
        log.info("removed %d leftover(s) of killed or failed runs: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))


def hydra_app(config_name: str, help: str | None = None) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """``@hydra.main`` on ``conf/<config_name>.yaml`` with camsim's ``--help``, one-line errors
    and Ctrl-C handling (module docstring). ``help``: the ``--help`` text (default: the
    entry module's docstring)."""
    if not Path(CONF_DIR, f"{config_name}.yaml").is_file():
        raise SystemExit(f"camsim: config tree not found at {CONF_DIR}; install camsim from its "
                         "repository with `pip install -e .` (see README)")

    def wrap(task: Callable[[DictConfig], object]) -> Callable[[], None]:
        text = help if help is not None else (sys.modules[task.__module__].__doc__ or "")

        @functools.wraps(task)
        def job(cfg: DictConfig) -> object:
            try:
                _missing(cfg)
                shrink_for_debug(cfg)
                _clean_leftovers(cfg)
                log.info(OMP_WAIT_NOTE)
                log.info(MALLOC_NOTE)
                return task(cfg)
            except SystemExit as err:
                if _SigintFlag.pressed and err.code not in (0, None, EXIT_INTERRUPT):
                    _fail(KeyboardInterrupt())  # Lightning's graceful shutdown ended in sys.exit(1)
                raise
            except BaseException as err:  # noqa: BLE001  (unknown errors are re-raised by _fail)
                _fail(err)

        hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(job)

        @functools.wraps(task)
        def main() -> None:
            prog = Path(sys.argv[0]).name
            if any(a in ("-h", "--help") for a in sys.argv[1:]):
                print(help_text(prog, config_name, text), end="")
                raise SystemExit(0)
            _SigintFlag.pressed = False
            with contextlib.suppress(ValueError):  # not the main thread: leave SIGINT alone
                signal.signal(signal.SIGINT, _SigintFlag.handler)
            try:
                with _hydra_reraises():
                    hydra_main()
            except SystemExit:
                raise
            except BaseException as err:  # noqa: BLE001
                _fail(err)

        main.job = job  # the bare Hydra task, for tests
        return main

    return wrap


@contextlib.contextmanager
def _hydra_reraises():
    """Let errors raised inside Hydra (composition, the run dir, logging set-up) reach
    :func:`_fail` instead of Hydra's own report (a traceback for most of them)."""
    import hydra._internal.utils as hydra_utils

    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:
        yield
        return

    def run_and_report(func):
        from hydra.errors import CompactHydraException

        try:
            return func()
        except CompactHydraException as ex:  # unknown key, bad override …: Hydra's compact message, as before
            if show_tracebacks():
                raise

            def again(exc: BaseException = ex) -> None:
                raise exc

            return original(again)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
