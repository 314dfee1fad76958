"""Training at scale on the shapes recipe: throughput, resume after kill -9, precision, schedule.

Each mode runs ``train.py`` / ``eval.py`` in subprocesses exactly as a user would and prints one
``RESULT {...}`` JSON line:

    python benchmarks/train_scaling.py throughput [--steps=200]
        images/s of train.py with --strategy=default vs --strategy=mirrored --num_cpu_devices=2
        (the speed of the last progress line, after tracing).
    python benchmarks/train_scaling.py distributed [--steps=300]
        train.py --strategy=mirrored on 2 logical CPU devices, then --strategy=multi_worker as
        two processes on 127.0.0.1 (TF_CONFIG): logged total_loss at the start and the end of
        each run, and the SHA-256 of both workers' final weights (acceptance: equal).
    python benchmarks/train_scaling.py resume [--steps=3000]
        an uninterrupted run vs the same command killed with SIGKILL after its first checkpoint
        and restarted; bbox/AP50 of both on the shapes val split (acceptance: within 0.03).
    python benchmarks/train_scaling.py precision --policy=mixed_float16 [--steps=3000]
        train + eval under a mixed-precision policy.
    python benchmarks/train_scaling.py alternating [--steps=S1,S2,S3,S4] [--recipe=NAME]
        4-step alternating training of ``configs/NAME.py`` (default shapes_faster_rcnn; also
        shapes_rfcn, shapes_mask_rcnn) for the recipe's ``train.alternating_steps`` (or
        1500,1500,750,750 when it sets none), then eval.py of the stage-4 detector with that same
        recipe (acceptance: AP50 >= 0.85). train.py's output goes to ``MODEL_DIR/train.log``.
        R-FCN, whose paper trains it this way: ``configs/shapes_rfcn.py`` sets
        ``train.alternating_steps=(2500, 2500, 1250, 1250)`` (the joint recipe's 2500 steps for
        each of the two full trainings, half for the two fine-tunings). Measured on the shared
        2-core CPU (bbox AP / AP50 / AP75 of stage4_detector on the 200 val images; train
        seconds inflated by other processes):

            steps                   AP     AP50   AP75   train s
            2500,2500,1250,1250     0.713  0.936  0.824  2936 (the recipe's schedule)
            800,800,450,450         0.492  0.719  0.587  1656
            800,1300,150,250        0.557  0.768  0.636  1112 (stage 1 reused from the run above)
            500,1300,250,450        0.553  0.812  0.643  1556
            400,1300,450,350        0.551  0.804  0.620   822
            400,1200,350,550        0.552  0.790  0.641   562
        The short schedules (the joint recipe's 2500 steps split over the four stages) stay
        under 0.85 AP50: the stage-2 detector (a random trunk trained without the RPN's
        gradient; the paper starts it from ImageNet) alone on the stage-1 proposals gave AP50
        0.60 after 800 steps and 0.84 after 1300; 150 stage-3 steps leave a weak RPN
        (recall@0.5 of 1000 proposals 0.85, against 0.98-0.99 after 450).

Runs go to ``--root`` (default ``/tmp/tf_rcnn_train_scaling``); the shapes data is generated
once under ``--root/shapes``. Numbers on the 2-core CPU machine are noisy when it is shared.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODES = ("throughput", "distributed", "resume", "precision", "alternating")
_MODE = flags.DEFINE_enum("mode", None, list(MODES),
                          "What to measure (or give it as the first argument).")
_ROOT = flags.DEFINE_string("root", "/tmp/tf_rcnn_train_scaling", "Working directory.")
_STEPS = flags.DEFINE_string("steps", None, "Training steps (alternating: 4 comma-separated).")
_POLICY = flags.DEFINE_string("policy", "mixed_float16", "Mixed-precision policy (precision).")
_RECIPE = flags.DEFINE_string("recipe", "shapes_faster_rcnn",
                              "configs/NAME.py every mode trains (the alternating mode's "
                              "default steps are its train.alternating_steps).")


def _recipe() -> str:
    return os.path.join(REPO, "configs", f"{_RECIPE.value}.py")


def _default_alternating_steps() -> str:
    """The recipe's ``train.alternating_steps``, or 1500,1500,750,750 when it sets none."""
    sys.path.insert(0, REPO)
    from tf_rcnn.config import load_config_file

    steps = load_config_file(_recipe()).train.alternating_steps
    return ",".join(str(int(s)) for s in steps) if steps else "1500,1500,750,750"


