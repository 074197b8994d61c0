"""The sensitivity scanner: finds sensitive data in a request so the policy can keep it
on self-hosted hardware, and replaces it with placeholders when a route says ``redact``.

Owns:

* ``iter_texts``: every text a request body sends upstream, with its location
  (``messages[2].content``, ``tools[0].function.parameters.properties.city.description``,
  ``prompt[1]``, ``input``...): every string and every user-chosen member name at any
  depth, except a short allowlist of structural values (see ``_walk``);
* ``Scanner``: the built-in detectors (``policies.models.BUILTIN_DETECTORS``) plus the
  policy's custom ones, compiled once per policy; ``scan`` gives the request's level
  (the highest finding, never below ``sensitivity.default`` nor the client's floor) and
  its ``Finding``\\ s;
* ``redact``: a new body with chosen detectors' findings replaced by ``<EMAIL_1>``-style
  placeholders.

A ``Finding`` holds where a match is (location and offsets), never the matched text.

Speed: every detector starts from a C-level search for a literal (``"@"``, ``".eyJ"``,
and for credentials one regex per anchor character, ``"_"`` of ``ghp_``, ``"-"`` of
``glpat-``, ``"A"`` of ``AKIA``, the ``"="`` or ``":"`` of an assignment...: see
``policies.credentials``) and validates candidates in Python only after a hit. The number detectors (card, IBAN, SSN,
phone, IPv4) share one pass over a *shape* of the text (``policies.numbers``).

Linear time, whatever the input: no pattern can backtrack beyond a bounded window or
rescan a long run from each of its characters (their lookarounds reject near misses in C,
and a lookahead that runs far starts only where a run starts), no detector rescans from
each hit, and overlapping hits are resolved by sorting and bisection, never all pairs.
Policies' custom regexes run on RE2, which is linear for every pattern it accepts
(``policies.regex``). ``tests/policies/test_scanner_adversarial.py`` holds the proof.

Low false positives matter as much as recall: cards need a network's prefix and length
and Luhn, IBANs their country's BBAN format and mod 97, numbers must not be glued to
longer numbers or words, and so on (see each detector, and ``policies.numbers``).

Pure: no I/O, no clock, no global mutable state. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

from policies.credentials import credential_hits as _credential_hits
from policies.credentials import member_secret
from policies.models import LEVELS, SensitivitySpec, level_rank
from policies.numbers import number_hits as _number_hits
from policies.regex import LinearPattern, compile_linear

__all__ = ["MAX_DEPTH", "MAX_TEXTS", "MAX_VALUES", "Finding", "Scan", "Scanner", "iter_texts", "redact"]

Span = tuple[int, int]


class _At(NamedTuple):
    """A path step: the member ``name`` of an object, shown by its position (``{2}``)
    because the name is not a plain identifier (it may be an e-mail address or a card)."""

    position: int
    name: str


class _NameOf(NamedTuple):
    """The last step of a path to a member *name* scanned as text: ``{2}:name`` (by
    position, so a finding's location never repeats the text it found)."""

    position: int
    name: str


Path = tuple[str | int | _At | _NameOf, ...]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Finding:
    """One match: which detector, its level and where (location + offsets in that text)."""

    detector: str
    level: str
    location: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Scan:
    """A request's sensitivity: its level and every finding, in request order.

    ``chars`` and ``tokens`` are what the token estimate is made of: the characters of
    every text scanned (every string sent and every user-chosen member name, but not the
    allowlist, the API's own member names nor inline base64 media) and the token ids sent
    as numbers. ``unreadable`` says why part of the body could not be read (nested
    deeper than ``MAX_DEPTH``, more than ``MAX_TEXTS`` strings or ``MAX_VALUES`` values,
    a value that is not JSON); the level is then ``restricted`` whatever was found (fail
    closed)."""

    level: str
    findings: tuple[Finding, ...]
    chars: int = field(default=0, compare=False)
    tokens: int = field(default=0, compare=False)
    unreadable: str | None = None

    @property
    def detectors(self) -> frozenset[str]:
        """Names of the detectors that fired."""
        return frozenset(f.detector for f in self.findings)


# --------------------------------------------------------------------------- texts

#: Limits of one walk. Past any of them the rest of the body is not read: the scan reports
#: it as unreadable and its level is ``restricted`` (fail closed). ``MAX_DEPTH``: objects
#: and arrays nested deeper (no API shape comes close). ``MAX_TEXTS``: strings and member
#: names to scan (each costs a few microseconds whatever its length; 128 tools with rich
#: schemas stay far below). ``MAX_VALUES``: values of any kind (a 300k-token embeddings
#: request fits).
MAX_DEPTH = 64
MAX_TEXTS = 10_000
MAX_VALUES = 500_000

#: Member names that are the API's own words (request, message and content-part fields,
#: JSON Schema keywords): not scanned, since they carry nothing a client chose. Every
#: other member name (a schema's property names, ``metadata`` keys, unknown fields) is
#: text the upstream receives, and is scanned.
_FIELDS = frozenset({
    # requests
    "model", "messages", "prompt", "suffix", "input", "stream", "stream_options", "include_usage", "n",
    "best_of", "echo", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "user",
    "metadata", "store", "seed", "logprobs", "top_logprobs", "logit_bias", "presence_penalty",
    "frequency_penalty", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "response_format", "reasoning_effort", "verbosity", "modalities", "audio", "voice", "prediction",
    "service_tier", "web_search_options", "dimensions", "encoding_format",
    # messages and content parts
    "role", "content", "name", "refusal", "tool_calls", "tool_call_id", "id", "type", "function",
    "arguments", "text", "image_url", "url", "detail", "input_audio", "data", "format", "file", "file_id",
    "file_data", "filename", "annotations",
    # JSON Schema (tool parameters, response_format)
    "json_schema", "schema", "strict", "description", "parameters", "properties", "required", "items",
    "prefixItems", "additionalProperties", "patternProperties", "propertyNames", "enum", "const",
    "default", "examples", "title", "anyOf", "oneOf", "allOf", "not", "if", "then", "else", "$ref",
    "$defs", "definitions", "$schema", "$id", "$comment", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "nullable", "deprecated", "readOnly", "writeOnly",
    "contentEncoding", "contentMediaType",
})
#: The allowlist: a ``role`` or ``type`` whose value is one of these words (roles, content
#: part and tool types, JSON Schema types) is structure, not text. Any other value of the
#: same field is scanned (a card number is never one of these words).
_ENUM_FIELDS = frozenset({"role", "type"})
_ENUMS = frozenset({
    "system", "developer", "user", "assistant", "tool", "function",
    "text", "image_url", "input_audio", "file", "refusal", "json_schema", "json_object", "content",
    "input_text", "input_image", "input_file", "output_text", "image", "document", "tool_use",
    "tool_result", "thinking", "custom", "allowed_tools",
    "object", "string", "number", "integer", "boolean", "array", "null",
})
#: Member names shown as such in locations; any other name is shown by position (``{2}``).
_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]{0,63}")


