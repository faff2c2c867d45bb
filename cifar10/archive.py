"""Decode the CIFAR-10 "python version" archive (cifar-10-python.tar.gz) into arrays, safely.

The archive is a gzip'd tar with one folder `cifar-10-batches-py/` holding `data_batch_1`..`_5`,
`test_batch` and `batches.meta`. Each batch is a pickled dict: b'data' is a (10000, 3072) uint8
array (1024 red, then 1024 green, then 1024 blue values, each plane 32x32 row-major), b'labels'
a list of ints 0..9, b'batch_label' a name. The archive is untrusted input, so:

- nothing is extracted to disk: tar members are read one after the other from the gzip stream;
- members with absolute paths, `..` components, links, devices or fifos are refused by name;
- each member's declared size and the total decompressed size are capped (`ReadLimits`), so a
  decompression bomb is refused from its tar header, or as soon as the running total passes
  the cap, never after inflating it all;
- pickles go through `RestrictedUnpickler`, which admits only the few numpy globals a CIFAR
  batch references and maps them to local stand-ins that build arrays with `np.frombuffer`:
  no numpy pickle machinery and no other code runs on the archive's bytes.

`read_archive` returns a `CifarArrays`; `fingerprints` gives the sha256 of its arrays as
cifar10/source.yaml `sha256` declares them. Every problem raises `CifarFormatError` naming the
member and what was wrong. No file paths of the project and no params.yaml here.

    arrays = read_archive("cifar-10-python.tar.gz")
    fingerprint_mismatches(fingerprints(arrays), expected)   # [] when it is the expected data
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from cifar10.layout import CLASS_NAMES, N_CLASSES, ROW_LENGTH

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))  # concatenated in this order
TEST_BATCH = "test_batch"
META = "batches.meta"
MEMBERS = TRAIN_BATCHES + (TEST_BATCH, META)  # the members read_archive needs, under FOLDER/

FINGERPRINT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

MiB = 1 << 20


class CifarFormatError(ValueError):
    """The archive is not a well-formed, safe CIFAR-10 python archive; the message says why."""


@dataclass(frozen=True)
class ReadLimits:
    """Caps on decompressed sizes. A real batch is ~31 MB, the whole tar ~184 MB."""

    max_member_bytes: int = 200 * MiB  # a tar member declaring more is refused from its header
    max_total_bytes: int = 400 * MiB   # decompressed tar stream (headers + all members)


@dataclass(frozen=True)
class CifarArrays:
    """The decoded dataset. N = 50000 train, 10000 test for the real archive.

    train_images : uint8 ndarray (N_train, 3072), C order, pixels as stored in the batches
    train_labels : int64 ndarray (N_train,), values in 0..9; data_batch_1..5 in order
    test_images  : uint8 ndarray (N_test, 3072)
    test_labels  : int64 ndarray (N_test,)
    class_names  : the 10 names from batches.meta, decoded (equal to CLASS_NAMES)

    The arrays may be read-only views on the decoded bytes; copy before changing them.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


# ---------------------------------------------------------------- restricted unpickling
# A CIFAR batch pickle references exactly three globals (checked with pickletools on the
# archive): numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype. Pickles
# written by numpy >= 2 spell the module numpy._core.*, and protocol-5 pickles use
# numpy._core.numeric._frombuffer instead. Each admitted name maps to a stand-in below
# that only accepts plain integer arrays and builds them with np.frombuffer, so object
# arrays (which could carry arbitrary objects) cannot even be expressed. Python 3 writes
# bytes at protocol 2 as _codecs.encode(str, 'latin1'); that one form is admitted too.

_INT_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"}


class _NdarrayMarker:
    """Stands for `numpy.ndarray` as the first argument of `_reconstruct`; not callable."""

    def __repr__(self) -> str:
        return "<numpy.ndarray marker>"


_NDARRAY = _NdarrayMarker()


def _text(value: Any) -> str:
    """Pickles from Python 2 carry str fields as bytes (encoding='bytes'); normalize to str."""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    if isinstance(value, str):
        return value
    raise CifarFormatError(f"expected a string in an array header, got {type(value).__name__}")


