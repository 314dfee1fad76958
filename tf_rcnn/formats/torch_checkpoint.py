"""Read PyTorch checkpoints into NumPy arrays without importing torch.

This module imports only the standard library and NumPy, so a script can load it straight from
its file path (``importlib.util.spec_from_file_location``) in an environment without TensorFlow or
torch.

Formats read (the format is recognised from the file's first bytes, not from its extension):

* **torch zip format** (``torch.save`` since torch 1.6). A zip archive (entries stored, not
  compressed) whose entries all sit under one top-level folder, ``<prefix>/``. ``data.pkl`` is a
  pickle of the saved object in which every tensor is written as a call to a rebuild function
  (storage, storage offset, sizes, strides, ...) and every storage as a *persistent id*, a tuple
  ``("storage", <storage class>, <key>, <device>, <element count>)``. The bytes of storage
  ``<key>`` are the entry ``data/<key>``. ``byteorder`` (``little`` or ``big``; absent in old
  files, meaning little) tells the byte order of those bytes, and both are read; ``version`` and
  a few dotted entries carry bookkeeping that is not needed here. Dtypes that have a storage
  class (``torch.FloatStorage``, ...) are named by it; for the others (uint16, ...) torch 2.x
  writes a ``torch.storage.UntypedStorage`` of bytes and names the dtype (``torch.uint16``) in
  the tensor's rebuild call.
* **torch legacy format** (``torch.save(..., _use_new_zipfile_serialization=False)`` and files
  from before torch 1.6). Five pickles back to back: a magic number, the protocol version (1001),
  a small dict about the writing machine (``little_endian``, type sizes), the saved object (with
  persistent ids ``("storage", <storage class>, <key>, <device>, <element count>,
  <view or None>)``), and the sorted list of storage keys. After the last pickle come the
  storages in that order, each as an 8-byte little-endian element count followed by its raw
  little-endian bytes. Files whose sys_info says they come from a big-endian machine are
  refused with a clear error: no such file was at hand to check their layout against.
* **safetensors**: an 8-byte little-endian header length, a JSON header mapping each tensor name
  to its ``dtype``, ``shape`` and ``data_offsets`` (into the data section that follows the
  header), then the data.
* **npz** as written by NumPy (or by :func:`save_npz`).

Pickles are read by a restricted unpickler: the only globals it resolves are
``collections.OrderedDict``, the torch tensor/parameter rebuild functions, the torch storage
classes and the torch dtypes, and each of them resolves to a small function or token defined in
this module. Any other global (``os.system``, ``builtins.eval``, a model class, ...) stops the load
with :class:`UnsafeCheckpointError` before anything from the file is called, so a tampered
checkpoint cannot run code. The rebuild functions check every tensor's offset, sizes and strides
against its storage before viewing it, so a crafted file cannot read outside the storage either.
Truncated or damaged files raise ``ValueError`` naming the file and what is missing. The
allow-list also means that whole pickled modules (``torch.save(model)``) and TorchScript archives
are refused: save ``model.state_dict()`` instead.

Tensors come back as C-contiguous NumPy arrays owning their memory, with the sizes, strides and
storage offset of the saved tensor applied (a transposed, sliced or expanded tensor reads back as
the values it showed, not as its whole storage). Dtypes map one to one (float32, float64,
float16, int64, int32, int16, int8, uint8, bool, and uint16/32/64, complex64/128), except
**bfloat16, which NumPy lacks and which is widened to float32** (exactly: bfloat16 is the top half
of a float32).

Example::

    from tf_rcnn.formats.torch_checkpoint import load_state_dict
    weights = load_state_dict("resnet50.pth")   # {"conv1.weight": float32 (64, 3, 7, 7), ...}
"""

from __future__ import annotations

import collections
import io
import json
import logging
import math
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "Checkpoint",
    "UnsafeCheckpointError",
    "detect_format",
    "load_state_dict",
    "read_checkpoint",
    "save_npz",
]

_log = logging.getLogger(__name__)