@dataclass(slots=True)
class _Tally:
    """What one walk counts on the way: see ``Scan``."""

    chars: int = 0
    tokens: int = 0
    unreadable: str | None = None


#: A walk's stack frame: the path of a container, the member name it is the value of
#: (for the allowlist of its items), its remaining ``(index, item)`` pairs, and whether
#: it is an object (items are ``(name, value)``) or an array.
_Frame = tuple[Path, str | None, Iterator[tuple[int, Any]], bool]


def iter_texts(endpoint: str, body: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Every text a request sends upstream, as ``(location, text)``, in document order.

    Every string at any depth, for every endpoint (``endpoint`` is accepted for callers'
    symmetry; the walk does not depend on it), and every member name that is not one of
    the API's own words (``_FIELDS``), except the allowlist: the top-level ``model`` (each
    backend sends its own model name) and a ``role``/``type`` whose value is one of the
    API's words (``_ENUMS``). Numbers, booleans and nulls are not text. Locations are
    dotted paths: ``messages[2].content[1].text``; a member whose name is not a plain
    identifier by position, ``metadata{0}``; a member name itself, ``metadata{0}:name``.
    A body that is not an object yields nothing; nothing is raised on any shape."""
    for path, text in _walk(body):
        yield _location(path), text


def _is_map(value: object) -> TypeGuard[Mapping[str, object]]:
    return type(value) is dict or isinstance(value, Mapping)  # dict first: ABC checks are slow


#: JSON's own types, told apart by ``type(value)`` alone (the common, fast case).
_JSON_TYPES = frozenset({str, dict, list, int, float, bool, type(None)})


def _json_type(value: object) -> type | None:
    """The JSON type ``value`` stands for (a ``Mapping`` is a dict, a tuple a list...), or
    None for a value that is not JSON."""
    for kind, like in ((str, str), (dict, Mapping), (list, (list, tuple)), (float, (int, float))):
        if isinstance(value, like):
            return kind
    return None


def _walk(body: object, tally: _Tally | None = None) -> Iterator[tuple[Path, str]]:
    """``(path, text)`` for every text of ``body`` to scan (see ``iter_texts``), counting
    into ``tally`` on the way; stops after ``MAX_TEXTS`` texts."""
    tally = tally if tally is not None else _Tally()
    for n, found in enumerate(_walk_values(body, tally)):
        if n == MAX_TEXTS:
            tally.unreadable = f"more than {MAX_TEXTS} strings to scan"
            return
        yield found


def _walk_values(body: object, tally: _Tally) -> Iterator[tuple[Path, str]]:
    """The walk itself. One pass, no copies; iterative (a stack of iterators, so no depth
    can exhaust the Python stack), at most ``MAX_DEPTH`` deep and ``MAX_VALUES`` values."""
    if not _is_map(body):
        return
    stack: list[_Frame] = [((), None, enumerate(body.items()), True)]
    left = MAX_VALUES
    while stack:
        path, owner, items, is_map = stack[-1]
        for i, item in items:
            left -= 1
            if left < 0:
                tally.unreadable = f"more than {MAX_VALUES} values"
                return
            if is_map:
                name, value = item
                if type(name) is not str and not isinstance(name, str):
                    tally.unreadable = tally.unreadable or "an object has a member name that is not a string"
                    continue
                step: str | int | _At = name
                if name not in _FIELDS:
                    step = name if _plain(name) else _At(i, name)
                    tally.chars += len(name)
                    yield (*path, _NameOf(i, name)), name
            else:
                step, name, value = i, owner, item
            kind: type | None = type(value)
            if kind not in _JSON_TYPES:
                kind = _json_type(value)
            if kind is str:
                if (name in _ENUM_FIELDS and value in _ENUMS) or (name == "model" and not path):
                    continue  # the allowlist
                if not value.startswith("data:") and (name != "data" or owner != "input_audio"):
                    tally.chars += len(value)  # inline media is scanned, not counted: see ``Scan``
                yield (*path, step), value
            elif kind is dict or kind is list:
                if not value:
                    continue
                if len(path) >= MAX_DEPTH:
                    tally.unreadable = f"nested deeper than {MAX_DEPTH} levels"
                    continue
                child = enumerate(value.items() if kind is dict else value)
                stack.append(((*path, step), name, child, kind is dict))
                break
            elif kind is int and not is_map:  # an array's integers: token ids, or a schema's numbers
                tally.tokens += 1
            elif kind is None:
                tally.unreadable = tally.unreadable or f"holds a value that is not JSON ({type(value).__name__})"
        else:
            stack.pop()


def _plain(name: str) -> bool:
    """Shown by name in locations: ASCII letters, digits, ``_``, ``-``, ``$``, not first a digit."""
    return len(name) <= 64 and name.isascii() and (name.isidentifier() or bool(_PLAIN.fullmatch(name)))


def _location(path: Path) -> str:
    out: list[str] = []
    for step in path:
        if isinstance(step, str):
            out.append(f".{step}" if out else step)
        elif isinstance(step, int):
            out.append(f"[{step}]")
        else:
            out.append(f"{{{step.position}}}:name" if isinstance(step, _NameOf) else f"{{{step.position}}}")
    return "".join(out)


# --------------------------------------------------------------------------- helpers

Hit = tuple[str, int, int]  # detector, start, end
_Group = Callable[[str, frozenset[str]], list[Hit]]

def _word_at(text: str, i: int) -> bool:
    """True when ``text[i]`` exists and is a letter, digit or underscore, and is not the
    letter of a backslash escape (``\\n`` in JSON tool-call arguments is a boundary)."""
    if i < 0 or i >= len(text):
        return False
    ch = text[i]
    return (ch.isalnum() or ch == "_") and (i == 0 or text[i - 1] != "\\")


def _char(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else ""


# --------------------------------------------------------------------------- ip_address (IPv6)

_V6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_COLON = "0123456789abcdefABCDEF:"
_V6_RIGHT = re.compile(r"[0-9A-Fa-f:.]{0,45}")
_V6_RUN = re.compile(r"[0-9A-Fa-f:.]*+")


def _ipv6_extent(text: str, anchor: int) -> Span:
    """The run of hex digits, colons (and dots, for an embedded IPv4) around ``anchor``:
    up to 39 characters before it, 45 from it (``rstrip`` and a regex: no loop per character)."""
    before = text[max(0, anchor - 39) : anchor]
    s = anchor - len(before) + len(before.rstrip(_HEX_COLON))
    m = _V6_RIGHT.match(text, anchor)
    e = m.end() if m else anchor
    e = s + len(text[s:e].rstrip("."))
    if e - s > 2 and text[e - 1] == ":" and text[e - 2] != ":":
        e -= 1
    return s, e


def _ipv6_valid(text: str, s: int, e: int) -> bool:
    if _word_at(text, s - 1) or _char(text, s - 1) in (":", ".") or _word_at(text, e):
        return False
    candidate = text[s:e]
    colons = candidate.count(":")
    if "::" not in candidate and colons != 7 and not (colons == 6 and "." in candidate):
        return False  # times (12:30:45), MAC addresses: not worth parsing
    if not any(ch.isdigit() for ch in candidate):
        return False  # "face::bad": words, not an address
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    groups = [g for g in candidate.split(":") if g]
    # "::1", "a[1::2]": too short to tell from code
    return not ("::" in candidate and (len(groups) < 2 or (len(groups) == 2 and len(groups[0]) < 3)))


def _ipv6_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    if ":" not in text:
        return hits
    m = _V6_ANCHOR.search(text)
    while m is not None:
        s, e = _ipv6_extent(text, m.start())
        if _ipv6_valid(text, s, e):
            hits.append(("ip_address", s, e))
        elif s == m.start() - 39 and s > 0 and text[s - 1] in _HEX_COLON:
            # inside a run of hex digits and colons longer than any address: so is every
            # later anchor of the run (its candidate is glued to the run), so skip the run
            run = _V6_RUN.match(text, e)
            e = run.end() if run else e
        m = _V6_ANCHOR.search(text, max(e, m.end()))  # anchors before e give no new candidate
    return hits


# --------------------------------------------------------------------------- email

_EMAIL_LOCAL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
#: ``@`` (a literal first: fast search) after a local-part character, then a domain of at
#: most 127 labels (RFC 1035), so backtracking to the last label that can be the top-level
#: domain stays short. A domain cannot hold ``@``: domains of different ``@`` never overlap.
_EMAIL_AT = re.compile(
    r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,126}[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9-])"
)


def _email_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    if "@" not in text:
        return hits
    for m in _EMAIL_AT.finditer(text):
        at = m.start()
        s = _local_start(text, at)
        if s < at:
            hits.append(("email", s, m.end()))
    return hits


def _local_start(text: str, at: int) -> int:
    """Start of the local part before ``at``: at most 64 characters, not the letter of a
    backslash escape (``\\n`` in JSON), no leading dots (``at`` when there is none)."""
    window = text[max(0, at - 64) : at]
    local = window[len(window.rstrip(_EMAIL_LOCAL)) :]
    if at > len(local) and text[at - len(local) - 1] == "\\":
        local = local[1:]
    return at - len(local.lstrip("."))


# --------------------------------------------------------------------------- keys and tokens
# ``api_key``, ``secret`` and ``private_key``: ``policies.credentials`` (the table of formats, one pass
# per anchor character). ``jwt`` here: a header that decodes to JSON with ``alg``.

#: The lookbehind after the literal keeps the fast prefix search and makes a start inside
#: a longer base64 run fail at once (no quadratic rescans of ``eyJeyJeyJ...``).
_JWT = re.compile(r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")


def _jwt_header(segment: str) -> bool:
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def _jwt_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    if "J" not in text or ".eyJ" not in text:
        return hits
    for m in _JWT.finditer(text):
        s = m.start()
        if _char(text, s - 1) == ".":  # letters, digits, "_" and "-" before: see the pattern
            continue
        if _jwt_header(text[s : text.index(".", s)]):
            hits.append(("jwt", s, m.end()))
    return hits


# --------------------------------------------------------------------------- registry

#: Built-in detectors in priority order: when two built-in findings overlap, the one of
#: the earlier detector is kept (unless the later one has a higher level).
_PRIORITY: tuple[str, ...] = (
    "private_key", "jwt", "api_key", "secret", "iban", "credit_card", "us_ssn", "email", "phone", "ip_address",
)
#: Detector groups: one pass over the text each, finding hits for these detectors.
_GROUPS: tuple[tuple[_Group, frozenset[str]], ...] = (
    (_number_hits, frozenset({"iban", "credit_card", "us_ssn", "phone", "ip_address"})),
    (_ipv6_hits, frozenset({"ip_address"})),
    (_email_hits, frozenset({"email"})),
    (_credential_hits, frozenset({"api_key", "secret", "private_key"})),
    (_jwt_hits, frozenset({"jwt"})),
)


@dataclass(frozen=True, slots=True)
class _Custom:
    name: str
    level: str
    #: A regex, on RE2 (``policies.regex``: linear whatever the pattern) ...
    linear: LinearPattern | None
    #: ... or a keyword alternation, on the stdlib engine (a literal alternation is linear).
    pattern: re.Pattern[str] | None
    #: Keywords to look for with ``in`` before running the pattern (None: no prefilter).
    needles: tuple[str, ...] | None
    lower: bool


def _compile_custom(name: str, level: str, regex: str | None, keywords: Iterable[str] | None,
                    case_sensitive: bool) -> _Custom:
    if regex is not None:
        return _Custom(name, level, compile_linear(regex, case_sensitive), None, None, False)
    flags = 0 if case_sensitive else re.IGNORECASE
    words = sorted(set(keywords or ()), key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", flags)
    if case_sensitive:
        return _Custom(name, level, None, pattern, tuple(words), False)
    if all(w.isascii() for w in words):
        return _Custom(name, level, None, pattern, tuple(w.lower() for w in words), True)
    return _Custom(name, level, None, pattern, None, False)


def _custom_spans(custom: _Custom, text: str) -> list[Span]:
    if custom.linear is not None:
        return custom.linear.spans(text)
    assert custom.pattern is not None
    if custom.needles is not None:
        if custom.lower:
            if text.isascii():
                lowered = text.lower()
                if not any(n in lowered for n in custom.needles):
                    return []
        elif not any(n in text for n in custom.needles):
            return []
    return [m.span() for m in custom.pattern.finditer(text) if m.end() > m.start()]


_Ranked = tuple[int, int, int, int]  # priority, start, end, level rank


def _dedupe(hits: list[_Ranked]) -> list[_Ranked]:
    """Resolve overlapping built-in hits. Only hits that overlap each other are compared,
    so many findings in one text stay linear."""
    hits.sort(key=lambda h: h[1])
    kept: list[_Ranked] = []
    overlapping: list[_Ranked] = []
    end = -1
    for hit in hits:
        if hit[1] >= end and overlapping:
            kept.extend(_resolve(overlapping) if len(overlapping) > 1 else overlapping)
            overlapping = []
        overlapping.append(hit)
        if hit[2] > end or len(overlapping) == 1:
            end = hit[2]
    kept.extend(_resolve(overlapping))
    return kept


def _resolve(hits: list[_Ranked]) -> list[_Ranked]:
    """Keep hits by priority (then position); drop one overlapping a kept hit unless it
    has a higher level.

    O(k log k), not O(k²): the kept hits of one detector never overlap each other (one
    level) and are kept in start order, so per detector they are lists of starts and ends
    that are both sorted, and a hit is checked against each detector with one bisection."""
    if len(hits) == 1:
        return hits
    kept: list[_Ranked] = []
    spans: dict[int, tuple[int, list[int], list[int]]] = {}  # priority → rank, starts, ends
    for hit in sorted(hits, key=lambda h: (h[0], h[1], -h[2])):
        priority, s, e, rank = hit
        if any(krank >= rank and _overlaps(starts, ends, s, e) for krank, starts, ends in spans.values()):
            continue
        kept.append(hit)
        _, starts, ends = spans.setdefault(priority, (rank, [], []))
        starts.append(s)
        ends.append(e)
    return kept


def _overlaps(starts: list[int], ends: list[int], s: int, e: int) -> bool:
    """Whether ``[s, e)`` overlaps one of the disjoint spans ``starts``/``ends`` (sorted)."""
    i = bisect_left(starts, e) - 1
    return i >= 0 and ends[i] > s


# --------------------------------------------------------------------------- scanner


class Scanner:
    """Scans request bodies with a policy's detectors (compiled once, reused per request)."""

    __slots__ = ("_active", "_allow", "_customs", "_default", "_groups", "_levels")

    def __init__(self, spec: SensitivitySpec) -> None:
        self._default = spec.default
        self._allow = frozenset(value.lower() for value in spec.allow)
        self._active = frozenset(name for name in spec.detectors if name in _PRIORITY)
        #: detector → (priority, level, level rank)
        self._levels: Mapping[str, tuple[int, str, int]] = MappingProxyType({
            name: (_PRIORITY.index(name), spec.detectors[name], level_rank(spec.detectors[name]))
            for name in self._active
        })
        self._groups = tuple(group for group, names in _GROUPS if names & self._active)
        self._customs = tuple(
            _compile_custom(c.name, c.level, c.regex, c.keywords, c.case_sensitive) for c in spec.custom
        )

    def scan(self, endpoint: str, body: Mapping[str, object], floor: str | None = None) -> Scan:
        """Scan every text of ``body`` (see ``iter_texts``). ``floor`` (the client's
        ``x-switchyard-sensitivity``) can raise the level, never lower it; an unknown
        level raises ``ValueError``. A body that cannot be read in full is ``restricted``
        (``Scan.unreadable`` says why)."""
        rank = level_rank(self._default)
        if floor is not None:
            floor = floor.strip().lower()
            if floor not in LEVELS:
                raise ValueError(f"unknown sensitivity level {floor!r} (known: {', '.join(LEVELS)})")
            rank = max(rank, level_rank(floor))
        findings: list[Finding] = []
        tally = _Tally()
        for path, text in _walk(body, tally):
            if text:
                rank = max(rank, self._scan_one(text, path, findings))
        if tally.unreadable is not None:
            rank = len(LEVELS) - 1
        return Scan(LEVELS[rank], tuple(findings), tally.chars, tally.tokens, tally.unreadable)

    def scan_texts(self, texts: Iterable[tuple[str, str]]) -> Scan:
        """Scan ``(location, text)`` pairs; the level is the highest finding or the default."""
        findings: list[Finding] = []
        rank, chars = level_rank(self._default), 0
        for location, text in texts:
            if text:
                chars += len(text)
                rank = max(rank, self._scan_one(text, location, findings))
        return Scan(LEVELS[rank], tuple(findings), chars)

    def _scan_one(self, text: str, where: str | Path, out: list[Finding]) -> int:
        """Append ``text``'s findings to ``out`` in text order; return their highest rank.
        ``where`` is the location, or its path (formatted only when something is found)."""
        levels = self._levels
        hits: list[_Ranked] = []
        for group in self._groups:
            for name, s, e in group(text, self._active):
                if name in levels:
                    priority, _, rank = levels[name]
                    hits.append((priority, s, e, rank))
        if "secret" in levels and _secret_member(text, where):
            priority, _, rank = levels["secret"]
            hits.append((priority, 0, len(text), rank))
        allow = self._allow
        if allow and hits:
            hits = [hit for hit in hits if text[hit[1]:hit[2]].lower() not in allow]
        items: list[tuple[int, int, str, str]] = []
        top = 0
        for priority, s, e, rank in _dedupe(hits) if len(hits) > 1 else hits:
            name = _PRIORITY[priority]
            items.append((s, e, name, levels[name][1]))
            if rank > top:
                top = rank
        for custom in self._customs:
            for s, e in _custom_spans(custom, text):
                if allow and text[s:e].lower() in allow:
                    continue
                items.append((s, e, custom.name, custom.level))
                top = max(top, level_rank(custom.level))
        if items:
            location = where if isinstance(where, str) else _location(where)
            items.sort()
            out.extend(Finding(name, level, location, s, e) for s, e, name, level in items)
        return top


