"""``policies.sensitivity``: every built-in detector (true positives and tricky negatives),
text locations for every endpoint, levels and floors, custom detectors, redaction, and
hypothesis properties. Pure unit tests.

Key-like literals are assembled from pieces so secret scanners do not flag this file.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policies.models import BUILTIN_DETECTORS, CustomDetector, SensitivitySpec
from policies.sensitivity import _GROUPS, _PRIORITY, Finding, Scan, Scanner, iter_texts, redact

SCANNER = Scanner(SensitivitySpec())


def found(text: str, scanner: Scanner = SCANNER) -> list[tuple[str, str]]:
    """(detector, matched text) for every finding in ``text``."""
    return [(f.detector, text[f.start : f.end]) for f in scanner.scan_texts([("t", text)]).findings]


def detectors(text: str) -> set[str]:
    return {name for name, _ in found(text)}


def chat(*messages: object) -> dict[str, object]:
    return {"model": "m", "messages": list(messages)}


def b64(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def luhn_complete(partial: str) -> str:
    """``partial`` plus the check digit that makes it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


# --------------------------------------------------------------------------- credit_card


@pytest.mark.parametrize("card", [
    "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444",
    "378282246310005", "3782 822463 10005", "6011111111111117", "3530111333300000",
    "2223003122003222", "4222222222222",
])
def test_card_found(card: str) -> None:
    assert found(f"pay with {card}, thanks") == [("credit_card", card)]


def test_card_followed_by_expiry_or_cvv() -> None:
    assert found("card 4111111111111111 12/26") == [("credit_card", "4111111111111111")]
    assert found("card 4111 1111 1111 1111 123 ok") == [("credit_card", "4111 1111 1111 1111")]


@pytest.mark.parametrize("text", [
    "4111111111111112",  # Luhn fails
    "4111 1111 1111 1112",
    "44444444444444444",  # Luhn-valid but one repeated digit
    "41111111111111111111",  # 20 digits: inside a longer run
    "9941111111111111111111",
    "ID4111111111111111",  # glued to a word
    "x = 0.4111111111111111",  # decimals
    "4111 1111-1111 1111",  # mixed separators
    "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6",  # a list of digits
    "4111.1111.1111.1111",
])
def test_card_negatives(text: str) -> None:
    assert "credit_card" not in detectors(text)


def test_card_needs_a_network_prefix() -> None:
    stamp = next(s for s in (luhn_complete(str(170000000000 + i)) for i in range(20)) if s[0] == "1")
    assert len(stamp) == 13
    assert detectors(f"created_at {stamp}") == set()  # a millisecond timestamp


# --------------------------------------------------------------------------- iban


@pytest.mark.parametrize("iban", [
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606", "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456", "NL91ABNA0417164300", "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7", "AT61 1904 3002 3457 3201", "PL61 1090 1014 0000 0712 1981 2874",
])
def test_iban_found(iban: str) -> None:
    assert found(f"IBAN: {iban}. Thanks") == [("iban", iban)]


def test_iban_trimmed_to_country_length() -> None:
    assert found("DE89 3704 0044 0532 0130 00 ABCD") == [("iban", "DE89 3704 0044 0532 0130 00")]


@pytest.mark.parametrize("text", [
    "DE88 3704 0044 0532 0130 00",  # wrong check digits
    "GB82 WEST 1234 5698 7654 33",
    "DE89 3704 0044 0532 0130 0",  # DE is 22 long
    "DE8937040044053201300012",
    "XX89370400440532013000",  # no such country
    "ABDE89370400440532013000",  # glued to letters
    "De89 3704 0044 0532 0130 00",  # mixed case (lower case alone is an IBAN: tests/policies/test_numbers.py)
])
def test_iban_negatives(text: str) -> None:
    assert "iban" not in detectors(text)


# --------------------------------------------------------------------------- us_ssn


@pytest.mark.parametrize("ssn", ["078-05-1120", "219-09-9999", "123 45 6789", "899-12-3456"])
def test_ssn_found(ssn: str) -> None:
    assert found(f"SSN: {ssn}.") == [("us_ssn", ssn)]


