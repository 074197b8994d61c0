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

Speed: every detector starts from a cheap C-level search for a literal anchor
(``"@"``, ``"sk-"``, ``"eyJ"``, a digit shape such as ``"000-0000"``...) and validates
candidates in Python only after a hit. Digit-based detectors search a *shape* of the text
in which every ASCII digit is ``"0"``, so their patterns start with a literal.

Pure: no I/O, no clock, no global mutable state. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from policies.models import LEVELS, SensitivitySpec, level_rank

__all__ = ["Finding", "Scan", "Scanner", "iter_texts", "redact"]

Span = tuple[int, int]
Path = tuple[str | int, ...]
_Finder = Callable[[str, str], list[Span]]


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


def _walk(endpoint: str, body: object) -> Iterator[tuple[Path, str]]:
    if not isinstance(body, Mapping):
        return
    if endpoint == "chat":
        yield from _walk_messages(body.get("messages"))
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
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield (key, i), item


def _walk_messages(messages: object) -> Iterator[tuple[Path, str]]:
    if not isinstance(messages, list | tuple):
        return
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            yield ("messages", i, "content"), content
        elif isinstance(content, list | tuple):
            for j, part in enumerate(content):
                if isinstance(part, Mapping) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        yield ("messages", i, "content", j, "text"), text
        calls = msg.get("tool_calls")
        if isinstance(calls, list | tuple):
            for k, call in enumerate(calls):
                args = _arguments(call.get("function") if isinstance(call, Mapping) else None)
                if args is not None:
                    yield ("messages", i, "tool_calls", k, "function", "arguments"), args
        args = _arguments(msg.get("function_call"))
        if args is not None:
            yield ("messages", i, "function_call", "arguments"), args


def _arguments(function: object) -> str | None:
    if isinstance(function, Mapping):
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

#: Every ASCII digit becomes "0": digit patterns then start with a literal (fast search).
_ZERO_DIGITS = str.maketrans("123456789", "000000000")


def _word_at(text: str, i: int) -> bool:
    """True when ``text[i]`` exists and is a letter, digit or underscore, and is not the
    letter of a backslash escape (``\\n`` in JSON tool-call arguments is a boundary)."""
    if not 0 <= i < len(text) or not (text[i].isalnum() or text[i] == "_"):
        return False
    return i == 0 or text[i - 1] != "\\"


