"""The number detectors of the sensitivity scanner (``policies.sensitivity``): payment
cards, IBANs, US social security numbers, phone numbers and IPv4 addresses in a text,
found by ``number_hits``.

Owns the registries they check against: card networks (IIN ranges and lengths), the SWIFT
IBAN registry (each country's BBAN format), ITU calling codes (each country's national
number lengths).

How a text is searched (linear time, few Python steps):

1. Its *shape*: every ASCII digit becomes ``0``, every letter upper case, every other
   non-ASCII character ``?`` (same length and offsets; one ``bytes.translate``).
2. One regex over the shape (``_CANDIDATE``) finds the digits where a number may start.
   It starts with the literal ``0`` (sre's fast search), rejects most digits with one
   lookbehind (inside a run, after a letter, a decimal point...), checks each detector's
   shapes with bounded lookaheads, and names the detectors whose shape fits. After a
   candidate, and at a long run of digit groups with none, it consumes the rest of the
   run: a megabyte of ``1234 1234 ...`` is one step, not one per digit.
3. At a candidate, each detector named matches its own regex on the text (digit values:
   NANP area codes and exchanges, SSN areas, octets: still in C), then checks what no
   regex can (Luhn, mod 97) and the context (glued to a word or a longer number; labelled
   as an order, part or invoice number).
4. International and national phone numbers come from two passes over the text itself,
   from a ``+`` and from a digit ``0`` (rare literals, so fast searches), which check the
   calling code with its national number length, or the trunk prefix and digit count, in C.

Low false positives matter as much as recall: cards need a network's IIN, one of its
lengths, a card-like grouping and Luhn; IBANs a registry country, its BBAN format and
mod 97; phones a valid NANP number, a calling code and a national length, or a national
shape with a trunk prefix; SSNs a valid area, group and serial (bare nine digits only
after an SSN keyword). See each detector.

Pure: no I/O, no clock, no global mutable state. Must not import ``router`` or
``backends``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

__all__ = ["number_hits"]

Span = tuple[int, int]
Hit = tuple[str, int, int]  # detector, start, end

# --------------------------------------------------------------------------- shape and context

#: ASCII digits become "0", lower-case letters upper case (IBANs are found in either case).
_SHAPE = bytes.maketrans(b"123456789abcdefghijklmnopqrstuvwxyz", b"000000000ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _shape(text: str) -> str:
    """``text`` with every ASCII digit ``0``, letters upper case, other non-ASCII ``?``:
    same length, same offsets. (Via bytes: ``str.translate`` is 30x slower on non-ASCII
    text and has a per-call cost on small ones.)"""
    if len(text) <= _SHAPE_PIECE:
        return text.encode("ascii", "replace").translate(_SHAPE).decode("ascii")
    # a long text in pieces: each C call holds the GIL, and a large body is scanned in a
    # worker thread while the event loop waits for it (tests/e2e/test_scan_off_loop.py)
    return "".join(text[i : i + _SHAPE_PIECE].encode("ascii", "replace").translate(_SHAPE).decode("ascii")
                   for i in range(0, len(text), _SHAPE_PIECE))


_SHAPE_PIECE = 1 << 20


def _word_at(text: str, i: int) -> bool:
    """``text[i]`` exists and is a letter, digit or ``_`` that is not the letter of a
    backslash escape (``\\n`` in JSON tool-call arguments is a boundary)."""
    if i < 0 or i >= len(text):
        return False
    ch = text[i]
    return (ch.isalnum() or ch == "_") and (i == 0 or text[i - 1] != "\\")


def _digit_at(text: str, i: int) -> bool:
    return 0 <= i < len(text) and "0" <= text[i] <= "9"


def _glued_before(text: str, s: int) -> bool:
    """A word, ``+``, a decimal point, or a digit and one separator right before ``s``."""
    if s <= 0:
        return False
    ch = text[s - 1]
    return ch in "+." or _word_at(text, s - 1) or (ch in "-. " and _digit_at(text, s - 2))


def _glued_after(text: str, e: int) -> bool:
    """A word right after ``e``, a separator glued to a letter or digit (``-B``, ``/2``,
    ``.5``), or a space and a digit (a longer number). A full stop ending a sentence is fine."""
    if e >= len(text):
        return False
    ch = text[e]
    if _word_at(text, e):
        return True
    if ch in "-./":
        return _word_at(text, e + 1)
    return ch == " " and _digit_at(text, e + 1)


# --------------------------------------------------------------------------- credit_card

def _card_lengths() -> tuple[frozenset[int], ...]:
    """Valid lengths by the card's first four digits (its IIN prefix), per the networks'
    published ranges; later rules override earlier ones."""
    any_length, none = frozenset(range(13, 20)), frozenset[int]()
    table = [none] * 10_000
    rules = (
        (2200, 2204, range(16, 20)),  # Mir
        (2221, 2720, (16,)),  # Mastercard 2-series
        (3000, 3059, range(14, 20)), (3095, 3095, range(14, 20)),  # Diners Club International
        (3600, 3699, range(14, 20)), (3800, 3999, range(14, 20)),
        (3400, 3499, (15,)), (3700, 3799, (15,)),  # American Express
        (3528, 3589, range(16, 20)),  # JCB
        (4000, 4999, (13, 16, 19)),  # Visa (and Visa-range national networks)
        (5000, 5099, any_length), (5600, 6999, any_length),  # Maestro, Discover, UnionPay, RuPay...
        (5100, 5599, (16,)),  # Mastercard
    )
    for low, high, lengths in rules:
        table[low : high + 1] = [frozenset(lengths)] * (high + 1 - low)
    for iin in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):  # Maestro, also 12 digits
        table[iin] = frozenset(range(12, 20))
    return tuple(table)


_CARD_LENGTHS = _card_lengths()
#: A run of up to 8 digit groups with single spaces or dashes (a card has at most 19
#: digits: a longer run is only looked at for its leading groups).
_CARD_RUN = re.compile(r"0{1,19}+(?:[ -]0{1,19}+){0,7}+")
_CARD_SEPS = re.compile(r"[ -]")
_LUHN_DOUBLE = MappingProxyType(str.maketrans("0123456789", "0246813579"))


def _luhn(digits: str) -> bool:
    # sum() over ASCII bytes adds the digits in C; 48 is ord("0").
    total = sum(digits[-1::-2].encode()) + sum(digits[-2::-2].translate(_LUHN_DOUBLE).encode())
    return (total - 48 * len(digits)) % 10 == 0


def _card_number(digits: str) -> bool:
    return (12 <= len(digits) <= 19 and len(digits) in _CARD_LENGTHS[int(digits[:4])]
            and digits.count(digits[0]) != len(digits) and _luhn(digits))


def _card_grouping(sizes: list[int], n: int) -> bool:
    """Whether the first ``n`` groups (of ``sizes`` digits) are printed as cards are:
    4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3, 4-3-3-3, 6-13...: a first group of 4-6 digits, middle
    groups of 3-6, a last one of 1-7 (or up to 15 after a single separator)."""
    if n == 1:
        return True
    if not 4 <= sizes[0] <= 6:
        return False
    if n == 2:
        return sizes[1] <= 15
    middle = sizes[1 : n - 1]
    return sizes[n - 1] <= 7 and min(middle) >= 3 and max(middle) <= 6


def _card_in_run(run: str) -> int:
    """Length of the card number at the start of ``run`` (digit groups), or 0: the whole
    run, or its leading groups (a card followed by a CVV or a year), longest first."""
    if run.isdigit():
        return len(run) if _card_number(run) else 0
    groups = _CARD_SEPS.split(run)
    sep = run[len(groups[0])]
    other = run.find("-" if sep == " " else " ")
    if other != -1:  # one separator kind in a card: stop at the other
        groups = run[:other].split(sep)
    sizes = [len(g) for g in groups]
    total = sum(sizes)
    for n in range(len(groups), 0, -1):
        if total < 12:
            break
        if total <= 19 and _card_grouping(sizes, n) and _card_number("".join(groups[:n])):
            return total + n - 1
        total -= sizes[n - 1]
    return 0


def _card_at(text: str, shape: str, d: int) -> Span | None:
    """The card at ``d``: the candidate pattern has found a run of 12+ digits there, not
    glued to an ASCII word or decimals; what it cannot see is a non-ASCII letter (``?``)."""
    m = _CARD_RUN.match(shape, d)
    if m is None:
        return None
    e = m.end()
    if shape[e : e + 1] == "0":  # the run goes on: its last group is cut, leave it out
        e = max(shape.rfind(" ", d, e), shape.rfind("-", d, e))
        if e < d:
            return None  # 20+ digits glued: longer than any card
    if (shape[d - 1 : d] == "?" and _word_at(text, d - 1)) or (shape[e : e + 1] == "?" and _word_at(text, e)):
        return None
    size = _card_in_run(text[d:e])
    return (d, d + size) if size else None


# --------------------------------------------------------------------------- us_ssn

#: Area not 000, 666 or 9xx; group not 00; serial not 0000; dashes, spaces or (after an
#: SSN keyword) nothing between.
_SSN = re.compile(r"(?!000|666|9)\d{3}(?:([- ])(?!00)\d\d\1|(?!00)\d\d)(?!0000)\d{4}", re.ASCII)
#: What labels nine bare digits as an SSN (on the shape: any case), within 32 characters.
_SSN_LABEL = re.compile(r"SSN|SOCIAL SECURITY|SS ?#|SOC\.? ?SEC")


def _ssn_at(text: str, shape: str, d: int) -> Span | None:
    """An SSN from ``d``: 3-2-4 digits with dashes or spaces, or nine bare digits after an
    SSN label; not glued to a word or another number."""
    m = _SSN.match(text, d)
    if m is None or _glued_before(text, d) or _glued_after(text, m.end()):
        return None
    if m.group(1) is None and _SSN_LABEL.search(shape, max(0, d - 32), d) is None:
        return None  # nine bare digits: an SSN only when labelled as one
    return m.span()


# --------------------------------------------------------------------------- phone
# North-American numbers come from the shape pass; international (+ or 00 and a calling
# code) and national ones (a trunk 0) from their own passes over the text, which start
# with a rare literal ("+", the digit 0) and check digit values in C.

#: Where a phone number ends: no word, no separator glued to a letter or digit (``-B``,
#: ``/2``, ``.5``), no more digits, no parenthesised digits.
_PHONE_END = r"(?!\w|[-./][^\W_]| \d|[ .\-]?\(\d)"

#: NANP area codes and exchanges start with 2-9 and are not N11; area codes have no 9 in
#: the middle (reserved). Optional country code 1, area code in parentheses or not.
_AREA = r"[2-9](?!11)[0-8]\d"
_NANP = re.compile(
    r"(?:1[-. ]?)?(?:\(" + _AREA + r"\) ?|" + _AREA + r"[-. ])[2-9](?!11)\d\d[-. ]\d{4}" + _PHONE_END, re.ASCII)

#: ITU calling code → national (significant) number lengths, ``code:min-max``
#: (libphonenumber's possible lengths; +1 and +7 are 10 digits).
_CALLING_CODES = """
1:10 7:10 20:8-10 27:5-10 30:10-12 31:5-11 32:8-9 33:9 34:9 36:8-9 39:6-12 40:6-9 41:9-12 43:4-13
44:7-10 45:8 46:6-12 47:5-8 48:6-10 49:4-13 51:8-9 52:10 53:6-10 54:10-11 55:8-11 56:9-11 57:8-11
58:10 60:8-10 61:5-12 62:7-13 63:6-13 64:5-10 65:8-11 66:8-13 81:8-13 82:5-13 84:7-10 86:7-12
90:7-13 91:8-13 92:8-12 93:9 94:9 95:6-10 98:4-10 211:9 212:9 213:8-9 216:8 218:9 220:7-9 221:9
222:8 223:8 224:8-9 225:10 226:8 227:8 228:8 229:10 230:7-10 231:7-9 232:8 233:8-9 234:10-12 235:8
236:8 237:8-9 238:7 239:7 240:9 241:7-8 242:9 243:7-10 244:9 245:7-9 246:7 247:5-6 248:7 249:9
250:8-9 251:9 252:6-9 253:8 254:7-10 255:9 256:9 257:8 258:8-9 260:9 261:9 262:9 263:7-10 264:8-9
265:7-9 266:8 267:7-10 268:8-9 269:7 290:4-5 291:7 297:7 298:6 299:6 350:8 351:9 352:4-11 353:7-10
354:7-9 355:6-9 356:8 357:8 358:5-12 359:6-12 370:8 371:8 372:7-10 373:8 374:8 375:6-11 376:6-9
377:8-9 378:8-10 380:9-10 381:6-12 382:8-9 383:8-12 385:7-9 386:5-8 387:8-9 389:8 420:9-12 421:6-9
423:7-9 500:5 501:7-11 502:8-11 503:7-11 504:8-11 505:8 506:8-10 507:7-11 508:6-9 509:8 590:9
591:8-9 592:7 593:8-11 594:9 595:6-11 596:9 597:6-7 598:4-12 599:7-8 670:7-8 672:6 673:7 674:7
675:7-8 676:5-7 677:5-7 678:5-7 679:7-11 680:7 681:6-9 682:5 683:4-7 685:5-10 686:5-8 687:6 688:5-7
689:6-9 690:4-7 691:7 692:7 800:8 808:8 850:8-10 852:5-11 853:7-8 855:8-10 856:8-10 870:9-12 878:12
880:6-10 881:9-10 882:7-12 883:8-12 886:7-11 888:11 960:7-10 961:7-8 962:8-9 963:8-9 964:8-10
965:7-8 966:9-10 967:7-9 968:7-9 970:8-10 971:5-12 972:7-12 973:8 974:7-11 975:7-8 976:8-10
977:8-11 979:9 992:9 993:8 994:9 995:9 996:9-10 998:9
"""
#: An E.164 number has 8-15 digits in all.
_E164_DIGITS = (8, 15)


def _calling_codes() -> str:
    """A calling code, then that country's number of national digits (single separators,
    parentheses, a ``(0)`` trunk prefix). The codes make a trie (they are a prefix code),
    each leaf with its own digit count, so a number's length is checked in C."""
    leaves: list[tuple[str, str]] = []
    for entry in _CALLING_CODES.split():
        code, _, lengths = entry.partition(":")
        low, _, high = lengths.partition("-")
        low_n = max(int(low), _E164_DIGITS[0] - len(code))
        high_n = min(int(high or low), _E164_DIGITS[1] - len(code))
        leaves.append((code, r"(?: ?\(0\))?(?:[ .\-]?\(?\d\)?)" + f"{{{low_n},{high_n}}}+"))
    return _trie(leaves)


