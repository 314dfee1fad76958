"""Load torchvision 0.28 on a CPU-only torch 2.13 through our own operator shim.

PyPI's torchvision 0.28.0 wheel ships a ``_C.so`` linked against CUDA builds of libtorch, which
cannot load next to the CPU-only torch wheel on the benchmark machine; ``import torchvision`` then
fails ("operator torchvision::nms does not exist"). ``torchvision_cpu_ops.cpp`` beside this file
declares the ``torchvision::`` operator schemas and implements CPU kernels for ``nms``,
``roi_align`` and ``_roi_align_backward`` (every other op raises "not implemented in this CPU
shim").

Usage (with the venv made by ``setup_torchvision.sh``)::

    import tv_shim
    torchvision = tv_shim.import_torchvision()

How torchvision is made to use the shim, without editing the installed wheel: the shim library is
loaded first, then, for the duration of ``import torchvision`` only, ``torch.ops.load_library``
answers "loaded" for torchvision's own ``_C`` library without dlopen-ing it (the shim has already
registered that operator library). torchvision therefore sees ``_has_ops() == True`` and performs
its own Python-side registrations exactly as it would with a working ``_C``: autograd for
``roi_align`` (``torch.library.register_autograd`` -> ``_roi_align_backward``), Meta/fake kernels
and CPU autocast wrappers. Other libraries (e.g. torchvision's ``image.so``) load normally.

Build artefacts live outside the repository: ``$TV_SHIM_DIR`` if set, else ``<sys.prefix>/tv_shim``
(the venv). ``build()`` is idempotent: it recompiles only when the ``.so`` is missing or the C++
source changed (sha256 stamp).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "torchvision_cpu_ops.cpp")
LIB_NAME = "torchvision_cpu_shim"


def shim_dir() -> str:
    return os.environ.get("TV_SHIM_DIR") or os.path.join(sys.prefix, "tv_shim")


def library_path() -> str:
    return os.path.join(shim_dir(), LIB_NAME + ".so")


def _source_digest() -> str:
    with open(SOURCE, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_built() -> bool:
    stamp = library_path() + ".sha256"
    if not (os.path.exists(library_path()) and os.path.exists(stamp)):
        return False
    with open(stamp) as f:
        return f.read().strip() == _source_digest()


def build(force: bool = False, verbose: bool = False) -> str:
    """Compile the shim with torch.utils.cpp_extension (ninja) unless it is up to date."""
    lib = library_path()
    if not force and is_built():
        return lib
    from torch.utils import cpp_extension

    # cpp_extension runs `ninja`; the venv's ninja (pip package) lives next to its python.
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    out_dir = shim_dir()
    os.makedirs(out_dir, exist_ok=True)
    # -fopenmp: at::parallel_for is header code that only parallelises when compiled with
    # OpenMP. The resulting NEEDED libgomp.so.1 resolves to the copy torch already loaded, so
    # the shim shares torch's thread pool (torch.set_num_threads applies to it).
    path = cpp_extension.load(
        name=LIB_NAME,
        sources=[SOURCE],
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=out_dir,
        is_python_module=False,
        verbose=verbose,
    )
    if os.path.abspath(path) != os.path.abspath(lib):
        raise RuntimeError(f"cpp_extension built {path}, expected {lib}")
    with open(lib + ".sha256", "w") as f:
        f.write(_source_digest() + "\n")
    return lib


def _torchvision_package_dir() -> str:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "torchvision is not installed in this environment "
            "(run benchmarks/peers/setup_torchvision.sh)"
        )
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def import_torchvision(build_if_missing: bool = True):
    """Load the shim, then import and return torchvision backed by it."""
    import torch

    if "torchvision" in sys.modules:
        tv = sys.modules["torchvision"]
        if not _shim_loaded(torch):
            raise RuntimeError("torchvision was imported before tv_shim.import_torchvision()")
        return tv

    if not is_built():
        if not build_if_missing:
            raise FileNotFoundError(f"{library_path()} missing or stale; run tv_shim.build()")
        build()
    lib = library_path()
    torch.ops.load_library(lib)

    tv_dir = _torchvision_package_dir()
    ops = torch.ops
    real_load = ops.load_library  # bound method of torch.ops
    had_instance_attr = "load_library" in ops.__dict__

    def load_library(path):
        p = os.path.realpath(str(path))
        if os.path.dirname(p) == tv_dir and os.path.basename(p).startswith("_C."):
            ops.loaded_libraries.add(lib)  # already provided by the shim
            return None
        return real_load(path)

    ops.load_library = load_library
    try:
        import torchvision
    finally:
        if had_instance_attr:
            ops.load_library = real_load
        else:
            del ops.load_library
    import torchvision.extension

    if not torchvision.extension._has_ops():
        raise RuntimeError("torchvision did not pick up the CPU shim (_has_ops() is False)")
    return torchvision


def _shim_loaded(torch) -> bool:
    try:
        torch.ops.tv_shim.info()
        return True
    except (AttributeError, RuntimeError):
        return False


def set_roi_align_parallel(enabled: bool) -> None:
    """Switch the shim's roi_align / _roi_align_backward between parallel and serial."""
    import torch

    torch.ops.tv_shim.set_roi_align_parallel(bool(enabled))


def info() -> str:
    import torch

    return torch.ops.tv_shim.info()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "path", "smoke"], nargs="?", default="build")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.command == "build":
        print(build(force=args.force, verbose=args.verbose))
    elif args.command == "path":
        print(library_path())
    else:
        tv = import_torchvision()
        print(f"torchvision {tv.__version__} via {library_path()}: {info()}")
