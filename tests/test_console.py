"""Quiet commands: TensorFlow's start-up and C++ log lines are hidden unless --verbose is given,
and nothing changes for a library user (tf_rcnn.console)."""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.support import REPO, run_command
from tf_rcnn import console

# What a user must not see by default (TensorFlow 2.21 on a CPU-only machine prints all of them).
NOISE = re.compile(r"absl::InitializeLog|cudart_stub|cpu_feature_guard|To enable the following "
                   r"instructions|cuInit|PredictCost|unknown_0")


def test_only_the_commands_are_recognised():
    python = [sys.executable]
    assert console.command_name(["-m"], [*python, "-m", "tf_rcnn.predict", "--x"]) == (
        "tf_rcnn.predict")
    assert console.command_name(["-m"], [*python, "-u", "-mtf_rcnn.tools.dump_proposals"]) == (
        "tf_rcnn.tools.dump_proposals")
    assert console.command_name(["-m"], [*python, "-m", "tf_rcnn.tools.import_weights"]) == (
        "tf_rcnn.tools.import_weights")
    assert console.command_name(["-m"], [*python, "-m", "pytest"]) is None
    assert console.command_name([os.path.join(REPO, "eval.py")], []) == "eval.py"
    assert console.command_name([os.path.join(REPO, "export", "export_saved_model.py")], []) == (
        os.path.join("export", "export_saved_model.py"))
    # A user's own train.py elsewhere, a notebook kernel, the test runner: left alone.
    assert console.command_name(["/home/me/train.py"], []) is None
    assert console.command_name(["/usr/lib/python3/ipykernel_launcher.py"], []) is None
    assert not console.quiet_wanted()  # this test process


def test_verbose_flag_syntax():
    assert console.verbose_requested(["eval.py", "--verbose"])
    assert not console.verbose_requested(["eval.py", "--verbose", "--noverbose"])
    assert console.verbose_requested(["eval.py", "--verbose=true"])
    assert not console.verbose_requested(["eval.py", "--verbose=false"])
    assert not console.verbose_requested(["eval.py", "--", "--verbose"])
    assert console.quiet_wanted([os.path.join(REPO, "train.py"), "--model_dir=x"], [])
    assert not console.quiet_wanted(["-m"], ["python", "-m", "tf_rcnn.predict", "--verbose"])


def test_filtered_stderr_drops_only_the_matching_lines(capfd):
    with console.filtered_stderr(console.STARTUP_NOISE):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1795996913.209638   17041 cudart_stub.cc:31] Could not find "
                    b"cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"F0000 00:00:1795996913.209638   17041 something.cc:1] a fatal line\n")
        print("a Python warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "InitializeLog" not in err and "cudart_stub" not in err
    assert "a fatal line" in err and "a Python warning" in err


@pytest.mark.parametrize("command", [
    ["-m", "tf_rcnn.predict", "--inputs=nothing.png", "--output_dir=unused"],
    ["eval.py", "--output_dir=unused"],
])
def test_a_command_prints_tensorflow_noise_only_with_verbose(command, tmp_path):
    # Both import TensorFlow, then stop at the missing checkpoint (exit 1, a usage message).
    args = [*command, f"--checkpoint={tmp_path / 'no_run'}"]
    quiet = run_command(args)
    assert quiet.returncode == 1 and "No checkpoint" in quiet.stderr, quiet.stderr[-2000:]
    assert not NOISE.search(quiet.stdout + quiet.stderr), quiet.stderr[-2000:]
    if command[0] != "-m":
        return  # one --verbose run is enough
    verbose = run_command([*args, "--verbose"])
    assert verbose.returncode == 1
    assert NOISE.search(verbose.stderr), "this TensorFlow build printed no start-up lines"
