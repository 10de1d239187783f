"""CIFAR-10 loading from a tiny archive the test writes: structure checks, md5, safety."""
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from cifar_fixture import NAMES, batch_pickle, make_batches, write_archive

from minivit.data import cifar
from minivit.data.cifar import download, load_cifar10
from minivit.data.safe import UnsafeFileError, safe_extract, unpickle_cifar


def expected(batches):
    x_tr = np.concatenate([batches[n][0] for n in NAMES[:5]]).reshape(-1, 3, 32, 32)
    y_tr = np.concatenate([batches[n][1] for n in NAMES[:5]])
    return x_tr, y_tr, batches["test_batch"][0].reshape(-1, 3, 32, 32), batches["test_batch"][1]


def test_load_user_archive_with_notice_and_cache(tmp_path):
    batches = make_batches(n=4)
    write_archive(tmp_path / cifar.ARCHIVE, batches)
    notes = []
    arrays = load_cifar10(tmp_path, download_ok=False, notice=notes.append)
    for got, want in zip(arrays, expected(batches), strict=True):
        assert got.dtype in (np.uint8, np.int64)
        np.testing.assert_array_equal(got, want)
    assert arrays[0].shape == (20, 3, 32, 32) and arrays[2].shape == (4, 3, 32, 32)
    assert len(notes) == 1 and "not the official" in notes[0] and cifar.MD5 in notes[0]
    assert (tmp_path / cifar.CACHE).is_file() and (tmp_path / cifar.FOLDER).is_dir()
    (tmp_path / cifar.ARCHIVE).unlink()                   # now served from the .npz cache
    for got, want in zip(load_cifar10(tmp_path, download_ok=False), arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_env_var_sets_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVIT_DATA", str(tmp_path / "d"))
    assert cifar.default_data_dir() == str(tmp_path / "d")
    monkeypatch.delenv("MINIVIT_DATA")
    assert cifar.default_data_dir().endswith(os.path.join(".cache", "minivit"))


@pytest.mark.parametrize("damage, message", [
    ("missing", "data_batch_3 is missing"),
    ("columns", "N x 3072 uint8"),
    ("labels", "labels must lie in 0..9"),
    ("count", "4 images but 3 labels"),
])
def test_structure_errors(tmp_path, damage, message):
    batches = make_batches(n=4)
    d, labels = batches["data_batch_3"]
    if damage == "columns":
        batches["data_batch_3"] = (d[:, :100], labels)
    elif damage == "labels":
        batches["data_batch_3"] = (d, [11] + labels[1:])
    elif damage == "count":
        batches["data_batch_3"] = (d, labels[:3])
    write_archive(tmp_path / cifar.ARCHIVE, batches,
                  skip=("data_batch_3",) if damage == "missing" else ())
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path, download_ok=False, notice=lambda s: None)
    assert not (tmp_path / cifar.FOLDER).exists() and not (tmp_path / cifar.CACHE).exists()