@pytest.mark.parametrize("text", [
    "000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456",  # invalid areas
    "123-00-4567", "123-45-0000",  # group 00, serial 0000
    "123-45 6789", "1123-45-6789", "123-45-67890", "9-123-45-6789", "123-45-6789-1",
])
def test_ssn_negatives(text: str) -> None:
    assert "us_ssn" not in detectors(text)


# --------------------------------------------------------------------------- email


@pytest.mark.parametrize("email", ["jane.doe@example.com", "J.Doe+tag@mail.example.co.uk", "ops_team@corp-x.io"])
def test_email_found(email: str) -> None:
    assert found(f"write to <{email}>.") == [("email", email)]
    assert found(f"mailto:{email}") == [("email", email)]


@pytest.mark.parametrize("text", ["user@localhost", "ping @handle", "foo@bar", "a@b.c", "@decorator.name", "x@1.2"])
def test_email_negatives(text: str) -> None:
    assert "email" not in detectors(text)


# --------------------------------------------------------------------------- phone


@pytest.mark.parametrize("phone", [
    "(415) 555-2671", "415-555-2671", "415.555.2671", "415 555 2671", "+1 415 555 2671",
    "+1-415-555-2671", "1-800-555-0199", "+44 20 7946 0958", "+44 (0)20 7946 0958", "+4930123456",
    "+49 30 12345678",
])
def test_phone_found(phone: str) -> None:
    assert found(f"call me at {phone}, please") == [("phone", phone)]


@pytest.mark.parametrize("text", [
    "2024-01-15", "on 2024-01-15 at 10:30:00", "version 1.2.3", "12345678901", "Order 2024-555-1234",
    "555-1234", "(123) 456-7890", "123-555-1234", "3.14159265", "+5 points", "C++ 17", "+100 votes",
    "415-555-26710", "415-555-2671-44", "1.415.555.2671.5", "x+4930123456", "+1234567890123456",
])
def test_phone_negatives(text: str) -> None:
    assert "phone" not in detectors(text)


def test_card_is_not_a_phone() -> None:
    assert detectors("4111 1111 1111 1111") == {"credit_card"}


# --------------------------------------------------------------------------- ip_address


@pytest.mark.parametrize("ip", [
    "192.168.1.10", "10.0.0.1", "8.8.8.8", "255.255.255.255", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "2001:db8::8a2e:370:7334", "fe80::1", "::ffff:10.0.0.1",
])
def test_ip_found(ip: str) -> None:
    assert found(f"host {ip}.") == [("ip_address", ip)]
    assert found(f"[{ip}]:8080") == [("ip_address", ip)]


@pytest.mark.parametrize("text", [
    "256.1.1.1", "1.2.3", "v1.2.3.4", "version 1.2.3.4", "Version: 1.2.3.4", "section 2.1.3.4",
    "1.2.3.4.5", "01.02.03.04", "3.14159", "std::vector<int>", "12:30:45", "00:1A:2B:3C:4D:5E",
    "a[1::2]", "face::bad", "2001:db8:::1",
])
def test_ip_negatives(text: str) -> None:
    assert "ip_address" not in detectors(text)


# --------------------------------------------------------------------------- api_key, private_key, jwt

AWS = "AKIA" + "IOSFODNN7EXAMPLE"
KEYS = [
    AWS,
    "ASIA" + "Y34FZKBOKMUTVV7A",
    "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2,
    "sk-" + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0",
    "sk-" + "ant-api03-" + "Zx9_Yw8-Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7" * 2 + "AA",
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "AIza" + "SyD-1234567890abcdefghijklmnopqrs_t",
    "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "rk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc",
]


@pytest.mark.parametrize("key", KEYS)
def test_api_key_found(key: str) -> None:
    assert found(f"key={key}\n") == [("api_key", key)]
    assert found(f'{{"token": "{key}"}}') == [("api_key", key)]


def test_bearer_token() -> None:
    token = "a1b2c3d4e5f6" + "g7h8i9j0k1l2m3"
    assert found(f"Authorization: Bearer {token}.") == [("api_key", token)]
    assert "api_key" not in detectors("a Bearer token is sent in the Authorization header")