#: Keys under which training checkpoints commonly keep the model's state dict.
WRAPPER_KEYS = ("model", "state_dict")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(ValueError):
    """A pickle in the checkpoint names a global outside the allow-list.

    Raised before the global is resolved, so nothing it names has been imported or called.

    Attributes:
        global_name: The refused ``module.name``.
        path: The checkpoint file.
    """

    def __init__(self, path: str, global_name: str, where: str):
        self.global_name = global_name
        self.path = path
        super().__init__(
            f"{path}: refused to load {where}: it references the global {global_name!r}, which "
            "is not one of the tensor/storage/dtype/OrderedDict globals a state dict needs. "
            "Nothing was executed. Only load checkpoints you trust with torch itself; this "
            "reader loads state dicts only."
        )


class Checkpoint(NamedTuple):
    """A state dict read from a file, with where it was found.

    Attributes:
        state_dict: Parameter and buffer name -> ``np.ndarray`` (bfloat16 tensors as float32).
        format: ``"torch-zip"``, ``"torch-legacy"``, ``"safetensors"`` or ``"npz"``.
        wrapper_key: The key of the top-level dict the state dict was taken from (``"model"``,
            ``"state_dict"`` or the caller's ``key``), or ``None`` when the file's top-level
            object is the state dict itself.
        metadata: The state dict's ``_metadata`` (torch module versions, as
            ``{module prefix: {"version": int}}``), or the safetensors ``__metadata__`` strings;
            empty when the file has none.
    """

    state_dict: dict[str, np.ndarray]
    format: str
    wrapper_key: str | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------------------------
# dtypes and storages


class _DType:
    """A torch dtype: its name and the NumPy dtype of one stored element (bfloat16: raw bits).

    One instance per dtype (compared by identity); closed to a pickle's BUILD/setattr.
    """

    __slots__ = ("element", "name")

    def __init__(self, name: str, element: np.dtype):
        self.name = name
        self.element = element

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __setstate__(self, state):
        raise ValueError("a pickle tried to set the state of a torch dtype")


def _dt(name: str, element) -> _DType:
    return _DType(name, np.dtype(element))


_DTYPES = {
    d.name: d
    for d in (
        _dt("float32", np.float32),
        _dt("float64", np.float64),
        _dt("float16", np.float16),
        _dt("bfloat16", np.uint16),  # bits; widened to float32 after reading
        _dt("int64", np.int64),
        _dt("int32", np.int32),
        _dt("int16", np.int16),
        _dt("int8", np.int8),
        _dt("uint8", np.uint8),
        _dt("uint16", np.uint16),
        _dt("uint32", np.uint32),
        _dt("uint64", np.uint64),
        _dt("bool", np.bool_),
        _dt("complex64", np.complex64),
        _dt("complex128", np.complex128),
    )
}
# torch dtypes that a file may name but NumPy cannot hold: refused as unsupported, not as unsafe.
_UNSUPPORTED_DTYPE_NAMES = (
    "complex32 qint8 quint8 qint32 quint4x2 quint2x4 bits1x8 bits2x4 bits4x2 bits8 bits16 "
    "float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu float4_e2m1fn_x2 "
    "uint1 uint2 uint3 uint4 uint5 uint6 uint7 int1 int2 int3 int4 int5 int6 int7"
)
_UNSUPPORTED_DTYPES = frozenset(_UNSUPPORTED_DTYPE_NAMES.split())


