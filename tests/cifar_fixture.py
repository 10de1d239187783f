"""A tiny CIFAR-10 archive in the official layout, written by the tests themselves.

The official batches are Python 2 protocol-2 pickles whose only globals are
numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype; `py2_pickle` writes them
opcode for opcode that way (Python 3's pickle would add _codecs.encode for bytes)."""
import io
import struct
import tarfile

import numpy as np

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _string(out, b):
    out += b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _put(out, v):
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        _string(out, v)
    elif isinstance(v, int):
        out += b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v)
    elif isinstance(v, list):
        out += b"]("
        for x in v:
            _put(out, x)
        out += b"e"
    elif isinstance(v, dict):
        out += b"}("
        for k, x in v.items():
            _put(out, k)
            _put(out, x)
        out += b"u"
    else:                                         # a 2-D uint8 ndarray
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01"
        _put(out, v.shape[0])
        _put(out, v.shape[1])
        out += b"\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff"
        out += b"\xff\xff\xffK\x00tb\x89"
        _string(out, np.ascontiguousarray(v).tobytes())
        out += b"tb"


def py2_pickle(obj) -> bytes:
    out = bytearray(b"\x80\x02")
    _put(out, obj)
    return bytes(out + b".")


def make_batches(n=6, seed=0):
    """{name: (data (n, 3072) uint8, labels list)} for the six batch files."""
    rng = np.random.default_rng(seed)
    return {name: (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   [int(v) for v in rng.integers(0, 10, n)]) for name in NAMES}


def batch_pickle(data, labels, title="batch"):
    return py2_pickle({"batch_label": title, "labels": labels, "data": data,
                       "filenames": [f"{i}.png" for i in range(len(labels))]})


def write_archive(path, batches, skip=(), extra=None):
    """cifar-10-batches-py/{batches.meta, the six batches} as a .tar.gz at path."""
    members = {"batches.meta": py2_pickle({"num_cases_per_batch": 10000, "num_vis": 3072,
                                           "label_names": [f"c{i}" for i in range(10)]})}
    members.update({name: batch_pickle(*batches[name], title=name) for name in batches
                    if name not in skip})
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, buf in members.items():
            ti = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            ti.size = len(buf)
            tar.addfile(ti, io.BytesIO(buf))
    return path