@pytest.mark.parametrize("text", [
    "123e4567-e89b-12d3-a456-426614174000",  # UUID
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # SHA-256
    "pip install sk-learn", "a risk-assessment-framework-for-all-teams", "sk-this-is-not-a-key-at-all-really",
    "AKIA" + "IOSFODNN7EXAMPL", "akia" + "iosfodnn7example", "xAKIA" + "IOSFODNN7EXAMPLE",
    "pk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc", "ghp_" + "short", "xoxb-" + "not-a-token-here",
    "task-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
])
def test_api_key_negatives(text: str) -> None:
    assert "api_key" not in detectors(text)


@pytest.mark.parametrize("kind", ["", "RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED "])
def test_private_key_found(kind: str) -> None:
    pem = (f"-----BEGIN {kind}" + "PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1b2c3d4\nZm9vYmFyYmF6cXV4\n"
           f"-----END {kind}" + "PRIVATE KEY-----")
    assert found(f"here:\n{pem}\nthanks") == [("private_key", pem)]


def test_private_key_without_end_covers_the_body() -> None:
    text = "-----BEGIN " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1b2c3d4\nZm9vYmFyYmF6cXV4\n\nthat is all"
    [(name, match)] = found(text)
    assert name == "private_key" and match.endswith("Zm9vYmFyYmF6cXV4")


@pytest.mark.parametrize("text", ["-----BEGIN PUBLIC KEY-----\nMIIB", "-----BEGIN CERTIFICATE-----", "BEGIN PRIVATE KEY"])
def test_private_key_negatives(text: str) -> None:
    assert "private_key" not in detectors(text)


JWT = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64({"sub": "1234567890", "name": "Jane"}) + ".c2lnbmF0dXJl_-x"


def test_jwt_found() -> None:
    assert found(f"token {JWT} end") == [("jwt", JWT)]
    assert found(f"Authorization: Bearer {JWT}") == [("jwt", JWT)]  # not also an api_key


@pytest.mark.parametrize("text", [
    b64({"typ": "JWT"}) + "." + b64({"sub": "1"}) + ".sig",  # header without alg
    "eyJub3QganNvbg" + "." + b64({"sub": "1"}) + ".sig",  # header is not JSON
    "eyJhbGciOiJIUzI1NiJ9",  # one segment
    "x" + JWT,
])
def test_jwt_negatives(text: str) -> None:
    assert "jwt" not in detectors(text)


def test_registry_covers_every_builtin() -> None:
    assert set(_PRIORITY) == set(BUILTIN_DETECTORS)
    assert set().union(*(names for _, names in _GROUPS)) == set(BUILTIN_DETECTORS)


def test_finding_never_holds_the_text() -> None:
    assert [f.name for f in dataclasses.fields(Finding)] == ["detector", "level", "location", "start", "end"]
    scan = SCANNER.scan("chat", chat({"role": "user", "content": "jane@example.com"}))
    assert "jane" not in repr(scan)


# --------------------------------------------------------------------------- locations


