"""tf_rcnn.formats.torch_checkpoint: PyTorch checkpoints read without torch.

The files in tests/fixtures/torch were written by torch 2.14.1 through
benchmarks/peers/make_checkpoint_fixtures.py (see its docstring to re-create them); torch is not
needed here. Hand-made pickles (built opcode by opcode below) cover what torch does not write
today: refused globals of every spelling, bad tensor geometry, legacy storage views.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support import imported_roots, run_module_by_path
from tf_rcnn.formats import torch_checkpoint as tc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "torch"
MODULE_FILE = Path(tc.__file__)
TORCH_FILES = ["state_dict_zip.pth", "state_dict_legacy.pth", "state_dict_zip_bigendian.pth"]
TAMPERED = ["tampered_zip.pth", "tampered_legacy.pth"]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def expected_json() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


def assert_state_dicts_equal(got: dict, want: dict, ordered: bool = True) -> None:
    if ordered:
        assert list(got) == list(want)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        array = got[name]
        assert isinstance(array, np.ndarray), name
        assert array.dtype == value.dtype, (name, array.dtype, value.dtype)
        assert array.shape == value.shape, (name, array.shape, value.shape)
        np.testing.assert_array_equal(array, value, err_msg=name)
        assert array.flags.c_contiguous and array.flags.owndata and array.flags.writeable, name
        assert array.dtype.isnative, name


# --------------------------------------------------------------------------------------------
# files written by torch


@pytest.mark.parametrize("name", TORCH_FILES)
def test_torch_files_read_as_torch_sees_them(name, expected, expected_json):
    checkpoint = tc.read_checkpoint(FIXTURES / name)
    assert checkpoint.format == ("torch-legacy" if "legacy" in name else "torch-zip")
    assert checkpoint.wrapper_key is None
    assert_state_dicts_equal(checkpoint.state_dict, expected)
    assert checkpoint.metadata == expected_json["metadata"]


@pytest.mark.parametrize("name", TORCH_FILES)
def test_tensor_layouts_and_dtypes(name):
    sd = tc.load_state_dict(str(FIXTURES / name))
    grid = np.arange(20, dtype=np.float32).reshape(4, 5) / 4
    line = np.arange(30, dtype=np.float32) * 1.5 - 7
    shared = np.arange(10, dtype=np.float32) - 4.5
    np.testing.assert_array_equal(sd["extra.transposed"], grid.T)
    np.testing.assert_array_equal(sd["extra.sliced"], line[7:19].reshape(3, 4))
    np.testing.assert_array_equal(sd["extra.strided_slice"], line.reshape(5, 6)[1:4, ::2])
    np.testing.assert_array_equal(sd["extra.expanded"], np.tile([1.0, 2.0, 3.0], (4, 1)))
    np.testing.assert_array_equal(sd["extra.shared_a"], shared[:6])
    np.testing.assert_array_equal(sd["extra.shared_b"], shared[4:].reshape(2, 3))
    # Tensors sharing a storage come back as independent arrays.
    sd["extra.shared_a"][4] = 100.0
    assert sd["extra.shared_b"][0, 0] == shared[4]
    assert not np.shares_memory(sd["extra.shared_a"], sd["extra.shared_b"])
    # bfloat16 is widened to float32; these values are exact in bfloat16 or rounded by torch.
    assert sd["extra.bfloat16"].dtype == np.float32
    assert sd["extra.bfloat16"][0, :3].tolist() == [1.0, -2.5, 3.140625]
    assert sd["extra.scalar"].shape == () and sd["extra.scalar"] == 2.5
    assert sd["extra.empty"].shape == (0, 4) and sd["extra.empty"].dtype == np.float32
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"] == 1
    assert sd["extra.int64"].tolist() == [-5, 0, 2**40, -(2**62)]
    assert sd["extra.uint8"].tolist() == [0, 50, 100, 150, 200, 250]
    assert sd["extra.bool"].dtype == np.bool_
    expected_dtypes = {
        "extra.float16": np.float16,
        "extra.float64": np.float64,
        "extra.int32": np.int32,
        "extra.int16": np.int16,
        "extra.int8": np.int8,
        "extra.parameter": np.float32,
        "0.weight": np.float32,
    }
    for key, dtype in expected_dtypes.items():
        assert sd[key].dtype == dtype, key
    assert sd["0.weight"].shape == (3, 2, 3, 3)


def test_detection_is_by_content_not_extension(tmp_path, expected):
    for source, fake_name, fmt in [
        ("state_dict_zip.pth", "weights.safetensors", "torch-zip"),
        ("state_dict_legacy.pth", "weights.npz", "torch-legacy"),
        ("state_dict.safetensors", "weights.pth", "safetensors"),
        ("expected.npz", "weights.bin", "npz"),
    ]:
        target = tmp_path / fake_name
        shutil.copy(FIXTURES / source, target)
        assert tc.detect_format(target) == fmt
        assert sorted(tc.load_state_dict(target)) == sorted(expected)


def test_wrapped_under_model(expected, caplog):
    with caplog.at_level(logging.INFO, logger=tc.__name__):
        sd = tc.load_state_dict(FIXTURES / "wrapped_model_zip.pth")
    assert_state_dicts_equal(sd, expected)
    assert "state dict under key 'model'" in caplog.text
    checkpoint = tc.read_checkpoint(FIXTURES / "wrapped_model_zip.pth")
    assert checkpoint.wrapper_key == "model"
    assert tc.read_checkpoint(FIXTURES / "wrapped_model_zip.pth", key="model").wrapper_key == (
        "model"
    )


def test_wrapped_under_state_dict_legacy():
    with np.load(FIXTURES / "expected_small.npz") as z:
        want = {k: z[k] for k in z.files}
    checkpoint = tc.read_checkpoint(FIXTURES / "wrapped_state_dict_legacy.pth")
    assert (checkpoint.format, checkpoint.wrapper_key) == ("torch-legacy", "state_dict")
    assert_state_dicts_equal(checkpoint.state_dict, want)


def test_wrong_key_or_non_tensor_entries_are_refused():
    with pytest.raises(ValueError, match="no top-level entry 'nope'"):
        tc.load_state_dict(FIXTURES / "wrapped_model_zip.pth", key="nope")
    with pytest.raises(ValueError, match="entry 'epoch' is a int, not a state dict"):
        tc.load_state_dict(FIXTURES / "wrapped_model_zip.pth", key="epoch")
    with pytest.raises(ValueError, match="key= applies to torch files only"):
        tc.load_state_dict(FIXTURES / "state_dict.safetensors", key="model")


def test_safetensors(expected):
    checkpoint = tc.read_checkpoint(FIXTURES / "state_dict.safetensors")
    assert checkpoint.format == "safetensors"
    assert checkpoint.metadata == {"format": "pt", "written_by": "make_checkpoint_fixtures.py"}
    assert_state_dicts_equal(checkpoint.state_dict, expected, ordered=False)


def test_npz_and_save_npz_round_trip(tmp_path, expected):
    assert_state_dicts_equal(tc.load_state_dict(FIXTURES / "expected.npz"), expected)
    odd_keys = dict(expected, file=np.ones(2), allow_pickle=np.zeros((0, 3), np.uint8))
    target = tmp_path / "weights.data"  # no .npz appended
    tc.save_npz(odd_keys, target)
    assert not (tmp_path / "weights.data.npz").exists()
    assert_state_dicts_equal(tc.load_state_dict(target), odd_keys)


# --------------------------------------------------------------------------------------------
# tampered files


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_torch_files_are_refused_without_running_anything(
    name, tmp_path, monkeypatch, expected_json
):
    marker = tmp_path / expected_json["marker"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tc.UnsafeCheckpointError, match=r"posix\.system") as info:
        tc.load_state_dict(FIXTURES / name)
    assert info.value.global_name == "posix.system"
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


_PLAIN_LOAD = """
import pickle, sys, zipfile
path = sys.argv[1]
try:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    else:
        with open(path, "rb") as f:
            for _ in range(4):  # magic, protocol, sys_info, then the object
                pickle.load(f)
