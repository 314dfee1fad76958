"""Write the small PyTorch checkpoints that tests/pretrained/test_torch_checkpoint.py reads.

The tests read these files without torch; this script is the only place torch is needed. Re-run
it (from the repository root) whenever the fixtures must change, with the venv made by
``benchmarks/peers/setup_torchvision.sh`` (torch 2.14.1, numpy, safetensors)::

    bash benchmarks/peers/setup_torchvision.sh /tmp/tvenv
    /tmp/tvenv/bin/python benchmarks/peers/make_checkpoint_fixtures.py [--out=tests/fixtures/torch]

then run the tests and commit the files. The bytes differ from run to run (torch writes a random
serialization id into zip files and ``id()``-based storage keys into legacy files); the values
do not (fixed seed).

Written to ``--out``:

* ``state_dict_zip.pth`` / ``state_dict_legacy.pth``: the same state dict saved by ``torch.save``
  in the zip format and in the legacy format (``_use_new_zipfile_serialization=False``). It is a
  real module state dict (``Conv2d(2, 3, 3)`` + ``BatchNorm2d(3)`` after one training-mode
  forward, so an ``OrderedDict`` with ``_metadata`` and an int64 0-d ``num_batches_tracked``)
  with ``extra.*`` entries added: contiguous, transposed, sliced with a storage offset, strided
  slice, expanded (stride 0), two tensors sharing one storage, float16, float64, bfloat16,
  int64/int32/int16/int8, uint8, bool, a 0-d tensor, an empty tensor and an ``nn.Parameter``.
* ``state_dict_zip_bigendian.pth``: the zip file with its ``byteorder`` entry set to ``big`` and
  every storage byte-swapped to match (what torch writes on a big-endian machine); checked here
  by loading it with torch.
* ``wrapped_model_zip.pth`` (``{"model": state dict, "epoch": 7, "best_ap": 0.5}``) and
  ``wrapped_state_dict_legacy.pth`` (``{"state_dict": ..., "epoch": 3}``): training checkpoints.
* ``state_dict.safetensors``: the same values written by the safetensors package (contiguous
  copies; safetensors refuses shared and strided tensors).
* ``expected.npz``: the values every file must read back as, written with NumPy
  (``tensor.contiguous()``; bfloat16 as float32, its exact widening), and ``expected.json``:
  the ``_metadata`` of the state dict, the wrapped files' keys and the torch version.
* ``tampered_zip.pth`` / ``tampered_legacy.pth``: ``torch.save`` of ``{"payload": <object>,
  "weight": <tensor>}`` where the object pickles as a call of ``os.system`` (``posix.system``)
  with ``echo pwned > tf_rcnn_tampered_checkpoint_ran.txt``. A plain unpickler (``torch.load``
  with ``weights_only=False``, or even ``pickle.loads`` of the zip file's data.pkl, since the
  payload comes before the first tensor) runs that command while loading; this script checks
  that torch.load does, in a temporary directory, so the files really are armed.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "tf_rcnn_tampered_checkpoint_ran.txt"
COMMAND = f"echo pwned > {MARKER}"


def make_state_dict() -> collections.OrderedDict:
    """A real module state dict plus one entry per tensor layout/dtype case."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 2, 5, 5))  # moves the BatchNorm running stats, num_batches_tracked=1
    sd = net.state_dict()  # OrderedDict with _metadata
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")

    grid = torch.arange(20, dtype=torch.float32).reshape(4, 5) / 4
    line = torch.arange(30, dtype=torch.float32) * 1.5 - 7
    shared = torch.arange(10, dtype=torch.float32) - 4.5
    bf_values = [1.0, -2.5, 3.14159, 1e-3, 65504.0, -0.0, 3.0e38, 1.0e-38]
    sd["extra.contiguous"] = torch.randn(3, 4)
    sd["extra.transposed"] = grid.t()  # strides (1, 5)
    sd["extra.sliced"] = line[7:19].view(3, 4)  # storage offset 7
    sd["extra.strided_slice"] = line.view(5, 6)[1:4, ::2]  # offset 6, strides (6, 2)
    sd["extra.expanded"] = torch.tensor([1.0, 2.0, 3.0]).expand(4, 3)  # strides (0, 1)
    sd["extra.shared_a"] = shared[:6]
    sd["extra.shared_b"] = shared[4:].view(2, 3)  # offset 4 into the same storage
    sd["extra.float16"] = torch.randn(2, 3).half()
    sd["extra.float64"] = torch.randn(3, dtype=torch.float64)
    sd["extra.bfloat16"] = torch.tensor(bf_values).bfloat16().view(2, 4)
    sd["extra.int64"] = torch.tensor([-5, 0, 2**40, -(2**62)])
    sd["extra.int32"] = torch.tensor([-(2**31), 7, 2**31 - 1], dtype=torch.int32)
    sd["extra.int16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["extra.int8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["extra.uint8"] = torch.arange(0, 251, 50, dtype=torch.uint8)
    sd["extra.bool"] = torch.tensor([[True, False, True], [False, False, True]])
    sd["extra.scalar"] = torch.tensor(2.5)
    sd["extra.empty"] = torch.zeros(0, 4)
    sd["extra.parameter"] = torch.nn.Parameter(torch.randn(2, 2))
    return sd


def expected_arrays(sd) -> dict[str, np.ndarray]:
    out = {}
    for name, t in sd.items():
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()  # exact: bfloat16 is the upper half of a float32
        out[name] = t.numpy().copy()
    return out


def small_state_dict() -> collections.OrderedDict:
    torch.manual_seed(1)
    return torch.nn.Linear(3, 2).state_dict()


def make_bigendian(src: str, dst: str) -> None:
    """Copy a zip-format checkpoint, rewriting it as torch writes it on a big-endian machine."""
    with zipfile.ZipFile(src) as archive:
        names = archive.namelist()
        prefix = next(n for n in names if n.endswith("/data.pkl"))[: -len("data.pkl")]
        itemsize = storage_itemsizes(archive.read(prefix + "data.pkl"))
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
            for name in names:
                data = archive.read(name)
                if name == prefix + "byteorder":
                    data = b"big"
                elif name.startswith(prefix + "data/"):
                    size = itemsize[name[len(prefix + "data/") :]]
                    data = np.frombuffer(data, dtype=f"<u{size}").astype(f">u{size}").tobytes()
                out.writestr(name, data)


def storage_itemsizes(data_pkl: bytes) -> dict[str, int]:
    """Storage key -> element size, read from the persistent ids of a (trusted) data.pkl."""
    sizes = {}

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils":
                return lambda *args: None
            return super().find_class(module, name)

        def persistent_load(self, pid):
            _, storage_type, key, _, _ = pid
            with warnings.catch_warnings():  # storage classes are "deprecated" TypedStorages
                warnings.simplefilter("ignore")
                sizes[key] = storage_type.dtype.itemsize
            return None

    Recorder(io.BytesIO(data_pkl)).load()
    return sizes


class Payload:
    """Pickles as ``os.system(COMMAND)``: what a malicious checkpoint carries."""

    def __reduce__(self):
        return (os.system, (COMMAND,))


def check_armed(path: str) -> None:
    """A plain unpickler runs the payload; torch's default weights-only loader refuses it."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import sys, torch\n"
            "try:\n"
            "    torch.load(sys.argv[1])\n"
            "    sys.exit('weights_only load accepted the payload')\n"
            "except Exception:\n"
            "    pass\n"
            "import os\n"
            "assert not os.path.exists(sys.argv[2])\n"
            "torch.load(sys.argv[1], weights_only=False)\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, os.path.abspath(path), MARKER], cwd=tmp, check=True
        )
        if not os.path.exists(os.path.join(tmp, MARKER)):
            raise RuntimeError(f"{path}: the payload did not run under a plain load")


def assert_same(loaded, expected: dict[str, np.ndarray], what: str, ordered: bool = True) -> None:
    if ordered:
        assert list(loaded) == list(expected), (what, list(loaded))
    assert sorted(loaded) == sorted(expected), (what, sorted(loaded))
    for name, value in expected.items():
        t = loaded[name].detach().contiguous()
        got = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        assert got.dtype == value.dtype and got.shape == value.shape, (what, name)
        np.testing.assert_array_equal(got, value, err_msg=f"{what}: {name}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "torch"))
    args = parser.parse_args(argv)
    out = args.out
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    path = lambda name: os.path.join(out, name)

    sd = make_state_dict()
    expected = expected_arrays(sd)
    np.savez(path("expected.npz"), **expected)
    torch.save(sd, path("state_dict_zip.pth"))
    torch.save(sd, path("state_dict_legacy.pth"), _use_new_zipfile_serialization=False)
    make_bigendian(path("state_dict_zip.pth"), path("state_dict_zip_bigendian.pth"))
    torch.save({"model": sd, "epoch": 7, "best_ap": 0.5}, path("wrapped_model_zip.pth"))
    small = small_state_dict()
    torch.save(
        {"state_dict": small, "epoch": 3},
        path("wrapped_state_dict_legacy.pth"),
        _use_new_zipfile_serialization=False,
    )
    np.savez(path("expected_small.npz"), **expected_arrays(small))
    save_safetensors(
        {k: v.detach().clone().contiguous() for k, v in sd.items()},
        path("state_dict.safetensors"),
        metadata={"format": "pt", "written_by": "make_checkpoint_fixtures.py"},
    )
    payload = collections.OrderedDict(payload=Payload(), weight=torch.zeros(2))
    torch.save(payload, path("tampered_zip.pth"))
    torch.save(payload, path("tampered_legacy.pth"), _use_new_zipfile_serialization=False)
    with open(path("expected.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__,
                "metadata": {k: dict(v) for k, v in sd._metadata.items()},
                "marker": MARKER,
            },
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")

    # Check every file with torch itself.
    for name in ("state_dict_zip.pth", "state_dict_legacy.pth", "state_dict_zip_bigendian.pth"):
        assert_same(torch.load(path(name)), expected, name)
    assert_same(torch.load(path("wrapped_model_zip.pth"))["model"], expected, "wrapped model")
    assert_same(load_safetensors(path("state_dict.safetensors")), expected, "safetensors", False)
    for name in ("tampered_zip.pth", "tampered_legacy.pth"):
        check_armed(path(name))

    total = 0
    for name in sorted(os.listdir(out)):
        size = os.path.getsize(path(name))
        total += size
        print(f"{size:8d}  {name}")
    print(f"{total:8d}  total, written by torch {torch.__version__}")


if __name__ == "__main__":
    main()