def test_iter_texts_chat_locations() -> None:
    body = chat(
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": "dev"},
        {"role": "user", "name": "a@b.com", "content": [
            {"type": "text", "text": "one"}, {"type": "image_url", "image_url": {"url": "x@y.com"}},
            {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "2", "type": "function", "function": {"name": "g", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": "result"},
        {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
    )
    # every string sent except the allowlist (top-level model, API-word roles and types);
    # more places in tests/policies/test_scan_coverage.py
    assert list(iter_texts("chat", body)) == [
        ("messages[0].content", "sys"),
        ("messages[1].content", "dev"),
        ("messages[2].name", "a@b.com"),
        ("messages[2].content[0].text", "one"),
        ("messages[2].content[1].image_url.url", "x@y.com"),
        ("messages[2].content[2].text", "two"),
        ("messages[3].tool_calls[0].id", "1"),
        ("messages[3].tool_calls[0].function.name", "f"),
        ("messages[3].tool_calls[0].function.arguments", "{}"),
        ("messages[3].tool_calls[1].id", "2"),
        ("messages[3].tool_calls[1].function.name", "g"),
        ("messages[3].tool_calls[1].function.arguments", '{"a": 1}'),
        ("messages[4].tool_call_id", "1"),
        ("messages[4].content", "result"),
        ("messages[5].content", ""),
        ("messages[5].function_call.name", "f"),
        ("messages[5].function_call.arguments", "{}"),
    ]


def test_iter_texts_completions_and_embeddings() -> None:
    assert list(iter_texts("completions", {"prompt": "p"})) == [("prompt", "p")]
    assert list(iter_texts("completions", {"prompt": ["a", [1, 2], "b"], "suffix": "s"})) == [
        ("prompt[0]", "a"), ("prompt[2]", "b"), ("suffix", "s")]
    assert list(iter_texts("completions", {"prompt": [1, 2, 3]})) == []
    assert list(iter_texts("embeddings", {"input": "x"})) == [("input", "x")]
    assert list(iter_texts("embeddings", {"input": ["x", "y"]})) == [("input[0]", "x"), ("input[1]", "y")]
    assert list(iter_texts("embeddings", {"input": [[1, 2], [3]]})) == []
    assert list(iter_texts("unknown", {"prompt": "p"})) == [("prompt", "p")]  # the walk needs no endpoint


def test_findings_carry_locations() -> None:
    body = chat(
        {"role": "system", "content": "admin is ops@example.com"},
        {"role": "user", "content": [{"type": "text", "text": "my ip 10.1.2.3"}]},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"ssn": "078-05-1120"}'}}]},
        {"role": "tool", "content": "card 4111111111111111"},
    )
    scan = SCANNER.scan("chat", body)
    assert [(f.detector, f.location) for f in scan.findings] == [
        ("email", "messages[0].content"),
        ("ip_address", "messages[1].content[0].text"),
        ("us_ssn", "messages[2].tool_calls[0].function.arguments"),
        ("credit_card", "messages[3].content"),
    ]
    texts = dict(iter_texts("chat", body))
    assert [texts[f.location][f.start : f.end] for f in scan.findings] == [
        "ops@example.com", "10.1.2.3", "078-05-1120", "4111111111111111"]
    embed = SCANNER.scan("embeddings", {"input": ["fine", "mail x.y@example.org"]})
    assert [(f.location, f.start) for f in embed.findings] == [("input[1]", 5)]


MALFORMED: list[object] = [
    None, [], "text", 42, {}, {"messages": None}, {"messages": "hello"}, {"messages": {"a": 1}},
    {"messages": [None, 1, "s", [], {"content": 5}, {"content": {"text": "x"}},
                  {"content": [None, 1, "s", {"type": "text"}, {"type": "text", "text": 5}, {"text": "no type"}]},
                  {"tool_calls": "x"}, {"tool_calls": [None, 1, {"function": None}, {"function": "f"},
                                                       {"function": {"arguments": {"a": 1}}}]},
                  {"function_call": "x"}, {"function_call": {"arguments": None}}]},
    {"prompt": None}, {"prompt": [None, 1.5, [1, [2]]]}, {"input": 5}, {"input": {"a": "b"}},
]


@pytest.mark.parametrize("body", MALFORMED)
@pytest.mark.parametrize("endpoint", ["chat", "completions", "embeddings", "other"])
def test_malformed_bodies_never_raise(endpoint: str, body: object) -> None:
    scan = SCANNER.scan(endpoint, body)  # type: ignore[arg-type]
    assert scan == Scan("public", ())
    texts = list(iter_texts(endpoint, body))  # type: ignore[arg-type]
    assert texts == [] or isinstance(body, dict)  # odd shapes are still walked: every string is text


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "content", "type", "text", "tool_calls", "function", "arguments",
                         "prompt", "input", "role", "function_call", "suffix"]), children, max_size=4),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(body=JSONISH, endpoint=st.sampled_from(["chat", "completions", "embeddings"]))
def test_any_json_shape_never_raises(body: object, endpoint: str) -> None:
    scan = SCANNER.scan(endpoint, body)  # type: ignore[arg-type]
    if isinstance(body, dict):
        redact(endpoint, body, scan, BUILTIN_DETECTORS)


# --------------------------------------------------------------------------- levels


def test_level_is_the_highest_finding() -> None:
    assert SCANNER.scan_texts([("a", "host 10.0.0.1")]).level == "internal"
    assert SCANNER.scan_texts([("a", "host 10.0.0.1"), ("b", "a@example.com")]).level == "confidential"
    assert SCANNER.scan_texts([("a", "a@example.com 4111111111111111")]).level == "restricted"
    assert SCANNER.scan_texts([("a", "nothing here")]).level == "public"
    assert SCANNER.scan("chat", chat({"role": "user", "content": "hi"})).detectors == frozenset()


def test_default_is_the_floor() -> None:
    scanner = Scanner(SensitivitySpec(default="confidential"))
    assert scanner.scan_texts([("a", "nothing")]).level == "confidential"
    assert scanner.scan_texts([("a", "host 10.0.0.1")]).level == "confidential"
    assert scanner.scan_texts([("a", "4111111111111111")]).level == "restricted"
    assert scanner.scan("chat", {}).level == "confidential"


def test_client_floor_raises_never_lowers() -> None:
    body = chat({"role": "user", "content": "mail a@example.com"})
    assert SCANNER.scan("chat", body).level == "confidential"
    assert SCANNER.scan("chat", body, floor="restricted").level == "restricted"
    assert SCANNER.scan("chat", body, floor="public").level == "confidential"
    assert SCANNER.scan("chat", body, floor=" Internal ").level == "confidential"
    assert SCANNER.scan("chat", chat({"role": "user", "content": "hi"}), floor="internal").level == "internal"
    with pytest.raises(ValueError, match="unknown sensitivity level"):
        SCANNER.scan("chat", body, floor="secret")


def test_detector_levels_and_disabled_detectors() -> None:
    off = {name: "off" for name in BUILTIN_DETECTORS}
    scanner = Scanner(SensitivitySpec(detectors={**off, "email": "internal", "ip_address": "restricted"}))
    text = "a@example.com 10.0.0.1 4111111111111111 078-05-1120 " + AWS
    scan = scanner.scan_texts([("t", text)])
    assert [(f.detector, f.level) for f in scan.findings] == [("email", "internal"), ("ip_address", "restricted")]
    assert scan.level == "restricted"
    assert Scanner(SensitivitySpec(detectors=off)).scan_texts([("t", text)]) == Scan("public", ())
    only_keys = Scanner(SensitivitySpec(detectors={**off, "api_key": "restricted"}))
    pem = "-----BEGIN " + "PRIVATE KEY-----\nabc\n-----END " + "PRIVATE KEY-----"
    assert found(pem, only_keys) == []
    # naming one detector only changes that one: the others keep their default levels
    merged = Scanner(SensitivitySpec(detectors={"email": "internal"}))
    assert {f.detector for f in merged.scan_texts([("t", text)]).findings} >= {"email", "ip_address", "api_key"}


# --------------------------------------------------------------------------- custom detectors


def custom(**kwargs: object) -> Scanner:
    return Scanner(SensitivitySpec(detectors={}, custom=[CustomDetector(**kwargs)]))  # type: ignore[arg-type]


def test_custom_regex_case_handling() -> None:
    insensitive = custom(name="project", level="confidential", regex=r"PRJ-\d{4}")
    assert found("see prj-1234 and PRJ-9999", insensitive) == [("project", "prj-1234"), ("project", "PRJ-9999")]
    sensitive = custom(name="project", level="confidential", regex=r"PRJ-\d{4}", case_sensitive=True)
    assert found("see prj-1234 and PRJ-9999", sensitive) == [("project", "PRJ-9999")]
    assert insensitive.scan_texts([("t", "PRJ-0001")]).level == "confidential"


@pytest.mark.parametrize("regex", [r"x*", r"a?", r"(?:foo)?", r"x*|y"])
def test_custom_regex_that_matches_the_empty_string_is_rejected(regex: str) -> None:
    with pytest.raises(ValidationError, match="matches the empty string"):
        custom(name="empty", level="restricted", regex=regex)


def test_custom_regex_empty_matches_are_ignored() -> None:
    """``\\b`` matches nothing at all in an empty text, yet empties between words: none is a finding."""
    assert found("abc def", custom(name="edge", level="restricted", regex=r"\bx*")) == []


def test_custom_keywords_whole_words() -> None:
    scanner = custom(name="codename", level="restricted", keywords=["Bluebird", "Project Falcon"])
    text = "BLUEBIRD's plan; bluebirds; project falcon; Project Falconry; xbluebird"
    assert found(text, scanner) == [("codename", "BLUEBIRD"), ("codename", "project falcon")]
    assert scanner.scan_texts([("t", "a bluebird")]).level == "restricted"


def test_custom_keywords_case_sensitive_and_unicode() -> None:
    exact = custom(name="codename", level="internal", keywords=["Falcon"], case_sensitive=True)
    assert found("falcon Falcon FALCON", exact) == [("codename", "Falcon")]
    names = custom(name="person", level="confidential", keywords=["Müller", "C++"])
    assert found("MÜLLER wrote C++ code", names) == [("person", "MÜLLER"), ("person", "C++")]
    assert found("Müllerstraße", names) == []


def test_custom_and_builtin_together() -> None:
    scanner = Scanner(SensitivitySpec(custom=[CustomDetector(name="ticket", level="internal", regex=r"T-\d+")]))
    scan = scanner.scan_texts([("t", "T-42 from a@example.com")])
    assert scan.detectors == {"ticket", "email"}
    assert scan.level == "confidential"


# --------------------------------------------------------------------------- redaction


def test_redact_placeholders_and_numbering() -> None:
    body = chat(
        {"role": "system", "content": "Escalate to Ops@Example.com or 415-555-2671."},
        {"role": "user", "content": "I am ann@example.org (ops@example.com in cc), call (415) 555-2671"},
    )
    scan = SCANNER.scan("chat", body)
    out = redact("chat", body, scan, {"email", "phone"})
    assert out["messages"] == [
        {"role": "system", "content": "Escalate to <EMAIL_1> or <PHONE_1>."},
        {"role": "user", "content": "I am <EMAIL_2> (<EMAIL_1> in cc), call <PHONE_1>"},
    ]
    assert out["model"] == "m"


def test_redact_does_not_mutate_and_copies_only_changed_paths() -> None:
    untouched = {"role": "user", "content": [{"type": "text", "text": "nothing here"}]}
    body = chat(
        {"role": "system", "content": "be brief"},
        untouched,
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}},
                                     {"type": "text", "text": "card 4111 1111 1111 1111, mail a@example.com"}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"card": "4111111111111111", "note": "ok"})}}]},
    )
    before = copy.deepcopy(body)
    scan = SCANNER.scan("chat", body)
    out = redact("chat", body, scan, ["credit_card"])
    assert body == before
    messages = out["messages"]
    assert isinstance(messages, list)
    assert messages is not body["messages"]
    assert messages[0] is body["messages"][0] and messages[1] is untouched  # type: ignore[index]
    assert messages[2]["content"][0] is body["messages"][2]["content"][0]  # type: ignore[index]
    assert messages[2]["content"][1]["text"] == "card <CREDIT_CARD_1>, mail a@example.com"
    args = json.loads(messages[3]["tool_calls"][0]["function"]["arguments"])
    assert args == {"card": "<CREDIT_CARD_1>", "note": "ok"}  # same number as "4111 1111 1111 1111"
    assert messages[3]["tool_calls"][0]["function"]["name"] == "lookup"


