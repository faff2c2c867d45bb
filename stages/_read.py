"""The checked readers of the stages' text inputs: one for any file's bytes, one for YAML, one for JSON.

    data = read_bytes(path, MAX, rebuild)        # a regular file, at most MAX bytes
    params = read_yaml(path, MAX, rebuild)       # YAML 1.2 as DVC reads it, strict
    record = read_json(path, MAX, rebuild)       # JSON, strict

Every reader opens only a regular file (a symlink is followed and what it points to checked; a
FIFO, device or folder is refused without waiting on it), reads at most its limit, and parses
with bounded depth and no expansion. Whatever is wrong ends in one StageError naming the file
and ending with `rebuild`, what to do about it. Values are checked by the caller's schema after
parsing (stages/params.py, stages/_prepared.py, stages/_training_log.py).

YAML is read as DVC reads params.yaml (YAML 1.2, the core schema), not as PyYAML's default
YAML 1.1: `5e-4` is a number, `2001-02-30`, `yes` and `0o17`-style oddities of 1.1 are not
reinterpreted (a date stays the text it is, which the schema then refuses), and what DVC refuses
is refused here too: duplicate keys. Tags (`!!python/...`, `!!binary`, `!!set`) and anchors or
aliases (the "billion laughs" expansion) are refused: a params file needs none of them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from stages._io import StageError, quote

MAX_DEPTH = 32   # nesting of lists and mappings; the deepest real input (params.yaml) has 3


def read_bytes(path: Path, max_bytes: int, rebuild: str, missing: str | None = None) -> bytes:
    """The bytes of the regular file `path`; StageError if it is not a regular file or larger than
    `max_bytes`. A missing file is the StageError "<path> does not exist; <missing>" when `missing`
    says what to do, else FileNotFoundError, for a caller that handles absence itself."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once, and is refused below
    except PermissionError as err:
        raise StageError(f"cannot read {path} ({err.strerror}); fix its permissions") from None
    except FileNotFoundError:
        if missing is None:
            raise
        raise StageError(f"{path} does not exist; {missing}") from None
    except OSError as err:
        raise StageError(f"cannot read {path} ({err.strerror or err}); {rebuild}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StageError(f"{path} is not a regular file (a folder, device or pipe?); {rebuild}")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > max_bytes:
            raise StageError(f"{path} is larger than {_size(max_bytes)}; {rebuild}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:   # it grew while read
        raise StageError(f"{path} is larger than {_size(max_bytes)}; {rebuild}")
    return data


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _text(path: Path, data: bytes, rebuild: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise StageError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}): save it as UTF-8, "
                         f"or {rebuild}") from None


# ---------------------------------------------------------------- YAML


class _Refused(ValueError):
    """Something a params file never needs: said in `message`, at `line`."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core-schema scalars, composing nodes without anchors
    or aliases, at most MAX_DEPTH deep (PyYAML's own limit is Python's recursion limit, which a
    crafted file reaches)."""

    depth = 0

    def compose_node(self, parent, index):   # PyYAML's signature
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused("uses an alias (*name); write the value out", event.start_mark.line + 1)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"defines an anchor (&{quote(event.anchor, 20, bare=True)}); write the values out",
                           event.start_mark.line + 1)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nests deeper than {MAX_DEPTH} levels", event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     list("-+.0123456789")),
):
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)   # decimal only: YAML 1.2 has no 1.1-style 017 octal or 1_000


def _yaml12_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _yaml12_float)
_ALLOWED_TAGS = {"tag:yaml.org,2002:" + t for t in ("null", "bool", "int", "float", "str", "seq", "map")}


def _check_node(node: yaml.Node) -> None:
    """Refuse what the composed document holds that a plain data file has no use for: tags and
    duplicate keys (its depth is bounded while composing)."""
    if node.tag not in _ALLOWED_TAGS:
        raise _Refused(f"holds the tag {quote(node.tag, 40, bare=True)}; only plain values, lists and mappings",
                       node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise _Refused(f"has the key {quote(key.value, 40)} twice", key.start_mark.line + 1)
                seen.add(key.value)
            _check_node(key)
            _check_node(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_node(item)


def parse_yaml(text: str) -> Any:
    """YAML 1.2 (core schema) as plain Python values; ValueError (with `.line` where known) or
    yaml.YAMLError for what it refuses."""
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path, max_bytes: int, rebuild: str, missing: str | None = None) -> Any:
    """The YAML file `path` as plain values (see the module's docstring); StageError otherwise
    (`missing` as for read_bytes)."""
    text = _text(path, read_bytes(path, max_bytes, rebuild, missing), rebuild)
    try:
        return parse_yaml(text)
    except _Refused as err:
        raise StageError(f"{path} {err} (line {err.line}); {rebuild}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise StageError(f"{path} is not valid YAML{where}: {problem}; {rebuild}") from None
    except (RecursionError, ValueError, OverflowError) as err:
        raise StageError(f"{path} is not valid YAML ({quote(str(err), 80, bare=True)}); {rebuild}") from None


# ---------------------------------------------------------------- JSON


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings, counted before parsing (so that a crafted
    file cannot exhaust the parser's recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {quote(key, 40)} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN / Infinity, no duplicate keys, at most MAX_DEPTH levels; ValueError otherwise."""
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


def read_json(path: Path, max_bytes: int, rebuild: str, missing: str | None = None) -> Any:
    """The JSON file `path` as plain values, strictly parsed; StageError otherwise (`missing` as for
    read_bytes)."""
    data = read_bytes(path, max_bytes, rebuild, missing)
    try:
        return parse_json(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise StageError(f"{path} is not valid JSON ({quote(str(err), 100, bare=True)}); {rebuild}") from None
