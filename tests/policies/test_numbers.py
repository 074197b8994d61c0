"""``policies.sensitivity``'s number detectors against what people paste: payment cards of
every major network in every common grouping, IBANs of every country in the SWIFT IBAN
registry, phone numbers in national and international shapes (and the part, order,
invoice and version numbers that look like them), SSNs. Pure unit tests.

The oracles here are written from the networks' and registries' published rules, apart
from the detector's own tables: a network, country or calling code missing from the
detector fails a test here.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.models import SensitivitySpec
from policies.sensitivity import Scanner

SCANNER = Scanner(SensitivitySpec())


def found(text: str) -> list[tuple[str, str]]:
    """(detector, matched text) for every finding in ``text``."""
    return [(f.detector, text[f.start : f.end]) for f in SCANNER.scan_texts([("t", text)]).findings]


def detectors(text: str) -> set[str]:
    return {name for name, _ in found(text)}


# --------------------------------------------------------------------------- cards


def luhn_complete(partial: str) -> str:
    """``partial`` plus the check digit that makes it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch) * (2 if i % 2 == 0 else 1)  # doubled once the check digit is appended
        total += d - 9 if d > 9 else d
    return partial + str((10 - total % 10) % 10)


def make_card(prefix: str, length: int, seed: int) -> str:
    rng = random.Random(f"{prefix}/{length}/{seed}")
    return luhn_complete(prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1)))


#: network → (IIN prefixes, lengths), as the networks publish them.
NETWORKS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "visa": (("4",), (13, 16, 19)),
    "mastercard": (("51", "52", "53", "54", "55", "2221", "2500", "2720"), (16,)),
    "amex": (("34", "37"), (15,)),
    "diners": (("36",), (14,)),
    "diners-international": (("300", "301", "302", "303", "304", "305", "3095", "38", "39"), (14, 16, 19)),
    "discover": (("6011", "65", "644", "645", "646", "647", "648", "649"), (16, 19)),
    "jcb": (("3528", "3550", "3589"), (16, 19)),
    "unionpay": (("62",), (16, 17, 18, 19)),
    "maestro": (("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763"),
                (12, 13, 14, 15, 16, 17, 18, 19)),
}

#: length → how it is printed (group sizes): on the card, and as people type it.
GROUPINGS: dict[int, tuple[tuple[int, ...], ...]] = {
    12: ((4, 4, 4),),
    13: ((4, 4, 5), (4, 3, 3, 3)),
    14: ((4, 6, 4), (4, 4, 4, 2)),
    15: ((4, 6, 5), (4, 4, 4, 3)),
    16: ((4, 4, 4, 4),),
    17: ((4, 4, 4, 4, 1), (4, 4, 4, 5)),
    18: ((4, 4, 4, 4, 2), (4, 4, 4, 6)),
    19: ((4, 4, 4, 4, 3), (6, 13)),
}