def test_redact_only_listed_detectors_and_custom_names() -> None:
    scanner = Scanner(SensitivitySpec(custom=[CustomDetector(name="codename", level="internal", keywords=["bluebird"])]))
    body = {"prompt": ["bluebird at 10.0.0.1 from a@example.com", "and bluebird"]}
    scan = scanner.scan("completions", body)
    out = redact("completions", body, scan, {"codename", "ip_address"})
    assert out == {"prompt": ["<CODENAME_1> at <IP_ADDRESS_1> from a@example.com", "and <CODENAME_1>"]}
    assert redact("completions", body, scan, set()) == body
    assert redact("completions", body, scan, set()) is not body


def test_redact_ignores_findings_that_do_not_fit() -> None:
    body = {"input": "short"}
    stale = Scan("confidential", (Finding("email", "confidential", "input", 2, 40),
                                  Finding("email", "confidential", "input[3]", 0, 1)))
    assert redact("embeddings", body, stale, {"email"}) == body


def test_redact_overlapping_custom_and_builtin() -> None:
    scanner = Scanner(SensitivitySpec(custom=[CustomDetector(name="corp_mail", level="internal", regex=r"@example\.com")]))
    body = {"input": "x a@example.com y"}
    out = redact("embeddings", body, scanner.scan("embeddings", body), {"email", "corp_mail"})
    assert out == {"input": "x <EMAIL_1> y"}