def _char(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else ""


def _digit_at(text: str, i: int) -> bool:
    return "0" <= _char(text, i) <= "9"


# --------------------------------------------------------------------------- credit_card

_CARD_RUN = re.compile(r"0(?:[ -]?0){12,}")  # on the shape: 13+ digits, single separators
_CARD_SEPS = re.compile(r"[ -]")
_CARD_FIRST = frozenset("23456")  # Visa 4, Mastercard 2/5, Amex/Diners/JCB 3, Discover/UnionPay 6
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _LUHN_DOUBLE[d] if i & 1 else d
    return total % 10 == 0


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
    seps = [ch for ch in run if ch in " -"]
    lengths = [len(g) for g in groups]
    for k in range(len(groups), 0, -1):
        n = sum(lengths[:k])
        if n > 19:
            continue
        if n < 13:
            break
        if k > 1 and (len(set(seps[: k - 1])) != 1 or any(not 3 <= x <= 6 for x in lengths[:k])):
            continue
        size = n + k - 1
        if _card_number(run[:size].replace(seps[0], "") if k > 1 else run[:size]):
            return size
    return 0


def _find_cards(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    for m in _CARD_RUN.finditer(shape):
        s, e = m.span()
        if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
            continue
        if _char(text, e) == "." and _digit_at(text, e + 1):
            continue
        size = _card_in_run(text[s:e])
        if size:
            out.append((s, s + size))
    return out


# --------------------------------------------------------------------------- us_ssn + phone

_SSN = re.compile(r"000(?:-00-0000| 00 0000)(?!0)")  # on the shape
#: A North-American exchange + line (``555-0123``), found first; the area code is checked after.
_LINE = re.compile(r"000[-. ]0000(?!0)")
_AREA_BEFORE = re.compile(r"(?:\+?0[-. ]?)?(?:\(000\) ?|000[-. ])\Z")
_SEP = frozenset("-. ")


def _clear_before(text: str, s: int) -> bool:
    """Nothing number-like glued to the left of ``s``."""
    if _word_at(text, s - 1) or _char(text, s - 1) in ("+", "."):
        return False
    return not (_char(text, s - 1) in _SEP and _digit_at(text, s - 2))


def _clear_after(text: str, e: int) -> bool:
    if _word_at(text, e):
        return False
    return not (_char(text, e) in _SEP and _digit_at(text, e + 1))


def _ssn(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssn(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    for m in _SSN.finditer(shape):
        s, e = m.span()
        if _clear_before(text, s) and _clear_after(text, e):
            if _ssn(text[s:e].replace(text[s + 3], "")):
                out.append((s, e))
    return out


def _north_american(text: str, shape: str, s: int, e: int) -> Span | None:
    """The whole number around exchange + line ``text[s:e]``: area code, maybe ``+1``."""
    area = _AREA_BEFORE.search(shape, max(0, s - 16), s)
    if area is None or not _clear_after(text, e):
        return None
    a = area.start()
    digits = [ch for ch in text[a:e] if ch.isdigit()]
    if len(digits) == 11 and digits[0] != "1":
        return None
    if _word_at(text, a - 1) or (text[a] != "+" and not _clear_before(text, a)):
        return None
    if digits[-10] in "01" or digits[-7] in "01":  # NANP: area and exchange start 2-9
        return None
    return a, e


#: E.164: ``+`` then digits with spaces, dots, dashes or a parenthesised part.
_E164 = re.compile(r"\+0+(?:[ .\-]?(?:\(0+\)|0+))*+")


def _find_phones(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    for m in _LINE.finditer(shape):
        span = _north_american(text, shape, *m.span())
        if span is not None:
            out.append(span)
    if "+" in text:
        for m in _E164.finditer(shape):
            s, e = m.span()
            if _word_at(text, s - 1) or _word_at(text, e):
                continue
            if 8 <= sum(1 for ch in text[s:e] if ch.isdigit()) <= 15:
                out.append((s, e))
    return out


# --------------------------------------------------------------------------- ip_address

_IPV4 = re.compile(r"0\.0{1,3}\.0{1,3}\.0{1,3}")  # on the shape, from the first octet's last digit
_VERSIONISH = re.compile(
    r"(?:\b(?:v|ver|version|release|rev|revision|build|section|sec|chapter|ch|fig|figure|table|step|oid)"
    r"\.?|§)\s*[:#]?\s*\Z",
    re.IGNORECASE,
)
_V6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_V6_RIGHT = re.compile(r"[0-9A-Fa-f:.]{0,45}")


def _ipv4_octets(candidate: str) -> bool:
    for part in candidate.split("."):
        if len(part) > 1 and part[0] == "0" or int(part) > 255:
            return False
    return True


def _find_ipv4(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    for m in _IPV4.finditer(shape):
        s, e = m.span()
        for _ in range(2):
            if shape[s - 1 : s] == "0":
                s -= 1
        if _word_at(text, s - 1) or _char(text, s - 1) == "." or _word_at(text, e):
            continue
        if _char(text, e) == "." and _digit_at(text, e + 1):
            continue
        if not _ipv4_octets(text[s:e]) or _VERSIONISH.search(text, max(0, s - 12), s):
            continue
        out.append((s, e))
    return out


def _ipv6_candidate(text: str, anchor: int) -> Span | None:
    s = anchor
    while s > 0 and anchor - s < 39 and text[s - 1] in _HEX_COLON:
        s -= 1
    m = _V6_RIGHT.match(text, anchor)
    e = m.end() if m else anchor
    while e > s and text[e - 1] == ".":
        e -= 1
    if e - s > 2 and text[e - 1] == ":" and text[e - 2] != ":":
        e -= 1
    if _word_at(text, s - 1) or _char(text, s - 1) in (":", ".") or _word_at(text, e):
        return None
    candidate = text[s:e]
    colons = candidate.count(":")
    if "::" not in candidate and colons != 7 and not (colons == 6 and "." in candidate):
        return None  # times (12:30:45), MAC addresses: not worth parsing
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    groups = [g for g in candidate.split(":") if g]
    if "::" in candidate and (len(groups) < 2 or (len(groups) == 2 and len(groups[0]) < 3)):
        return None  # "::1", "a[1::2]": too short to tell from code
    return s, e


def _find_ipv6(text: str) -> list[Span]:
    out: list[Span] = []
    if ":" not in text:
        return out
    done = 0
    for m in _V6_ANCHOR.finditer(text):
        if m.start() < done:
            continue
        span = _ipv6_candidate(text, m.start())
        if span is not None:
            out.append(span)
            done = span[1]
    return out


def _find_ip(text: str, shape: str) -> list[Span]:
    return _find_ipv4(text, shape) + _find_ipv6(text)


# --------------------------------------------------------------------------- iban

_IBAN_ANCHOR = re.compile(r"00(?<=[A-Z]{2}00)")  # on the shape: check digits after a country code
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


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_span(text: str, s: int, e: int) -> Span | None:
    """The valid IBAN starting at ``s`` inside candidate ``text[s:e]``, trimmed to its
    country's length (a spaced IBAN may be followed by more upper-case groups)."""
    expected = _IBAN_LENGTHS.get(text[s : s + 2])
    if expected is None:
        return None
    chars = 0
    end = s
    while end < e and chars < expected:
        if text[end] != " ":
            chars += 1
        end += 1
    if chars < expected or (end < e and text[end] != " "):
        return None
    compact = text[s:end].replace(" ", "")
    return (s, end) if _mod97(compact) else None


def _find_iban(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    done = 0
    for m in _IBAN_ANCHOR.finditer(shape):
        s = m.start() - 2
        if s < done or _word_at(text, s - 1):
            continue
        full = _IBAN.match(shape, s)
        if full is None:
            continue
        span = _iban_span(text, s, full.end())
        if span is not None:
            out.append(span)
            done = span[1]
    return out


# --------------------------------------------------------------------------- email

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)


def _find_emails(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    at = text.find("@")
    while at != -1:
        s = at
        while s > 0 and at - s < 64 and text[s - 1] in _EMAIL_LOCAL and _char(text, s - 2) != "\\":
            s -= 1
        while s < at and text[s] == ".":
            s += 1
        domain = _EMAIL_DOMAIN.match(text, at + 1) if s < at else None
        if domain is not None:
            out.append((s, domain.end()))
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)
    return out


# --------------------------------------------------------------------------- keys and tokens

_PEM_BEGIN = re.compile(r"-----BEGIN (?:(?:RSA|EC|OPENSSH|DSA|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z]+ )?PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"(?:\s*+(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z-]+: [^\n]*))*+")


def _find_private_keys(text: str, shape: str) -> list[Span]:
    """From the BEGIN line to the matching END line (within 16 KB); without one, to the
    end of the base64 body that follows (so redaction removes the key material too)."""
    out: list[Span] = []
    if "-----BEGIN " not in text:
        return out
    for m in _PEM_BEGIN.finditer(text):
        end = _PEM_END.search(text, m.end(), m.end() + 16384)
        if end is not None:
            out.append((m.start(), end.end()))
        else:
            body = _PEM_BODY.match(text, m.end())
            out.append((m.start(), body.end() if body else m.end()))
    return out


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")


def _jwt_header(segment: str) -> bool:
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def _find_jwts(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    if "eyJ" not in text:
        return out
    for m in _JWT.finditer(text):
        s = m.start()
        if _word_at(text, s - 1) or _char(text, s - 1) in ("-", "."):
            continue
        if _jwt_header(text[s : text.index(".", s)]):
            out.append(m.span())
    return out


_AWS_GOOGLE = re.compile(r"A(?:(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-]))")
_OPENAI_ANTHROPIC = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
_GITHUB = re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})(?![A-Za-z0-9_])")
_STRIPE = re.compile(r"k_live_[A-Za-z0-9]{16,}(?![A-Za-z0-9_])")
_SLACK = re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}")
_BEARER = re.compile(r"earer[ \t]+([A-Za-z0-9._~+/-]{20,}=*)(?![A-Za-z0-9._~+/=-])")
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


def _find_api_keys(text: str, shape: str) -> list[Span]:
    out: list[Span] = []
    if "A" in text:
        out.extend(m.span() for m in _AWS_GOOGLE.finditer(text) if not _word_at(text, m.start() - 1))
    if "sk-" in text:
        for m in _OPENAI_ANTHROPIC.finditer(text):
            s = m.start()
            if not _word_at(text, s - 1) and _char(text, s - 1) != "-" and _random_looking(m.group()[3:], 16):
                out.append(m.span())
    if "_" in text:
        out.extend(m.span() for m in _GITHUB.finditer(text) if not _word_at(text, m.start() - 1))
        for m in _STRIPE.finditer(text):
            if _char(text, m.start() - 1) in ("s", "r") and not _word_at(text, m.start() - 2):
                out.append((m.start() - 1, m.end()))
    if "xox" in text:
        for m in _SLACK.finditer(text):
            if not _word_at(text, m.start() - 1) and any(c.isdigit() for c in m.group()):
                out.append(m.span())
    if "earer" in text:
        for m in _BEARER.finditer(text):
            s = m.start()
            token = m.group(1)
            if (_char(text, s - 1) in ("B", "b") and not _word_at(text, s - 2)
                    and any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
                out.append((m.start(1), m.end(1) - len(token) + len(token.rstrip("."))))
    return out


# --------------------------------------------------------------------------- registry

#: Built-in finders in priority order: when two built-in findings overlap, the earlier
#: detector's is kept (unless the later one has a higher level).
_BUILTINS: tuple[tuple[str, _Finder], ...] = (
    ("private_key", _find_private_keys),
    ("jwt", _find_jwts),
    ("api_key", _find_api_keys),
    ("iban", _find_iban),
    ("credit_card", _find_cards),
    ("us_ssn", _find_ssn),
    ("email", _find_emails),
    ("phone", _find_phones),
    ("ip_address", _find_ip),
)
_USES_SHAPE = frozenset({"iban", "credit_card", "us_ssn", "phone", "ip_address"})


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
            if not text.isascii():
                return [m.span() for m in custom.pattern.finditer(text) if m.end() > m.start()]
            text_lower = text.lower()
            if not any(n in text_lower for n in custom.needles):
                return []
        elif not any(n in text for n in custom.needles):
            return []
    return [m.span() for m in custom.pattern.finditer(text) if m.end() > m.start()]


def _dedupe(found: list[tuple[Span, int, int]]) -> list[tuple[Span, int, int]]:
    """Drop built-in findings that overlap one kept earlier (by priority) unless the
    dropped one would raise the level. ``found``: (span, priority, level rank)."""
    kept: list[tuple[Span, int, int]] = []
    for item in sorted(found, key=lambda f: (f[1], f[0][0], -f[0][1])):
        (s, e), _, rank = item
        if any(s < ke and ks < e and rank <= krank for (ks, ke), _, krank in kept):
            continue
        kept.append(item)
    return kept


# --------------------------------------------------------------------------- scanner


class Scanner:
    """Scans request bodies with a policy's detectors (compiled once, reused per request)."""

    __slots__ = ("_builtins", "_customs", "_default", "_shape")

    def __init__(self, spec: SensitivitySpec) -> None:
        self._default = spec.default
        self._builtins: tuple[tuple[str, str, int, _Finder], ...] = tuple(
            (name, spec.detectors[name], level_rank(spec.detectors[name]), finder)
            for name, finder in _BUILTINS if name in spec.detectors
        )
        self._customs = tuple(
            _compile_custom(c.name, c.level, c.regex, c.keywords, c.case_sensitive) for c in spec.custom
        )
        self._shape = any(name in _USES_SHAPE for name, *_ in self._builtins)

    def scan(self, endpoint: str, body: Mapping[str, object], floor: str | None = None) -> Scan:
        """Scan every text of ``body``. ``floor`` (the client's ``x-switchyard-sensitivity``)
        can raise the level, never lower it; an unknown level raises ``ValueError``."""
        result = self.scan_texts(iter_texts(endpoint, body))
        if floor is None:
            return result
        floor = floor.strip().lower()
        if floor not in LEVELS:
            raise ValueError(f"unknown sensitivity level {floor!r} (known: {', '.join(LEVELS)})")
        if level_rank(floor) > level_rank(result.level):
            return Scan(floor, result.findings)
        return result

    def scan_texts(self, texts: Iterable[tuple[str, str]]) -> Scan:
        """Scan ``(location, text)`` pairs; the level is the highest finding or the default."""
        findings: list[Finding] = []
        rank = level_rank(self._default)
        for location, text in texts:
            if text:
                rank = max(rank, self._scan_one(location, text, findings))
        return Scan(LEVELS[rank], tuple(findings))

    def _scan_one(self, location: str, text: str, out: list[Finding]) -> int:
        shape = text.translate(_ZERO_DIGITS) if self._shape else text
        found: list[tuple[Span, int, int]] = []
        for priority, (_, _, rank, finder) in enumerate(self._builtins):
            found.extend((span, priority, rank) for span in finder(text, shape))
        items: list[tuple[int, int, str, str]] = []
        top = 0
        for (s, e), priority, rank in _dedupe(found) if len(found) > 1 else found:
            name, level, _, _ = self._builtins[priority]
            items.append((s, e, name, level))
            top = max(top, rank)
        for custom in self._customs:
            for s, e in _custom_spans(custom, text):
                items.append((s, e, custom.name, custom.level))
                top = max(top, level_rank(custom.level))
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
