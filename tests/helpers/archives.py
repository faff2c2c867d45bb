"""Tiny synthetic CIFAR-10 archives in the real format, for tests that must not need the dataset.

    from tests.helpers.archives import make_archive, fixture_fingerprints, write_source, run_fetch

    arrays = make_archive(tmp_path / "cifar-10-python.tar.gz")        # 60 train, 30 test images
    fps = fixture_fingerprints(tmp_path / "cifar-10-python.tar.gz")   # what source.yaml sha256 must hold
    write_source(tmp_path, fps)                                       # cifar10/source.yaml, sha256 swapped
    run_fetch(tmp_path, archive=tmp_path / "cifar-10-python.tar.gz")  # python -m stages.fetch there
    # tmp_path/data/raw/ now holds exactly `arrays`

The archive is laid out like cifar-10-python.tar.gz: a gzip'd tar holding the folder
`cifar-10-batches-py/` with data_batch_1..5, test_batch and batches.meta. Each batch is a pickle
of the same shape as the real ones (protocol 2 as written by Python 2: a dict with b'batch_label',
b'data' a uint8 (N, 3072) numpy array referencing numpy.core.multiarray._reconstruct, b'labels'
a list of ints). Pixels come from a seeded generator; labels are balanced over the 10 classes and
shuffled. Same arguments, same bytes.

Keyword hooks build broken or repackaged variants for tests: `edit` (change the arrays, e.g. one
pixel), `protocol` (modern pickles), `member_order`, `compresslevel`, `omit`, `replace` (raw
bytes for a member, e.g. a malicious pickle), `extra` (added members: traversal paths, links,
devices, zero-filled bombs; see `tar_member`). `call_pickle` and `reduce_pickle` build pickles
that run code when loaded without restriction.

This module does not import the code under test: `fixture_fingerprints` decodes with plain
tarfile + pickle, so use it only on archives from `make_archive` (not on ones with malicious
members).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/helpers/ is two below)
SOURCE_FILE = Path("cifar10/source.yaml")  # the dataset identity fetch reads (relative to the repo root)
FOLDER = "cifar-10-batches-py"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
MEMBER_ORDER = ("batches.meta",) + TRAIN_BATCHES + ("test_batch",)  # as in the local mirror
MTIME = 1230768000  # 2009-01-01, fixed so the same arguments give the same bytes

TarExtra = tuple[tarfile.TarInfo, "bytes | int | None"]


# ---------------------------------------------------------------- arrays


def make_arrays(*, train_per_class: int = 6, test_per_class: int = 3, seed: int = 0) -> dict[str, Any]:
    """The arrays `make_archive` writes with the same arguments.

    Returns {"train_images": uint8 (10*train_per_class, 3072), "train_labels": int64 (...,),
    "test_images": uint8 (10*test_per_class, 3072), "test_labels": int64, "class_names": list}.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.int64), per_class))
        out[f"{split}_images"] = rng.integers(0, 256, size=(labels.size, 3072), dtype=np.uint8)
        out[f"{split}_labels"] = labels
    out["class_names"] = list(CLASS_NAMES)
    return out


