"""The closed operator table for ``when:`` clauses, compiled once at load time.

A ``when`` mapping is a conjunction of clauses ``fact: {operator: value}``. Shorthands:
``fact: value`` means ``eq`` (``contains`` for set facts), ``fact: [a, b]`` means ``in``
(``any`` for set facts). ``any: [when, …]``, ``all: [when, …]`` and ``not: when`` combine
clauses. Unknown facts and operators, and values of the wrong type, are load errors that
name the dotted path (``rules[2].when.sensitivity.gtee``).

Facts (see ``RequestFacts``): model, team, endpoint, sensitivity (ordered levels),
detectors, tags (sets), input_tokens, max_tokens, budget_remaining (numbers), stream,
tools (booleans), ``metadata.<key>`` (strings), time (UTC window), and
``load.<backend>.<queue|running|kv_cache|in_flight>`` (numbers from the load snapshot).

Pure: no I/O. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from typing import Literal

from policies.facts import BackendLoad, RequestFacts
from policies.models import LEVELS, level_rank

__all__ = ["Condition", "ConditionError", "Context", "compile_when"]

Kind = Literal["str", "level", "set", "num", "bool", "time"]
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LOAD_FIELDS = ("queue", "running", "kv_cache", "in_flight")


class ConditionError(ValueError):
    """A clause that cannot be compiled; ``loc`` is its path below ``when``."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


@dataclass(frozen=True, slots=True)
class Context:
    facts: RequestFacts
    load: Mapping[str, BackendLoad]


Getter = Callable[[Context], object]

_FACTS: dict[str, tuple[Kind, Getter]] = {
    "model": ("str", lambda c: c.facts.model),
    "team": ("str", lambda c: c.facts.team),
    "endpoint": ("str", lambda c: c.facts.endpoint),
    "sensitivity": ("level", lambda c: c.facts.sensitivity),
    "detectors": ("set", lambda c: c.facts.detectors),
    "tags": ("set", lambda c: c.facts.tags),
    "input_tokens": ("num", lambda c: c.facts.input_tokens),
    "max_tokens": ("num", lambda c: c.facts.max_tokens),
    "budget_remaining": ("num", lambda c: c.facts.budget_remaining),
    "stream": ("bool", lambda c: c.facts.stream),
    "tools": ("bool", lambda c: c.facts.tools),
    "time": ("time", lambda c: c.facts.now),
}