def _trie(leaves: list[tuple[str, str]]) -> str:
    """An alternation of ``digits + tail`` for every ``(digits, tail)``, as a trie."""
    children: dict[str, list[tuple[str, str]]] = {}
    tails = []
    for digits, tail in leaves:
        if digits:
            children.setdefault(digits[0], []).append((digits[1:], tail))
        else:
            tails.append(tail)
    branches = tails + [first + _trie(rest) for first, rest in sorted(children.items())]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _clear(before: str) -> str:
    """Lookbehinds after ``before`` (a phone number's first character): not glued to a word,
    ``+``, a decimal point, or a digit and a separator; a backslash escape is no word."""
    glued = "" if before == r"\+" else rf"(?<!\d[-. ]{before})"  # a "+" starts a number anyway
    return rf"(?:(?<![\w+.]{before}){glued}|(?<=\\[A-Za-z]{before}))"


_CODES = _calling_codes()
#: ``+`` and a calling code (a literal first: sre's fast search).
_PLUS_PHONE = re.compile(r"\+" + _clear(r"\+") + _CODES + _PHONE_END)
#: From a digit 0: a national number (a trunk 0, a 1-4 digit area or mobile code, then
#: groups with one kind of separator, 9-12 digits in all), in parentheses or not; or 00,
#: a calling code and a separator.
_ZERO_PHONE = re.compile(
    r"0(?=\d)(?<!\d0)(?:" + _clear("0") + "(?:"
    r"(?=[1-9])(?=(?:[-. /]?\d){8,11}+(?![-. /]?\d))[1-9]\d{0,3}([-. /])\d{1,8}(?:\1\d{1,8}){0,4}"
    r"|0(?=\d{1,3}[ .\-(])" + _CODES + ")" + _PHONE_END +
    r"|(?<=\(0)" + _clear(r"\(0") + r"(?=[1-9])(?=(?:[-. )]{0,2}\d){8,11}+(?![-. ]?\d))"
    r"[1-9]\d{0,3}\) ?\d{1,8}(?:[-. ]\d{1,8}){0,3}" + _PHONE_END + "(?P<paren>))",
    re.ASCII,
)

