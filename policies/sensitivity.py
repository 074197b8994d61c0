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

Speed: every detector starts from a C-level search for a literal (``"@"``, ``"-"`` for
``sk-``/``xox?-``/PEM, ``"A"`` for AWS/Google keys, ``".eyJ"``, ``"Bearer"``...) and
validates candidates in Python only after a hit. The number detectors (card, IBAN, SSN,
phone, IPv4) share one pass over a *digit shape* of the text, in which every ASCII digit
is ``"0"`` so the pattern starts with a literal; only digits where a number of some
detector may start are looked at further.

Linear time, whatever the input: no pattern can backtrack beyond a bounded window or
rescan a long run from each of its characters (their lookarounds reject near misses in C,
and a lookahead that runs far starts only where a run starts), no detector rescans from
each hit, and overlapping hits are resolved by sorting and bisection, never all pairs.
Policies' custom regexes are limited at load to what the engine runs in linear time
(``policies.models``). ``tests/policies/test_scanner_adversarial.py`` holds the proof.

Low false positives matter as much as recall: cards need a Luhn
checksum and a 2-6 network prefix, IBANs a known country length and mod-97, numbers must
not be glued to longer numbers or words, and so on (see each detector).

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

from policies.models import LEVELS, SensitivitySpec, level_rank

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

#: Every ASCII digit becomes "0": digit patterns then start with a literal (fast search).
_ZERO_BYTES = bytes.maketrans(b"123456789", b"000000000")
_SEP = frozenset("-. ")


def _digit_shape(text: str) -> str:
    """``text`` with every ASCII digit replaced by ``"0"`` and every non-ASCII character by
    ``"?"``: same length, same offsets. (Via bytes: ``str.translate`` is 30x slower on
    non-ASCII text and has a per-call cost on small ones.)"""
    return text.encode("ascii", "replace").translate(_ZERO_BYTES).decode("ascii")


def _word_at(text: str, i: int) -> bool:
    """True when ``text[i]`` exists and is a letter, digit or underscore, and is not the
    letter of a backslash escape (``\\n`` in JSON tool-call arguments is a boundary)."""
    if i < 0 or i >= len(text):
        return False
    ch = text[i]
    return (ch.isalnum() or ch == "_") and (i == 0 or text[i - 1] != "\\")


