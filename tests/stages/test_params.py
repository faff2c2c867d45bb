"""stages.params: the schema against params.yaml and dvc.yaml, and every rule's verdicts and messages.

The real-process version of the refusals (each through `python -m stages.<section>`) is
tests/faults/test_params.py; here the same cases run in-process, with the exact messages.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import yaml

from numpynet.model import ModelSpec
from numpynet.training import TrainConfig
from stages import params
from stages._io import StageError, quote
from tests.helpers.params import refused, refused_values
from tests.helpers.repo import ROOT

SECTIONS = {name: importlib.import_module(f"stages.{name}").PARAMS for name in ("filter_normalize", "train", "evaluate")}
PARAMS_YAML = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SOURCE = importlib.import_module("stages.fetch").SOURCE
SOURCE_YAML = ROOT / "cifar10" / "source.yaml"


@pytest.mark.parametrize("name", SECTIONS)
def test_each_schema_declares_exactly_the_keys_of_its_params_yaml_section(name):
    assert SECTIONS[name].name == name
    assert SECTIONS[name].keys() == list(PARAMS_YAML[name]), "same keys, in the same order"


@pytest.mark.parametrize("name", SECTIONS)
def test_dvc_yaml_tracks_each_stage_s_whole_section(name):
    """The stage refuses unknown keys, so its whole section is exactly what it reads."""
    assert DVC_YAML["stages"][name]["params"] == [name]


def test_params_yaml_sections_are_the_stages():
    assert list(PARAMS_YAML) == list(SECTIONS)


def test_fetch_has_no_params_and_reads_the_dataset_identity_from_cifar10_source_yaml():
    """The dataset's URL, md5 and fingerprints are not hyperparameters: out of params.yaml (and so
    of `dvc exp show`), checked by the same machinery, versioned under cifar10/ (a dep of fetch)."""
    assert "params" not in DVC_YAML["stages"]["fetch"] and "fetch" not in PARAMS_YAML
    assert "cifar10" in DVC_YAML["stages"]["fetch"]["deps"]
    values = params.load(SOURCE, SOURCE_YAML)
    assert values["md5"] == "c58f30108f718f92721af3b95e74349a" and len(values["sha256"]) == 4


def test_a_bad_value_in_the_source_file_is_refused_naming_that_file(tmp_path):
    path = tmp_path / "source.yaml"
    data = yaml.safe_load(SOURCE_YAML.read_text())
    data["cifar10"]["md5"] = "not-hex"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StageError, match=f"^{path}: cifar10.md5: 'not-hex' "):
        params.load(SOURCE, path)


@pytest.mark.parametrize("name", SECTIONS)
def test_the_repository_params_pass_their_schema(name):
    values = params.load(SECTIONS[name], ROOT / "params.yaml")
    assert list(values) == list(PARAMS_YAML[name])


def test_every_train_key_lands_in_exactly_one_config():
    values = params.load(SECTIONS["train"], ROOT / "params.yaml")
    homes = {"ModelSpec": {f.name for f in dataclasses.fields(ModelSpec)},
             "TrainConfig": {f.name for f in dataclasses.fields(TrainConfig)}, "RandomStreams": {"seed"}}
    for key in values:
        assert sum(key in fields for fields in homes.values()) == 1, key
    assert set().union(*homes.values()) == set(values), "a config field without a param"
    spec, config = params.make_config(ModelSpec, values), params.make_config(TrainConfig, values)
    assert spec.hidden_sizes == tuple(PARAMS_YAML["train"]["hidden_sizes"])
    assert config.learning_rate == PARAMS_YAML["train"]["learning_rate"]
    assert config.restore_best is PARAMS_YAML["train"]["restore_best"]


def refusal_cases():
    for name, section in SECTIONS.items():
        for key, value in refused_values(section):
            yield pytest.param(name, key, value, id=f"{name}.{key}={quote(value, 30)}")


@pytest.mark.parametrize("name, key, value", list(refusal_cases()))
def test_every_refused_value_is_refused_with_a_message_naming_key_value_and_rule(name, key, value):
    section = SECTIONS[name]
    raw = {**PARAMS_YAML[name], key: yaml.safe_load(yaml.safe_dump(value))}   # as a stage reads it
    with pytest.raises(StageError) as err:
        section.validate(raw)
    message = str(err.value)
    rule = next(p.rule for p in section.params if p.key == key)
    assert message.startswith(f"params.yaml: {name}.{key}: {quote(raw[key])} ")
    assert f"; expected {rule.describe()} (" in message
    assert len(message) < 500, "values are quoted shortened"


@pytest.mark.parametrize("rule, good, converted", [
    (params.Real(0, 1, "left"), 0, 0.0), (params.Real(0, 10, "right"), 10, 10.0),
    (params.Integer(1, 5), 5, 5), (params.Boolean(), False, False), (params.Choice(("a", "b")), "b", "b"),
    (params.IntegerList(1, 2, 1, 9), [9, 1], (9, 1)), (params.Names(("x", "y", "z"), 2), ["z", "x"], ("z", "x")),
    (params.Hex(4), "aB09", "ab09"), (params.Url(), "http://[::1]:8080/a.tar.gz", "http://[::1]:8080/a.tar.gz"),
])
def test_rules_accept_their_edges_and_convert(rule, good, converted):
    got = rule.check(good)
    assert got == converted and type(got) is type(converted)


@pytest.mark.parametrize("rule", [params.Real(0, 1), params.Integer(0, 1), params.Boolean(), params.Choice(("a",)),
                                  params.IntegerList(1, 2, 1, 2), params.Names(("a", "b"), 2), params.Hex(8),
                                  params.Url(), params.Mapping(("a", "b"), params.Hex(64))])
def test_a_rule_refuses_every_value_it_lists(rule):
    for value in refused(rule):
        with pytest.raises(params.Invalid):
            rule.check(value)


def test_non_finite_and_huge_numbers_are_refused_where_a_range_is_asked():
    rule = params.Real(0, 100_000)
    for value in (math.inf, math.nan, 1e300, 10 ** 400):
        with pytest.raises(params.Invalid):
            rule.check(value)


def section_with(**changes):
    return {**PARAMS_YAML["train"], **changes}


@pytest.mark.parametrize("changes, fragment", [
    ({"nesterov": True, "momentum": 0.0}, "params.yaml: train: nesterov is true but momentum is 0"),
    ({"warmup_epochs": 51.0, "epochs": 50}, "params.yaml: train: warmup_epochs is longer than the run"),
    ({"lr_schedule": "airbench", "warmup_epochs": 1.0},
     "params.yaml: train: lr_schedule airbench has its own warm-up but warmup_epochs is not 0"),
    ({"learing_rate": 0.1}, "params.yaml: train.learing_rate is not a param of 'train'; the params are model, "),
])
def test_cross_key_rules_and_unknown_keys(changes, fragment):
    with pytest.raises(StageError, match="^" + fragment.replace("(", r"\(").replace(".", r"\.")):
        SECTIONS["train"].validate(section_with(**changes))


def test_a_missing_key_says_what_it_should_hold():
    raw = {k: v for k, v in PARAMS_YAML["train"].items() if k != "dropout"}
    with pytest.raises(StageError, match=r"^params\.yaml: train\.dropout is missing; expected a number in \[0, 1\) "
                                         r"\(inverted dropout"):
        SECTIONS["train"].validate(raw)


@pytest.mark.parametrize("content, fragment", [
    (b"train: {lr: 0.1\n", "is not valid YAML at line"),
    (b"train:\n  x: \xff\n", "is not UTF-8 text (byte 0xff at line 2)"),
    (b"- 1\n- 2\n", "holds a list; expected a mapping of sections"),
    (b"[" * 100_000, "nests deeper than 32 levels"),
    (b"# pad\n" * 200_000, "is larger than 1 MiB"),
])
def test_a_broken_params_file_is_refused_as_a_whole(tmp_path, content, fragment):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(StageError) as err:
        params.load(SECTIONS["train"], path)
    message = str(err.value).replace(str(path), "params.yaml")   # one line, however long the folder's name
    assert fragment in message and len(message) < 300


def test_a_hand_written_5e_4_is_the_number_dvc_reads(tmp_path):
    """YAML 1.2, as DVC reads params.yaml: PyYAML's 1.1 would give the string '5e-4', refused."""
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("weight_decay: 0.0005", "weight_decay: 5e-4"))
    assert "5e-4" in path.read_text()
    assert params.load(SECTIONS["train"], path)["weight_decay"] == 0.0005


def key_cases():
    for name, section in SECTIONS.items():
        for p in section.params:
            yield pytest.param(name, p.key, id=f"{name}.{p.key}")


@pytest.mark.parametrize("name, key", list(key_cases()))
def test_every_key_missing_from_the_file_is_named_with_what_it_should_hold(tmp_path, name, key):
    """Through `load`, as the stages read params.yaml (tests/faults/test_params.py runs one such
    case per stage as a real process)."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    del data[name][key]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rule = next(p for p in SECTIONS[name].params if p.key == key)
    with pytest.raises(StageError) as err:
        params.load(SECTIONS[name], path)
    assert str(err.value) == f"{path}: {name}.{key} is missing; expected {rule.rule.describe()} ({rule.help})"