class _StorageType:
    """A torch storage class (``torch.FloatStorage``, ...); ``dtype`` None for UntypedStorage."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: _DType | None):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __setstate__(self, state):
        raise ValueError("a pickle tried to set the state of a torch storage class")

    @property
    def element(self) -> np.dtype:
        return self.dtype.element if self.dtype is not None else np.dtype(np.uint8)


_STORAGE_TYPES = {
    name: _StorageType(name, _DTYPES[dtype])
    for name, dtype in (
        ("FloatStorage", "float32"),
        ("DoubleStorage", "float64"),
        ("HalfStorage", "float16"),
        ("BFloat16Storage", "bfloat16"),
        ("LongStorage", "int64"),
        ("IntStorage", "int32"),
        ("ShortStorage", "int16"),
        ("CharStorage", "int8"),
        ("ByteStorage", "uint8"),
        ("BoolStorage", "bool"),
        ("ComplexFloatStorage", "complex64"),
        ("ComplexDoubleStorage", "complex128"),
    )
}
_UNTYPED_STORAGE = _StorageType("UntypedStorage", None)


class _Storage:
    """One storage of the file: its declared type and element count, and its bytes once read.

    ``data`` is set by the format reader (at once for the zip format, after the object pickle for
    the legacy format); tensors are materialised only after every storage has its bytes.
    """

    __slots__ = ("byteorder", "data", "key", "numel", "stype", "view_of", "_cache")

    def __init__(self, key: str, stype: _StorageType, numel: int, byteorder: str = "<"):
        self.key = key
        self.stype = stype
        self.numel = numel
        self.byteorder = byteorder
        self.data: bytes | memoryview | None = None
        self.view_of: tuple[_Storage, int] | None = None  # legacy storage views: (root, offset)
        self._cache: dict[str, np.ndarray] = {}

    def __setstate__(self, state):
        raise ValueError("a pickle tried to set the state of a storage")

    @property
    def nbytes(self) -> int:
        return self.numel * self.stype.element.itemsize

    def elements(self, dtype: _DType, path: str) -> np.ndarray:
        """The whole storage as a read-only 1-D array of ``dtype`` elements (file byte order)."""
        if dtype.name in self._cache:
            return self._cache[dtype.name]
        if self.view_of is not None:
            root, offset = self.view_of
            start = offset * self.stype.element.itemsize
            raw = memoryview(root.raw(path))[start : start + self.nbytes]
        else:
            raw = self.raw(path)
        element = dtype.element.newbyteorder(self.byteorder)
        if self.stype.dtype is not None and self.stype.dtype is not dtype:
            raise ValueError(
                f"{path}: storage {self.key!r} holds {self.stype.dtype.name} but a tensor reads "
                f"it as {dtype.name}"
            )
        usable = len(raw) - len(raw) % element.itemsize
        flat = np.frombuffer(raw, dtype=element, count=usable // element.itemsize)
        self._cache[dtype.name] = flat
        return flat

    def raw(self, path: str) -> bytes | memoryview:
        if self.data is None:
            raise ValueError(f"{path}: the bytes of storage {self.key!r} were never read")
        return self.data


def _widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> the float32 values they stand for, exactly."""
    out = np.empty(bits.shape, dtype=np.float32)
    out.view(np.uint32)[...] = bits.astype(np.uint32) << 16
    return out


def _is_index(value: Any) -> bool:
    return type(value) is int and value >= 0


class _LazyTensor:
    """A tensor as the pickle describes it; turned into an array once the storages are read."""

    __slots__ = ("dtype", "offset", "size", "storage", "stride")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _Storage):
            raise ValueError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
        if dtype is None:
            dtype = storage.stype.dtype
            if dtype is None:
                raise ValueError("tensor on an untyped storage without a dtype")
        if not isinstance(dtype, _DType):
            raise ValueError(f"tensor dtype is a {type(dtype).__name__}, not a torch dtype")
        size, stride = tuple(size), tuple(stride)
        if not (
            _is_index(offset)
            and all(map(_is_index, size))
            and all(map(_is_index, stride))
            and len(size) == len(stride)
        ):
            raise ValueError(
                f"tensor with invalid geometry: offset {offset!r}, sizes {size!r}, "
                f"strides {stride!r} (non-negative ints, as many strides as sizes)"
            )
        self.storage, self.offset, self.size, self.stride, self.dtype = (
            storage,
            offset,
            size,
            stride,
            dtype,
        )

    def __setstate__(self, state):
        raise ValueError("a pickle tried to set the state of a tensor")

    def materialise(self, path: str, name: str) -> np.ndarray:
        element = self.dtype.element
        if 0 in self.size:
            out = np.empty(self.size, dtype=element)
        else:
            flat = self.storage.elements(self.dtype, path)
            last = self.offset + sum(
                (n - 1) * s for n, s in zip(self.size, self.stride, strict=True)
            )
            if last >= flat.shape[0]:
                needed = (last + 1) * element.itemsize
                raise ValueError(
                    f"{path}: tensor {name} (sizes {list(self.size)}, strides "
                    f"{list(self.stride)}, offset {self.offset}) reads element {last} of storage "
                    f"{self.storage.key!r}, which needs {needed} bytes; the file has "
                    f"{flat.shape[0] * element.itemsize}"
                )
            view = as_strided(
                flat[self.offset :],
                shape=self.size,
                strides=tuple(s * element.itemsize for s in self.stride),
                writeable=False,
            )
            out = np.empty(self.size, dtype=element)  # C order, native byte order
            np.copyto(out, view)
        if self.dtype.name == "bfloat16":
            out = _widen_bfloat16(out)
        return out


