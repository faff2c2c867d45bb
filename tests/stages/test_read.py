"""The checked readers (stages/_read.py and the readers built on them) against inputs nobody listed.

Property-based (Hypothesis): generated and mutated YAML, JSON, training records, .npy splits,
model files and images. The property, for every reader: it returns a valid value or raises its
one error type (StageError; ImageError for images), never another exception. Derandomized, so
`make test` runs the same examples every time; `make fuzz` runs many more (HYPOTHESIS_PROFILE=long).
Every failure found becomes a regular test below the properties.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages import _model_file, _prepared, _read, _training_log, params, paths
from stages._io import StageError
from tests.helpers.repo import ROOT

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PARAMS_YAML = (ROOT / "params.yaml").read_bytes()
SECTIONS = [__import__(f"stages.{n}", fromlist=["PARAMS"]).PARAMS for n in ("filter_normalize", "train", "evaluate")]


def mutated(good: bytes) -> st.SearchStrategy[bytes]:
    """`good` with a few bytes replaced, inserted or deleted, or cut short."""
    edit = st.tuples(st.sampled_from(["replace", "insert", "delete", "cut"]), st.integers(0, max(0, len(good) - 1)),
                     st.binary(min_size=1, max_size=8))

    def apply(edits: list) -> bytes:
        data = bytearray(good)
        for kind, at, chunk in edits:
            at = min(at, len(data))
            if kind == "replace":
                data[at:at + len(chunk)] = chunk
            elif kind == "insert":
                data[at:at] = chunk
            elif kind == "delete":
                del data[at:at + len(chunk)]
            else:
                del data[at:]
        return bytes(data)
    return st.lists(edit, min_size=1, max_size=4).map(apply)


def scratch(name: str, data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    (folder / name).write_bytes(data)
    return folder / name


# ---------------------------------------------------------------- YAML and params


yaml_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="[]{}:,-?&*!|>'\"#\n 0123456789.eE+abxyz_", max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                 max_leaves=20).map(lambda v: yaml.safe_dump(v)),
)


@given(yaml_text)
def test_parse_yaml_returns_data_or_refuses_it(text):
    with contextlib.suppress(ValueError, yaml.YAMLError):
        _read.parse_yaml(text)


@given(mutated(PARAMS_YAML))
def test_a_mutated_params_file_is_read_and_checked_or_refused_in_one_error(data):
    path = scratch("params.yaml", data)
    try:
        for section in SECTIONS:
            params.load(section, path)
    except StageError as err:
        assert "\n" not in str(err)
    finally:
        shutil.rmtree(path.parent)


# ---------------------------------------------------------------- JSON


json_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet='[]{}:,"\\0123456789.eE+-truefalsnNI ', max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                 max_leaves=30).map(json.dumps),
)


@given(json_text)
def test_parse_json_returns_data_or_a_value_error(text):
    with contextlib.suppress(ValueError):
        _read.parse_json(text)


@given(st.binary(max_size=300))
def test_read_json_of_any_bytes_is_a_value_or_one_stage_error(data):
    path = scratch("x.json", data)
    try:
        _read.read_json(path, 1 << 20, "rebuild it")
    except StageError:
        pass
    finally:
        shutil.rmtree(path.parent)


# ---------------------------------------------------------------- the training record


def good_record(folder: Path) -> None:
    from numpynet.training import EpochRecord

    recorder = _training_log.Recorder(folder)
    history = [EpochRecord(e, 1.0 / e, 0.9 / e, 0.5 + e / 10, 0.01) for e in (1, 2, 3)]
    for record in history:
        recorder.epoch(record)
    recorder.finish(history[1])
    recorder.keep()


@pytest.fixture(scope="module")
def record_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("record") / "training"
    good_record(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_training_record_is_read_or_refused_in_one_error(record_files, data):
    name = data.draw(st.sampled_from(sorted(record_files)))
    bad = data.draw(mutated(record_files[name]))
    folder = Path(tempfile.mkdtemp(prefix="fuzz-")) / "training"
    try:
        for rel, content in record_files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(bad if rel == name else content)
        record = _training_log.read(folder)
        assert 1 <= record.saved_epoch <= len(record.train_loss)
    except StageError:
        pass
    finally:
        shutil.rmtree(folder.parent)


# ---------------------------------------------------------------- .npy splits, model files, images


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


GOOD_IMAGES = npy_bytes(np.zeros((4, 3072), np.float32))
GOOD_LABELS = npy_bytes(np.array([0, 1, 2, 0], np.int64))


@given(st.sampled_from(["images", "labels"]), st.data())
def test_a_mutated_split_is_read_or_refused_in_one_error(which, data):
    good = GOOD_IMAGES if which == "images" else GOOD_LABELS
    bad = data.draw(mutated(good))
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    cwd = Path.cwd()
    try:
        (folder / paths.PREPARED).mkdir(parents=True)
        (folder / paths.PREPARED / "test_images.npy").write_bytes(bad if which == "images" else GOOD_IMAGES)
        (folder / paths.PREPARED / "test_labels.npy").write_bytes(bad if which == "labels" else GOOD_LABELS)
        os.chdir(folder)
        images, labels = _prepared.read_split("test", 3)
        assert images.shape == (len(labels), 3072)
    except StageError:
        pass
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    from cifar10.layout import IMAGE_SHAPE
    from numpynet.model import ModelSpec, build

    path = tmp_path_factory.mktemp("model") / "model.npz"
    network = build(ModelSpec(hidden_sizes=(3,)), IMAGE_SHAPE, 3, np.random.default_rng(0))
    _model_file.save(path, network, "mlp", ["a", "b", "c"], {"method": "scale", "mean": [0.0] * 3, "std": [255.0] * 3},
                     IMAGE_SHAPE)
    return path.read_bytes()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_model_file_is_loaded_or_refused_in_one_error(model_bytes, data):
    path = scratch("model.npz", data.draw(mutated(model_bytes)))
    try:
        model = _model_file.load(path)
        assert len(model.class_names) == 3
    except StageError as err:
        assert "\n" not in str(err)
    finally:
        shutil.rmtree(path.parent)


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@given(mutated(png_bytes()))
def test_a_mutated_image_is_read_or_refused_as_an_image_error(data):
    from cifar10.images import ImageError, read_image

    path = scratch("x.png", data)
    try:
        assert read_image(path).shape == (3072,)
    except ImageError:
        pass
    finally:
        shutil.rmtree(path.parent)


# ---------------------------------------------------------------- regular cases the probes found


@pytest.mark.parametrize("text, expected", [
    ("train:\n  weight_decay: 5e-4\n", {"train": {"weight_decay": 0.0005}}),   # YAML 1.2, as DVC reads it
    ("seed: 2001-02-30\n", {"seed": "2001-02-30"}),                           # no date: the schema refuses the text
    ("a: yes\n", {"a": "yes"}),
])
def test_yaml_is_read_as_dvc_reads_it(text, expected):
    assert _read.parse_yaml(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("evaluate:\n  flip_tta: false\nevaluate:\n  flip_tta: true\n", "has the key 'evaluate' twice (line 3)"),
    ("a: &x [1]\nb: *x\n", "defines an anchor (&x)"),
    ("a: !!python/object/apply:os.system [ls]\n", "holds the tag"),
    ("a: !!binary aGk=\n", "holds the tag"),
    ("[" * 100_000, "nests deeper than 32 levels"),
])
def test_yaml_that_dvc_refuses_or_no_params_file_needs_is_refused(tmp_path, text, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(StageError) as err:
        _read.read_yaml(path, 1 << 20, "fix it")
    assert fragment in str(err.value)


def test_a_date_as_a_seed_is_refused_by_the_schema_in_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_YAML.decode().replace("  seed: 0\n", "  seed: 2001-02-30\n", 1))
    with pytest.raises(StageError, match=r"filter_normalize\.seed: '2001-02-30' .*expected an integer"):
        params.load(SECTIONS[0], path)


@pytest.mark.parametrize("text, fragment", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),
    ('{"a": 1, "a": 2}', "the key 'a' appears twice"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
])
def test_json_that_would_exhaust_or_mislead_is_refused(tmp_path, text, fragment):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(StageError, match="is not valid JSON") as err:
        _read.read_json(path, 1 << 20, "rebuild it")
    assert fragment in str(err.value)


@pytest.mark.parametrize("reader", ["yaml", "json"])
def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path, reader):
    """Run in a child process with a timeout: a reader that opened the FIFO blocking would hang."""
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    code = (f"from stages import _read\nfrom pathlib import Path\n"
            f"try:\n    _read.read_{reader}(Path({str(fifo)!r}), 1 << 20, 'fix it')\n"
            f"except Exception as err:\n    print(type(err).__name__, err)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("StageError") and "is not a regular file" in done.stdout, done.stdout + done.stderr


def test_a_postscript_file_named_jpg_reaches_no_external_program(tmp_path):
    """Pillow hands PostScript to Ghostscript (`gs`); the reader opens only its own formats, so a
    stand-in `gs` first on PATH is never run."""
    marker = tmp_path / "gs-ran"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "gs").chmod(0o755)
    image = tmp_path / "holiday.jpg"
    image.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n0 0 moveto 32 32 lineto stroke\nshowpage\n")
    code = ("from cifar10.images import read_image, ImageError\n"
            f"try:\n    read_image({str(image)!r})\nexcept ImageError as err:\n    print('ImageError', err)\n")
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.startswith("ImageError not readable as an image"), done.stdout + done.stderr
    assert not marker.exists(), "the image reader ran the external program gs"


def test_a_split_whose_npy_header_python_cannot_parse_is_refused_in_one_error(tmp_path, monkeypatch):
    """Found by the fuzzer: NumPy's header parser raises SyntaxError, which no reader expected."""
    (tmp_path / paths.PREPARED).mkdir(parents=True)
    (tmp_path / paths.PREPARED / "test_images.npy").write_bytes(GOOD_IMAGES[:11] + b"{" + GOOD_IMAGES[12:])
    (tmp_path / paths.PREPARED / "test_labels.npy").write_bytes(GOOD_LABELS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=r"cannot read test data in data/prepared/ .*not a valid \.npy file"):
        _prepared.read_split("test", 3)