#: The word before a number that makes it an identifier, not a phone number...
_ID_WORDS = frozenset({
    "order", "ord", "invoice", "inv", "part", "pn", "p/n", "sku", "ref", "reference", "ticket", "case", "serial",
    "sn", "s/n", "item", "model", "version", "ver", "v", "po", "isbn", "issn", "lot", "batch", "tracking",
    "article", "art", "product", "prod", "id", "doc", "document", "receipt", "transaction", "txn", "confirmation",
    "booking", "release", "build", "rev", "revision", "patent", "catalog", "catalogue", "cat", "mpn", "upc",
    "ean", "gtin", "asin", "rma", "shipment", "parcel", "bestellnummer", "artikel", "rechnung", "commande",
    "facture", "pedido", "factura",
})
#: ... also with one of these between ("Order no. 800-555-0199"; but "Phone no." is a phone).
_NUMBER_WORDS = frozenset({"no", "nr", "num", "number", "nº", "n°", "#"})


def _labelled_as_id(text: str, s: int) -> bool:
    """The word before ``s`` names an order, part, invoice, version... number."""
    words = text[max(0, s - 32) : s].replace("#", " # ").replace(":", " ").split()
    if not words:
        return False
    word = words[-1].strip("([{\"'.").lower()
    if word in _NUMBER_WORDS and len(words) > 1:
        word = words[-2].strip("([{\"'.").lower()
    return word in _ID_WORDS


