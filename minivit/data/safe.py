"""Reading untrusted files safely: path-safe tar extraction and a restricted unpickler.

CIFAR-10's python archive holds pickles. A pickle can name any importable callable and run it
(os.system via __reduce__), so `unpickle_cifar` resolves only the three globals the official
files contain, and `safe_extract` refuses tar members that are links or would land outside the
target directory ("../x", "/etc/x").
"""
import io
import os
import pickle
import tarfile


class UnsafeFileError(ValueError):
    """An archive member or pickle tried something the official CIFAR-10 files never do."""


def _numpy_reconstruct():
    """numpy's ndarray reconstructor: numpy._core.multiarray in NumPy 2, numpy.core before."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:                                   # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _allowed_globals():
    import numpy
    rec = _numpy_reconstruct()
    return {("numpy.core.multiarray", "_reconstruct"): rec,    # what the official files name
            ("numpy._core.multiarray", "_reconstruct"): rec,   # the same under NumPy 2 names
            ("numpy", "ndarray"): numpy.ndarray,
            ("numpy", "dtype"): numpy.dtype}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's ndarray/dtype reconstruction; anything else raises UnsafeFileError."""

    def find_class(self, module, name):
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise UnsafeFileError(f"refusing to load pickle global {module}.{name}: CIFAR-10 "
                                  "files only use numpy's array reconstruction")
        return allowed[(module, name)]


def unpickle_cifar(data: bytes) -> dict:
    """A CIFAR-10 batch pickle (bytes) -> dict with str keys, read by RestrictedUnpickler."""
    obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict in the CIFAR-10 pickle, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def check_member(member: tarfile.TarInfo, dest: str) -> str:
    """The member's target path under dest, or UnsafeFileError for links and escaping paths."""
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise UnsafeFileError(f"refusing to extract {member.name!r}: it is a {kind}")
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, member.name))
    if os.path.commonpath([root, target]) != root:
        raise UnsafeFileError(f"refusing to extract {member.name!r}: it would land outside {dest}")
    return target


def safe_extract(tar_path, dest):
    """Extract a tar(.gz) into dest after checking every member with check_member."""
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        for m in members:
            check_member(m, dest)
        for m in members:                     # checked above; extract plain files and dirs only
            tar.extract(m, dest, set_attrs=False, **_filter_kw())


def _filter_kw():
    """Python >= 3.12 (and patched 3.8+) take filter="data", a second line of defence."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
