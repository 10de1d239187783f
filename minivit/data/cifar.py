"""CIFAR-10 in the official python layout: find, download (md5-checked), check and load it.

Images come back as uint8 (N, 3, 32, 32), channel-major as the official rows are stored
(1024 R, 1024 G, 1024 B), which is the model's (B, C, H, W) layout; labels as int64 (N,).
"""
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

import numpy as np
from tqdm.auto import tqdm

from .safe import UnsafeFileError, safe_extract, unpickle_cifar

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
CACHE = "cifar-10-uint8.npz"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
NUM_CLASSES = 10


def default_data_dir() -> str:
    """$MINIVIT_DATA, else ~/.cache/minivit."""
    return os.environ.get("MINIVIT_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "minivit")


def md5sum(path, chunk=1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url, dest, md5=MD5):
    """Stream url into dest + ".part" with a byte progress bar; rename to dest only if the md5
    matches. On a mismatch or any error the part file is deleted."""
    part = dest + ".part"
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url) as r, open(part, "wb") as f:
            size = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {ARCHIVE}") as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
        got = h.hexdigest()
        if got != md5:
            raise ValueError(f"md5 mismatch for {url}: got {got}, expected {md5}; the partial "
                             f"download was deleted")
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.remove(part)


def _missing_message(data_dir, reason):
    target = data_dir                        # not the offline copy's own folder: the default
    if os.path.isfile(os.path.join(data_dir, "build.py")):
        target = os.path.expanduser("~/.cache/minivit")
    return (f"CIFAR-10 not found in {data_dir} and it could not be downloaded ({reason}). "
            f"Download {URL} and put {ARCHIVE} (or its extracted {FOLDER}/) into {data_dir}, "
            f"or point MINIVIT_DATA / --data-dir at the folder that holds it (on the project's "
            f"offline machines: pip install pillow && python ../shared/data/cifar10/build.py "
            f"{target}).")


def _holding_folder(data_dir):
    """The data folder: data_dir, or its parent where data_dir names the archive or the
    extracted folder itself (what a user may point --data-dir at); any other file: an error."""
    path = os.path.normpath(data_dir)
    if os.path.basename(path) in (ARCHIVE, FOLDER) and os.path.exists(path):
        return os.path.dirname(path) or "."
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{data_dir} is a file; the data folder (MINIVIT_DATA / "
                                 f"--data-dir) is the folder that holds {ARCHIVE} or {FOLDER}/")
    return data_dir


def check_batch(name, d) -> tuple:
    """(data (N, 3, 32, 32) uint8, labels (N,) int64) from one batch dict, or a ValueError."""
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise ValueError(f"{name}: 'data' must be an N x 3072 uint8 array, got {desc}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{name}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{name}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def read_batches(folder):
    """Structure-checked arrays from an official-layout folder: six batch files."""
    out = {}
    for name in TRAIN_BATCHES + [TEST_BATCH]:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"{folder} is not CIFAR-10 in the official layout: {name} is "
                             f"missing (expected {', '.join(TRAIN_BATCHES)}, {TEST_BATCH})")
        with open(path, "rb") as f:
            try:
                d = unpickle_cifar(f.read())
            except UnsafeFileError:
                raise
            except (EOFError, ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{path} is not a readable CIFAR-10 batch: {e}") from e
        out[name] = check_batch(name, d)
    x_train = np.concatenate([out[n][0] for n in TRAIN_BATCHES])
    y_train = np.concatenate([out[n][1] for n in TRAIN_BATCHES])
    return x_train, y_train, out[TEST_BATCH][0], out[TEST_BATCH][1]


def extract_archive(archive, data_dir):
    """Safely extract archive's cifar-10-batches-py/ into data_dir (via a temp folder). A damaged
    archive is reported as one; other OSErrors (a full disk, a denied write) pass as they are."""
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=data_dir)
    try:
        safe_extract(archive, tmp)
        if not os.path.isdir(os.path.join(tmp, FOLDER)):
            raise ValueError(f"{archive} has no {FOLDER}/ folder: not the CIFAR-10 python archive")
        os.replace(os.path.join(tmp, FOLDER), os.path.join(data_dir, FOLDER))
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{archive} is corrupt or truncated ({e}); delete it and download "
                         f"{URL} again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_archive(archive, data_dir, notice=print):
    digest = md5sum(archive)
    folder = os.path.join(data_dir, FOLDER)
    extract_archive(archive, data_dir)
    try:
        arrays = read_batches(folder)
    except ValueError:
        shutil.rmtree(folder, ignore_errors=True)          # do not leave a bad folder behind
        raise
    if digest != MD5:
        notice(f"note: {archive} has md5 {digest}, not the official {MD5}: using it as a "
               f"user-supplied copy after a structure check (not verified)")
    return arrays


def _first_missing(path):
    """The outermost folder of path that does not exist yet (what makedirs would create first),
    or None."""
    path, missing = os.path.abspath(path), None
    while not os.path.isdir(path):
        path, missing = os.path.dirname(path), path
    return missing


def load_cifar10(data_dir=None, download_ok=True, cache=True, url=URL, notice=print):
    """(x_train, y_train, x_test, y_test): uint8 (N, 3, 32, 32) images, int64 labels.

    Looks in data_dir (default $MINIVIT_DATA or ~/.cache/minivit) for the .npz cache, then
    cifar-10-batches-py/, then cifar-10-python.tar.gz; otherwise downloads the archive (md5
    checked). A user-supplied archive with another md5 is used after a structure check, with a
    one-line notice. With cache=True the decoded arrays are saved as cifar-10-uint8.npz."""
    data_dir = _holding_folder(os.path.expanduser(data_dir or default_data_dir()))
    cache_path = os.path.join(data_dir, CACHE)
    if cache and os.path.isfile(cache_path):
        with np.load(cache_path, allow_pickle=False) as z:
            return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    folder, archive = os.path.join(data_dir, FOLDER), os.path.join(data_dir, ARCHIVE)
    if os.path.isdir(folder):
        arrays = read_batches(folder)
    else:
        if not os.path.isfile(archive):
            if not download_ok:
                raise FileNotFoundError(_missing_message(data_dir, "downloading is off"))
            made = _first_missing(data_dir)
            os.makedirs(data_dir, exist_ok=True)
            try:
                download(url, archive)
            except (urllib.error.URLError, OSError) as e:
                if made:                            # a mistyped folder is not left behind
                    shutil.rmtree(made, ignore_errors=True)
                raise FileNotFoundError(_missing_message(data_dir, e)) from e
        arrays = _from_archive(archive, data_dir, notice)
    if cache:
        save_cache(cache_path, arrays)
    return arrays


def save_cache(path, arrays):
    """Write the decoded arrays atomically (temp file + rename) as an uncompressed .npz."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays, strict=True)))
    os.replace(tmp, path)


def class_subset(x, y, classes):
    """The images of `classes` only, labels renumbered 0..K-1 in the order given (host arrays)."""
    x, y = np.asarray(x), np.asarray(y)
    keep = np.isin(y, classes)
    relabel = np.full(int(max(y.max(initial=0), *classes)) + 1, -1)
    relabel[list(classes)] = np.arange(len(classes))
    return x[keep], relabel[y[keep]]
