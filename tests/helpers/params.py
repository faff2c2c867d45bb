"""Values each params rule must refuse, generated from its declaration in a stage's schema
(`stages.params`): `refused(rule)` for one rule, `refused_values(section)` as (key, value) pairs for
a whole section. tests/stages/test_params.py checks every one in-process with its message;
tests/faults/test_params.py runs one of each kind of rule through the real stage."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from stages.params import Boolean, Choice, Hex, Integer, IntegerList, Mapping, Names, Real, Section, Url


def _real(rule: Real) -> list[Any]:
    out: list[Any] = ["0.1", True, None, [1], math.inf, -math.inf, math.nan, 10 ** 400]
    out.append(rule.low if rule.closed in ("right", "neither") else rule.low - 1)
    out.append(rule.high if rule.closed in ("left", "neither") else rule.high * 2 + 1)
    return out


def _integer(rule: Integer) -> list[Any]:
    return ["1", True, 1.5, None, float(rule.low), rule.low - 1, rule.high + 1, 10 ** 400]


def _boolean(rule: Boolean) -> list[Any]:
    return ["true", 1, 0, None, [True]]


def _choice(rule: Choice) -> list[Any]:
    return [rule.options[0].upper() + "x", "", 1, None, list(rule.options[:1]), "x" * 5000]


def _integer_list(rule: IntegerList) -> list[Any]:
    return [[], [rule.low] * (rule.max_len + 1), [rule.low - 1], [rule.high + 1], [1.5], [True],
            ["8"], 8, None, {"a": 1}]


def _names(rule: Names) -> list[Any]:
    first = rule.options[0]
    return [[], [first], [first, first], [first, "cow"], [first, 3], first, None, list(rule.options) + ["x"]]


def _hex(rule: Hex) -> list[Any]:
    return ["0" * (rule.digits - 1), "g" * rule.digits, "0" * (rule.digits + 1), 12345, None]


def _url(rule: Url) -> list[Any]:
    return ["ftp://example.com/a.tar.gz", "http://[::1/cifar-10-python.tar.gz", "http://", "example.com/x",
            "http://host:99999/x", "http://host:port/x", "http://a b/x", 5, None, "http://h/" + "x" * 3000]


def _mapping(rule: Mapping) -> list[Any]:
    good = {k: "0" * 64 for k in rule.keys}
    return [{k: good[k] for k in rule.keys[1:]}, {**good, "extra": "0" * 64},
            {**good, rule.keys[0]: "xyz"}, "0" * 64, None]


REFUSED: dict[type, Callable[[Any], list[Any]]] = {
    Real: _real, Integer: _integer, Boolean: _boolean, Choice: _choice, IntegerList: _integer_list,
    Names: _names, Hex: _hex, Url: _url, Mapping: _mapping}


def refused(rule: Any) -> list[Any]:
    """Values `rule.check` must refuse: wrong types, each end of its range, sizes past its limits."""
    return REFUSED[type(rule)](rule)


def refused_values(section: Section) -> list[tuple[str, Any]]:
    """(key, value) pairs that `load(section)` must refuse, every refused value of every key."""
    return [(p.key, v) for p in section.params for v in refused(p.rule)]