#: Schema members whose value is an example of the property they are in (``default``...).
_EXAMPLE_FIELDS = frozenset({"default", "const", "examples", "example", "enum"})
_TAIL_NAME = re.compile(r"([A-Za-z_$][A-Za-z0-9_$-]*)(?:\[\d+\])*$")


def _secret_member(text: str, where: str | Path) -> bool:
    """A member's value that is a secret by its member name (``{"db_password": "…"}``,
    a schema property ``api_key``'s ``default``): ``policies.credentials.member_secret``."""
    if len(text) > 256:
        return False
    name: str | None = None
    if isinstance(where, str):
        m = _TAIL_NAME.search(where)
        name = m.group(1) if m else None
    else:
        for step in reversed(where):
            if isinstance(step, int) or step in _EXAMPLE_FIELDS:
                continue
            if not isinstance(step, _NameOf):  # a member name is not scanned as a value
                name = step if isinstance(step, str) else step.name
            break
    return name is not None and name not in _FIELDS and member_secret(name, text)


# --------------------------------------------------------------------------- redaction


def _normalise(detector: str, value: str) -> str:
    if detector in ("credit_card", "iban", "us_ssn", "phone"):
        return "".join(ch for ch in value if ch.isalnum()).upper()
    if detector == "email":
        return value.lower()
    return value