def _common(root: str) -> list[str]:
    return [f"--config={_recipe()}", f"--config.data.shapes_dir={os.path.join(root, 'shapes')}"]


def _train_cmd(root: str, model_dir: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(REPO, "train.py"), *_common(root),
            f"--model_dir={model_dir}", *extra]


def _eval(root: str, checkpoint: str, out: str, *extra: str) -> dict:
    subprocess.run([sys.executable, os.path.join(REPO, "eval.py"), *_common(root),
                    f"--checkpoint={checkpoint}", f"--output_dir={out}", *extra],
                   check=True, cwd=REPO, capture_output=True)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def _speed(output: str) -> float:
    speeds = re.findall(r"\| ([0-9.]+) img/s \|", output)
    return float(speeds[-1]) if speeds else float("nan")


def throughput(root: str, steps: int) -> dict:
    result = {}
    for name, extra in (("default", []),
                        ("mirrored_2cpu", ["--strategy=mirrored", "--num_cpu_devices=2"])):
        model_dir = os.path.join(root, f"throughput_{name}_{int(time.time())}")
        proc = subprocess.run(
            _train_cmd(root, model_dir, f"--config.train.total_steps={steps}",
                       "--config.train.log_every=50", "--config.train.checkpoint_every=100000",
                       *extra),
            cwd=REPO, capture_output=True, text=True, check=True)
        result[f"{name}_images_per_second"] = _speed(proc.stdout)
    return result


def _losses(output: str) -> list[float]:
    return [float(x) for x in re.findall(r"total_loss ([0-9.naif]+)", output)]


def _final_metrics(output: str) -> dict:
    match = re.search(r"Training finished: (\{.*\})", output)
    if not match:
        raise RuntimeError(f"no final metrics in:\n{output[-3000:]}")
    return json.loads(match.group(1))


def _loss_summary(losses: list[float]) -> dict:
    head, tail = losses[:3], losses[-3:]
    return {"logged_losses": len(losses), "first_losses_mean": sum(head) / len(head),
            "last_losses_mean": sum(tail) / len(tail),
            "loss_decreased": sum(tail) / len(tail) < sum(head) / len(head)}