def _char(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else ""


def _digit_at(text: str, i: int) -> bool:
    return "0" <= _char(text, i) <= "9"


def _clear_before(text: str, s: int) -> bool:
    """Nothing number-like glued to the left of ``s``."""
    if _word_at(text, s - 1) or _char(text, s - 1) in ("+", "."):
        return False
    return not (_char(text, s - 1) in _SEP and _digit_at(text, s - 2))


def _clear_after(text: str, e: int) -> bool:
    """Nothing number-like glued to the right of ``e`` (a full stop ending a sentence is fine)."""
    if _word_at(text, e):
        return False
    return not (_char(text, e) in _SEP and _digit_at(text, e + 1))


# --------------------------------------------------------------------------- numbers
# One pass over the digit shape finds *candidates* (``_CANDIDATE``): digits where a card
# run, an SSN, a dotted quad or a North-American number may start, digits after ``+`` or
# ``(`` with 8+ digits to come (a phone), and first check digits of an IBAN of its
# country's length. Each candidate is handed to the number detectors (``_AT_DIGIT``),
# which match there and check in Python. Short numbers, years, prices and near misses are
# never candidates.
#
# Linear time, few Python steps: every regex here is a C-level *pre-selection*. Its
# lookarounds are necessary conditions of the checks in Python (``_CLEAR_BEFORE_1`` is
# ``_clear_before`` on the shape...), which still decide. So input made of near misses
# (``1234 ``, ``DE00 ``, ``123-45-6789-`` repeated) costs no Python step per near miss,
# and a body of real candidates a few per candidate. Every lookahead that scans further
# than a few characters (a card run to its end) starts only where a run starts.

#: ``_clear_before`` / ``_clear_after`` as lookarounds on the digit shape: ASCII only (a
#: non-ASCII letter is ``?`` there; Python checks those), a letter or digit after a
#: backslash is an escape (``\n``), not a word. ``_clear_before`` is placed after the first
#: character of a match: a literal first keeps sre's fast search for it (a pattern that
#: starts with a lookbehind is tried at every position).
_CLEAR_BEFORE_1 = r"(?:(?<![0A-Za-z_+.].)(?<!0[-. ].)|(?<=\\[0A-Za-z_].))"
_CLEAR_AFTER = r"(?![0A-Za-z_]|[-. ]0)"


def _number_hits(text: str, active: frozenset[str]) -> list[Hit]:
    shape = _digit_shape(text)
    hits: list[Hit] = []
    for m in _CANDIDATE.finditer(shape):
        d = m.start()
        if m.lastgroup == "iban":  # after two capitals: no other number starts here
            span = _iban_at(text, shape, d - 2) if "iban" in active else None
            if span is not None:
                hits.append(("iban", *span))
            continue
        for name, at_digit in _AT_DIGIT:
            if name in active:
                span = at_digit(text, shape, d)
                if span is not None:
                    hits.append((name, *span))
    return hits


# credit_card ---------------------------------------------------------------------------

#: A maximal run of 13+ digits with single separators, not after a word, a decimal point
#: or a digit and one separator (inside a run), not before a word or decimals.
#: (``_CARD_SHAPE``: the lookarounds after the first digit, also used by ``_CANDIDATE``.)
_CARD_SHAPE = r"(?<!0[ -]0)(?=(?:[ -]?0){12}0*+(?:[ -]0++)*+(?![A-Za-z_]|\.0))"
_CARD_RUN = re.compile(r"0(?:(?<![0A-Za-z_.]0)|(?<=\\[A-Za-z_]0))" + _CARD_SHAPE + r"0*+(?:[ -]0++)*+")
_CARD_SEPS = re.compile(r"[ -]")
_CARD_FIRST = frozenset("23456")  # Visa 4, Mastercard 2/5, Amex/Diners/JCB 3, Discover/UnionPay 6
_LUHN_DOUBLE = MappingProxyType(str.maketrans("0123456789", "0246813579"))
#: 7 groups of 3+ digits are 21+ digits: longer than any card.
_CARD_GROUPS = 6


def _luhn(digits: str) -> bool:
    # sum() over ASCII bytes adds the digits in C; 48 is ord("0").
    total = sum(digits[-1::-2].encode()) + sum(digits[-2::-2].translate(_LUHN_DOUBLE).encode())
    return (total - 48 * len(digits)) % 10 == 0


def _card_number(digits: str) -> bool:
    return (13 <= len(digits) <= 19 and digits[0] in _CARD_FIRST
            and digits.count(digits[0]) != len(digits) and _luhn(digits))


def _card_in_run(run: str) -> int:
    """Length of the card number at the start of ``run`` (a maximal digit run), or 0.

    The whole run, or its leading groups (a card followed by a CVV or year), in a
    card-like grouping: one separator kind, groups of 3-6 digits. A card has at most 19
    digits, so at most ``_CARD_GROUPS`` groups: the run is never split further (a long run
    of digit groups costs one split, not one join per group)."""
    groups = _CARD_SEPS.split(run, maxsplit=_CARD_GROUPS)
    if len(groups) == 1:
        return len(run) if _card_number(run) else 0
    sep = run[len(groups[0])]
    other = run.find("-" if sep == " " else " ")
    if other != -1:  # the grouping must use one separator: stop at the other kind
        groups = run[:other].split(sep, _CARD_GROUPS)
    k = 0
    while k < min(len(groups), _CARD_GROUPS) and 3 <= len(groups[k]) <= 6:
        k += 1
    if k < len(groups) and len(groups[0]) >= 13:
        k = 1  # an unseparated number followed by more numbers
    for n in range(k, 0, -1):  # longest first: better to also cover a CVV than to cut a card
        digits = "".join(groups[:n])
        if len(digits) < 13:
            break
        if _card_number(digits):
            return len(digits) + n - 1
    return 0


def _card_at(text: str, shape: str, d: int) -> Span | None:
    m = _CARD_RUN.match(shape, d)
    if m is None:
        return None
    s, e = m.span()
    if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
        return None
    if _char(text, e) == "." and _digit_at(text, e + 1):
        return None
    size = _card_in_run(text[s:e])
    return (s, s + size) if size else None


# us_ssn --------------------------------------------------------------------------------

_SSN_SHAPE = r"(?=00(?:-00-0000| 00 0000)" + _CLEAR_AFTER + ")"
_SSN = re.compile("0" + _CLEAR_BEFORE_1 + _SSN_SHAPE + r"00(?:-00-0000| 00 0000)")


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssn_at(text: str, shape: str, d: int) -> Span | None:
    m = _SSN.match(shape, d)
    if m is None:
        return None
    s, e = m.span()
    if _clear_before(text, s) and _clear_after(text, e) and _ssn_valid(text[s:e].replace(text[s + 3], "")):
        return s, e
    return None


# phone ---------------------------------------------------------------------------------

#: ``_NANP`` from a digit, after that digit (for ``_CANDIDATE``).
_NANP_SHAPE = r"(?=[-. ]?(?:0?00[-. ]000|\(000\) ?000)[-. ]0000" + _CLEAR_AFTER + ")"
#: North American: optional country code, area code (parenthesised or not), exchange, line.
#: One branch per first character (``+``, ``(``, a digit): a literal first each, for a fast
#: search. The atomic group takes the first match at a start, as without the lookarounds.
_NANP = re.compile(
    r"(?>(?:\+" + _CLEAR_BEFORE_1 + r"0[-. ]?(?:\(000\) ?|000[-. ])"
    r"|\(" + _CLEAR_BEFORE_1 + r"000\) ?"
    r"|0" + _CLEAR_BEFORE_1 + r"(?:[-. ]?(?:\(000\) ?|000[-. ])|00[-. ]))000[-. ]0000(?!0))" + _CLEAR_AFTER
)
#: E.164: ``+`` then digits with spaces, dots, dashes or a parenthesised part.
_E164 = re.compile(r"\+0+(?:[ .\-]?(?:\(0+\)|0+))*+")


def _phone_at(text: str, shape: str, d: int) -> Span | None:
    """A North-American number from the ``+`` or ``(`` before ``d``, or else from ``d``;
    failing that, an E.164 number from the ``+`` before ``d``."""
    plus = d > 0 and shape[d - 1] == "+"
    m = _NANP.match(shape, d - 1) if plus or (d > 0 and shape[d - 1] == "(") else None
    m = m or _NANP.match(shape, d)
    if m is not None and _nanp_valid(text, *m.span()):
        return m.span()
    if plus and not _word_at(text, d - 2):
        e164 = _E164.match(shape, d - 1)
        if e164 is not None and not _word_at(text, e164.end()) and 8 <= shape.count("0", *e164.span()) <= 15:
            return e164.span()
    return None


def _nanp_valid(text: str, s: int, e: int) -> bool:
    digits = [ch for ch in text[s:e] if "0" <= ch <= "9"]
    if len(digits) == 11 and digits[0] != "1":
        return False
    if digits[-10] in "01" or digits[-7] in "01":  # area code and exchange start with 2-9
        return False
    return _clear_before(text, s) and _clear_after(text, e)


# ip_address ----------------------------------------------------------------------------

_IPV4_SHAPE = r"(?=(?>0{0,2}\.0{1,3}\.0{1,3}\.0{1,3})(?![0A-Za-z_]|\.0))"
_IPV4 = re.compile(r"0(?:(?<![0A-Za-z_.]0)|(?<=\\[0A-Za-z_]0))" + _IPV4_SHAPE + r"0{0,2}\.0{1,3}\.0{1,3}\.0{1,3}")
#: Words before a dotted number that make it a version or a section, not an address.
_NOT_ADDRESS = frozenset({"v", "ver", "version", "release", "rev", "revision", "build", "section",
                          "sec", "chapter", "ch", "fig", "figure", "table", "step", "oid", "§"})


def _ipv4_octets(candidate: str) -> bool:
    for part in candidate.split("."):
        if (len(part) > 1 and part[0] == "0") or int(part) > 255:
            return False
    return True


def _versionish(text: str, s: int) -> bool:
    words = text[max(0, s - 12) : s].rstrip(" :#").split()
    return bool(words) and words[-1].lower().rstrip(".") in _NOT_ADDRESS


def _ipv4_at(text: str, shape: str, d: int) -> Span | None:
    m = _IPV4.match(shape, d)
    if m is None:
        return None
    s, e = m.span()
    if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
        return None
    if _char(text, e) == "." and _digit_at(text, e + 1):
        return None
    return (s, e) if _ipv4_octets(text[s:e]) and not _versionish(text, s) else None


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


# iban ----------------------------------------------------------------------------------

_IBAN = re.compile(r"[A-Z]{2}00(?:[A-Z0]{10,30}|(?: [A-Z0]{4}){2,7}(?: [A-Z0]{1,3})?)(?![A-Za-z0-9])")
_IBAN_LENGTHS: Mapping[str, int] = MappingProxyType({
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
})
_IBAN_LETTERS = MappingProxyType(str.maketrans({ch: str(ord(ch) - 55) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}))


def _iban_at(text: str, shape: str, s: int) -> Span | None:
    """The valid IBAN starting at ``s``, trimmed to its country's length (a spaced IBAN
    may be followed by more upper-case groups). Only countries in the registry count."""
    expected = _IBAN_LENGTHS.get(text[s : s + 2])
    if expected is None or _word_at(text, s - 1):
        return None
    full = _IBAN.match(shape, s)
    if full is None:
        return None
    spaced = shape[s + 4] == " "  # then in groups of 4 (the pattern makes sure)
    end = s + expected + ((expected - 1) // 4 if spaced else 0)
    if end > full.end() or (end < full.end() and text[end] != " "):
        return None
    compact = text[s:end].replace(" ", "")
    if int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 != 1:
        return None
    return s, end


def _iban_start() -> str:
    """Lookarounds at the first check digit of an IBAN, necessary for ``_iban_at``: a known
    country before it, not glued to a word; after it the second check digit and a BBAN of
    exactly that country's length, compact or in groups of four, then no letter or digit.
    The countries make a trie in one lookbehind (first letter, then second), as sre skips
    an alternative that starts with another literal at once."""
    trie: dict[str, dict[int, str]] = {}
    for country, length in sorted(_IBAN_LENGTHS.items()):
        seconds = trie.setdefault(country[0], {})
        seconds[length - 4] = seconds.get(length - 4, "") + country[1]
    countries = "|".join(
        first + "(?:" + "|".join(f"[{seconds}]0{_bban(n)}" for n, seconds in by_length.items()) + ")"
        for first, by_length in trie.items()
    )
    return r"(?<=[A-Z]{2}0)(?<=" + countries + r")(?:(?<![0A-Za-z_]..0)|(?<=\\...0))"


def _bban(n: int) -> str:
    """Lookaheads after the first check digit: the second one and ``n`` BBAN characters,
    compact or in groups of four, then no letter or digit (that boundary first: cheap)."""
    spaced = n + n // 4 + (1 if n % 4 else 0)
    groups = f"(?: [A-Z0]{{4}}){{{n // 4}}}" + (f" [A-Z0]{{{n % 4}}}" if n % 4 else "")
    return (f"(?=0(?:.{{{n}}}|.{{{spaced}}})(?![A-Za-z0-9]))"
            f"(?=0(?:[A-Z0]{{{n}}}|{groups})(?![A-Za-z0-9]))")


#: A card, SSN, North-American number or dotted quad starts at this digit (the lookarounds
#: after it).
_STARTS = (r"(?=[0.(]|[-. ][0(])"  # each needs one of these next (a cheap test first)
           r"(?:" + _CARD_SHAPE + "|" + _SSN_SHAPE + "|" + _NANP_SHAPE + "|" + _IPV4_SHAPE + ")")
#: A candidate digit (see the top of this section); the ``iban`` group is set when it may
#: be the first check digit of an IBAN.
_CANDIDATE = re.compile(
    r"0(?:(?<!00)(?:"  # not after a digit (one test rejects the inside of a long number)
    + _iban_start() + r"(?P<iban>)"
    r"|(?=[0 ().\-]{6})(?:"  # 7+ characters of a number (a cheap test), then
    r"(?<!0[-. ]0)(?:"  # not after a digit and a separator (one test for "1 1 1 1..."), and
    r"(?:(?<![A-Za-z_.]0)|(?<=\\[A-Za-z_]0))" + _STARTS +  # not after a word (``\n`` is no word)
    r"|(?<=\+0)(?=(?:[ ().\-]*+0){7})"  # 8+ digits after "+": a phone
    r"|(?<=\(0)(?:(?<![0A-Za-z_+.]\(0)(?<!0[-. ]\(0)|(?<=\\[0A-Za-z_]\(0))"  # "(000) 000-0000"
    r"(?=00\) ?000[-. ]0000" + _CLEAR_AFTER + "))"
    r"|(?<=0[- ]0)" + _IPV4_SHAPE + "))"  # after a digit and a separator, only a dotted quad
    r"|(?<=\\00)(?=[0 ().\-]{6})" + _STARTS + ")"  # after an escape: "\\1" is no word either
)
#: The detectors tried at a candidate digit, each a function ``(text, shape, digit)``.
_AT_DIGIT: tuple[tuple[str, Callable[[str, str, int], Span | None]], ...] = (
    ("credit_card", _card_at), ("us_ssn", _ssn_at), ("phone", _phone_at), ("ip_address", _ipv4_at),
)


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

#: One pass from each dash: OpenAI/Anthropic ``sk-...``, Slack ``xox?-...`` and PEM
#: ``-----BEGIN ... PRIVATE KEY-----`` (a literal first character keeps the search fast).
_DASH = re.compile(
    r"-(?:(?<=sk-)(?P<sk>[A-Za-z0-9_-]{20,})"
    r"|(?<=xox[abprs]-)(?P<xox>[A-Za-z0-9-]{10,})"
    r"|(?P<pem>----BEGIN (?:(?:RSA|EC|OPENSSH|DSA|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----))"
)
_PEM_END = re.compile(r"-----END (?:[A-Z]+ )?PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"(?:\s*+(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z-]+: [^\n]*))*+")
#: How far after its BEGIN line a key's END line may be.
_PEM_REACH = 16384
_LONG_SEGMENT = re.compile(r"[^_-]{16,}")


def _random_looking(token: str) -> bool:
    """A hyphen/underscore-separated part of 16+ characters (of a ``[A-Za-z0-9_-]`` token)
    mixing at least two of digits, upper case and lower case (random keys do; English
    words do not). Short parts are skipped in C; each test is a C string method."""
    for m in _LONG_SEGMENT.finditer(token):
        part = m.group()
        classes = (not part.isalpha()) + (part != part.lower()) + (part != part.upper())
        if classes >= 2:
            return True
    return False


def _private_keys(text: str, begins: list[Span]) -> Iterator[Hit]:
    """A key from each BEGIN line (``begins``, in text order) to the END line that follows
    (within ``_PEM_REACH``); without one, to the end of the base64 body that follows (so
    redaction removes the key material too). Linear in all: the next END line is searched
    for once and reused by every BEGIN before it, and a BEGIN inside a key found is no new
    key (it would overlap that one)."""
    done = 0
    end = _PEM_END.search(text, begins[0][1])
    for s, e in begins:
        if s < done:
            continue
        if end is not None and end.start() < e:
            end = _PEM_END.search(text, e)
        if end is not None and end.end() <= e + _PEM_REACH:
            done = end.end()
        else:
            body = _PEM_BODY.match(text, e)
            done = body.end() if body else e
        yield "private_key", s, done


def _dash_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    if "-" not in text:
        return hits
    begins: list[Span] = []
    for m in _DASH.finditer(text):
        kind = m.lastgroup
        if kind == "pem":
            begins.append(m.span())
            continue
        s = m.start() - (2 if kind == "sk" else 4)
        if _word_at(text, s - 1) or _char(text, s - 1) == "-":
            continue
        if kind == "sk" and _random_looking(m.group("sk")):
            hits.append(("api_key", s, m.end()))
        elif kind == "xox" and any(c.isdigit() for c in m.group("xox")):
            hits.append(("api_key", s, m.end()))
    if begins:
        hits.extend(_private_keys(text, begins))
    return hits


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


_AWS_GOOGLE = re.compile(r"A(?:(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-]))")
_GITHUB = re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})(?![A-Za-z0-9_])")
_STRIPE = re.compile(r"k_live_[A-Za-z0-9]{16,}(?![A-Za-z0-9_])")
_BEARER = re.compile(r"Bearer[ \t]+([A-Za-z0-9._~+/-]{20,}=*)(?![A-Za-z0-9._~+/=-])")


