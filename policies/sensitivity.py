"""The sensitivity scanner: finds sensitive data in a request so the policy can keep it
on self-hosted hardware, and replaces it with placeholders when a route says ``redact``.

Owns:

* ``iter_texts``: every text a request body carries, with its location
  (``messages[2].content``, ``prompt[1]``, ``input``...);
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
is ``"0"`` so the pattern starts with a literal; only digit clusters long enough to matter
are looked at further. Low false positives matter as much as recall: cards need a Luhn
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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from policies.models import LEVELS, SensitivitySpec, level_rank

__all__ = ["Finding", "Scan", "Scanner", "iter_texts", "redact"]

Span = tuple[int, int]
Path = tuple[str | int, ...]


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
    """A request's sensitivity: its level and every finding, in request order."""

    level: str
    findings: tuple[Finding, ...]
    chars: int = field(default=0, compare=False)  # characters scanned (callers estimate tokens from it)

    @property
    def detectors(self) -> frozenset[str]:
        """Names of the detectors that fired."""
        return frozenset(f.detector for f in self.findings)


# --------------------------------------------------------------------------- texts


def iter_texts(endpoint: str, body: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Every text a request carries, as ``(location, text)``, in request order.

    ``chat``: each message's ``content`` (a string, or the ``text`` of content parts of
    type ``text``; other parts are ignored), for every role, plus assistant
    ``tool_calls[].function.arguments`` and legacy ``function_call.arguments``; a
    message's ``name`` is not text. ``completions``: ``prompt`` (and ``suffix``).
    ``embeddings``: ``input``. Strings or lists of strings; token-id lists are ignored.
    Any other endpoint or shape yields nothing; malformed parts are skipped, never raised on.
    """
    for path, text in _walk(endpoint, body):
        yield _location(path), text


def _is_map(value: object) -> TypeGuard[Mapping[str, object]]:
    return type(value) is dict or isinstance(value, Mapping)  # dict first: ABC checks are slow


def _walk(endpoint: str, body: object) -> Iterator[tuple[Path, str]]:
    if not _is_map(body):
        return
    if endpoint == "chat":
        yield from _walk_messages(body.get("messages"))
        yield from _walk_prediction(body.get("prediction"))
    elif endpoint == "completions":
        yield from _walk_strings("prompt", body.get("prompt"))
        suffix = body.get("suffix")
        if isinstance(suffix, str):
            yield ("suffix",), suffix
    elif endpoint == "embeddings":
        yield from _walk_strings("input", body.get("input"))


def _walk_strings(key: str, value: object) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield (key,), value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield (key, i), item


def _walk_prediction(prediction: object) -> Iterator[tuple[Path, str]]:
    """OpenAI's predicted output (``prediction: {type: content, content: …}``) is text sent along."""
    if not _is_map(prediction):
        return
    content = prediction.get("content")
    if isinstance(content, str):
        yield ("prediction", "content"), content
    elif isinstance(content, (list, tuple)):
        for j, part in enumerate(content):
            text = part.get("text") if _is_map(part) and part.get("type") == "text" else None
            if isinstance(text, str):
                yield ("prediction", "content", j, "text"), text


def _walk_messages(messages: object) -> Iterator[tuple[Path, str]]:
    if not isinstance(messages, (list, tuple)):
        return
    for i, msg in enumerate(messages):
        if not _is_map(msg):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            yield ("messages", i, "content"), content
        elif isinstance(content, (list, tuple)):
            for j, part in enumerate(content):
                if _is_map(part) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        yield ("messages", i, "content", j, "text"), text
        calls = msg.get("tool_calls")
        if isinstance(calls, (list, tuple)):
            for k, call in enumerate(calls):
                args = _arguments(call.get("function") if _is_map(call) else None)
                if args is not None:
                    yield ("messages", i, "tool_calls", k, "function", "arguments"), args
        args = _arguments(msg.get("function_call"))
        if args is not None:
            yield ("messages", i, "function_call", "arguments"), args


def _arguments(function: object) -> str | None:
    if function is not None and _is_map(function):
        args = function.get("arguments")
        if isinstance(args, str):
            return args
    return None


def _location(path: Path) -> str:
    out = [str(path[0])]
    for key in path[1:]:
        out.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(out)


# --------------------------------------------------------------------------- helpers

Hit = tuple[str, int, int]  # detector, start, end
_Group = Callable[[str, frozenset[str]], list[Hit]]

#: Every ASCII digit becomes "0": digit patterns then start with a literal (fast search).
_ZERO_BYTES = bytes.maketrans(b"123456789", b"000000000")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
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
# One pass over the digit shape finds *clusters*: a digit followed by 6+ digits or
# separators (or the check digits of an IBAN after two capitals). Short numbers, years
# and prices never make a cluster; each cluster is handed to the number detectors.

_CLUSTER = re.compile(r"0(?:[0 ().\-]{6,}|(?<=[A-Z]{2}0))")