# --------------------------------------------------------------------------------------------
# the allow-listed reconstructors


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    dtype=None,
    metadata=None,
):
    if dtype is None:
        raise ValueError("_rebuild_tensor_v3 without a dtype")
    return _LazyTensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    if not isinstance(data, _LazyTensor):
        raise ValueError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


class _Reconstructor:
    """An allow-listed callable as the pickle sees it: callable, and closed to BUILD/setattr."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]):
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state):
        raise ValueError("a pickle tried to set the state of a rebuild function")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # a builtin type: immutable
    ("torch._utils", "_rebuild_tensor"): _Reconstructor(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Reconstructor(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v3"): _Reconstructor(_rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): _Reconstructor(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Reconstructor(
        _rebuild_parameter_with_state
    ),
    ("torch.storage", "UntypedStorage"): _UNTYPED_STORAGE,
    ("torch", "UntypedStorage"): _UNTYPED_STORAGE,
}
_ALLOWED.update({("torch", name): stype for name, stype in _STORAGE_TYPES.items()})
_ALLOWED.update({("torch", name): dtype for name, dtype in _DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages go through ``on_storage``."""

    def __init__(
        self,
        file,
        path: str,
        where: str,
        on_storage: Callable[[tuple], _Storage] | None = None,
    ):
        super().__init__(file)
        self._path = path
        self._where = where
        self._on_storage = on_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _UNSUPPORTED_DTYPES:
            raise ValueError(
                f"{self._path}: {self._where} uses torch.{name}, which NumPy cannot hold"
            )
        raise UnsafeCheckpointError(self._path, f"{module}.{name}", self._where)

    def persistent_load(self, pid: Any) -> Any:
        if self._on_storage is None:
            raise ValueError(f"{self._path}: unexpected persistent id in {self._where}")
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise ValueError(
                f"{self._path}: {self._where} has an unknown persistent id {pid!r:.80}"
            )
        return self._on_storage(pid)


# Protocol-5 out-of-band buffer opcodes: torch never writes them, and CPython's error path for a
# damaged BYTEARRAY8 is noisy. Refused before unpickling.
_REFUSED_OPCODES = frozenset({"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"})


def _unpickle(file: io.BytesIO, path: str, where: str, on_storage=None) -> Any:
    """Unpickle one pickle from ``file`` with the allow-list; leaves ``file`` after its STOP."""
    start = file.tell()
    try:
        for opcode, _, _ in pickletools.genops(file):
            if opcode.name in _REFUSED_OPCODES:
                raise ValueError(f"{path}: {where} uses the pickle opcode {opcode.name}")
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: {where} is truncated or corrupt ({e})") from e
    file.seek(start)
    try:
        return _RestrictedUnpickler(file, path, where, on_storage).load()
    except ValueError as e:
        if isinstance(e, UnsafeCheckpointError) or str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: {where} is corrupt: {e}") from e
    except MemoryError as e:
        raise ValueError(
            f"{path}: {where} is corrupt: it declares an object too large for memory"
        ) from e
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        struct.error,
        OverflowError,
    ) as e:
        raise ValueError(
            f"{path}: {where} is truncated or corrupt ({type(e).__name__}: {e})"
        ) from e


def _check_storage_pid(pid: tuple, length: int, path: str) -> tuple[_StorageType, str, int]:
    if len(pid) != length:
        raise ValueError(
            f"{path}: storage id with {len(pid)} fields, expected {length}: {pid!r:.80}"
        )
    stype, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(stype, _StorageType):
        raise ValueError(f"{path}: storage id names a {type(stype).__name__}, not a storage class")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not _is_index(numel):
        raise ValueError(f"{path}: malformed storage id {pid!r:.80}")
    return stype, key, numel