def _bearer_tokens(text: str) -> Iterator[Span]:
    """``Bearer <token>``: the token only, when 20+ characters mixing letters and digits."""
    for m in _BEARER.finditer(text):
        token = m.group(1).rstrip(".")
        if not _word_at(text, m.start() - 1) and any(c.isdigit() for c in token) and any(
            c.isalpha() for c in token
        ):
            yield m.start(1), m.start(1) + len(token)


def _api_key_hits(text: str, active: frozenset[str]) -> list[Hit]:
    """AWS, Google, GitHub, Stripe keys and bearer tokens (``sk-``/``xox`` in ``_dash_hits``)."""
    spans: list[Span] = []
    if "A" in text:
        spans.extend(m.span() for m in _AWS_GOOGLE.finditer(text) if not _word_at(text, m.start() - 1))
    if "_" in text:
        spans.extend(m.span() for m in _GITHUB.finditer(text) if not _word_at(text, m.start() - 1))
        spans.extend((m.start() - 1, m.end()) for m in _STRIPE.finditer(text)
                     if _char(text, m.start() - 1) in ("s", "r") and not _word_at(text, m.start() - 2))
    if "B" in text:
        spans.extend(_bearer_tokens(text))
    return [("api_key", s, e) for s, e in spans]


# --------------------------------------------------------------------------- registry