def grouped(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(number[i : i + size])
        i += size
    return sep.join(parts)


def _card_cases() -> list[tuple[str, str]]:
    cases = []
    for network, (prefixes, lengths) in NETWORKS.items():
        for n, prefix in enumerate(prefixes):
            for length in lengths:
                number = make_card(prefix, length, n)
                cases.append((f"{network}-{prefix}-{length}-none", number))
                for sizes in GROUPINGS[length]:
                    for sep, name in ((" ", "spaces"), ("-", "dashes")):
                        label = f"{network}-{prefix}-{length}-{'-'.join(map(str, sizes))}-{name}"
                        cases.append((label, grouped(number, sizes, sep)))
    return cases


CARD_CASES = _card_cases()


@pytest.mark.parametrize("card", [c for _, c in CARD_CASES], ids=[label for label, _ in CARD_CASES])
def test_card_of_every_network_and_grouping_is_found(card: str) -> None:
    for text in (f"card {card}, exp 12/27", f"Card: {card}.", f"({card})", card, f'{{"pan": "{card}"}}'):
        assert found(text) == [("credit_card", card)], text


@pytest.mark.parametrize("text", [
    "card no.4111111111111111", "Card#4111 1111 1111 1111", "pan=4111-1111-1111-1111&cvv=123",
    "card:\n4111 1111 1111 1111\n", "\\n4111111111111111\\n",
])
def test_card_in_context(text: str) -> None:
    assert detectors(text) == {"credit_card"}


@pytest.mark.parametrize("text", [
    make_card("4", 15, 1),  # Visa is 13, 16 or 19 digits
    make_card("4", 14, 1),
    make_card("34", 16, 1),  # Amex is 15
    make_card("51", 15, 1),  # Mastercard is 16
    make_card("2220", 16, 1),  # below the 2-series range
    make_card("2721", 16, 1),  # above it
    make_card("3600", 13, 1),  # Diners is 14+
    make_card("1800", 16, 1),  # no network starts with 1, 7, 8, 9 or 0
    make_card("7000", 16, 1),
    make_card("9000", 16, 1),
    make_card("4111", 12, 1),  # 12 digits: only Maestro's own prefixes
    make_card("5500", 12, 1),
    grouped(make_card("4", 16, 2), (2, 2, 2, 2, 2, 2, 2, 2), " "),  # pairs: not a card grouping
    grouped(make_card("4", 16, 3), (8, 8), " "),
    grouped(make_card("4", 16, 4), (4, 4, 4, 4), "."),  # dots: a version or an amount
    "4111 1111-1111 1111",  # mixed separators
])
def test_card_negatives_by_network_rules(text: str) -> None:
    assert "credit_card" not in detectors(f"ref {text} ok")


def test_card_followed_by_cvv_or_more_numbers() -> None:
    card = grouped(make_card("4", 16, 5), (4, 4, 4, 4), " ")
    assert found(f"{card} 123") == [("credit_card", card)]
    assert found(f"{card} 12/27 cvc 123") == [("credit_card", card)]
    amex = grouped(make_card("37", 15, 5), (4, 6, 5), " ")
    assert found(f"{amex} 1234") == [("credit_card", amex)]


# --------------------------------------------------------------------------- IBAN

#: The SWIFT IBAN registry (release 101): country → BBAN format (``4a`` four upper-case
#: letters, ``6n`` six digits, ``8c`` eight letters or digits).
REGISTRY: dict[str, str] = {
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
}
ALPHABETS = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def check_digits(country: str, bban: str) -> str:
    return f"{98 - int(''.join(str(int(ch, 36)) for ch in bban + country + '00')) % 97:02d}"


def make_iban(country: str, seed: int = 0) -> str:
    rng = random.Random(f"{country}/{seed}")
    bban = ""
    for count, kind in ((int(f[:-1]), f[-1]) for f in _runs(REGISTRY[country])):
        bban += "".join(rng.choice(ALPHABETS[kind]) for _ in range(count))
    return country + check_digits(country, bban) + bban


def _runs(fmt: str) -> list[str]:
    runs, start = [], 0
    for i, ch in enumerate(fmt):
        if ch.isalpha():
            runs.append(fmt[start : i + 1])
            start = i + 1
    return runs


def spaced(compact: str) -> str:
    """Printed in groups of four (the last one shorter when the length calls for it)."""
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


@pytest.mark.parametrize("country", sorted(REGISTRY))
def test_iban_of_every_registry_country_is_found(country: str) -> None:
    compact = make_iban(country)
    for iban in (compact, spaced(compact), compact.lower(), spaced(compact).lower()):
        for text in (f"IBAN: {iban}", f"IBAN:{iban}.", f"pay to {iban}, thanks", f"({iban})", iban):
            assert found(text) == [("iban", iban)], text


@pytest.mark.parametrize("country", sorted(REGISTRY))
def test_iban_negatives_of_every_registry_country(country: str) -> None:
    compact = make_iban(country, seed=1)
    wrong = compact[:2] + f"{(int(compact[2:4]) + 1) % 100:02d}" + compact[4:]
    texts = [
        wrong, spaced(wrong),  # check digits off by one
        compact[:-1], compact + "7", spaced(compact)[:-1],  # one character short or too many
        "X" + compact, compact + "X", "7" + compact, compact + "7",  # glued to a word or a number
    ]
    if any(ch.isalpha() for ch in compact[4:]):
        texts.append(compact[:4] + compact[4:].lower())  # mixed case: a random token, not an IBAN
    for text in texts:
        assert "iban" not in detectors(text), text


def test_iban_bban_must_have_the_registry_format() -> None:
    # a BBAN with a letter where the registry has digits: the checksum alone would pass
    bban = "37040044053201300A"
    assert "iban" not in detectors("DE" + check_digits("DE", bban) + bban)
    bban = "3704WEST1234567890"  # GB: 4 letters, 14 digits; this is 4 digits first
    assert "iban" not in detectors("GB" + check_digits("GB", bban[:18]) + bban[:18])


@pytest.mark.parametrize("iban", [
    "PT50 0002 0123 1234 5678 9015 4", "HN88 CABF 0000 0000 0002 5000 5469", "DE89 3704 0044 0532 0130 00",
    "GB29 NWBK 6016 1331 9268 19", "SC18 SSCB 1101 0000 0000 0000 1497 USD", "MU17 BOMM 0101 1010 3030 0200 000M UR",
    "NO93 8601 1117 947", "LC55 HEMM 0001 0001 0012 0012 0002 3015",
])
def test_iban_registry_examples(iban: str) -> None:
    assert found(f"IBAN {iban}") == [("iban", iban)]


def test_iban_followed_by_more_groups_is_trimmed() -> None:
    assert found("DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX") == [("iban", "DE89 3704 0044 0532 0130 00")]
    assert found("nl91 abna 0417 1643 00 via abnanl2a") == [("iban", "nl91 abna 0417 1643 00")]


# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize("phone", [
    "(800) 555-0199", "+1 800 555 0199", "800.555.0199", "800-555-0199", "+1 (800) 555-0199", "1-800-555-0199",
    "+18005550199", "+44 20 7946 0958", "+44 (0)20 7946 0958", "+49 30 901820", "+49 (0)30 901820",
    "+33 1 23 45 67 89", "+33 6 12 34 56 78", "+91 98765 43210", "+81 90-1234-5678", "+81 3-1234-5678",
    "+55 11 91234-5678", "+61 4 1234 5678", "+86 138 0013 8000", "+7 (495) 123-45-67", "+39 06 1234 5678",
    "+353 1 234 5678", "+41 44 668 18 00", "+852 2123 4567", "+971 4 123 4567", "+34 612 34 56 78",
    "0044 20 7946 0958", "0049 30 901820", "0033 1 23 45 67 89",
    # national shapes with a trunk prefix
    "020 7946 0958", "07912 345678", "0151 12345678", "030 901820", "030/901820", "0151-12345678",
    "06 12 34 56 78", "01.23.45.67.89", "(030) 901820", "(02) 1234 5678", "0412 345 678", "090-1234-5678",
    "06 12345678",
])
def test_phone_found(phone: str) -> None:
    for text in (f"call me at {phone}, please", f"Tel: {phone}", f"Call {phone}.", f"phone:{phone}\n"):
        assert found(text) == [("phone", phone)], text