def _phone_span(text: str, s: int, e: int) -> Span | None:
    """``(s, e)`` unless the number is glued to what is before it or labelled as an id."""
    if s > 0:
        before = text[s - 1]
        if before in "+." or _word_at(text, s - 1):
            return None
        if before in "-/" and _word_at(text, s - 2):
            return None  # after a word and a dash or slash: a part or order number (SKU-800-555-0199)
        if before in "-. " and text[s] != "+" and _digit_at(text, s - 2):
            return None  # inside a longer number (a "+" starts a new one)
    return None if _labelled_as_id(text, s) else (s, e)


def _nanp_at(text: str, shape: str, d: int) -> Span | None:
    """A North-American number from ``d``, or from the ``(`` before it."""
    s = d - 1 if d > 0 and text[d - 1] == "(" else d
    m = _NANP.match(text, s)
    return None if m is None else _phone_span(text, s, m.end())


def _phone_hits(text: str) -> Iterator[Span]:
    """International and national numbers (the passes from ``+`` and from a digit 0)."""
    if "+" in text:
        for m in _PLUS_PHONE.finditer(text):
            span = _phone_span(text, *m.span())
            if span is not None:
                yield span
    for m in _ZERO_PHONE.finditer(text):
        span = _phone_span(text, m.start() - (m.lastgroup == "paren"), m.end())
        if span is not None:
            yield span