def test_a_model_file_whose_entry_header_python_cannot_parse_is_refused_in_one_error(model_bytes, tmp_path):
    """Found by the fuzzer: the same SyntaxError from an array inside the model file."""
    path = tmp_path / "model.npz"
    path.write_bytes(model_bytes[:128] + b"\0\0\0" + model_bytes[131:])
    with pytest.raises(StageError, match="is not a usable model file"):
        _model_file.load(path)


def test_a_zip_directory_flood_is_refused_from_the_end_record_before_zipfile_reads_it(tmp_path, monkeypatch):
    """A model file may be 1 GiB; its central directory could declare twenty million entries,
    which `zipfile` would hold in memory whole. The end record's counts are checked first."""
    import zipfile

    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(2000):
            zf.writestr(f"e{i}.npy", b"")
    monkeypatch.setattr(_model_file.zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile read the directory"))
    with pytest.raises(StageError, match=r"its zip directory declares 2000 entries in .* at most 1024 entries"):
        _model_file.load(path)


# ---------------------------------------------------------------- the archive


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory) -> bytes:
    from tests.helpers.archives import make_archive

    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    make_archive(path, train_per_class=1, test_per_class=1, compresslevel=0)   # stored, so mutations hit the tar
    return path.read_bytes()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_archive_is_decoded_or_refused_as_a_format_error(archive_bytes, data):
    """The archive's reader (cifar10.archive): a mutated gzip / tar / pickle decodes to arrays of
    the right shapes or raises CifarFormatError, which fetch turns into its one line."""
    from cifar10.archive import CifarFormatError, read_archive

    try:
        arrays = read_archive(io.BytesIO(data.draw(mutated(archive_bytes))))
        assert arrays.train_images.shape[1] == arrays.test_images.shape[1] == 3072
    except CifarFormatError:
        pass