def fingerprints_of(arrays: dict[str, Any]) -> dict[str, str]:
    """sha256 as cifar10/source.yaml holds them: uint8 C-order bytes, labels as uint8."""
    def sha(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()
    return {k: sha(arrays[k]) for k in ("train_images", "train_labels", "test_images", "test_labels")}


# ---------------------------------------------------------------- pickles


def py2_pickle(obj: Any) -> bytes:
    """Pickle `obj` the way Python 2's cPickle (protocol 2) wrote the CIFAR batches.

    Supports dict, list, tuple, int, None, bytes/str (as Python 2 str: BINSTRING) and uint8
    ndarrays (numpy.core.multiarray._reconstruct + BUILD, as in the real files).
    """
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _emit(obj, out.write)
    out.write(b".")
    return out.getvalue()


def _emit(obj: Any, w: Callable[[bytes], Any]) -> None:
    if obj is None:
        w(b"N")
    elif isinstance(obj, bool):
        w(b"\x88" if obj else b"\x89")
    elif isinstance(obj, (int, np.integer)):
        v = int(obj)
        w(b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v) if 0 <= v < 65536
          else b"J" + struct.pack("<i", v))
    elif isinstance(obj, (bytes, str)):
        b = obj.encode("ascii") if isinstance(obj, str) else obj
        w(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b)
    elif isinstance(obj, tuple):
        if 1 <= len(obj) <= 3:
            for item in obj:
                _emit(item, w)
            w(b"\x85\x86\x87"[len(obj) - 1:len(obj)])
        else:
            w(b"(")
            for item in obj:
                _emit(item, w)
            w(b"t")
    elif isinstance(obj, list):
        w(b"]")
        for start in range(0, len(obj), 1000):  # cPickle appends in batches of 1000
            w(b"(")
            for item in obj[start:start + 1000]:
                _emit(item, w)
            w(b"e")
    elif isinstance(obj, dict):
        w(b"}(")
        for k, v in obj.items():
            _emit(k, w)
            _emit(v, w)
        w(b"u")
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        w(b"cnumpy.core.multiarray\n_reconstruct\n")
        w(b"cnumpy\nndarray\n")
        _emit((0,), w)
        _emit(b"b", w)
        w(b"\x87R(")  # TUPLE3, REDUCE, then the state tuple
        _emit(1, w)
        _emit(tuple(obj.shape), w)
        w(b"cnumpy\ndtype\n")
        _emit((b"u1", 0, 1), w)
        w(b"R(")
        for item in (3, b"|", None, None, None, -1, -1, 0):
            _emit(item, w)
        w(b"tb\x89")  # TUPLE, BUILD (the dtype), NEWFALSE (not Fortran order)
        _emit(np.ascontiguousarray(obj).tobytes(), w)
        w(b"tb")  # TUPLE, BUILD (the array)
    else:
        raise TypeError(f"py2_pickle: unsupported {type(obj).__name__}")


def call_pickle(module: str, name: str, *args: str) -> bytes:
    """A batch-shaped pickle whose b'data' is `module.name(*args)`: loading it without
    restriction imports `module` and calls the function (hand-written opcodes, so `module`
    need not exist here)."""
    out = io.BytesIO()
    out.write(b"\x80\x02}(U\x04data" + f"c{module}\n{name}\n(".encode())
    for a in args:
        _emit(a, out.write)
    out.write(b"tRU\x06labels]u.")
    return out.getvalue()