# --------------------------------------------------------------------------------------------
# the torch formats


def _read_torch_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except Exception as e:  # BadZipFile, or others for damaged headers
        raise ValueError(
            f"{path}: starts like a zip archive (torch.save format) but is not a complete one "
            f"({e}); the file is truncated or damaged"
        ) from e
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(
                f"{path}: a torch zip checkpoint has one <prefix>/data.pkl entry; found "
                f"{len(pickles)}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
            raise ValueError(
                f"{path}: this is a TorchScript archive (torch.jit.save), not a torch.save "
                "checkpoint; save model.state_dict() with torch.save instead"
            )
        byteorder = "<"
        if f"{prefix}byteorder" in names:
            text = _read_entry(archive, f"{prefix}byteorder", path).decode("ascii", "replace")
            if text.strip() not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder marker {text!r}")
            byteorder = "<" if text.strip() == "little" else ">"
        storages: dict[str, _Storage] = {}

        def on_storage(pid: tuple) -> _Storage:
            stype, key, numel = _check_storage_pid(pid, 5, path)
            if key in storages:
                return storages[key]
            storage = _Storage(key, stype, numel, byteorder)
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise ValueError(f"{path}: storage {key!r} is missing (no entry {entry!r})")
            info = archive.getinfo(entry)
            if info.file_size < storage.nbytes:
                raise ValueError(
                    f"{path}: storage {key!r} needs {storage.nbytes} bytes, the file has "
                    f"{info.file_size}"
                )
            storage.data = _read_entry(archive, entry, path)
            storages[key] = storage
            return storage

        data_pkl = _read_entry(archive, pickles[0], path)  # whole, so its CRC is checked first
        return _unpickle(io.BytesIO(data_pkl), path, pickles[0], on_storage)


def _read_entry(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    try:
        return archive.read(name)
    except Exception as e:  # zipfile raises many types for damaged entries (CRC, flags, ...)
        raise ValueError(f"{path}: zip entry {name!r} is damaged ({e})") from e


def _read_torch_legacy(path: str) -> Any:
    with open(path, "rb") as file:
        blob = file.read()
    # Storages become slices of this one copy of the file; reading from memory also means a
    # corrupt length field cannot make a read allocate more than the file holds.
    blob_view = memoryview(blob)
    with io.BytesIO(blob) as f:
        magic = _unpickle(f, path, "the magic-number pickle")
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: starts with a pickle but not with torch's magic number")
        protocol = _unpickle(f, path, "the protocol-version pickle")
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: torch legacy protocol {protocol!r}, expected 1001")
        sys_info = _unpickle(f, path, "the sys_info pickle")
        if not isinstance(sys_info, dict):
            raise ValueError(f"{path}: sys_info is a {type(sys_info).__name__}, not a dict")
        if not sys_info.get("little_endian", True):
            raise ValueError(
                f"{path}: written on a big-endian machine (sys_info little_endian=False); "
                "re-save it with the zip format (torch.save's default) to read it here"
            )
        storages: dict[str, _Storage] = {}

        def on_storage(pid: tuple) -> _Storage:
            stype, key, numel = _check_storage_pid(pid, 6, path)
            view = pid[5]
            if key not in storages:
                storages[key] = _Storage(key, stype, numel)
            root = storages[key]
            if view is None:
                return root
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and _is_index(view[1])
                and _is_index(view[2])
            ):
                raise ValueError(f"{path}: malformed storage view {view!r:.80}")
            view_key, offset, view_numel = view
            if not isinstance(view_key, str):
                raise ValueError(f"{path}: malformed storage view {view!r:.80}")
            if view_key not in storages:
                storage = _Storage(view_key, stype, view_numel)
                storage.view_of = (root, offset)
                storages[view_key] = storage
            return storages[view_key]

        obj = _unpickle(f, path, "the object pickle", on_storage)
        keys = _unpickle(f, path, "the storage-key pickle")
        if not isinstance(keys, list):
            raise ValueError(f"{path}: storage-key list is a {type(keys).__name__}")
        for index, key in enumerate(keys):
            storage = storages.get(key)
            if storage is None or storage.view_of is not None:
                raise ValueError(f"{path}: storage {key!r} is listed but no tensor refers to it")
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(
                    f"{path}: storage {index} ({key!r}) is missing its element count; the file "
                    "is truncated"
                )
            (count,) = struct.unpack("<q", head)
            if count != storage.numel:
                raise ValueError(
                    f"{path}: storage {index} ({key!r}) holds {count} elements, its id says "
                    f"{storage.numel}"
                )
            start = f.tell()
            available = max(0, len(blob) - start)
            if storage.nbytes > available:
                raise ValueError(
                    f"{path}: storage {index} ({key!r}) needs {storage.nbytes} bytes, the file "
                    f"has {available}"
                )
            storage.data = blob_view[start : start + storage.nbytes]
            f.seek(start + storage.nbytes)
        for key, storage in storages.items():
            if storage.view_of is None and storage.data is None:
                raise ValueError(f"{path}: storage {key!r} is not in the storage-key list")
            if storage.view_of is not None:
                root, offset = storage.view_of
                if offset + storage.numel > root.numel:
                    raise ValueError(f"{path}: storage view {key!r} runs past its storage")
        return obj


def _materialise_tree(obj: Any, path: str) -> Any:
    """Replace every _LazyTensor in nested dicts/lists/tuples by its array.

    Objects the pickle shares (one tensor under two names, a storage under two tensors) stay
    shared; a container that contains itself is refused.
    """
    done: dict[int, Any] = {}
    in_progress: set[int] = set()

    def visit(value: Any, name: str) -> Any:
        if id(value) in done:
            return done[id(value)]
        if id(value) in in_progress:
            raise ValueError(f"{path}: {name} contains itself")
        if isinstance(value, _LazyTensor):
            out = value.materialise(path, name)
        elif isinstance(value, _Storage):
            raise ValueError(f"{path}: {name} is a bare storage, not a tensor")
        elif isinstance(value, (dict, list, tuple)):
            in_progress.add(id(value))
            if isinstance(value, dict):
                ordered = isinstance(value, collections.OrderedDict)
                out = collections.OrderedDict() if ordered else {}
                for k, v in value.items():
                    out[k] = visit(v, f"{name}[{k!r}]" if name else repr(k))
                meta = getattr(value, "_metadata", None)
                if meta is not None and isinstance(out, collections.OrderedDict):
                    out._metadata = visit(meta, f"{name}._metadata")
            else:
                items = [visit(v, f"{name}[{i}]") for i, v in enumerate(value)]
                out = items if isinstance(value, list) else tuple(items)
            in_progress.discard(id(value))
        else:
            return value
        done[id(value)] = out
        return out

    return visit(obj, "")


# --------------------------------------------------------------------------------------------
# safetensors and npz

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": "bf16",
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "C64": np.complex64,
}