def test_truncated_archive(tmp_path):
    path = write_archive(tmp_path / cifar.ARCHIVE, make_batches(n=4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_cifar10(tmp_path, download_ok=False)


def test_full_disk_is_not_called_a_corrupt_archive(tmp_path, monkeypatch):
    """An OSError of the disk (full, denied) is raised as it is, not blamed on the archive."""
    write_archive(tmp_path / cifar.ARCHIVE, make_batches(n=4))

    def full_disk(archive, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cifar, "safe_extract", full_disk)
    with pytest.raises(OSError, match="No space left"):
        load_cifar10(tmp_path, download_ok=False)


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    src = write_archive(tmp_path / "served.tar.gz", make_batches(n=2))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(ValueError, match="md5 mismatch.*deleted"):
        load_cifar10(dest, url=src.as_uri())
    assert list(dest.iterdir()) == []                      # no .part, no archive


def test_download_md5_match_renames(tmp_path):
    src = write_archive(tmp_path / "served.tar.gz", make_batches(n=2))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "a.tar.gz"
    download(src.as_uri(), str(dest), md5=md5)
    assert dest.read_bytes() == src.read_bytes() and not (tmp_path / "a.tar.gz.part").exists()


def test_offline_and_nothing_there_says_where(tmp_path):
    url = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(FileNotFoundError, match=f"put {cifar.ARCHIVE}.*into {tmp_path}"):
        load_cifar10(tmp_path, url=url)
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        load_cifar10(tmp_path, download_ok=False)
    assert [p.name for p in tmp_path.iterdir()] == []
    with pytest.raises(FileNotFoundError):                 # a mistyped folder: not left behind
        load_cifar10(tmp_path / "typo" / "data", url=url)
    assert [p.name for p in tmp_path.iterdir()] == []
    (tmp_path / "build.py").write_text("")       # --data-dir at the offline copy's source folder:
    with pytest.raises(FileNotFoundError, match=r"pip install pillow && python \.\./shared/"
                       r"data/cifar10/build\.py \S*\.cache/minivit\)"):   # build elsewhere
        load_cifar10(tmp_path, download_ok=False)


def test_data_dir_may_name_the_archive_or_the_folder_but_no_other_file(tmp_path):
    """--data-dir pointed at the archive or at the extracted folder means the folder holding
    it; another file is an error that says what the data folder is."""
    batches = make_batches(n=2)
    archive = write_archive(tmp_path / cifar.ARCHIVE, batches)
    for given in (archive, tmp_path / cifar.FOLDER):           # the folder exists after the first
        arrays = load_cifar10(given, download_ok=False, cache=False, notice=lambda s: None)
        for got, want in zip(arrays, expected(batches), strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(NotADirectoryError, match=f"is a file; the data folder.*{cifar.ARCHIVE}"):
        load_cifar10(tmp_path / cifar.FOLDER / "data_batch_1", download_ok=False)


def _tar_with(path, member: tarfile.TarInfo, payload=b"x"):
    with tarfile.open(path, "w:gz") as tar:
        if member.isfile():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return path


@pytest.mark.parametrize("name, kind", [("../escape.txt", "file"), ("/tmp/abs.txt", "file"),
                                        ("cifar-10-batches-py/link", "sym"),
                                        ("cifar-10-batches-py/hard", "hard")])
def test_unsafe_tar_members_refused(tmp_path, name, kind):
    ti = tarfile.TarInfo(name)
    if kind == "sym":
        ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hard":
        ti.type, ti.linkname = tarfile.LNKTYPE, "/etc/passwd"
    arch = _tar_with(tmp_path / "bad.tar.gz", ti)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeFileError, match="outside|link"):
        safe_extract(arch, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_unsafe_member_refused_through_load(tmp_path):
    extra = {"../../evil": b"x"}
    write_archive(tmp_path / cifar.ARCHIVE, make_batches(n=2), extra=extra)
    with pytest.raises(UnsafeFileError):
        load_cifar10(tmp_path, download_ok=False)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": RunsCode(marker)}, protocol=2)
    with pytest.raises(UnsafeFileError, match="refusing to load pickle global"):
        unpickle_cifar(evil)
    assert not marker.exists()
    batches = make_batches(n=2)
    write_archive(tmp_path / cifar.ARCHIVE, batches, skip=("test_batch",),
                  extra={"test_batch": evil})
    with pytest.raises(UnsafeFileError, match="posix.system|os.system"):
        load_cifar10(tmp_path, download_ok=False, notice=lambda s: None)
    assert not marker.exists()


def test_official_numpy1_global_is_mapped():
    d, labels = make_batches(n=3)["test_batch"]
    raw = batch_pickle(d, labels)
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw          # as in the official files
    out = unpickle_cifar(raw)
    np.testing.assert_array_equal(out["data"], d)
    assert out["labels"] == labels