def _number_hits(text: str, active: frozenset[str]) -> list[Hit]:
    shape = _digit_shape(text)
    hits: list[Hit] = []
    for m in _CLUSTER.finditer(shape):
        cs, ce = m.span()
        if cs >= 2 and shape[cs - 1] in _UPPER and shape[cs - 2] in _UPPER and "iban" in active:
            span = _iban_at(text, shape, cs - 2)
            if span is not None:
                hits.append(("iban", *span))
        if ce - cs == 1:
            continue
        cluster = m.group()
        n = cluster.count("0")
        if n >= 13 and "credit_card" in active:
            hits.extend(("credit_card", *span) for span in _cards(text, shape, cs, ce))
        if n >= 9 and "us_ssn" in active and ("000-00-0000" in cluster or "000 00 0000" in cluster):
            hits.extend(("us_ssn", *span) for span in _ssns(text, shape, cs, ce))
        if n >= 8 and "phone" in active and ((cs and shape[cs - 1] in "+(") or _NANP_LINE.search(cluster)):
            hits.extend(("phone", *span) for span in _phones(text, shape, cs, ce))
        if n >= 4 and "ip_address" in active and cluster.count(".") >= 3:
            hits.extend(("ip_address", *span) for span in _ipv4s(text, shape, cs, ce))
    return hits


# credit_card ---------------------------------------------------------------------------