def _looks_like_safetensors(head: bytes) -> bool:
    # A JSON object right after a little-endian length below 4 GiB.
    return len(head) >= 9 and head[8:9] == b"{" and head[4:8] == b"\0\0\0\0"


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    if 8 + length > len(blob):
        raise ValueError(
            f"{path}: safetensors header is {length} bytes, the file has {len(blob) - 8} after "
            "the length field; the file is truncated"
        )
    try:
        header = json.loads(blob[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    data = memoryview(blob)[8 + length :]
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        try:
            dtype_name, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: malformed safetensors entry {name!r}: {spec!r:.80}") from e
        if not (
            isinstance(shape, list)
            and all(map(_is_index, shape))
            and _is_index(begin)
            and _is_index(end)
            and isinstance(dtype_name, str)
        ):
            raise ValueError(f"{path}: malformed safetensors entry {name!r}: {spec!r:.80}")
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        kind = _SAFETENSORS_DTYPES[dtype_name]
        native = np.dtype(np.uint16 if kind == "bf16" else kind)
        element = native.newbyteorder("<")
        needed = math.prod(shape) * element.itemsize
        if end - begin != needed:
            raise ValueError(
                f"{path}: tensor {name!r} ({dtype_name} {shape}) needs {needed} bytes, its "
                f"data_offsets span {end - begin}"
            )
        if end > len(data):
            raise ValueError(
                f"{path}: tensor {name!r} needs bytes {begin}..{end} of the data section, the "
                f"file has {len(data)}; the file is truncated"
            )
        array = np.empty(shape, dtype=native)
        np.copyto(array, np.frombuffer(data[begin:end], dtype=element).reshape(shape))
        if kind == "bf16":
            array = _widen_bfloat16(array)
        tensors[name] = array
    return tensors, dict(metadata)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as e:  # zipfile and np.lib.format raise many types for damaged archives
        raise ValueError(f"{path}: cannot read npz archive ({e})") from e
    for name, array in arrays.items():
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        if not (array.flags.owndata and array.flags.c_contiguous and array.flags.writeable):
            array = np.array(array, order="C", copy=True)
        arrays[name] = array
    return arrays


# --------------------------------------------------------------------------------------------
# public API


def detect_format(path: str | os.PathLike) -> str:
    """Recognise a checkpoint file from its content.

    Args:
        path: The file.

    Returns:
        ``"torch-zip"``, ``"torch-legacy"``, ``"safetensors"`` or ``"npz"``.

    Raises:
        ValueError: Empty, unrecognised or unsupported (e.g. pre-1.0 tar-based torch) files.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise ValueError(f"{path}: the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            # Cut-off archives lose their central directory: let the torch reader say so unless
            # the first entry shows a NumPy archive.
            return "npz" if _first_zip_entry(head).endswith(".npy") else "torch-zip"
        except Exception as e:  # e.g. an unknown zip version or a name that is not UTF-8
            raise ValueError(f"{path}: unsupported or damaged zip archive ({e})") from e
        if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        raise ValueError(
            f"{path}: a zip archive that is neither a torch checkpoint (no <prefix>/data.pkl) nor "
            "an npz archive"
        )
    if _looks_like_safetensors(head):
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle, protocol 2 or later: the legacy format's magic number
        return "torch-legacy"
    if head[257:262] == b"ustar":
        raise ValueError(
            f"{path}: a tar archive: the pre-1.0 torch.save format is not supported; load and "
            "re-save it with a current torch"
        )
    raise ValueError(
        f"{path}: unrecognised checkpoint format (not a torch zip/legacy file, safetensors or "
        "npz); first bytes " + repr(head[:16])
    )


def _first_zip_entry(head: bytes) -> str:
    if len(head) < 30:
        return ""
    name_length = struct.unpack("<H", head[26:28])[0]
    return head[30 : 30 + name_length].decode("utf-8", "replace")


def _select_state_dict(obj: Any, path: str, key: str | None) -> tuple[Mapping, str | None]:
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(f"{path}: no top-level entry {key!r} (top level: {keys})")
        if not isinstance(obj[key], Mapping):
            raise ValueError(
                f"{path}: entry {key!r} is a {type(obj[key]).__name__}, not a state dict"
            )
        return obj[key], key
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: the saved object is a {type(obj).__name__}, not a state dict")
    if all(isinstance(v, np.ndarray) for v in obj.values()):
        return obj, None
    wrapped = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
    if len(wrapped) == 1:
        return obj[wrapped[0]], wrapped[0]
    if len(wrapped) > 1:
        raise ValueError(
            f"{path}: both 'model' and 'state_dict' hold dicts; pass key= to choose one"
        )
    others = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if type(v) is not np.ndarray]
    raise ValueError(
        f"{path}: the top-level dict has non-tensor entries ({', '.join(others[:5])}) and no "
        f"'model' or 'state_dict' dict; pass key= to choose the entry holding the state dict"
    )


def read_checkpoint(path: str | os.PathLike, key: str | None = None) -> Checkpoint:
    """Read a state dict and say where it came from.

    Args:
        path: A torch zip-format or legacy ``.pth``/``.pt``/``.bin`` file, a ``.safetensors``
            file or an ``.npz`` archive. The format is recognised from the content.
        key: For torch files whose top-level object is a dict wrapping the state dict: the entry
            to take. By default the top-level dict itself when all its values are tensors, else
            its ``"model"`` or ``"state_dict"`` entry (whichever of the two is a dict).

    Returns:
        A :class:`Checkpoint`; ``state_dict`` maps each name to an ``np.ndarray`` with the saved
        tensor's shape and dtype (bfloat16 widened to float32; a 0-d tensor gives a 0-d array).

    Raises:
        UnsafeCheckpointError: A pickle in the file references a global outside the allow-list
            (e.g. ``os.system``, a pickled ``nn.Module`` class); nothing was executed.
        ValueError: Truncated or corrupt files, unsupported dtypes or formats, a saved object
            that is not a (wrapped) state dict, entries that are not tensors.
        OSError: The file cannot be opened.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    metadata: dict[str, Any] = {}
    wrapper = None
    if fmt in ("torch-zip", "torch-legacy"):
        raw = _read_torch_zip(path) if fmt == "torch-zip" else _read_torch_legacy(path)
        try:
            obj = _materialise_tree(raw, path)
        except ValueError as e:  # NumPy's own complaints (e.g. an impossible shape) lack the path
            if str(e).startswith(f"{path}: "):
                raise
            raise ValueError(f"{path}: cannot rebuild a tensor: {e}") from e
        selected, wrapper = _select_state_dict(obj, path, key)
        meta = getattr(selected, "_metadata", None)
        if isinstance(meta, Mapping):
            metadata = {str(k): v for k, v in meta.items()}
    elif key is not None:
        raise ValueError(f"{path}: key= applies to torch files only, this is {fmt}")
    elif fmt == "safetensors":
        selected, metadata = _read_safetensors(path)
    else:
        selected = _read_npz(path)
    state_dict: dict[str, np.ndarray] = {}
    for name, value in selected.items():
        if not isinstance(name, str):
            raise ValueError(f"{path}: state dict key {name!r} is not a string")
        if not isinstance(value, np.ndarray):
            where = f" (under {wrapper!r})" if wrapper else ""
            raise ValueError(
                f"{path}: state dict entry {name!r}{where} is a {type(value).__name__}, not a "
                "tensor"
            )
        state_dict[name] = value
    return Checkpoint(state_dict, fmt, wrapper, metadata)


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Read a PyTorch (or safetensors / npz) state dict as NumPy arrays, without torch.

    Logs (INFO, logger ``tf_rcnn.formats.torch_checkpoint``) the format found and, for
    wrapped training checkpoints, the key the state dict was taken from; use
    :func:`read_checkpoint` to get these as values.

    Args:
        path: Checkpoint file; see :func:`read_checkpoint` for the formats.
        key: Entry of a wrapping top-level dict to take; see :func:`read_checkpoint`.

    Returns:
        Name -> array, in the file's order. Each array is C-contiguous, owns its memory and has
        the saved tensor's shape and dtype: float32/float64/float16, int64/int32/int16/int8,
        uint8 (also uint16/32/64), bool, complex64/128; **bfloat16 becomes float32** (exact).

    Raises:
        UnsafeCheckpointError: The file's pickle references a global outside the allow-list.
        ValueError: Truncated, corrupt or unsupported files (the message names the file and the
            problem).
    """
    checkpoint = read_checkpoint(path, key)
    where = f", state dict under key {checkpoint.wrapper_key!r}" if checkpoint.wrapper_key else ""
    _log.info(
        "%s: %s checkpoint%s, %d tensors",
        os.fspath(path),
        checkpoint.format,
        where,
        len(checkpoint.state_dict),
    )
    return checkpoint.state_dict


def save_npz(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write a state dict as an uncompressed ``.npz`` that :func:`load_state_dict` reads back.

    Unlike ``np.savez(path, **state_dict)`` any string key works (``"file"`` included) and
    ``path`` is used as given (no ``.npz`` appended).

    Args:
        state_dict: Name -> array (anything ``np.asarray`` accepts; object arrays are refused).
        path: Output file.
    """
    with zipfile.ZipFile(os.fspath(path), "w", zipfile.ZIP_STORED) as archive:
        for name, value in state_dict.items():
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"{name!r}: object arrays cannot be saved")
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.array(array, order="C"), allow_pickle=False)