# --------------------------------------------------------------------------- ip_address

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(_OCTET + r"(?:\." + _OCTET + r"){3}(?!\d)", re.ASCII)
#: Words before a dotted number that make it a version or a section, not an address.
_NOT_ADDRESS = frozenset({"v", "ver", "version", "release", "rev", "revision", "build", "section",
                          "sec", "chapter", "ch", "fig", "figure", "table", "step", "oid", "§"})


def _versionish(text: str, s: int) -> bool:
    """The word before ``s`` makes a dotted number a version or a section (``v``,
    ``AssemblyVersion("``, ``Section``)."""
    words = text[max(0, s - 24) : s].rstrip(" :#=(\"'").split()
    if not words:
        return False
    word = words[-1].lower().rstrip(".")
    return word in _NOT_ADDRESS or word.endswith("version")


def _ipv4_at(text: str, shape: str, d: int) -> Span | None:
    """A dotted quad of octets, not glued to a word or more decimals, not a version; not
    0.0.0.0 (any address) nor 127.x.x.x (this host): they say nothing about a network."""
    m = _IPV4.match(text, d)
    if m is None or _word_at(text, d - 1) or text[d - 1 : d] == ".":
        return None
    e = m.end()
    if _word_at(text, e) or (text[e : e + 1] == "." and _digit_at(text, e + 1)):
        return None
    if text.startswith("127.", d) or text.startswith("0.0.0.0", d):
        return None
    return None if _versionish(text, d) else (d, e)