class _Calls:
    """Pickles as a call of `func(*args)`."""

    def __init__(self, func: Callable, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def reduce_pickle(func: Callable, *args: Any, protocol: int = 2) -> bytes:
    """A batch-shaped pickle built with a __reduce__ class: loading it calls func(*args)."""
    return pickle.dumps({b"batch_label": b"evil", b"data": _Calls(func, *args), b"labels": []},
                        protocol=protocol)


# ---------------------------------------------------------------- archives


def tar_member(name: str, data: bytes | int | None = b"", *, type: bytes = tarfile.REGTYPE,
               linkname: str = "", devmajor: int = 0, devminor: int = 0) -> TarExtra:
    """An extra member for `make_archive(extra=...)`: `data` is its content, or an int for that
    many zero bytes (streamed, for decompression bombs), or None for links/devices/folders."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.devmajor, info.devminor = type, linkname, devmajor, devminor
    info.mtime, info.mode = MTIME, 0o755 if type == tarfile.DIRTYPE else 0o644
    return info, data


class _Zeros(io.RawIOBase):
    def readinto(self, b: Any) -> int:
        b[:] = bytes(len(b))
        return len(b)

    def readable(self) -> bool:
        return True


def make_archive(path: str | Path, *, train_per_class: int = 6, test_per_class: int = 3,
                 seed: int = 0,
                 edit: Callable[[dict[str, Any]], None] | None = None,
                 protocol: int | None = None,
                 member_order: Sequence[str] = MEMBER_ORDER,
                 compresslevel: int = 9,
                 omit: Sequence[str] = (),
                 replace: dict[str, bytes] | None = None,
                 extra: Sequence[TarExtra] = (),
                 extra_first: bool = False) -> dict[str, Any]:
    """Write a small cifar-10-python.tar.gz to `path`; return the arrays it holds (`make_arrays`).

    train_per_class / test_per_class: images per class (train is split over the 5 batches).
    edit: called on the arrays before they are pickled (e.g. change one pixel); the returned
        arrays include the edit.
    protocol: None = Python-2 style pickles like the real archive; 2..5 = pickle.dumps with
        numpy's own reduction (what a repackaged mirror written by Python 3 holds).
    member_order: short member names in the order written. compresslevel: gzip level.
    omit: short names left out. replace: {short name: raw bytes} written instead of its pickle.
    extra: more members (`tar_member(...)`), after the regular ones or, with extra_first, before.
    """
    arrays = make_arrays(train_per_class=train_per_class, test_per_class=test_per_class, seed=seed)
    if edit is not None:
        edit(arrays)
    dump = py2_pickle if protocol is None else (lambda obj: pickle.dumps(obj, protocol=protocol))

    payloads: dict[str, bytes] = {}
    splits = np.array_split(np.arange(len(arrays["train_labels"])), len(TRAIN_BATCHES))
    for i, (batch, idx) in enumerate(zip(TRAIN_BATCHES, splits), start=1):
        payloads[batch] = dump({b"batch_label": f"training batch {i} of 5".encode(),
                                b"data": arrays["train_images"][idx],
                                b"labels": [int(v) for v in arrays["train_labels"][idx]]})
    payloads["test_batch"] = dump({b"batch_label": b"testing batch 1 of 1",
                                   b"data": arrays["test_images"],
                                   b"labels": [int(v) for v in arrays["test_labels"]]})
    payloads["batches.meta"] = dump({b"num_cases_per_batch": len(splits[0]),
                                     b"label_names": [n.encode() for n in arrays["class_names"]],
                                     b"num_vis": 3072})
    payloads.update(replace or {})

    regular = [tar_member(FOLDER, None, type=tarfile.DIRTYPE)]
    regular += [tar_member(f"{FOLDER}/{m}", payloads[m]) for m in member_order if m not in omit]
    members = list(extra) + regular if extra_first else regular + list(extra)
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            _add(tar, info, data)
    return arrays


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | int | None) -> None:
    if data is None:
        info.size = 0
        tar.addfile(info)
    elif isinstance(data, int):
        info.size = data
        tar.addfile(info, io.BufferedReader(_Zeros(), buffer_size=1 << 20))
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def fixture_fingerprints(path: str | Path) -> dict[str, str]:
    """The sha256 dict cifar10/source.yaml must hold for an archive from make_archive.

    Decodes with plain tarfile + pickle (trusted input only), independently of cifar10.archive.
    """
    batches = {}
    with tarfile.open(path, "r:gz") as tar:
        for name in MEMBER_ORDER[1:]:
            with tar.extractfile(f"{FOLDER}/{name}") as f:
                batches[name] = pickle.load(f, encoding="bytes")
    arrays = {
        "train_images": np.concatenate([np.asarray(batches[b][b"data"]) for b in TRAIN_BATCHES]),
        "train_labels": np.concatenate([np.asarray(batches[b][b"labels"]) for b in TRAIN_BATCHES]),
        "test_images": np.asarray(batches["test_batch"][b"data"]),
        "test_labels": np.asarray(batches["test_batch"][b"labels"]),
    }
    return fingerprints_of(arrays)


def write_source(workdir: str | Path, fingerprints: dict[str, str], *, url: str | None = None,
                 md5: str | None = None, src: str | Path = REPO_ROOT / SOURCE_FILE) -> Path:
    """Write workdir/cifar10/source.yaml, the fetch stage's dataset identity: the repo's copy with
    sha256 = `fingerprints` (and url / md5 if given). Returns its path."""
    source = yaml.safe_load(Path(src).read_text())
    source["cifar10"]["sha256"] = dict(fingerprints)
    if url is not None:
        source["cifar10"]["url"] = url
    if md5 is not None:
        source["cifar10"]["md5"] = md5
    dest = Path(workdir) / SOURCE_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(source, sort_keys=False))
    return dest


def fetch_env(*, archive: str | Path | None = None, cache_dir: str | Path | None = None) -> dict[str, str]:
    """Environment for running `python -m stages.fetch` outside the repo: the repo on PYTHONPATH,
    CIFAR10_ARCHIVE = `archive` (unset if None), CIFAR10_CACHE_DIR = `cache_dir`, no proxy for
    127.0.0.1 (local test servers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    if archive is not None:
        env["CIFAR10_ARCHIVE"] = str(archive)
    if cache_dir is not None:
        env["CIFAR10_CACHE_DIR"] = str(cache_dir)
    return env


def run_fetch(workdir: str | Path, *, archive: str | Path | None = None, cache_dir: str | Path | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m stages.fetch` with cwd=`workdir` (which needs a cifar10/source.yaml, e.g. from
    write_source); it writes workdir/data/raw/. The download cache defaults to
    workdir/download-cache so a test never touches the user's cache."""
    cache_dir = Path(workdir) / "download-cache" if cache_dir is None else cache_dir
    return subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=workdir, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=fetch_env(archive=archive, cache_dir=cache_dir))
