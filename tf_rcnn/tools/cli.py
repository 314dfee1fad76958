"""What every tf_rcnn command line shares: the ``--config`` flag and its overrides, and
``--verbose``.

``--config`` is a recipe (``configs/NAME.py``) or a run's ``config.json``; commands that read a
trained run (``eval.py``, the exporters, ``predict``, ``dump_proposals``) make it optional and
default to the run's own ``config.json``, so a run directory is all they need. In every case
``--config.a.b=v`` overrides apply on top, with ml_collections' typed parsing, and a misspelt key
is refused with the valid keys of its section before anything runs.

``--verbose`` shows TensorFlow's start-up lines and C++ log messages, which every command hides
by default. It acts while ``tf_rcnn`` is imported, before flags are parsed
(:mod:`tf_rcnn.console`); the flag is defined here so absl accepts it and lists it in ``--help``.

Usage in a script, before ``app.run``::

    CONFIG = cli.define_config_flag(sys.argv, run_flag="checkpoint")
    app.run(main, argv=CONFIG.argv)
    # in main: config = CONFIG.resolve()  (None when nothing gives one)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from tf_rcnn import console
from tf_rcnn.config import (
    ConfigError,
    default_config,
    find_unknown_overrides,
    load_config_file,
    load_run_config,
    run_config_file,
)
from tf_rcnn.models.builder import upgrade_saved_config
from tf_rcnn.models.checkpoint import PRECISIONS


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in ``argv`` (the last one wins), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


@dataclasses.dataclass
class ConfigFlag:
    """The ``--config`` of a command (see :func:`define_config_flag`).

    Attributes:
        argv: the command line without ``--config=PATH`` (pass it to ``app.run``).
        path: the recipe or config.json given with ``--config``, or None.
        source: where the config came from (a file name), or None when nothing gave one.
        holder: the absl flag holding the config with the overrides applied.
    """

    argv: list[str]
    path: str | None
    source: str | None
    holder: flags.FlagHolder

    def resolve(self) -> ml_collections.ConfigDict | None:
        """The config with every ``--config.a.b=v`` applied; None when no recipe was given and
        the run has no ``config.json``."""
        return None if self.source is None else self.holder.value


def define_config_flag(
    argv: Sequence[str],
    run_flag: str | None = None,
    help_string: str = "Recipe (configs/NAME.py) or a run's config.json.",
    default_path: str | None = None,
) -> ConfigFlag:
    """Defines ``--config`` for a command; call before ``app.run``.

    Args:
        argv: ``sys.argv``.
        run_flag: the flag naming a trained run (``"checkpoint"``) whose ``config.json`` is the
            default; None makes ``--config`` the only source (``train.py``).
        help_string: the flag's help.
        default_path: the recipe used when neither ``--config`` nor the run gives one.

    Exits with status 2 and a message naming the valid keys when an override names a key the
    config lacks, or when the config file cannot be read.
    """
    argv = list(argv)
    path = flag_value(argv, "config")
    run = flag_value(argv, run_flag) if run_flag else None
    config, source = None, None
    try:
        if path is not None:
            config, source = load_config_file(path, upgrade=upgrade_saved_config), path
        elif run is not None:
            config = load_run_config(run, upgrade=upgrade_saved_config)
            source = None if config is None else run_config_file(run)
        if config is None and default_path is not None:
            config, source = load_config_file(default_path), default_path
    except (ConfigError, FileNotFoundError, SyntaxError) as error:
        _exit(f"--config: {error}")
    prefix = "--config."
    overrides = [a[len(prefix):].split("=", 1)[0] for a in argv if a.startswith(prefix)]
    if config is not None:
        unknown = find_unknown_overrides(config, overrides)
        if unknown:
            lines = [f"Unknown config key(s) in {source}:"]
            for key, choices in unknown:
                lines.append(f"  --config.{key}: valid keys here are: {', '.join(choices)}")
            _exit("\n".join(lines))
    cleaned = [a for i, a in enumerate(argv)
               if not (a.startswith("--config=")
                       or a == "--config"
                       or (i > 0 and argv[i - 1] == "--config"))]
    # ml_collections registers one typed flag per --config.a.b override when it parses the
    # default, which it does only when argv carries no --config=... value: hence the cleaned argv.
    holder = config_flags.DEFINE_config_dict(
        "config", config if config is not None else default_config(), help_string,
        sys_argv=cleaned)
    flags.DEFINE_bool("verbose", False, console.VERBOSE_HELP)
    return ConfigFlag(argv=cleaned, path=path, source=source, holder=holder)


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags of a command that reads a trained run (eval.py, the exporters)."""

    config: ConfigFlag
    checkpoint: flags.FlagHolder
    output_dir: flags.FlagHolder


def define_run_flags(argv: Sequence[str], output_help: str) -> RunFlags:
    """``--config`` (default: the run's ``config.json``), ``--checkpoint`` and
    ``--output_dir``, the last two required; call before ``app.run(main, argv=...config.argv)``.

    Args:
        argv: ``sys.argv``.
        output_help: what ``--output_dir`` receives.
    """
    config = define_config_flag(
        argv, run_flag="checkpoint",
        help_string="Recipe or config.json (default: the run's config.json).")
    checkpoint = flags.DEFINE_string(
        "checkpoint", None, "Run directory (its newest checkpoint) or a checkpoint prefix.")
    output_dir = flags.DEFINE_string("output_dir", None, output_help)
    flags.mark_flags_as_required(["checkpoint", "output_dir"])
    return RunFlags(config, checkpoint, output_dir)


def _exit(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    raise SystemExit(2)


def define_precision_flag(what: str) -> flags.FlagHolder:
    """``--precision=float32|bfloat16|float16`` (``models.checkpoint.PRECISIONS``): the type
    ``what`` computes in, for eval.py and the SavedModel exporter alike."""
    return flags.DEFINE_enum(
        "precision", "float32", list(PRECISIONS),
        f"Type {what} computes in (weights stay float32). float32 is the fastest on CPUs "
        "without AMX; bfloat16 suits AMX CPUs and TPUs, float16 GPUs.")