def test_phone_with_extension() -> None:
    assert found("800-555-0199 ext. 12") == [("phone", "800-555-0199")]
    assert found("+1 800 555 0199 x12") == [("phone", "+1 800 555 0199")]


@pytest.mark.parametrize("text", [
    "800-555-0199-B", "PN 800-555-0199-B", "SKU-800-555-0199", "INV-2024-555-0199", "order #800-555-0199/2",
    "v1.800.555.0199", "800-555-0199x", "ABC800-555-0199", "12-345-6789-00", "978-3-16-148410-0",
    "ISBN 0-306-40615-2", "Order 800-555-0199", "order #800-555-0199", "Part No. 800-555-0199",
    "invoice 800-555-0199", "SKU 800 555 0199", "ref: 415-555-2671", "P/N 0412 345 678", "version 2.800.555.0199",
    "2024-05-06 10:30:00", "06/05/2024 10:30", "01.02.2024", "2024.01.02", "12:30:45.123456",
    "911-555-0199", "800-911-0199", "123-555-0199", "800-055-0199", "595-555-0199",  # no such area code/exchange
    "+1 234 567", "+12345678", "+999 1234 5678", "+20 000 users", "+30 000 000 in revenue", "+1 800 555",
    "00 1234 5678", "0000 123 456", "0.123 456 789", "price 0 123 456 789",
    "0123456789",  # a bare run: any id
    "06 12 34 56 78 90 12",  # too many digits for a national number
    "800-555-0199.5", "800-555-0199_2",
])
def test_phone_negatives(text: str) -> None:
    assert "phone" not in detectors(text), found(text)


def test_phone_keyword_beats_part_word() -> None:
    assert found("Phone no. 800-555-0199") == [("phone", "800-555-0199")]
    assert found("Tel. Nr.: 030 901820") == [("phone", "030 901820")]


def test_phone_lists() -> None:
    text = "call 415-555-2671 or (415) 555-2672; fax +1 415 555 2673, +44 20 7946 0958"
    assert [v for _, v in found(text)] == ["415-555-2671", "(415) 555-2672", "+1 415 555 2673", "+44 20 7946 0958"]


# --------------------------------------------------------------------------- IPv4


@pytest.mark.parametrize(("text", "ips"), [
    ("hosts 10.0.0.1 10.0.0.2", ["10.0.0.1", "10.0.0.2"]), ("range 10.0.0.1-10.0.0.9", ["10.0.0.1", "10.0.0.9"]),
    ("net 10.0.0.0/8", ["10.0.0.0"]), ("at 10.0.0.1:8080", ["10.0.0.1"]), ("(192.168.1.20)", ["192.168.1.20"]),
])
def test_ipv4_in_lists_ranges_and_urls(text: str, ips: list[str]) -> None:
    assert found(text) == [("ip_address", ip) for ip in ips]