def redact(
    endpoint: str, body: Mapping[str, object], scan: Scan, detectors: Collection[str]
) -> dict[str, object]:
    """A new body in which every finding of ``detectors`` is replaced by a numbered
    placeholder (``<EMAIL_1>``, ``<CREDIT_CARD_2>``...); the same value gets the same
    number within the request. Containers are copied only along changed paths; ``body``
    is not mutated. Findings that no longer fit the body are ignored. A member name with
    a finding is renamed in place (members keep their order; a name that would collide
    with another gets a ``_2`` suffix)."""
    by_location: dict[str, list[Finding]] = {}
    for f in scan.findings:
        if f.detector in detectors:
            by_location.setdefault(f.location, []).append(f)
    result: dict[str, object] = dict(body)
    if not by_location:
        return result
    numbers: dict[tuple[str, str], int] = {}
    counters: dict[str, int] = {}
    copies: dict[Path, Any] = {(): result}
    renames: list[tuple[Path, str]] = []
    for path, text in _walk(body):
        found = by_location.get(_location(path))
        if found:
            new = _replace(text, found, numbers, counters)
            if new != text and isinstance(path[-1], _NameOf):
                renames.append((path, new))  # after every value: paths hold the old names
            elif new != text:
                _set_path(path, new, copies)
    targets = [(_container(path[:-1], copies), _key(path[-1]), new) for path, new in renames]
    for node, old, new in targets:
        _rename(node, old, new)
    return result