class _DtypeSpec:
    """Stand-in for `numpy.dtype(name, align, copy)` followed by its BUILD state."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        code = _text(name).lstrip("<>|=")
        if code not in _INT_DTYPES:
            raise CifarFormatError(f"array dtype {_text(name)!r} refused; CIFAR-10 arrays are uint8")
        self.code = code
        self.byteorder = "="  # until BUILD says otherwise

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subdescr, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2:
            raise CifarFormatError("malformed dtype state in pickle")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise CifarFormatError(f"malformed dtype byte order {order!r} in pickle")
        if any(part is not None for part in state[2:5]):
            raise CifarFormatError("structured dtype refused; CIFAR-10 arrays are plain uint8")
        self.byteorder = order

    def numpy(self) -> np.dtype:
        return np.dtype(("|" if self.code[1] == "1" else self.byteorder) + self.code)


def _shape(value: Any) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > 2
            or not all(type(n) is int and n >= 0 for n in value)):
        raise CifarFormatError(f"array shape {value!r} refused; expected at most 2 non-negative ints")
    return value


def _array_from_bytes(raw: Any, dtype: _DtypeSpec, shape: Any, fortran: bool) -> np.ndarray:
    if not isinstance(dtype, _DtypeSpec):
        raise CifarFormatError("array without a numpy dtype in pickle")
    if not isinstance(raw, (bytes, bytearray)):
        raise CifarFormatError(f"array data is a {type(raw).__name__}, not raw bytes (object arrays are refused)")
    shape = _shape(shape)
    dt = dtype.numpy()
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dt.itemsize != len(raw):
        raise CifarFormatError(f"array of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes, "
                               f"pickle holds {len(raw)}")
    return np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")


class _PendingArray:
    """Stand-in for `_reconstruct(ndarray, (0,), b'b')`; BUILD's `__setstate__` fills `.array`."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy's ndarray state: ([version,] shape, dtype, is_fortran, rawdata)
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise CifarFormatError("malformed ndarray state in pickle")
        shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, bool(fortran))


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _PendingArray:
    if cls is not _NDARRAY:
        raise CifarFormatError("_reconstruct of something other than numpy.ndarray refused")
    return _PendingArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    return _array_from_bytes(buf, dtype, shape, _text(order) == "F")


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Stand-in for `_codecs.encode(str, 'latin1')`: how Python 3 writes bytes at protocol 2."""
    if not isinstance(text, str) or _text(encoding).lower().replace("-", "") != "latin1":
        raise CifarFormatError("_codecs.encode is admitted only as (str, 'latin1'), the protocol-2 form of bytes")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,   # the real archive (numpy 1.x)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,        # protocol 5, numpy 1.x
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,       # protocol 5, numpy >= 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeSpec,
    ("_codecs", "encode"): _latin1_bytes,                      # bytes pickled by Python 3 at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals a CIFAR-10 batch references.

    Any other global (os.system, builtins.eval, subprocess.*, any module at all) raises
    CifarFormatError from `find_class`, before the module is imported and before anything it
    names could be called. Use with encoding='bytes' (the batches were pickled by Python 2).
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CifarFormatError(
                f"pickle refers to {module}.{name}, which a CIFAR-10 batch never does; refused "
                "without running it (the file is corrupt or malicious)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise CifarFormatError("pickle uses persistent ids, which a CIFAR-10 batch never does; refused")


def unpickle(fileobj: BinaryIO) -> Any:
    """Load one pickle with `RestrictedUnpickler(encoding='bytes')`; refused globals raise
    CifarFormatError, and so does a malformed pickle."""
    try:
        return RestrictedUnpickler(fileobj, encoding="bytes").load()
    except CifarFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, RecursionError, MemoryError) as err:
        raise CifarFormatError(f"not a valid pickle ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------- batch validation


def _get(batch: dict, key: str, where: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise CifarFormatError(f"{where}: the pickled dict has no b'{key}' entry "
                           f"(keys: {sorted(map(repr, batch))[:6]})")


def _pixels(value: Any, where: str) -> np.ndarray:
    """b'data' -> uint8 (N, 3072), from a uint8 array, raw bytes, or nested lists of 0..255."""
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise CifarFormatError(f"{where}: b'data' is an ndarray without its data")
        value = value.array
    if isinstance(value, (bytes, bytearray)):
        if len(value) % ROW_LENGTH:
            raise CifarFormatError(f"{where}: b'data' holds {len(value)} bytes, not a multiple of {ROW_LENGTH}")
        return np.frombuffer(value, dtype=np.uint8).reshape(-1, ROW_LENGTH)
    if isinstance(value, list):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise CifarFormatError(f"{where}: b'data' is a ragged or mixed list; expected N rows of {ROW_LENGTH} ints") from None
    if not isinstance(value, np.ndarray):
        raise CifarFormatError(f"{where}: b'data' is a {type(value).__name__}; expected a uint8 array")
    if value.ndim != 2 or value.shape[1] != ROW_LENGTH:
        raise CifarFormatError(f"{where}: b'data' has shape {value.shape}; expected (N, {ROW_LENGTH})")
    if value.dtype != np.uint8:
        # another integer type is accepted only when every value fits uint8 exactly
        if value.dtype.kind not in "iu" or (value.size and (value.min() < 0 or value.max() > 255)):
            raise CifarFormatError(f"{where}: b'data' has dtype {value.dtype}; expected uint8 pixels 0..255")
        value = value.astype(np.uint8)
    return np.ascontiguousarray(value)


def _labels(value: Any, n: int, where: str) -> np.ndarray:
    """b'labels' -> int64 (n,), every value in 0..9."""
    if isinstance(value, _PendingArray):
        value = value.array
    if isinstance(value, list) and not all(type(v) is int for v in value):
        bad = next(v for v in value if type(v) is not int)
        raise CifarFormatError(f"{where}: b'labels' holds {bad!r} ({type(bad).__name__}); expected ints 0..9")
    arr = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
    if arr is None or arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise CifarFormatError(f"{where}: b'labels' must be a list of ints 0..9, got {type(value).__name__}")
    if arr.shape[0] != n:
        raise CifarFormatError(f"{where}: {arr.shape[0]} labels for {n} images")
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        bad = arr[(arr < 0) | (arr >= N_CLASSES)][0]
        raise CifarFormatError(f"{where}: label {bad} out of range; expected 0..{N_CLASSES - 1}")
    return arr.astype(np.int64)


def decode_batch(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A unpickled batch dict -> (images uint8 (N, 3072), labels int64 (N,))."""
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    images = _pixels(_get(obj, "data", where), where)
    return images, _labels(_get(obj, "labels", where), images.shape[0], where)