@pytest.mark.parametrize("text", [
    '[assembly: AssemblyVersion("3.5.0.0")]', "FileVersion=1.2.3.4", "--host 0.0.0.0 --port 80",
    "curl http://127.0.0.1:8080/healthz", "999.1.1.1", "1.2.3.4.5",
])
def test_ipv4_negatives(text: str) -> None:
    assert "ip_address" not in detectors(text)


# --------------------------------------------------------------------------- SSN


@pytest.mark.parametrize("text", ["SSN: 078051120", "ssn 219099999", "Social Security Number 123456789",
                                  "SSN#078051120", "social security no. 123-45-6789", '{"ssn": "078051120"}',
                                  "ssn=078051120", "SSN is 078051120"])
def test_ssn_with_a_keyword(text: str) -> None:
    assert detectors(text) == {"us_ssn"}


@pytest.mark.parametrize("text", ["order 078051120", "078051120", "SSN: 000123456", "SSN 1234567890"])
def test_ssn_bare_needs_a_keyword_and_a_valid_number(text: str) -> None:
    assert "us_ssn" not in detectors(text)


# --------------------------------------------------------------------------- properties

#: Text made of what numbers are made of: digit groups, separators, letters, labels, and
#: valid numbers of every kind (which the pieces around them may extend or glue).
NUMBERISH = st.lists(st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.sampled_from([" ", "-", ".", "(", ")", "+", "/", ": ", ", ", "x", "DE", "de", "\\n", "SSN ", "order "]),
    st.builds(make_card, st.sampled_from(["4", "51", "2221", "37", "36", "3530", "6011", "62", "6759"]),
              st.sampled_from([12, 14, 15, 16, 19]), st.integers(0, 999)),
    st.builds(make_iban, st.sampled_from(sorted(REGISTRY)), st.integers(0, 999)),
    st.sampled_from(["415-555-2671", "(415) 555-2671", "+44 20 7946 0958", "030 901820", "078-05-1120",
                     "10.0.0.1", "0044 20 7946 0958", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00"]),
), max_size=30).map("".join)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@settings(derandomize=True, max_examples=600, deadline=None)
@given(text=NUMBERISH)
def test_property_every_finding_passes_its_checks(text: str) -> None:
    """Whatever the text, every number found holds: a card passes Luhn and has 12-19
    digits, an IBAN passes mod 97 with its registry length, an SSN has a valid area, an
    address valid octets, a phone 8-15 digits; and no finding is glued to a digit."""
    for f in SCANNER.scan_texts([("t", text)]).findings:
        value = text[f.start : f.end]
        digits = "".join(ch for ch in value if ch.isdigit())
        assert f.start == 0 or not text[f.start - 1].isdigit(), (f, text)
        assert f.end == len(text) or not text[f.end].isdigit(), (f, text)
        if f.detector == "credit_card":
            assert 12 <= len(digits) <= 19 and luhn_ok(digits), value
        elif f.detector == "iban":
            compact = value.replace(" ", "").upper()
            assert len(compact) == 4 + sum(int(n) for n in re.findall(r"\d+", REGISTRY[compact[:2]]))
            assert int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97 == 1
        elif f.detector == "us_ssn":
            assert len(digits) == 9 and digits[:3] not in ("000", "666") and digits[0] != "9", value
        elif f.detector == "ip_address" and "." in value:
            assert all(int(part) <= 255 for part in value.split(".")), value
        elif f.detector == "phone":  # E.164: 8-15 digits (not counting "00" or a "(0)" trunk prefix)
            assert 8 <= len(digits) - 2 * value.startswith("00") - ("(0)" in value) <= 15, value


@settings(derandomize=True, max_examples=200, deadline=None)
@given(left=st.text(alphabet="abc XYZ,.;:!?'\"\n", max_size=40), right=st.text(alphabet="abc XYZ,.;:!?'\"\n", max_size=40),
       country=st.sampled_from(sorted(REGISTRY)), seed=st.integers(0, 10**6), spacing=st.booleans(),
       lower=st.booleans())
def test_property_ibans_in_prose_are_found(left: str, right: str, country: str, seed: int, spacing: bool,
                                          lower: bool) -> None:
    iban = make_iban(country, seed)
    iban = spaced(iban) if spacing else iban
    iban = iban.lower() if lower else iban
    text = f"{left} {iban} {right}"
    assert ("iban", iban) in found(text)