def _replace(text: str, found: list[Finding], numbers: dict[tuple[str, str], int],
             counters: dict[str, int]) -> str:
    pieces: list[str] = []
    pos = 0
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if f.start < pos or f.end > len(text) or f.start >= f.end:
            continue
        key = (f.detector, _normalise(f.detector, text[f.start : f.end]))
        if key not in numbers:
            counters[f.detector] = numbers[key] = counters.get(f.detector, 0) + 1
        pieces.append(text[pos : f.start])
        pieces.append(f"<{f.detector.upper()}_{numbers[key]}>")
        pos = f.end
    pieces.append(text[pos:])
    return "".join(pieces)


def _key(step: str | int | _At | _NameOf) -> str | int:
    return step.name if isinstance(step, (_At, _NameOf)) else step


def _container(path: Path, copies: dict[Path, Any]) -> Any:
    """The copied container at ``path``, copying each container on the way there once."""
    node = copies[()]
    for depth in range(1, len(path) + 1):
        prefix = path[:depth]
        child = copies.get(prefix)
        if child is None:
            key = _key(path[depth - 1])
            original = node[key]
            child = dict(original) if isinstance(original, Mapping) else list(original)
            node[key] = child
            copies[prefix] = child
        node = child
    return node


def _set_path(path: Path, value: str, copies: dict[Path, Any]) -> None:
    """Set ``value`` at ``path`` in the copied root, copying each container on the way once."""
    _container(path[:-1], copies)[_key(path[-1])] = value


def _rename(node: dict[str, Any], old: str | int, new: str) -> None:
    """Rename member ``old`` of ``node`` (a copy) to ``new``, in place and in order."""
    name, n = new, 1
    while name in node:
        n += 1
        name = f"{new}_{n}"
    items = list(node.items())
    node.clear()
    node.update((name if k == old else k, v) for k, v in items)
