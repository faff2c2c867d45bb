"""cifar10.archive: decoding the archive exactly, refusing unsafe or malformed ones by name."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile

import numpy as np
import pytest

from cifar10 import archive as cifar
from cifar10.archive import CifarFormatError, ReadLimits, read_archive
from tests.helpers.archives import (
    FOLDER,
    call_pickle,
    fingerprints_of,
    fixture_fingerprints,
    make_archive,
    make_arrays,
    py2_pickle,
    reduce_pickle,
    tar_member,
)

MiB = 1 << 20


def assert_same_arrays(got: cifar.CifarArrays, want: dict) -> None:
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        value = getattr(got, key)
        assert value.dtype == (np.uint8 if key.endswith("images") else np.int64), key
        assert value.shape == want[key].shape, key
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    assert got.class_names == want["class_names"]


def test_decodes_exactly_what_the_fixture_wrote(tmp_path):
    path = tmp_path / "a.tar.gz"
    arrays = make_archive(path, train_per_class=7, test_per_class=2, seed=3)
    got = read_archive(path)
    assert got.train_images.shape == (70, 3072) and got.test_images.shape == (20, 3072)
    assert_same_arrays(got, arrays)
    assert list(got.class_names) == list(cifar.CLASS_NAMES)


def test_train_batches_are_concatenated_in_numeric_order_whatever_the_member_order(tmp_path):
    path = tmp_path / "a.tar.gz"
    order = ("test_batch", "data_batch_5", "data_batch_3", "batches.meta", "data_batch_1",
             "data_batch_4", "data_batch_2")
    arrays = make_archive(path, member_order=order)
    assert_same_arrays(read_archive(path), arrays)


def test_reads_from_a_file_object(synthetic_archive):
    with open(synthetic_archive.path, "rb") as f:
        assert_same_arrays(read_archive(io.BytesIO(f.read())), make_arrays())


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickles_of_any_protocol_decode_the_same(tmp_path, protocol):
    # a repackaged mirror written by Python 3: _codecs.encode bytes (2), numpy._core (3, 4), _frombuffer (5)
    path = tmp_path / "a.tar.gz"
    arrays = make_archive(path, protocol=protocol)
    assert_same_arrays(read_archive(path), arrays)


def test_fingerprints_follow_the_params_definition():
    # images: sha256 of the uint8 C-order bytes; labels: cast to uint8 first
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    labels = np.array([3, 9], dtype=np.int64)
    arrays = cifar.CifarArrays(images, labels, images[::-1], labels[::-1], list(cifar.CLASS_NAMES))
    fps = cifar.fingerprints(arrays)
    assert fps["train_images"] == hashlib.sha256(images.tobytes()).hexdigest()
    assert fps["train_labels"] == hashlib.sha256(bytes([3, 9])).hexdigest()
    assert fps["test_images"] == hashlib.sha256(images[::-1].tobytes()).hexdigest()
    assert fps["test_labels"] == hashlib.sha256(bytes([9, 3])).hexdigest()


def test_fingerprints_agree_with_an_independent_decoder(synthetic_archive):
    fps = cifar.fingerprints(read_archive(synthetic_archive.path))
    assert fps == synthetic_archive.fingerprints == fingerprints_of(make_arrays())


def test_fingerprint_mismatches_names_the_differing_arrays(tmp_path):
    base, edited = tmp_path / "base.tar.gz", tmp_path / "edited.tar.gz"
    make_archive(base)
    make_archive(edited, edit=lambda a: a["test_images"].__setitem__((4, 100), a["test_images"][4, 100] ^ 1))
    got = cifar.fingerprints(read_archive(edited))
    assert cifar.fingerprint_mismatches(got, fixture_fingerprints(base)) == ["test_images"]
    assert cifar.fingerprint_mismatches(got, got) == []


# ---------------------------------------------------------------- unsafe tar members

UNSAFE = {
    "parent": (tar_member("../x", b"escaped"), "'..'"),
    "nested-parent": (tar_member(f"{FOLDER}/../../x", b"escaped"), "'..'"),
    "absolute": (tar_member("/tmp/cifar-absolute-x", b"escaped"), "absolute"),
    "symlink": (tar_member(f"{FOLDER}/link", None, type=tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
    "hardlink": (tar_member(f"{FOLDER}/hard", None, type=tarfile.LNKTYPE, linkname=f"{FOLDER}/data_batch_1"), "link"),
    "char-device": (tar_member(f"{FOLDER}/dev", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    "block-device": (tar_member(f"{FOLDER}/blk", None, type=tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
    "fifo": (tar_member(f"{FOLDER}/fifo", None, type=tarfile.FIFOTYPE), "fifo"),
}


@pytest.mark.parametrize("extra_first", [True, False], ids=["before-batches", "after-batches"])
@pytest.mark.parametrize("kind", list(UNSAFE))
def test_unsafe_members_are_refused_by_name(tmp_path, kind, extra_first):
    (member, reason) = UNSAFE[kind]
    path = tmp_path / "a.tar.gz"
    make_archive(path, extra=[member], extra_first=extra_first)
    with pytest.raises(CifarFormatError) as err:
        read_archive(path)
    assert repr(member[0].name) in str(err.value) and reason in str(err.value)
    assert not (tmp_path.parent / "x").exists() and not os.path.exists("/tmp/cifar-absolute-x")


def test_unrelated_regular_members_are_ignored(tmp_path):
    # the official archive also holds cifar-10-batches-py/readme.html
    path = tmp_path / "a.tar.gz"
    arrays = make_archive(path, extra=[tar_member(f"{FOLDER}/readme.html", b"<html></html>")])
    assert_same_arrays(read_archive(path), arrays)


def test_a_member_twice_is_refused(tmp_path):
    path = tmp_path / "a.tar.gz"
    make_archive(path, member_order=("batches.meta",) + tuple(f"data_batch_{i}" for i in (1, 2, 3, 4, 5, 2))
                 + ("test_batch",))
    with pytest.raises(CifarFormatError, match="data_batch_2' appears twice"):
        read_archive(path)


# ---------------------------------------------------------------- size caps


def test_oversized_member_is_refused_from_its_header_before_reading(tmp_path):
    # The header claims 300 MiB but only 1 MiB follows and the gzip then ends: a reader that
    # inflated the member before checking would report truncation instead of the size cap.
    info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    info.size = 300 * MiB
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb") as gz:
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(MiB))
    with pytest.raises(CifarFormatError, match=r"'cifar-10-batches-py/data_batch_1' declares 300 MiB, over the 200 MiB"):
        read_archive(path)


def test_member_over_a_small_per_member_cap_is_refused(tmp_path):
    path = tmp_path / "a.tar.gz"
    make_archive(path, extra=[tar_member(f"{FOLDER}/zeros", 2 * MiB)], extra_first=True)
    with pytest.raises(CifarFormatError, match=r"'cifar-10-batches-py/zeros' declares 2 MiB, over the 1 MiB"):
        read_archive(path, ReadLimits(max_member_bytes=MiB, max_total_bytes=100 * MiB))
    assert ReadLimits() == ReadLimits(max_member_bytes=200 * MiB, max_total_bytes=400 * MiB)  # the defaults


def test_total_decompressed_size_is_capped_while_streaming(tmp_path):
    # each zero member is under the per-member cap, together they pass the total cap; the
    # reader stops as soon as the running total does, well before the end of the stream
    path = tmp_path / "a.tar.gz"
    make_archive(path, extra=[tar_member(f"{FOLDER}/zeros{i}", MiB - 1024) for i in range(6)], extra_first=True)
    read_archive(path, ReadLimits(max_member_bytes=MiB, max_total_bytes=8 * MiB))  # fits: accepted

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.consumed += len(data)
            return data

    make_archive(path, extra=[tar_member(f"{FOLDER}/zeros{i}", MiB - 1024) for i in range(40)], extra_first=True)
    raw = path.read_bytes()
    with pytest.raises(CifarFormatError, match="more than 3 MiB"):
        read_archive(Counting(raw), ReadLimits(max_member_bytes=MiB, max_total_bytes=3 * MiB))
    assert Counting.consumed < len(raw) / 2


# ---------------------------------------------------------------- broken files


def test_truncated_gzip_is_refused(synthetic_archive, tmp_path):
    raw = synthetic_archive.path.read_bytes()
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(CifarFormatError, match="truncated"):
        read_archive(path)


def test_corrupt_gzip_is_refused(synthetic_archive, tmp_path):
    raw = bytearray(synthetic_archive.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(CifarFormatError):
        read_archive(path)


def test_not_a_gzip_is_refused(synthetic_archive, tmp_path):
    path = tmp_path / "plain.tar"
    path.write_bytes(gzip.decompress(synthetic_archive.path.read_bytes()))  # an uncompressed tar
    with pytest.raises(CifarFormatError, match="not a gzip file"):
        read_archive(path)


def test_gzip_of_something_else_is_refused(tmp_path):
    path = tmp_path / "notes.gz"
    path.write_bytes(gzip.compress(b"just some text, not a tar archive\n" * 100))
    with pytest.raises(CifarFormatError, match="not a valid tar archive"):
        read_archive(path)


@pytest.mark.parametrize("omitted", ["test_batch", "data_batch_4", "batches.meta"])
def test_missing_members_are_named(tmp_path, omitted):
    path = tmp_path / "a.tar.gz"
    make_archive(path, omit=(omitted,))
    with pytest.raises(CifarFormatError, match=f"lacks {FOLDER}/{omitted}"):
        read_archive(path)


# ---------------------------------------------------------------- malicious pickles


def _evil_module(tmp_path, name: str, marker) -> None:
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(*a): pass\n")


PAYLOADS = {
    "os.system": (lambda marker, mod: reduce_pickle(os.system, f"touch '{marker}'"), "posix.system"),
    "builtins.eval": (lambda marker, mod: reduce_pickle(eval, f"open({str(marker)!r}, 'w').close()"),
                      "__builtin__.eval"),  # protocol 2 spells builtins so
    "subprocess": (lambda marker, mod: call_pickle("subprocess", "getoutput", f"touch '{marker}'"),
                   "subprocess.getoutput"),
    "unrelated-module": (lambda marker, mod: call_pickle(mod, "run"), "cifar_evil_"),
}


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_malicious_pickles_are_refused_without_running(tmp_path, monkeypatch, kind):
    build, named = PAYLOADS[kind]
    monkeypatch.syspath_prepend(str(tmp_path))
    # control: loaded without restriction, the payload really runs
    control_marker, control_mod = tmp_path / "CONTROL", f"cifar_evil_control_{kind.replace('-', '_').replace('.', '_')}"
    _evil_module(tmp_path, control_mod, control_marker)
    with contextlib.suppress(Exception):  # e.g. a module-level import payload; what matters is that it ran
        pickle.loads(build(control_marker, control_mod), encoding="bytes")
    assert control_marker.exists()

    marker, mod = tmp_path / "MARKER", f"cifar_evil_{kind.replace('-', '_').replace('.', '_')}"
    _evil_module(tmp_path, mod, marker)
    path = tmp_path / "evil.tar.gz"
    make_archive(path, replace={"data_batch_2": build(marker, mod)})
    with pytest.raises(CifarFormatError) as err:
        read_archive(path)
    assert f"'{FOLDER}/data_batch_2'" in str(err.value) and named in str(err.value)
    assert not marker.exists()
    assert mod not in sys.modules


def test_restricted_unpickler_refuses_object_arrays():
    payload = pickle.dumps({b"data": np.array([[1, "x"]], dtype=object), b"labels": [0]}, protocol=2)
    with pytest.raises(CifarFormatError, match="dtype"):
        cifar.unpickle(io.BytesIO(payload))


def test_restricted_unpickler_refuses_any_other_global():
    for module, name in [("os", "system"), ("numpy", "load"), ("numpy.lib.format", "read_array"),
                         ("builtins", "getattr"), ("copyreg", "_reconstructor")]:
        with pytest.raises(CifarFormatError, match=f"refers to {module}.{name}"):
            cifar.RestrictedUnpickler(io.BytesIO(b""), encoding="bytes").find_class(module, name)


# ---------------------------------------------------------------- batch validation


def _batch(data, labels) -> bytes:
    return py2_pickle({b"batch_label": b"training batch 3 of 5", b"data": data, b"labels": labels})


def _flip_label(value):
    return lambda a: a["train_labels"].__setitem__(0, value)


@pytest.mark.parametrize("replacement, message", [
    pytest.param(_batch(np.zeros((12, 3071), np.uint8), [0] * 12),
                 r"data_batch_3'?: b'data' has shape \(12, 3071\)", id="short-rows"),
    pytest.param(_batch(np.zeros((12, 3072), np.uint8), [0] * 11),
                 "data_batch_3'?: 11 labels for 12 images", id="label-count"),
    pytest.param(_batch(np.zeros((12, 3072), np.uint8), [0] * 11 + [10]),
                 "data_batch_3'?: label 10 out of range", id="label-10"),
    pytest.param(_batch(np.zeros((12, 3072), np.uint8), [0] * 11 + [-1]),
                 "data_batch_3'?: label -1 out of range", id="label-negative"),
    pytest.param(pickle.dumps({b"data": np.zeros((12, 3072)), b"labels": [0] * 12}, protocol=4),
                 "data_batch_3'?: .*dtype 'f8' refused", id="float-pixels"),
    pytest.param(pickle.dumps({b"data": np.zeros((12, 3072), np.uint8), b"labels": [0.5] * 12}, protocol=4),
                 "data_batch_3'?: b'labels' holds 0.5", id="float-labels"),
    pytest.param(py2_pickle({b"labels": [0] * 12}), "data_batch_3'?: the pickled dict has no b'data'",
                 id="no-data"),
    pytest.param(py2_pickle([1, 2, 3]), "data_batch_3'?: expected a pickled dict, got list", id="not-a-dict"),
    pytest.param(b"not a pickle at all", "data_batch_3'?: not a valid pickle", id="garbage"),
    pytest.param(py2_pickle({b"data": b"\x00" * 3000, b"labels": []}), "3000 bytes, not a multiple of 3072",
                 id="ragged-bytes"),
])
def test_malformed_batches_are_refused_naming_the_batch(tmp_path, replacement, message):
    path = tmp_path / "a.tar.gz"
    make_archive(path, replace={"data_batch_3": replacement})
    with pytest.raises(CifarFormatError, match=message):
        read_archive(path)


def test_label_out_of_range_names_its_batch(tmp_path):
    path = tmp_path / "a.tar.gz"
    make_archive(path, edit=_flip_label(10))
    with pytest.raises(CifarFormatError, match=r"data_batch_1'?: label 10 out of range; expected 0\.\.9"):
        read_archive(path)


def test_class_names_must_be_cifar10s(tmp_path):
    path = tmp_path / "a.tar.gz"
    make_archive(path, edit=lambda a: a["class_names"].__setitem__(2, "birb"))
    with pytest.raises(CifarFormatError, match=r"batches\.meta'?: label_names .*birb"):
        read_archive(path)


def test_pixels_as_raw_bytes_or_lists_are_converted_exactly(tmp_path):
    arrays = make_arrays()
    images = arrays["train_images"][24:36]  # data_batch_3 (batches of 12)
    labels = [int(v) for v in arrays["train_labels"][24:36]]
    for data in (images.tobytes(), images.tolist()):
        path = tmp_path / "a.tar.gz"
        make_archive(path, replace={"data_batch_3": _batch(data, labels)})
        assert_same_arrays(read_archive(path), arrays)