#: Built-in detectors in priority order: when two built-in findings overlap, the one of
#: the earlier detector is kept (unless the later one has a higher level).
_PRIORITY: tuple[str, ...] = (
    "private_key", "jwt", "api_key", "iban", "credit_card", "us_ssn", "email", "phone", "ip_address",
)
#: Detector groups: one pass over the text each, finding hits for these detectors.
_GROUPS: tuple[tuple[_Group, frozenset[str]], ...] = (
    (_number_hits, frozenset({"iban", "credit_card", "us_ssn", "phone", "ip_address"})),
    (_ipv6_hits, frozenset({"ip_address"})),
    (_email_hits, frozenset({"email"})),
    (_dash_hits, frozenset({"api_key", "private_key"})),
    (_jwt_hits, frozenset({"jwt"})),
    (_api_key_hits, frozenset({"api_key"})),
)


@dataclass(frozen=True, slots=True)
class _Custom:
    name: str
    level: str
    pattern: re.Pattern[str]
    #: Keywords to look for with ``in`` before running the pattern (None: no prefilter).
    needles: tuple[str, ...] | None
    lower: bool


def _compile_custom(name: str, level: str, regex: str | None, keywords: Iterable[str] | None,
                    case_sensitive: bool) -> _Custom:
    flags = 0 if case_sensitive else re.IGNORECASE
    if regex is not None:
        return _Custom(name, level, re.compile(regex, flags), None, False)
    words = sorted(set(keywords or ()), key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", flags)
    if case_sensitive:
        return _Custom(name, level, pattern, tuple(words), False)
    if all(w.isascii() for w in words):
        return _Custom(name, level, pattern, tuple(w.lower() for w in words), True)
    return _Custom(name, level, pattern, None, False)


def _custom_spans(custom: _Custom, text: str) -> list[Span]:
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

    __slots__ = ("_active", "_customs", "_default", "_groups", "_levels")

    def __init__(self, spec: SensitivitySpec) -> None:
        self._default = spec.default
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
        items: list[tuple[int, int, str, str]] = []
        top = 0
        for priority, s, e, rank in _dedupe(hits) if len(hits) > 1 else hits:
            name = _PRIORITY[priority]
            items.append((s, e, name, levels[name][1]))
            if rank > top:
                top = rank
        for custom in self._customs:
            for s, e in _custom_spans(custom, text):
                items.append((s, e, custom.name, custom.level))
                top = max(top, level_rank(custom.level))
        if items:
            location = where if isinstance(where, str) else _location(where)
            items.sort()
            out.extend(Finding(name, level, location, s, e) for s, e, name, level in items)
        return top


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
