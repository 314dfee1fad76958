"""Quiet start-up for the tf_rcnn commands: TensorFlow's start-up and C++ log lines hidden
unless ``--verbose`` is given.

TensorFlow writes lines that say nothing to a user of these commands: start-up messages printed
straight to the stderr file descriptor while its libraries load ("WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR", "cudart_stub.cc ... Could not
find cuda drivers", "cpu_feature_guard.cc ...", "To enable the following instructions ..."),
C++ log lines later on ("failed call to cuInit", the graph cost estimator's "Error in
PredictCost()"), and INFO lines of its Python code: saving a SavedModel logs, for each
signature, the names of all its captured variables ("Function `serve` contains input name(s)
12040, ... which will be renamed to unknown, unknown_0, ...": TensorFlow's
``signature_serialization`` reports the placeholders of the model's variables, which carry
numeric names), then "Sharding callback duration", "Writing fingerprint", "Assets written".

``tf_rcnn/__init__.py`` imports TensorFlow (through Keras) inside :func:`quiet_startup`, which
does something only in a process started as one of the commands below and run without
``--verbose``:

- ``TF_CPP_MIN_LOG_LEVEL=3`` (unless already set) hides the C++ log lines;
- while TensorFlow loads, the stderr descriptor goes to a temporary file; afterwards it is
  restored and every captured line that is not one of the start-up lines is written back;
- log records below WARNING that TensorFlow's own Python modules send through absl logging or
  the ``tensorflow`` logger are dropped (tf_rcnn's own INFO lines stay).

Anything else (``import tf_rcnn`` in a notebook, a test, a user's script) is left untouched.
This module uses the standard library only: it runs before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

# `python -m` commands and repository scripts (relative to the checkout holding tf_rcnn/).
COMMAND_MODULES = ("tf_rcnn.predict", "tf_rcnn.tools.dump_proposals",
                   "tf_rcnn.tools.import_weights")
COMMAND_SCRIPTS = ("train.py", "eval.py", os.path.join("export", "export_saved_model.py"))

VERBOSE_HELP = ("Show TensorFlow's start-up lines and C++ log messages (hidden by default; "
                "TF_CPP_MIN_LOG_LEVEL, when set, still applies).")

# Lines TensorFlow prints to the stderr descriptor while it loads: absl's notice, info and
# warning lines of its C++ code (which come before TF_CPP_MIN_LOG_LEVEL applies) and the CUDA
# libraries' errors on a machine without a GPU. Fatal lines and other errors are kept.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+\.cc:\d+\]"
    r"|^E\d{4} \d\d:\d\d:[\d.]+\s+\d+ cuda_\w+\.cc:\d+\]"
    r"|^To enable the following instructions:"
)


def command_name(argv: Sequence[str] | None = None,
                 orig_argv: Sequence[str] | None = None) -> str | None:
    """The tf_rcnn command this process runs (a module name or a script path relative to the
    checkout), or None.

    Args:
        argv: ``sys.argv`` as it is while ``tf_rcnn`` is imported: for ``python -m``,
            ``argv[0]`` is still ``"-m"`` then, and the module name is in ``orig_argv``.
        orig_argv: the interpreter's command line (``sys.orig_argv``).
    """
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if not argv:
        return None
    if argv[0] == "-m":
        for i, arg in enumerate(orig_argv):
            if arg.startswith("-m"):  # "-m NAME" or "-mNAME"
                module = arg[2:] or (orig_argv[i + 1] if i + 1 < len(orig_argv) else "")
                return module if module in COMMAND_MODULES else None
        return None
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    script = os.path.realpath(argv[0])
    for name in COMMAND_SCRIPTS:
        if script == os.path.join(checkout, name):
            return name
    return None


def verbose_requested(argv: Sequence[str]) -> bool:
    """Whether ``argv`` turns on ``--verbose`` (absl boolean syntax; the last one wins)."""
    verbose = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg == "--verbose":
            verbose = True
        elif arg == "--noverbose":
            verbose = False
        elif arg.startswith("--verbose="):
            verbose = arg.split("=", 1)[1].lower() in ("1", "true", "t", "yes", "y")
    return verbose


def quiet_wanted(argv: Sequence[str] | None = None,
                 orig_argv: Sequence[str] | None = None) -> bool:
    """True in a tf_rcnn command process without ``--verbose``."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if command_name(argv, orig_argv) is None:
        return False
    # For `python -m`, the command's own flags are only in orig_argv at this point.
    return not verbose_requested(orig_argv if argv and argv[0] == "-m" else argv)


@contextlib.contextmanager
def filtered_stderr(drop: re.Pattern, fd: int = 2) -> Iterator[None]:
    """Everything written to the stderr file descriptor ``fd`` inside the block (C and C++ code
    included) is held back, then written out without the lines matching ``drop``."""
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not drop.search(line))
            if kept:
                os.write(fd, kept.encode())


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """Import TensorFlow inside this block (see the module docstring); a no-op outside the
    commands or with ``--verbose``."""
    if not quiet_wanted():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered_stderr(STARTUP_NOISE):
        yield
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None and getattr(tensorflow, "__file__", None):
        quiet = LibraryInfoFilter(os.path.dirname(tensorflow.__file__))
        for name in ("absl", "tensorflow"):
            logging.getLogger(name).addFilter(quiet)


class LibraryInfoFilter(logging.Filter):
    """Drops log records below WARNING that come from code under ``root`` (a package folder)."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = os.path.join(os.path.realpath(root), "")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not os.path.realpath(record.pathname).startswith(self.root)