def distributed(root: str, steps: int) -> dict:
    stamp = int(time.time())
    common = [f"--config.train.total_steps={steps}",
              f"--config.train.log_every={max(1, steps // 15)}",
              f"--config.train.checkpoint_every={steps}"]
    mirrored_dir = os.path.join(root, f"mirrored_{steps}_{stamp}")
    proc = subprocess.run(
        _train_cmd(root, mirrored_dir, *common, "--strategy=mirrored", "--num_cpu_devices=2"),
        cwd=REPO, capture_output=True, text=True, check=True)
    result = {"steps": steps, "mirrored": {**_loss_summary(_losses(proc.stdout)),
                                          "images_per_second": _speed(proc.stdout)}}
    from tf_rcnn.training import local_cluster_tf_configs

    worker_dir = os.path.join(root, f"multi_worker_{steps}_{stamp}")
    procs = []
    for tf_config in local_cluster_tf_configs(2):
        procs.append(subprocess.Popen(
            _train_cmd(root, worker_dir, *common, "--strategy=multi_worker"), cwd=REPO,
            env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed:\n{err[-4000:]}")
    finals = [_final_metrics(err) for _, err in outputs]
    result["multi_worker"] = {
        **_loss_summary(_losses(outputs[0][0])),
        "images_per_second": _speed(outputs[0][0]),
        "weights_sha256": [f["weights_sha256"] for f in finals],
        "weights_identical": finals[0]["weights_sha256"] == finals[1]["weights_sha256"],
    }
    return result


def resume(root: str, steps: int) -> dict:
    base = os.path.join(root, f"resume_{steps}")
    args = [f"--config.train.total_steps={steps}", f"--config.train.checkpoint_every={steps // 6}"]
    straight, killed = os.path.join(base, "uninterrupted"), os.path.join(base, "killed")
    if not os.path.exists(os.path.join(straight, f"ckpt-{steps}.index")):
        subprocess.run(_train_cmd(root, straight, *args), cwd=REPO, check=True,
                       capture_output=True)
    kill_step = None
    if not os.path.exists(os.path.join(killed, f"ckpt-{steps}.index")):
        proc = subprocess.Popen(_train_cmd(root, killed, *args), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = os.path.join(killed, f"ckpt-{2 * (steps // 6)}.index")
        while not os.path.exists(first) and proc.poll() is None:
            time.sleep(0.5)
        time.sleep(5.0)  # a little past the checkpoint: these steps are lost
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_step = 2 * (steps // 6)
        subprocess.run(_train_cmd(root, killed, *args), cwd=REPO, check=True,
                       capture_output=True)
    ap = {name: _eval(root, d, d + "_eval")["bbox/AP50"]
          for name, d in (("uninterrupted", straight), ("killed_and_resumed", killed))}
    return {"steps": steps, "killed_after_checkpoint": kill_step, **ap,
            "ap50_difference": abs(ap["uninterrupted"] - ap["killed_and_resumed"])}


def precision(root: str, steps: int, policy: str) -> dict:
    model_dir = os.path.join(root, f"precision_{policy}_{steps}")
    proc = subprocess.run(_train_cmd(root, model_dir, f"--config.train.total_steps={steps}",
                                     f"--config.train.mixed_precision={policy}"),
                          cwd=REPO, capture_output=True, text=True, check=True)
    losses = [float(x) for x in re.findall(r"total_loss ([0-9.naif]+)", proc.stdout)]
    metrics = _eval(root, model_dir, model_dir + "_eval")
    return {"policy": policy, "steps": steps, "first_logged_loss": losses[0],
            "last_logged_loss": losses[-1], "images_per_second": _speed(proc.stdout),
            "bbox/AP50": metrics["bbox/AP50"], "bbox/AP": metrics["bbox/AP"]}


def alternating(root: str, steps: tuple[int, ...]) -> dict:
    model_dir = os.path.join(root, f"alternating_{_RECIPE.value}_" + "_".join(map(str, steps)))
    os.makedirs(model_dir, exist_ok=True)
    start = time.time()
    with open(os.path.join(model_dir, "train.log"), "a") as log:
        subprocess.run(_train_cmd(root, model_dir, "--config.train.schedule_mode=alternating",
                                  f"--config.train.alternating_steps={tuple(steps)}"),
                       cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    train_seconds = time.time() - start
    final = os.path.join(model_dir, "stage4_detector")
    metrics = _eval(root, final, final + "_eval")
    return {"recipe": _RECIPE.value, "steps": list(steps), "train_seconds": round(train_seconds),
            **{k: metrics[k] for k in ("bbox/AP", "bbox/AP50", "bbox/AP75") if k in metrics}}


def main(argv):
    mode = _MODE.value or (argv[1] if len(argv) > 1 else None)
    root = _ROOT.value
    os.makedirs(root, exist_ok=True)
    start = time.time()
    if mode == "throughput":
        result = throughput(root, int(_STEPS.value or 200))
    elif mode == "distributed":
        result = distributed(root, int(_STEPS.value or 300))
    elif mode == "resume":
        result = resume(root, int(_STEPS.value or 3000))
    elif mode == "precision":
        result = precision(root, int(_STEPS.value or 3000), _POLICY.value)
    elif mode == "alternating":
        steps = tuple(int(s) for s in (_STEPS.value or _default_alternating_steps()).split(","))
        result = alternating(root, steps)
    else:
        raise app.UsageError("mode: " + " | ".join(MODES))
    result["wall_seconds"] = round(time.time() - start, 1)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