# --------------------------------------------------------------------------- properties

PROSE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()\n", max_size=60)


#: (IIN prefix, lengths) of card networks: Visa, Mastercard, Amex, Diners, JCB, Discover,
#: UnionPay, Maestro (tests/policies/test_numbers.py has every network and grouping).
CARD_NETWORKS = (("4", (13, 16, 19)), ("51", (16,)), ("2720", (16,)), ("37", (15,)), ("36", (14,)),
                 ("3530", (16, 19)), ("6011", (16, 19)), ("62", (16, 17, 18, 19)), ("6759", (12, 15, 19)))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, lengths = draw(st.sampled_from(CARD_NETWORKS))
    length = draw(st.sampled_from(lengths))
    body = prefix + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1,
                      max_size=length - len(prefix) - 1)))
    number = luhn_complete(body)
    if len(set(number)) == 1:
        number = number[:-2] + ("1" if number[-2] != "1" else "2") + number[-1]
        number = luhn_complete(number[:-1])
    if length in (15, 16, 19) and draw(st.booleans()):
        sep = draw(st.sampled_from(" -"))
        number = sep.join(number[i : i + 4] for i in range(0, length, 4))
    return number


@settings(derandomize=True, max_examples=200, deadline=None)
@given(left=PROSE, card=card_numbers(), right=PROSE)
def test_property_valid_cards_are_always_found(left: str, card: str, right: str) -> None:
    text = f"{left} {card} {right}"
    assert ("credit_card", card) in found(text)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,;:!?'\"-_+()/\n", max_size=300))