_CARD_RUN = re.compile(r"0(?:[ -]?0){12,}")  # 13+ digits, single separators
_CARD_SEPS = re.compile(r"[ -]")
_CARD_FIRST = frozenset("23456")  # Visa 4, Mastercard 2/5, Amex/Diners/JCB 3, Discover/UnionPay 6
_LUHN_DOUBLE = MappingProxyType(str.maketrans("0123456789", "0246813579"))


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
    card-like grouping: one separator kind, groups of 3-6 digits."""
    groups = _CARD_SEPS.split(run)
    if len(groups) == 1:
        return len(run) if _card_number(run) else 0
    sep = run[len(groups[0])]
    other = run.find("-" if sep == " " else " ")
    if other != -1:  # the grouping must use one separator: stop at the other kind
        groups = run[:other].split(sep)
    k = 0
    while k < len(groups) and 3 <= len(groups[k]) <= 6:
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


def _cards(text: str, shape: str, cs: int, ce: int) -> Iterator[Span]:
    for m in _CARD_RUN.finditer(shape, cs, ce):
        s, e = m.span()
        if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
            continue
        if _char(text, e) == "." and _digit_at(text, e + 1):
            continue
        size = _card_in_run(text[s:e])
        if size:
            yield s, s + size


# us_ssn --------------------------------------------------------------------------------

_SSN = re.compile(r"000(?:-00-0000| 00 0000)(?!0)")


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssns(text: str, shape: str, cs: int, ce: int) -> Iterator[Span]:
    for m in _SSN.finditer(shape, cs, ce):
        s, e = m.span()
        if _clear_before(text, s) and _clear_after(text, e) and _ssn_valid(text[s:e].replace(text[s + 3], "")):
            yield s, e


# phone ---------------------------------------------------------------------------------

#: North American: optional country code, area code (parenthesised or not), exchange, line.
_NANP = re.compile(r"(?:\+?0[-. ]?)?(?:\(000\) ?|000[-. ])000[-. ]0000(?!0)")
#: Cheap test that a cluster may hold an undelimited North-American number.
_NANP_LINE = re.compile(r"000[-. ]000[-. ]0000")
#: E.164: ``+`` then digits with spaces, dots, dashes or a parenthesised part.
_E164 = re.compile(r"\+0+(?:[ .\-]?(?:\(0+\)|0+))*+")


def _phones(text: str, shape: str, cs: int, ce: int) -> Iterator[Span]:
    e164 = cs > 0 and shape[cs - 1] == "+" and not _word_at(text, cs - 2)
    for m in _NANP.finditer(shape, max(0, cs - 1), ce):
        s, e = m.span()
        digits = [ch for ch in text[s:e] if "0" <= ch <= "9"]
        if len(digits) == 11 and digits[0] != "1":
            continue
        if digits[-10] in "01" or digits[-7] in "01":  # area code and exchange start with 2-9
            continue
        if _clear_before(text, s) and _clear_after(text, e):
            e164 = e164 and s >= cs  # "+1 415 555 2671" is found whole already
            yield s, e
    plus = _E164.match(shape, cs - 1, ce) if e164 else None
    if plus is not None and not _word_at(text, plus.end()) and 8 <= shape.count("0", *plus.span()) <= 15:
        yield plus.span()


# ip_address ----------------------------------------------------------------------------

_IPV4 = re.compile(r"0{1,3}\.0{1,3}\.0{1,3}\.0{1,3}")
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


def _ipv4s(text: str, shape: str, cs: int, ce: int) -> Iterator[Span]:
    for m in _IPV4.finditer(shape, cs, ce):
        s, e = m.span()
        if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
            continue
        if _char(text, e) == "." and _digit_at(text, e + 1):
            continue
        if _ipv4_octets(text[s:e]) and not _versionish(text, s):
            yield s, e


_V6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_V6_RIGHT = re.compile(r"[0-9A-Fa-f:.]{0,45}")


def _ipv6_extent(text: str, anchor: int) -> Span:
    """The run of hex digits, colons (and dots, for an embedded IPv4) around ``anchor``."""
    s = anchor
    while s > 0 and anchor - s < 39 and text[s - 1] in _HEX_COLON:
        s -= 1
    m = _V6_RIGHT.match(text, anchor)
    e = m.end() if m else anchor
    while e > s and text[e - 1] == ".":
        e -= 1
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
    done = 0
    for m in _V6_ANCHOR.finditer(text):
        if m.start() < done:
            continue
        s, e = _ipv6_extent(text, m.start())
        done = e  # later anchors in the same run give no new candidate
        if _ipv6_valid(text, s, e):
            hits.append(("ip_address", s, e))
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


# --------------------------------------------------------------------------- email

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)


def _email_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    at = text.find("@")
    while at != -1:
        s = at
        while s > 0 and at - s < 64 and text[s - 1] in _EMAIL_LOCAL and _char(text, s - 2) != "\\":
            s -= 1
        while s < at and text[s] == ".":
            s += 1
        domain = _EMAIL_DOMAIN.match(text, at + 1) if s < at else None
        if domain is not None:
            hits.append(("email", s, domain.end()))
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)
    return hits


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
_SEGMENTS = re.compile(r"[-_]")


def _random_looking(token: str, min_run: int) -> bool:
    """A hyphen/underscore-separated part of ``min_run``+ characters mixing at least two
    of digits, upper case and lower case (random keys do; English words do not)."""
    for part in _SEGMENTS.split(token):
        if len(part) >= min_run:
            classes = (any(c.isdigit() for c in part) + any(c.isupper() for c in part)
                       + any(c.islower() for c in part))
            if classes >= 2:
                return True
    return False


def _private_key_end(text: str, begin_end: int) -> int:
    """To the matching END line (within 16 KB); without one, to the end of the base64
    body that follows (so redaction removes the key material too)."""
    end = _PEM_END.search(text, begin_end, begin_end + 16384)
    if end is None:
        body = _PEM_BODY.match(text, begin_end)
        return body.end() if body else begin_end
    return end.end()


def _dash_hits(text: str, active: frozenset[str]) -> list[Hit]:
    hits: list[Hit] = []
    if "-" not in text:
        return hits
    for m in _DASH.finditer(text):
        kind = m.lastgroup
        if kind == "pem":
            hits.append(("private_key", m.start(), _private_key_end(text, m.end())))
            continue
        s = m.start() - (2 if kind == "sk" else 4)
        if _word_at(text, s - 1) or _char(text, s - 1) == "-":
            continue
        if kind == "sk" and _random_looking(m.group("sk"), 16):
            hits.append(("api_key", s, m.end()))
        elif kind == "xox" and any(c.isdigit() for c in m.group("xox")):
            hits.append(("api_key", s, m.end()))
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
            kept.extend(_resolve(overlapping))
            overlapping = []
        overlapping.append(hit)
        end = max(end, hit[2]) if len(overlapping) > 1 else hit[2]
    kept.extend(_resolve(overlapping))
    return kept


def _resolve(hits: list[_Ranked]) -> list[_Ranked]:
    """Keep hits by priority (then position); drop one overlapping a kept hit unless it
    has a higher level."""
    if len(hits) == 1:
        return hits
    kept: list[_Ranked] = []
    for hit in sorted(hits, key=lambda h: (h[0], h[1], -h[2])):
        _, s, e, rank = hit
        if not any(s < ke and ks < e and rank <= krank for _, ks, ke, krank in kept):
            kept.append(hit)
    return kept


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
        level raises ``ValueError``."""
        rank = level_rank(self._default)
        if floor is not None:
            floor = floor.strip().lower()
            if floor not in LEVELS:
                raise ValueError(f"unknown sensitivity level {floor!r} (known: {', '.join(LEVELS)})")
            rank = max(rank, level_rank(floor))
        findings: list[Finding] = []
        chars = 0
        for path, text in _walk(endpoint, body):
            if text:
                chars += len(text)
                rank = max(rank, self._scan_one(text, path, findings))
        return Scan(LEVELS[rank], tuple(findings), chars)

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
            top = max(top, rank)
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
    is not mutated. Findings that no longer fit the body are ignored."""
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
    for path, text in _walk(endpoint, body):
        found = by_location.get(_location(path))
        if found:
            new = _replace(text, found, numbers, counters)
            if new != text:
                _set_path(path, new, copies)
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


def _set_path(path: Path, value: str, copies: dict[Path, Any]) -> None:
    """Set ``value`` at ``path`` in the copied root, copying each container on the way once."""
    node = copies[()]
    for depth in range(1, len(path)):
        prefix = path[:depth]
        child = copies.get(prefix)
        if child is None:
            original = node[path[depth - 1]]
            child = dict(original) if isinstance(original, Mapping) else list(original)
            node[path[depth - 1]] = child
            copies[prefix] = child
        node = child
    node[path[-1]] = value
