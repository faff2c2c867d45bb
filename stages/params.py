"""The params schema: the rules of which each stage declares its section of params.yaml.

Each stage module declares its section once, as `PARAMS = Section(name, (Param(key, rule, help),
...))`: every key with its rule (type, range or allowed values) and a line of help. `load(PARAMS)`
reads params.yaml, checks every key of the section against its rule, refuses missing and unknown
keys, and returns the values converted (numbers as float or int, lists as tuples); `make_config(cls,
values)` then makes a config object (`TrainConfig`, `ModelSpec`) from the keys named like its
fields. The same rules describe themselves for the error messages (`describe`); the tests
generate the values each rule must refuse from the same declarations (tests/helpers/params.py).
params.yaml holds the values and why they were chosen; dvc.yaml tracks whole sections, so a
new option is one `Param` here, one key in params.yaml and the field that uses it.

    values = load(PARAMS)
    config = make_config(TrainConfig, values)
"""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages._io import StageError, quote
from stages._read import read_yaml
from stages.paths import PARAMS_FILE

MAX_PARAMS_BYTES = 1 << 20   # a few knobs per stage; a larger file is refused before parsing


class Invalid(ValueError):
    """A value breaks its rule; the message says how (without the value)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # YAML `yes` is not 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class Real:
    """A finite number between `low` and `high`; `closed` says which ends are allowed."""

    low: float
    high: float
    closed: str = "both"   # both | left | right | neither

    def describe(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"a number in {left}{self.low:g}, {self.high:g}{right}"

    def _inside(self, v: float) -> bool:
        above = v >= self.low if self.closed in ("both", "left") else v > self.low
        below = v <= self.high if self.closed in ("both", "right") else v < self.high
        return math.isfinite(v) and above and below

    def check(self, value: Any) -> float:
        if not _is_number(value):
            raise Invalid(f"is a {type(value).__name__}")
        try:
            v = float(value)
        except OverflowError:   # an integer of hundreds of digits
            raise Invalid("is not allowed") from None
        if not self._inside(v):
            raise Invalid("is not allowed")
        return v


@dataclass(frozen=True)
class Integer:
    """An integer in [low, high]."""

    low: int
    high: int

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]"

    def check(self, value: Any) -> int:
        if not _is_int(value):
            raise Invalid(f"is a {type(value).__name__}")
        if not self.low <= value <= self.high:
            raise Invalid("is not allowed")
        return value


@dataclass(frozen=True)
class Boolean:
    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"is a {type(value).__name__}")
        return value


@dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    options: tuple[str, ...]

    def describe(self) -> str:
        return f"one of {', '.join(self.options)}"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"is a {type(value).__name__}")
        if value not in self.options:
            raise Invalid("is not allowed")
        return value


@dataclass(frozen=True)
class IntegerList:
    """A list of `min_len` to `max_len` integers, each in [low, high]."""

    min_len: int
    max_len: int
    low: int
    high: int

    def describe(self) -> str:
        return f"a list of {self.min_len} to {self.max_len} integers in [{self.low}, {self.high}]"

    def check(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise Invalid(f"is a {type(value).__name__}")
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(f"has {len(value)} entries")
        for item in value:
            if not _is_int(item) or not self.low <= item <= self.high:
                raise Invalid(f"holds {quote(item)}")
        return tuple(value)


@dataclass(frozen=True)
class Names:
    """A list of `min_len` or more distinct names out of `options`, in the order given."""

    options: tuple[str, ...]
    min_len: int

    def describe(self) -> str:
        return f"a list of {self.min_len} to {len(self.options)} distinct names from: {', '.join(self.options)}"

    def check(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(f"is a {type(value).__name__}")
        if not self.min_len <= len(value) <= len(self.options):
            raise Invalid(f"has {len(value)} entries")
        for item in value:
            if item not in self.options or not isinstance(item, str):
                raise Invalid(f"holds the unknown name {quote(item)}")
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise Invalid(f"lists {', '.join(map(quote, twice))} twice")
        return tuple(value)


@dataclass(frozen=True)
class Hex:
    """A string of exactly `digits` hexadecimal digits (a checksum)."""

    digits: int

    def describe(self) -> str:
        return f"{self.digits} hex digits"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"is a {type(value).__name__}")
        if not re.fullmatch(f"[0-9a-fA-F]{{{self.digits}}}", value):
            raise Invalid("is not allowed")
        return value.lower()


@dataclass(frozen=True)
class Url:
    """An http:// or https:// URL with a host."""

    def describe(self) -> str:
        return "an http:// or https:// URL"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"is a {type(value).__name__}")
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018 - raises on a port out of range or not a number
        except ValueError as err:
            raise Invalid(f"is not a URL ({err})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2000 \
                or any(c.isspace() or ord(c) < 32 for c in value):
            raise Invalid("is not allowed")
        return value


@dataclass(frozen=True)
class Mapping:
    """An object of exactly the given keys, each value under `rule`."""

    keys: tuple[str, ...]
    rule: Any

    def describe(self) -> str:
        return f"a mapping of {', '.join(self.keys)} to {self.rule.describe()} each"

    def check(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(f"is a {type(value).__name__}")
        if set(value) != set(self.keys):
            raise Invalid(f"has the keys {', '.join(map(str, value))}")
        out = {}
        for key in self.keys:
            try:
                out[key] = self.rule.check(value[key])
            except Invalid as err:
                raise Invalid(f"{key} {err}") from None
        return out


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class Param:
    key: str
    rule: Any
    help: str


@dataclass(frozen=True)
class Check:
    """A rule across keys: `holds(values)` must be true, else the message."""

    holds: Callable[[dict[str, Any]], bool]
    message: str


@dataclass(frozen=True)
class Section:
    name: str
    params: tuple[Param, ...]
    checks: tuple[Check, ...] = ()

    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def validate(self, raw: Any, path: Path = PARAMS_FILE) -> dict[str, Any]:
        """The checked values of one section of the YAML file `path`, or StageError naming the first bad key."""
        if not isinstance(raw, dict):
            raise StageError(f"{path}: section '{self.name}:' is a {type(raw).__name__}; "
                             f"expected a mapping of {', '.join(self.keys())}")
        unknown = [str(k) for k in raw if k not in self.keys()]
        if unknown:
            raise StageError(f"{path}: {self.name}.{quote(unknown[0], bare=True)} is not a param of "
                             f"'{self.name}'; the params are {', '.join(self.keys())} (a typo?)")
        values = {}
        for p in self.params:
            where = f"{path}: {self.name}.{p.key}"
            if p.key not in raw:
                raise StageError(f"{where} is missing; expected {p.rule.describe()} ({p.help})")
            try:
                values[p.key] = p.rule.check(raw[p.key])
            except Invalid as err:
                raise StageError(f"{where}: {quote(raw[p.key])} {err}; expected {p.rule.describe()} "
                                 f"({p.help})") from None
        for check in self.checks:
            if not check.holds(values):
                raise StageError(f"{path}: {self.name}: {check.message}")
        return values


def read_file(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a dict of sections, read as DVC reads it (stages/_read.py: YAML 1.2, no
    duplicate keys, tags or aliases), or StageError saying what is wrong with the file."""
    try:
        parsed = read_yaml(path, MAX_PARAMS_BYTES, f"fix the file (or restore it: git checkout {path}) and rerun")
    except FileNotFoundError:
        raise StageError(f"cannot read {path}: it does not exist; run from the repository root") from None
    if not isinstance(parsed, dict):
        raise StageError(f"{path} holds a {type(parsed).__name__}; expected a mapping of sections")
    return parsed


def load(section: Section, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The checked values of `section` in params.yaml (or another YAML file of sections, such as
    cifar10/source.yaml), or StageError naming the bad key."""
    data = read_file(path)
    if section.name not in data:
        raise StageError(f"{path}: missing section '{section.name}:' (a mapping of {', '.join(section.keys())})")
    return section.validate(data[section.name], path)


def make_config(cls: type, values: dict[str, Any], **extra: Any):
    """An instance of the dataclass `cls` from the entries of `values` named like its fields."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{n: values[n] for n in names if n in values}, **extra)