except (ImportError, pickle.UnpicklingError):
    pass  # torch's globals (not installed) or a persistent id: reached after the payload ran
"""


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_fixtures_are_armed(name, tmp_path, expected_json):
    """The refusal above means something: plain pickle does run the fixture's command
    (``echo pwned > <marker>``, in a temporary directory)."""
    subprocess.run(
        [sys.executable, "-c", _PLAIN_LOAD, str(FIXTURES / name)], cwd=tmp_path, check=True
    )
    assert (tmp_path / expected_json["marker"]).read_text().strip() == "pwned"


# A tiny pickle writer, so that tests can say exactly which opcodes a file holds.
class G:  # a global reference
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class Call:  # REDUCE: func(*args)
    def __init__(self, func, *args):
        self.func, self.args = func, args


class Pid:  # a persistent id (BINPERSID)
    def __init__(self, *fields):
        self.fields = fields


def enc(value) -> bytes:
    if value is None:
        return b"N"
    if value is True or value is False:
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return b"L" + str(value).encode() + b"L\n"
    if isinstance(value, str):
        return b"X" + struct.pack("<I", len(value.encode())) + value.encode()
    if isinstance(value, tuple):
        return b"(" + b"".join(map(enc, value)) + b"t"
    if isinstance(value, list):
        return b"]" + (b"(" + b"".join(map(enc, value)) + b"e" if value else b"")
    if isinstance(value, dict):
        body = b"".join(enc(k) + enc(v) for k, v in value.items())
        return b"}" + (b"(" + body + b"u" if value else b"")
    if isinstance(value, G):
        return b"c" + f"{value.module}\n{value.name}\n".encode()
    if isinstance(value, Call):
        return enc(value.func) + enc(tuple(value.args)) + b"R"
    if isinstance(value, Pid):
        return enc(value.fields) + b"Q"
    raise TypeError(value)


def dumps(value) -> bytes:
    return b"\x80\x02" + enc(value) + b"."


def tensor(stype: str, key: str, numel: int, offset, size, stride, legacy=False, view=None):
    fields = ("storage", G("torch", stype), key, "cpu", numel) + ((view,) if legacy else ())
    hooks = Call(G("collections", "OrderedDict"))
    return Call(
        G("torch._utils", "_rebuild_tensor_v2"), Pid(*fields), offset, size, stride, False, hooks
    )


def write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], **extra: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", b"3\n")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        for name, data in extra.items():
            z.writestr(f"archive/{name}", data)
    return path


def write_legacy(
    path: Path, obj_pkl: bytes, storages: dict[str, tuple[int, bytes]], little_endian: bool = True
) -> Path:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": little_endian,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    parts = [
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(sys_info, protocol=2),
        obj_pkl,
        pickle.dumps(sorted(storages), protocol=2),
    ]
    for key in sorted(storages):
        count, data = storages[key]
        parts.append(struct.pack("<q", count) + data)
    path.write_bytes(b"".join(parts))
    return path


def f32(*values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


COMMAND = "echo pwned > marker.txt"
REFUSED = [
    (G("os", "system"), (COMMAND,), "os.system"),
    (G("posix", "system"), (COMMAND,), "posix.system"),
    (G("builtins", "eval"), (f"__import__('os').system({COMMAND!r})",), "builtins.eval"),
    (G("__builtin__", "exec"), (f"__import__('os').system({COMMAND!r})",), "__builtin__.exec"),
    (G("subprocess", "check_call"), (["sh", "-c", COMMAND],), "subprocess.check_call"),
    (G("torch.nn.modules.conv", "Conv2d"), (1, 1, 1), "torch.nn.modules.conv.Conv2d"),
    (G("collections", "OrderedDict.fromkeys"), ([1],), "collections.OrderedDict.fromkeys"),
    (G("torch._utils", "_rebuild_qtensor"), (), "torch._utils._rebuild_qtensor"),
    (G("torch", "load"), ("x.pth",), "torch.load"),
]


@pytest.mark.parametrize("func,args,refused", REFUSED, ids=[r[2] for r in REFUSED])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_every_other_global_is_refused(fmt, func, args, refused, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = {
        "w": tensor("FloatStorage", "0", 2, 0, (2,), (1,), legacy=fmt == "legacy"),
        "evil": Call(func, *args),
    }
    path = tmp_path / f"evil_{fmt}.pth"
    if fmt == "zip":
        write_zip(path, dumps(obj), {"0": f32(1, 2)})
    else:
        write_legacy(path, dumps(obj), {"0": (2, f32(1, 2))})
    with pytest.raises(tc.UnsafeCheckpointError) as info:
        tc.load_state_dict(path)
    assert info.value.global_name == refused
    assert refused in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "marker.txt").exists()


@pytest.mark.parametrize(
    "body",
    [
        b"(Vecho pwned > marker.txt\nios\nsystem\n.",  # protocol 0 INST
        b"\x80\x04\x8c\x02os\x8c\x06system\x93"
        b"\x8c\x17echo pwned > marker.txt\x85R.",  # protocol 4 STACK_GLOBAL
    ],
    ids=["INST", "STACK_GLOBAL"],
)
def test_other_global_opcodes_are_refused(body, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_zip(tmp_path / "evil.pth", body, {})
    with pytest.raises(tc.UnsafeCheckpointError, match=r"'os\.system'"):
        tc.load_state_dict(path)
    assert not (tmp_path / "marker.txt").exists()


def test_allowed_objects_cannot_be_modified_by_build(tmp_path):
    # BUILD on an allow-listed rebuild function would set attributes on it for later loads.
    body = b"\x80\x02" + enc(G("torch._utils", "_rebuild_tensor_v2"))
    body += b"N" + enc({"__defaults__": (1, 2)}) + b"\x86b."  # state = (None, slotstate)
    path = write_zip(tmp_path / "build.pth", body, {})
    with pytest.raises(ValueError, match="set the state"):
        tc.load_state_dict(path)


# --------------------------------------------------------------------------------------------
# hand-made tensors: geometry, dtypes, legacy views


def test_rebuild_v3_untyped_storage_with_dtype(tmp_path):
    values = np.array([[1, -2], [300, -4000]], dtype="<i2")
    obj = {
        "x": Call(
            G("torch._utils", "_rebuild_tensor_v3"),
            Pid("storage", G("torch.storage", "UntypedStorage"), "0", "cpu", 8),
            0,
            (2, 2),
            (1, 2),
            False,
            Call(G("collections", "OrderedDict")),
            G("torch", "int16"),
        )
    }
    path = write_zip(tmp_path / "v3.pth", dumps(obj), {"0": values.tobytes()})
    np.testing.assert_array_equal(tc.load_state_dict(path)["x"], values.T)


def test_unsupported_dtype_is_not_called_unsafe(tmp_path):
    obj = {
        "x": Call(
            G("torch._utils", "_rebuild_tensor_v3"),
            Pid("storage", G("torch.storage", "UntypedStorage"), "0", "cpu", 2),
            0,
            (2,),
            (1,),
            False,
            Call(G("collections", "OrderedDict")),
            G("torch", "float8_e4m3fn"),
        )
    }
    path = write_zip(tmp_path / "f8.pth", dumps(obj), {"0": b"\x01\x02"})
    with pytest.raises(ValueError, match="float8_e4m3fn, which NumPy cannot hold") as info:
        tc.load_state_dict(path)
    assert not isinstance(info.value, tc.UnsafeCheckpointError)


@pytest.mark.parametrize(
    "offset,size,stride,match",
    [
        (
            0,
            (2, 3),
            (3, 1),
            "reads element 5 of storage '0', which needs 24 bytes; the file has 16",
        ),
        (3, (2,), (1,), "reads element 4"),
        (0, (4,), (2,), "reads element 6"),
        (0, (2,), (-1,), "invalid geometry"),
        (-1, (2,), (1,), "invalid geometry"),
        (0, (2, 2), (1,), "invalid geometry"),
    ],
)
def test_views_outside_their_storage_are_refused(offset, size, stride, match, tmp_path):
    obj = {"x": tensor("FloatStorage", "0", 4, offset, size, stride)}
    path = write_zip(tmp_path / "bad.pth", dumps(obj), {"0": f32(1, 2, 3, 4)})
    with pytest.raises(ValueError, match=match):
        tc.load_state_dict(path)


def test_empty_tensor_ignores_its_offset_and_zero_numel_storage(tmp_path):
    obj = {
        "e": tensor("FloatStorage", "0", 0, 5, (0, 3), (3, 1)),
        "s": tensor("LongStorage", "1", 1, 0, (), ()),
    }
    path = write_zip(tmp_path / "e.pth", dumps(obj), {"0": b"", "1": np.int64(-7).tobytes()})
    sd = tc.load_state_dict(path)
    assert sd["e"].shape == (0, 3) and sd["s"].shape == () and sd["s"] == -7


def test_legacy_storage_views(tmp_path):
    # Files from old torch versions could name a view (key, offset, size) of a larger storage.
    root = f32(0, 1, 2, 3, 4, 5)
    obj = {
        "a": tensor("FloatStorage", "root", 6, 0, (2,), (1,), legacy=True, view=("view1", 1, 3)),
        "b": tensor("FloatStorage", "root", 6, 1, (2,), (1,), legacy=True, view=("view2", 3, 3)),
        "c": tensor("FloatStorage", "root", 6, 0, (2, 3), (3, 1), legacy=True),
    }
    path = write_legacy(tmp_path / "views.pth", dumps(obj), {"root": (6, root)})
    sd = tc.load_state_dict(path)
    assert sd["a"].tolist() == [1.0, 2.0]
    assert sd["b"].tolist() == [4.0, 5.0]
    assert sd["c"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_legacy_big_endian_is_refused_clearly(tmp_path):
    obj = {"x": tensor("FloatStorage", "0", 1, 0, (1,), (1,), legacy=True)}
    path = write_legacy(tmp_path / "be.pth", dumps(obj), {"0": (1, f32(1))}, little_endian=False)
    with pytest.raises(ValueError, match="big-endian"):
        tc.load_state_dict(path)


def test_legacy_element_count_must_match(tmp_path):
    obj = {"x": tensor("FloatStorage", "0", 2, 0, (2,), (1,), legacy=True)}
    path = write_legacy(tmp_path / "n.pth", dumps(obj), {"0": (3, f32(1, 2, 3))})
    with pytest.raises(ValueError, match="holds 3 elements, its id says 2"):
        tc.load_state_dict(path)


def test_not_a_state_dict(tmp_path):
    path = write_zip(tmp_path / "list.pth", dumps([1, 2]), {})
    with pytest.raises(ValueError, match="the saved object is a list, not a state dict"):
        tc.load_state_dict(path)
    obj = {"w": tensor("FloatStorage", "0", 1, 0, (1,), (1,)), "epoch": 3}
    path = write_zip(tmp_path / "mixed.pth", dumps(obj), {"0": f32(1)})
    with pytest.raises(ValueError, match=r"non-tensor entries \('epoch' \(int\)\)"):
        tc.load_state_dict(path)
    inner = {"w": tensor("FloatStorage", "0", 1, 0, (1,), (1,))}
    path = write_zip(
        tmp_path / "both.pth", dumps({"model": inner, "state_dict": inner}), {"0": f32(1)}
    )
    with pytest.raises(ValueError, match="pass key= to choose one"):
        tc.load_state_dict(path)
    assert tc.read_checkpoint(path, key="state_dict").state_dict["w"].tolist() == [1.0]


def test_torchscript_tar_empty_and_unknown_files(tmp_path):
    path = write_zip(tmp_path / "scripted.pt", dumps({}), {}, **{"constants.pkl": dumps(())})
    with pytest.raises(ValueError, match="TorchScript"):
        tc.load_state_dict(path)
    tar = tmp_path / "old.tar"
    tar.write_bytes(b"\0" * 257 + b"ustar" + b"\0" * 250)
    with pytest.raises(ValueError, match="tar archive"):
        tc.load_state_dict(tar)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        tc.load_state_dict(empty)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="unrecognised checkpoint format"):
        tc.load_state_dict(junk)


# --------------------------------------------------------------------------------------------
# truncated and damaged files


def cut(tmp_path: Path, name: str, length: int) -> Path:
    data = (FIXTURES / name).read_bytes()[:length]
    path = tmp_path / f"cut_{length}_{name}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name",
    [
        "state_dict_zip.pth",
        "state_dict_legacy.pth",
        "state_dict.safetensors",
        "expected.npz",
        "wrapped_state_dict_legacy.pth",
    ],
)
def test_truncated_files_give_a_clear_value_error(name, tmp_path):
    size = (FIXTURES / name).stat().st_size
    step = max(1, size // 60)
    for length in [1, 8, 9, 20, *range(30, size, step), size - 8, size - 1]:
        path = cut(tmp_path, name, length)
        with pytest.raises(ValueError) as info:
            tc.load_state_dict(path)
        message = str(info.value)
        assert str(path) in message, message
        path.unlink()


def test_truncation_messages_say_what_is_missing(tmp_path):
    size = (FIXTURES / "state_dict_legacy.pth").stat().st_size
    with pytest.raises(
        ValueError,
        match=r"storage \d+ \('\d+'\) needs \d+ bytes, the file has "
        r"\d+",
    ):
        tc.load_state_dict(cut(tmp_path, "state_dict_legacy.pth", size - 3))
    with pytest.raises(ValueError, match="truncated or damaged"):
        tc.load_state_dict(cut(tmp_path, "state_dict_zip.pth", 2000))
    with pytest.raises(ValueError, match="the object pickle is truncated or corrupt"):
        tc.load_state_dict(cut(tmp_path, "state_dict_legacy.pth", 300))
    size = (FIXTURES / "state_dict.safetensors").stat().st_size
    with pytest.raises(ValueError, match="the file is truncated"):
        tc.load_state_dict(cut(tmp_path, "state_dict.safetensors", size - 10))


def test_short_storage_entry_in_zip(tmp_path):
    source = FIXTURES / "state_dict_zip.pth"
    target = tmp_path / "short.pth"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data/0"):
                full = len(data)
                data = data[:10]
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match=f"storage '0' needs {full} bytes, the file has 10"):
        tc.load_state_dict(target)


def test_damaged_zip_entry(tmp_path):
    data = bytearray((FIXTURES / "state_dict_zip.pth").read_bytes())
    with zipfile.ZipFile(FIXTURES / "state_dict_zip.pth") as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/0")))
    # The entry's bytes follow its 30-byte local header, name and extra field.
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start] ^= 0xFF
    path = tmp_path / "crc.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged"):
        tc.load_state_dict(path)


# --------------------------------------------------------------------------------------------
# the module itself


def test_module_loads_by_path_without_tensorflow_or_torch():
    run_module_by_path(MODULE_FILE, "\n".join([
        f"sd = module.load_state_dict({str(FIXTURES / 'state_dict_zip.pth')!r})",
        "assert sd['extra.scalar'] == 2.5",
    ]))


def test_module_imports_only_stdlib_and_numpy():
    roots = imported_roots(MODULE_FILE)
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    assert roots <= allowed, roots - allowed
    assert "numpy" in roots


def test_fixtures_stay_small():
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 200 * 1024, total