_OPERATORS: dict[Kind, frozenset[str]] = {
    "str": frozenset({"eq", "ne", "in", "not_in", "matches", "exists"}),
    "level": frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in"}),
    "set": frozenset({"contains", "any", "all", "none", "empty"}),
    "num": frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "exists"}),
    "bool": frozenset({"eq"}),
    "time": frozenset({"between", "days"}),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled ``when``: ``match(ctx)`` is the fast path; ``why(ctx)`` explains the result
    (the first clause that failed, or the whole condition when it matched)."""

    match: Callable[[Context], bool]
    why: Callable[[Context], str]
    text: str
    facts: frozenset[str] = frozenset()  # the facts it reads (the router fetches costly ones only if used)


def compile_when(when: Mapping[str, object], loc: tuple[str | int, ...] = ()) -> Condition:
    """Compile a ``when`` mapping; raise ``ConditionError`` naming the bad part."""
    if not isinstance(when, Mapping):
        raise ConditionError(loc, "when must be a mapping of fact: condition")
    parts = [_compile_key(str(key), value, loc + (str(key),)) for key, value in when.items()]
    return _all(parts, " and ".join(p.text for p in parts) or "always")


def _all(parts: list[Condition], text: str) -> Condition:
    matchers = tuple(p.match for p in parts)
    if len(matchers) == 1:
        match = matchers[0]
    else:
        def match(ctx: Context) -> bool:
            return all(m(ctx) for m in matchers)

    def why(ctx: Context) -> str:
        failed = next((p for p in parts if not p.match(ctx)), None)
        return failed.why(ctx) if failed is not None else f"matched: {text}"

    return Condition(match, why, text, _facts(parts))


def _facts(parts: list[Condition]) -> frozenset[str]:
    return frozenset().union(*(p.facts for p in parts))


def _compile_key(key: str, value: object, loc: tuple[str | int, ...]) -> Condition:
    if key in ("any", "all"):
        if not isinstance(value, list) or not value:
            raise ConditionError(loc, f"{key} needs a non-empty list of conditions")
        parts = [compile_when(v, loc + (i,)) for i, v in enumerate(value)]
        text = f"{key}(" + "; ".join(p.text for p in parts) + ")"
        if key == "all":
            return _all(parts, text)
        matchers = tuple(p.match for p in parts)

        def why_any(c: Context) -> str:
            hit = next((p for p in parts if p.match(c)), None)
            if hit is not None:
                return f"{text}: yes ({hit.why(c)})"
            return f"{text}: no (" + "; ".join(p.why(c) for p in parts) + ")"

        return Condition(lambda c: any(m(c) for m in matchers), why_any, text, _facts(parts))
    if key == "not":
        inner = compile_when(value, loc)  # type: ignore[arg-type]
        text = f"not ({inner.text})"
        return Condition(lambda c: not inner.match(c), lambda c: f"{text}: {inner.why(c)}", text, inner.facts)
    kind, getter = _fact(key, loc)
    return _clause(key, kind, getter, value, loc)


def _fact(key: str, loc: tuple[str | int, ...]) -> tuple[Kind, Getter]:
    if key in _FACTS:
        return _FACTS[key]
    if key.startswith("metadata.") and len(key) > len("metadata."):
        name = key[len("metadata."):]
        return "str", lambda c: c.facts.metadata.get(name)
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "load" and parts[2] in _LOAD_FIELDS:
        backend, field = parts[1], parts[2]
        return "num", lambda c: getattr(c.load.get(backend) or BackendLoad(), field)
    known = ", ".join([*_FACTS, "metadata.<key>", "load.<backend>.<queue|running|kv_cache|in_flight>"])
    raise ConditionError(loc, f"unknown fact {key!r} (known: {known})")


def _clause(fact: str, kind: Kind, getter: Getter, spec: object, loc: tuple[str | int, ...]) -> Condition:
    if not isinstance(spec, Mapping):
        op = ("any" if kind == "set" else "in") if isinstance(spec, list) else ("contains" if kind == "set" else "eq")
        spec = {op: spec}
    if not spec:
        allowed = ", ".join(sorted(_OPERATORS[kind]))
        raise ConditionError(loc, f"{fact}: give at least one operator (allowed: {allowed})")
    checks = []
    for op, expected in spec.items():
        if op not in _OPERATORS[kind]:
            raise ConditionError(loc + (str(op),), f"unknown operator {op!r} for {fact} "
                                                   f"(allowed: {', '.join(sorted(_OPERATORS[kind]))})")
        checks.append(_check(fact, kind, getter, str(op), expected, loc + (str(op),)))
    return _all(checks, " and ".join(c.text for c in checks))


def _check(fact: str, kind: Kind, getter: Getter, op: str, expected: object,
           loc: tuple[str | int, ...]) -> Condition:
    predicate = _PREDICATES[kind](op, expected, loc)
    text = f"{fact} {op} {expected!r}"

    def why(ctx: Context) -> str:
        actual = getter(ctx)
        return f"{text}: {'yes' if predicate(actual) else 'no'} ({fact} is {_show(actual)})"

    return Condition(lambda c: predicate(getter(c)), why, text, frozenset({fact}))


def _show(value: object) -> str:
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(value)) + "}"
    return repr(value)


# -- predicates per kind ---------------------------------------------------------------------
Predicate = Callable[[object], bool]


def _need(cond: bool, loc: tuple[str | int, ...], message: str) -> None:
    if not cond:
        raise ConditionError(loc, message)


def _strings(expected: object, loc: tuple[str | int, ...], message: str,
             allowed: tuple[str, ...] | None = None) -> frozenset[str]:
    """``expected`` as a set of strings (each in ``allowed`` if given), or a ConditionError."""
    if not isinstance(expected, list) or not all(isinstance(v, str) for v in expected):
        raise ConditionError(loc, message)
    values = frozenset(str(v) for v in expected)
    _need(allowed is None or values <= set(allowed), loc, message)
    return values


def _as_set(a: object) -> frozenset[str]:
    return a if isinstance(a, frozenset) else frozenset()


def _str_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    if op == "exists":
        _need(isinstance(expected, bool), loc, "exists takes true or false")
        return lambda a: (a is not None) is expected
    if op in ("in", "not_in"):
        values = _strings(expected, loc, f"{op} takes a list of strings")
        return (lambda a: a in values) if op == "in" else (lambda a: a not in values)
    _need(isinstance(expected, str), loc, f"{op} takes a string")
    if op == "matches":
        try:
            pattern = re.compile(str(expected))
        except re.error as exc:
            raise ConditionError(loc, f"invalid regex: {exc}") from None
        return lambda a: isinstance(a, str) and pattern.search(a) is not None
    return (lambda a: a == expected) if op == "eq" else (lambda a: a != expected)


def _level_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    message = f"sensitivity levels are {', '.join(LEVELS)}"
    if op == "in":
        allowed = _strings(expected, loc, message, LEVELS)
        return lambda a: a in allowed
    _need(isinstance(expected, str) and expected in LEVELS, loc, message)
    rank = level_rank(str(expected))
    compare: dict[str, Callable[[int], bool]] = {
        "eq": lambda r: r == rank, "ne": lambda r: r != rank, "gt": lambda r: r > rank,
        "gte": lambda r: r >= rank, "lt": lambda r: r < rank, "lte": lambda r: r <= rank}
    fn = compare[op]
    return lambda a: isinstance(a, str) and fn(level_rank(a))


def _set_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    if op == "empty":
        _need(isinstance(expected, bool), loc, "empty takes true or false")
        return lambda a: (not a) is expected
    if op == "contains":
        _need(isinstance(expected, str), loc, "contains takes a string")
        return lambda a: expected in _as_set(a)
    values = _strings(expected, loc, f"{op} takes a list of strings")
    if op == "any":
        return lambda a: not values.isdisjoint(_as_set(a))
    if op == "all":
        return lambda a: values <= _as_set(a)
    return lambda a: values.isdisjoint(_as_set(a))


def _num_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    if op == "exists":
        _need(isinstance(expected, bool), loc, "exists takes true or false")
        return lambda a: (a is not None) is expected
    if not isinstance(expected, int | float) or isinstance(expected, bool):
        raise ConditionError(loc, f"{op} takes a number")
    x = float(expected)
    compare: dict[str, Callable[[float], bool]] = {
        "eq": lambda a: a == x, "ne": lambda a: a != x, "gt": lambda a: a > x, "gte": lambda a: a >= x,
        "lt": lambda a: a < x, "lte": lambda a: a <= x}
    fn = compare[op]
    return lambda a: isinstance(a, int | float) and fn(float(a))


def _bool_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    _need(isinstance(expected, bool), loc, "takes true or false")
    return lambda a: a is expected


def _time_predicate(op: str, expected: object, loc: tuple[str | int, ...]) -> Predicate:
    if op == "days":
        names = _strings(expected, loc, f"days takes a list of {', '.join(_DAYS)}", _DAYS)
        days = frozenset(_DAYS.index(d) for d in names)
        return lambda a: isinstance(a, datetime) and a.weekday() in days
    match = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", expected) if isinstance(expected, str) else None
    if match is None:
        raise ConditionError(loc, "between takes \"HH:MM-HH:MM\" (UTC; may wrap midnight)")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    _need(h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60, loc, "hours 00-23, minutes 00-59")
    start, end = dtime(h1, m1), dtime(h2, m2)

    def within(a: object) -> bool:
        if not isinstance(a, datetime):
            return False
        t = a.time()
        return start <= t < end if start <= end else (t >= start or t < end)

    return within


_PREDICATES: dict[Kind, Callable[[str, object, tuple[str | int, ...]], Predicate]] = {
    "str": _str_predicate, "level": _level_predicate, "set": _set_predicate, "num": _num_predicate,
    "bool": _bool_predicate, "time": _time_predicate,
}