def test_property_plain_lowercase_text_has_no_findings(text: str) -> None:
    assert SCANNER.scan_texts([("t", text)]).findings == ()


# --------------------------------------------------------------------------- adversarial inputs


@pytest.mark.parametrize("text", [
    "eyJ" * 30000 + ".eyJ" + "J",
    "1 " * 50000,
    "1." * 50000,
    "12:" * 30000,
    "a@" * 50000,
    "sk-" * 30000,
    "4111111111111111 " * 5000,
    "a@example.com " * 5000,
])
def test_adversarial_inputs_stay_linear(text: str) -> None:
    start = time.perf_counter()
    SCANNER.scan_texts([("t", text)])
    assert time.perf_counter() - start < 1.0


def test_allowed_literals_are_not_findings_but_other_values_of_their_kind_are() -> None:
    """An agent's boilerplate (Claude Code's co-author address) must not lift a plain session,
    without opening a hole: only the exact literal is ignored."""
    scanner = Scanner(SensitivitySpec(allow=["noreply@anthropic.com"]))
    assert scanner.scan_texts([("t", "Co-Authored-By: Claude Code <noreply@anthropic.com>")]).level == "public"
    assert scanner.scan_texts([("t", "Co-Authored-By: Claude <NoReply@Anthropic.com>")]).level == "public"
    for text in ("write to alice@anthropic.com", "noreply@anthropic.com.evil.example", "xnoreply@anthropic.com",
                 "noreply@anthropic.com and bob@example.org"):
        scan = scanner.scan_texts([("t", text)])
        assert scan.level == "confidential", text
        assert [f.detector for f in scan.findings] == ["email"], text
    custom = Scanner(SensitivitySpec(detectors={}, allow=["OPS-0000"],
                                     custom=[CustomDetector(name="ticket", level="internal", regex=r"OPS-\d+")]))
    assert custom.scan_texts([("t", "see OPS-0000")]).level == "public"
    assert custom.scan_texts([("t", "see OPS-1234")]).level == "internal"