# --------------------------------------------------------------------------- iban

#: The SWIFT IBAN registry (release 101): country → BBAN format (``4a`` four upper-case
#: letters, ``6n`` six digits, ``8c`` eight letters or digits).
_IBAN_FORMATS: Mapping[str, str] = MappingProxyType({
    "AD": "4n4n12c", "AE": "3n16n", "AL": "8n16c", "AT": "5n11n", "AZ": "4a20c", "BA": "3n3n8n2n", "BE": "3n7n2n",
    "BG": "4a4n2n8c", "BH": "4a14c", "BI": "5n5n11n2n", "BR": "8n5n10n1a1c", "BY": "4c4n16c", "CH": "5n12c",
    "CR": "4n14n", "CY": "3n5n16c", "CZ": "4n16n", "DE": "8n10n", "DJ": "5n5n11n2n", "DK": "4n9n1n", "DO": "4c20n",
    "EE": "2n14n", "EG": "4n4n17n", "ES": "4n4n1n1n10n", "FI": "3n11n", "FK": "2a12n", "FO": "4n9n1n",
    "FR": "5n5n11c2n", "GB": "4a6n8n", "GE": "2a16n", "GI": "4a15c", "GL": "4n9n1n", "GR": "3n4n16c",
    "GT": "4c20c", "HN": "4a20n", "HR": "7n10n", "HU": "3n4n1n15n1n", "IE": "4a6n8n", "IL": "3n3n13n",
    "IQ": "4a3n12n", "IS": "4n2n6n10n", "IT": "1a5n5n12c", "JO": "4a4n18c", "KW": "4a22c", "KZ": "3n13c",
    "LB": "4n20c", "LC": "4a24c", "LI": "5n12c", "LT": "5n11n", "LU": "3n13c", "LV": "4a13c", "LY": "3n3n15n",
    "MC": "5n5n11c2n", "MD": "2c18c", "ME": "3n13n2n", "MK": "3n10c2n", "MN": "4n12n", "MR": "5n5n11n2n",
    "MT": "4a5n18c", "MU": "4a2n2n12n3n3a", "NI": "4a20n", "NL": "4a10n", "NO": "4n6n1n", "OM": "3n16c",
    "PK": "4a16c", "PL": "8n16n", "PS": "4a21c", "PT": "4n4n11n2n", "QA": "4a21c", "RO": "4a16c", "RS": "3n13n2n",
    "RU": "9n5n15c", "SA": "2n18c", "SC": "4a2n2n16n3a", "SD": "2n12n", "SE": "3n16n1n", "SI": "5n8n2n",
    "SK": "4n6n10n", "SM": "1a5n5n12c", "SO": "4n3n12n", "ST": "4n4n11n2n", "SV": "4a20n", "TL": "3n14n2n",
    "TN": "2n3n13n2n", "TR": "5n1n16c", "UA": "6n19c", "VA": "3n15n", "VG": "4a16n", "XK": "4n10n2n",
    "YE": "4a4n18c",
})
_IBAN_KINDS = MappingProxyType({"n": "[0-9]", "a": "[A-Z]", "c": "[0-9A-Z]"})


def _bban_regex(fmt: str) -> re.Pattern[str]:
    return re.compile("".join(f"{_IBAN_KINDS[kind]}{{{count}}}" for count, kind in re.findall(r"(\d+)([nac])", fmt)))


_IBAN_BBANS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {country: _bban_regex(fmt) for country, fmt in _IBAN_FORMATS.items()})
#: Country → IBAN length (country code, check digits, BBAN).
_IBAN_LENGTHS: Mapping[str, int] = MappingProxyType(
    {country: 4 + sum(int(n) for n in re.findall(r"\d+", fmt)) for country, fmt in _IBAN_FORMATS.items()})
_IBAN_LETTERS = MappingProxyType(str.maketrans({ch: str(ord(ch) - 55) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}))