def decode_meta(obj: Any, where: str = META) -> list[str]:
    """batches.meta dict -> the 10 class names (must equal CLASS_NAMES, in order)."""
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    names = _get(obj, "label_names", where)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise CifarFormatError(f"{where}: b'label_names' must be a list of strings")
    decoded = [n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in names]
    if tuple(decoded) != CLASS_NAMES:
        raise CifarFormatError(f"{where}: label_names {decoded} differ from CIFAR-10's {list(CLASS_NAMES)}")
    return decoded


# ---------------------------------------------------------------- archive reading


class _CappedStream:
    """The decompressed tar stream: counts bytes against the total cap and turns gzip
    failures into CifarFormatError at the point they happen (also when the unpickler
    is the reader)."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self._raw = raw
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self._limit = limit
        self.count = 0

    def _starts_as_gzip(self) -> bool:
        """The file opens with a gzip header: a 'not gzip' error then concerns what follows the stream."""
        try:
            self._raw.seek(0)
            return self._raw.read(2) == b"\x1f\x8b"
        except (OSError, ValueError):
            return False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit + 1 - self.count  # never inflate more than the cap allows
        try:
            data = self._gz.read(size)
        except gzip.BadGzipFile as err:
            if "Not a gzipped file" in str(err) and self._starts_as_gzip():
                raise CifarFormatError(
                    "has data after the end of its gzip stream (bytes appended to the file, or two files "
                    "joined?); `gzip -t` only warns of such 'trailing garbage', but the file is not the "
                    "archive as published") from None
            if "Not a gzipped file" in str(err):
                raise CifarFormatError(f"not a gzip file ({err}); expected cifar-10-python.tar.gz") from None
            raise CifarFormatError(f"corrupt gzip data ({err})") from None
        except EOFError:
            raise CifarFormatError("truncated: the gzip stream ends early (an incomplete download or copy?)") from None
        except zlib.error as err:
            raise CifarFormatError(f"corrupt gzip data ({err})") from None
        self.count += len(data)
        if self.count > self._limit:
            raise CifarFormatError(f"decompresses to more than {self._limit // MiB} MiB (limit); "
                                   "a real CIFAR-10 archive holds ~184 MB; refused as a possible decompression bomb")
        return data


def _member_name(info: tarfile.TarInfo) -> str:
    """Check one tar header; return its name without a leading './', or raise naming it."""
    name = info.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):
        raise CifarFormatError(f"member {name!r} has an absolute path; refused")
    if ".." in name.replace("\\", "/").split("/"):
        raise CifarFormatError(f"member {name!r} has a '..' component; refused")
    if info.issym() or info.islnk():
        raise CifarFormatError(f"member {name!r} is a link (to {info.linkname!r}); refused")
    if info.isdev():
        raise CifarFormatError(f"member {name!r} is a device or fifo; refused")
    if not (info.isreg() or info.isdir()) or info.issparse():
        raise CifarFormatError(f"member {name!r} has unsupported tar type {info.type!r}; refused")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _read_members(raw: BinaryIO, limits: ReadLimits) -> dict[str, Any]:
    """Stream the tar once, unpickling each expected member; every header is checked."""
    stream = _CappedStream(raw, limits.max_total_bytes)
    wanted = {f"{FOLDER}/{m}": m for m in MEMBERS}
    found: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as tar:
            for info in tar:
                name = _member_name(info)
                if info.isreg() and info.size > limits.max_member_bytes:
                    raise CifarFormatError(
                        f"member {info.name!r} declares {info.size / MiB:.0f} MiB, over the "
                        f"{limits.max_member_bytes // MiB} MiB limit per member (a real batch is ~31 MB); "
                        "refused as a possible decompression bomb")
                short = wanted.get(name)
                if short is None or not info.isreg():
                    continue  # e.g. the folder entry, or readme.html in the official archive
                if short in found:
                    raise CifarFormatError(f"member {info.name!r} appears twice; refused")
                # the whole member in memory (<= max_member_bytes): the unpickler then never
                # sees a stream that could make it allocate what a length field claims
                data = tar.extractfile(info).read()
                try:
                    obj = unpickle(io.BytesIO(data))
                except CifarFormatError as err:
                    raise CifarFormatError(f"member {info.name!r}: {err}") from None
                del data
                found[short] = decode_meta(obj, info.name) if short == META else decode_batch(obj, info.name)
    except tarfile.TarError as err:
        if "unexpected end of data" in str(err):
            raise CifarFormatError("truncated: the tar archive ends inside a member "
                                   "(an incomplete download or copy?)") from None
        raise CifarFormatError(f"not a valid tar archive inside the gzip ({err})") from None
    missing = [f"{FOLDER}/{m}" for m in MEMBERS if m not in found]
    if missing:
        raise CifarFormatError(f"archive lacks {', '.join(missing)}; expected the CIFAR-10 python version "
                               f"(folder {FOLDER}/ with {', '.join(MEMBERS)})")
    return found


def read_archive(source: str | os.PathLike | BinaryIO, limits: ReadLimits = ReadLimits()) -> CifarArrays:
    """Decode a cifar-10-python.tar.gz (a path, or a binary file object at its start).

    Returns CifarArrays: train = data_batch_1..5 concatenated in order, test = test_batch,
    class names from batches.meta. Raises CifarFormatError naming the member on any unsafe,
    oversized, truncated or malformed content; OSError if the path cannot be opened.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return read_archive(f, limits)
    found = _read_members(source, limits)
    # data_batch_1..5 into one array, each batch freed once copied: at most one batch more
    # than the result is held (np.concatenate would hold all five and the result)
    sizes = [len(found[b][1]) for b in TRAIN_BATCHES]
    train_images = np.empty((sum(sizes), ROW_LENGTH), np.uint8)
    train_labels = np.concatenate([found[b][1] for b in TRAIN_BATCHES])
    start = 0
    for batch, size in zip(TRAIN_BATCHES, sizes):
        train_images[start:start + size] = found.pop(batch)[0]
        start += size
    test_images, test_labels = found[TEST_BATCH]
    return CifarArrays(train_images, train_labels, test_images, test_labels, found[META])


# ---------------------------------------------------------------- fingerprints


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (hex)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def fingerprints(arrays: CifarArrays) -> dict[str, str]:
    """sha256 of each array as cifar10/source.yaml `sha256` declares it: images uint8 C order,
    labels cast to uint8 (values 0..9). Keys: FINGERPRINT_KEYS."""
    return {
        "train_images": array_sha256(arrays.train_images.astype(np.uint8, copy=False)),
        "train_labels": array_sha256(arrays.train_labels.astype(np.uint8)),
        "test_images": array_sha256(arrays.test_images.astype(np.uint8, copy=False)),
        "test_labels": array_sha256(arrays.test_labels.astype(np.uint8)),
    }


def fingerprint_mismatches(actual: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Names (in FINGERPRINT_KEYS order) whose sha256 differs or is missing in `expected`."""
    return [k for k in FINGERPRINT_KEYS if str(expected.get(k, "")).lower() != actual[k].lower()]