def _iban_at(text: str, shape: str, s: int) -> Span | None:
    """The IBAN starting at ``s`` (the candidate pattern has found its country's length,
    compact or in groups of four, and nothing glued after it): all upper or all lower
    case, the country's BBAN format, mod 97."""
    country = shape[s : s + 2]
    n = _IBAN_LENGTHS[country]
    end = s + n + ((n - 1) // 4 if shape[s + 4] == " " else 0)
    iban = text[s:end].replace(" ", "")
    if not (iban.isupper() or iban.islower()) or _word_at(text, s - 1):
        return None  # mixed case: a random token, not an IBAN
    iban = iban.upper()
    if _IBAN_BBANS[country].fullmatch(iban, 4) is None:
        return None
    return (s, end) if int((iban[4:] + iban[:4]).translate(_IBAN_LETTERS)) % 97 == 1 else None


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
    return r"(?<=[A-Z]{2}0)(?=0)(?:(?<![0A-Z_]..0)|(?<=\\...0))(?<=" + countries + ")"


def _bban(n: int) -> str:
    """Lookaheads after the first check digit: the second one and ``n`` BBAN characters,
    compact or in groups of four, then no letter or digit (that boundary first: cheap)."""
    spaced = n + n // 4 + (1 if n % 4 else 0)
    groups = f"(?: [A-Z0]{{4}}){{{n // 4}}}+" + (f" [A-Z0]{{{n % 4}}}" if n % 4 else "")
    return (f"(?=0(?:.{{{n}}}|.{{{spaced}}})(?![A-Z0]))"
            f"(?=0(?:[A-Z0]{{{n}}}|{groups})(?![A-Z0]))")


# --------------------------------------------------------------------------- candidates
# Shapes, as lookaheads after a candidate digit (on the shape: digits are "0", letters
# upper case). Each is a necessary condition of its detector's checks, bounded in length.

def _digits(n: int, seps: str) -> str:
    """``n`` more digits, each after at most one of ``seps``; unrolled, as sre runs a
    repeated group far slower than single characters."""
    return f"[{seps}]?0" * n


#: Where a phone number or an SSN ends: no word, no separator glued to a letter or a digit,
#: no space and more digits.
_END = r"(?![0A-Z_]|[-./][0A-Z]| 0)"
#: 12+ digits, single spaces or dashes; the run not glued to a word or decimals at its end
#: (a lookahead that scans a run: only where a run starts, and the run is consumed after).
_CARD_SHAPE = "(?=0{3,5}[ -]|0{11})(?=[0 -]{11})" + _digits(11, " -") + r"0*+(?:[ -]0++)*+(?![A-Z_]|\.0)"
_SSN_SHAPE = r"00(?:-00-0000| 00 0000)" + _END
#: Nine bare digits after a label's last word or sign ("SSN 078051120", "no.: 078051120",
#: ``{"ssn": "078051120"}``).
_SSN_BARE_SHAPE = r"(?:(?<=[A-Z.:#\"'=] 0)|(?<=[:#\"'=]0))00000000" + _END
_NANP_SHAPE = r"(?:[-. ]?0?00[-. ]000|[-. ]\(000\) ?000)[-. ]0000" + _END
_IPV4_SHAPE = r"0{0,2}\.0{1,3}\.0{1,3}\.0{1,3}(?![0A-Z_]|\.0)"
#: The rest of a run of digit groups (single separators), up to a dotted quad after a
#: space or dash: inside a run, only a dotted quad may start (a list or a range).
_REST = r"0*+(?:\.0++|[- ](?!0{1,3}\.0{1,3}\.0{1,3}\.0{1,3}(?![0A-Z_]|\.0))0++)*+"
def _start(ssn: str) -> str:
    """At a digit where a number may start: cheap necessary tests first, then one lookahead
    for every detector's shape (fails fast), then a group per detector whose shape fits.
    ``ssn``: the SSN shapes looked for."""
    return (
        r"(?=0|[ -][0(]|\.0{1,3}\.|[-. ]\()"  # what follows the first digit in every shape
        r"(?=" + "|".join((_CARD_SHAPE, ssn, _NANP_SHAPE, _IPV4_SHAPE)) + r"|(?<=\(0)00\))"
        r"(?:(?=" + _CARD_SHAPE + r")(?P<card>)|)"  # (?:X|), not (?:X)?: sre allocates for a repeat
        r"(?:(?<!\.0)(?=" + ssn + r")(?P<ssn>)|)"
        r"(?:(?<!\.0)(?<![0A-Z_][-/]0)(?=" + _NANP_SHAPE + r"|(?<=\(0)00\) ?000[-. ]0000" + _END + r")(?P<nanp>)|)"
        r"(?:(?<!\.0)(?=" + _IPV4_SHAPE + r")(?P<ip>)|)"
        r"(?(card)|(?(ssn)|(?(nanp)|(?(ip)|(?!)))))"
    )


#: A long run of separated digit groups: skipped at once (each group's start would cost a
#: few tests; a glued run costs one test per digit, no skip needed).
_SKIP = r"(?=0{0,5}[-. ]0{1,6}[-. ]0{1,6}[-. ]0)" + _REST


def _candidates(ssn: str) -> re.Pattern[str]:
    return re.compile(
        "0(?<!00)"  # never inside a run of digits: one test rejects most digits of a long number
        "(?=0|[-. ][0(])(?:"  # every number goes on with a digit, or a separator and a digit or "("
        # after two letters: the first check digit of an IBAN
        + _iban_start() + r"(?P<iban>)" + _REST +
        r"|(?=[0 ().\-]{6})(?:"  # any other number: 7+ characters of a number
        # where a number may start: not after a digit and one separator, a letter, "_", a
        # decimal point, ")", "+" or "("; or after an escape (\n), a "(" not glued to a word
        # or a number, or an abbreviation ("No." a card)
        r"(?:(?<![A-Z_.)+(]0)(?<!0[- ]0)|(?<=\\[A-Z]0)|(?<=\(0)(?<![0A-Z_+.]\(0)(?<!0[-. ]\(0)|(?<=[A-Z]\.0))"
        + _start(ssn) + _REST +
        # after a digit and a space or dash: only a dotted quad
        r"|(?<=0[- ]0)(?=" + _IPV4_SHAPE + r")(?P<ip_in_run>)" + _REST +
        # no candidate: skip the rest of a long run at once
        "|" + _SKIP + "))"
    )


_CANDIDATE = _candidates(_SSN_SHAPE + "|" + _SSN_BARE_SHAPE)
_At = Callable[[str, str, int], "Span | None"]


#: The detector run at a candidate for each group of ``_CANDIDATE`` (in group order), and
#: how far before the candidate digit its number starts.
_AT_DIGIT: tuple[tuple[str, _At, int], ...] = (
    ("iban", _iban_at, 2), ("credit_card", _card_at, 0), ("us_ssn", _ssn_at, 0), ("phone", _nanp_at, 0),
    ("ip_address", _ipv4_at, 0), ("ip_address", _ipv4_at, 0),
)
#: Every combination of ``_CANDIDATE``'s groups (as ``Match.groups()`` gives them: ``""``
#: set, None not) → the detectors to run.
_DISPATCH: Mapping[tuple[str | None, ...], tuple[tuple[str, _At, int], ...]] = MappingProxyType({
    key: tuple(at for at, group in zip(_AT_DIGIT, key, strict=True) if group is not None)
    for key in itertools.product((None, ""), repeat=len(_AT_DIGIT))
})


def number_hits(text: str, active: frozenset[str]) -> list[Hit]:
    """Cards, IBANs, SSNs, phone numbers and IPv4 addresses in ``text`` (the detectors in
    ``active``), as ``(detector, start, end)``; overlaps are left to the caller."""
    hits: list[Hit] = []
    shape = _shape(text)
    labelled: bool | None = None  # whether the text holds an SSN label anywhere
    for m in _CANDIDATE.finditer(shape):
        for name, at, back in _DISPATCH[m.groups()]:  # none for a run skipped
            if at is _ssn_at and shape[m.start() + 3] == "0":  # nine bare digits: is there a label?
                if labelled is None:
                    labelled = _SSN_LABEL.search(shape) is not None  # once per text, and only then
                if not labelled:
                    continue
            if name in active:
                span = at(text, shape, m.start() - back)
                if span is not None:
                    hits.append((name, *span))
    if "phone" in active:
        hits.extend(("phone", s, e) for s, e in _phone_hits(text))
    return hits
