"""``policies.sensitivity`` under hostile input: the scan stays linear in the text.

Each shape in ``SHAPES`` repeats one detector's trigger (a prefix, a separator, a
near miss) to ``size`` characters: the inputs a regex backtracks on, a detector
re-scans from every hit on, or overlap resolution compares all pairs on. Two checks:

* a generous bound per MB (``MAX_S_PER_MB``) at ``SIZE`` (256 KB by default; set
  ``SWITCHYARD_ADVERSARIAL_KB=1024`` for the full 1 MB run), so a slow 2-core CI
  machine never flakes while a quadratic path (seconds to minutes) always fails; the
  shapes made of real findings (``DENSE``) are bounded per finding instead;
* linearity itself: 4x the input may cost at most ~8x the time (quadratic is 16x).

The same for policies' custom regexes (on RE2): what it cannot run is rejected at load
(naming the detector); patterns that backtrack on the stdlib engine stay linear.

CPU time (``time.process_time``), best of a few runs, no sleeps. ``bench/scanner.py``
runs the same shapes at 1 MB and prints ms per MB. Key-like literals are assembled
from pieces so secret scanners do not flag this file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from policies.models import CustomDetector, SensitivitySpec
from policies.sensitivity import Scanner

KB = 1024
SIZE = int(os.environ.get("SWITCHYARD_ADVERSARIAL_KB", "256")) * KB
MAX_S_PER_MB = 1.5
#: Shapes in ``DENSE`` are bounded per finding instead (a phone every 16 characters is 65k
#: findings per MB, each a ``Finding`` to build and resolve against its neighbours).
MAX_S_PER_FINDING = 100e-6  # ~4-15 µs on an idle 2-core VM; CI machines are shared
#: 4x the input may cost this many times the time (linear: ~4; quadratic: 16).
MAX_RATIO = 8.0
#: Absolute slack for the ratio (timer noise on runs of a millisecond or two).
SLACK_S = 0.005

SCANNER = Scanner(SensitivitySpec())


def _repeat(unit: str) -> Callable[[int], str]:
    """``unit`` repeated to exactly ``size`` characters."""
    return lambda size: (unit * (size // len(unit) + 1))[:size]


def _wrapped(head: str, unit: str, tail: str) -> Callable[[int], str]:
    r"""``head`` + whole ``unit``\ s + ``tail``, left-padded with spaces to ``size`` characters."""

    def build(size: int) -> str:
        text = head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail
        return " " * (size - len(text)) + text

    return build


AKIA = "AK" + "IA"
GHP = "gh" + "p_"
LIVE = "k_" + "live_"
PEM = "-----BEGIN " + "PRIVATE KEY-----"

#: name → builder(size) of a text of ``size`` characters.
SHAPES: dict[str, Callable[[int], str]] = {
    # numbers: one long cluster of digit groups (cards, SSNs, phones, IBANs, IPv4)
    "digit_groups": _repeat("1234 "),
    "card_runs_space": _repeat("4111 1111 1111 1111 "),
    "card_runs_dash": _repeat("4111-1111-1111-1111-"),
    "card_runs_glued": _repeat("4111111111111111 "),
    "near_miss_luhn": _repeat("4111111111111112 "),
    "digit_run": _repeat("4"),
    "digits_mixed_seps": _repeat("1 -1.2(3)4 -"),
    "ssn_dash": _repeat("123-45-6789-"),
    "ssn_space": _repeat("123 45 6789 "),
    "phone_nanp": _repeat("(415) 555-2671 "),
    "phone_dash_chain": _repeat("800-555-0199-"),
    "phone_plus": _repeat("+1 415 555 2671 "),
    "phone_plus_digits": _wrapped("+", "1 ", ""),
    "iban_spaced": _repeat("DE00 "),
    "iban_glued": _repeat("DE89370400440532013000"),
    "iban_groups": _wrapped("DE89 ", "3704 ", ""),
    "ipv4_run": _repeat("1.1.1.1."),
    "ipv4_dots": _repeat("1."),
    # addresses and hex
    "ipv6_colons": _repeat(":"),
    "ipv6_groups": _repeat("1:"),
    "ipv6_double": _repeat("::1:"),
    "hex_colon_run": _repeat("de:ad:be:ef:"),
    # e-mail
    "email_at": _repeat("a@"),
    "email_at_dots": _repeat("@."),
    "email_labels": _wrapped("x@", "a.", "1"),
    "email_long_label": _wrapped("x@", "a-", "1"),
    "email_many_domains": _repeat("a@b.c"),
    "email_domain_api_keys": _wrapped("x@", AKIA + "IOSFODNN7EXAMPL1.", "com"),
    "email_domain_sk_keys": _wrapped("x@", "s" + "k-aB1cD2eF3gH4iJ5kL6mN7.", "com"),
    "email_domain_ipv4": _wrapped("x@", "10.1.2.3.", "com"),
    # keys and tokens
    "pem_begin_lines": _repeat("a: " + PEM + "\n"),
    "pem_begin_glued": _repeat(PEM),
    "pem_body_no_end": _wrapped(PEM + "\n", "MIIEvQIBADANBgkqhkiG\n", ""),
    "pem_end_lines": _repeat("-----END " + "PRIVATE KEY-----\n"),
    "dashes": _repeat("-"),
    "sk_dash": _repeat("sk-"),
    "sk_long_token": _wrapped("sk-", "aB1-", ""),
    "xox_prefix": _repeat("xoxb-1-"),
    "jwt_eyj": _repeat("eyJ"),
    "jwt_dot_eyj": _repeat(".eyJ"),
    "jwt_segments": _repeat("eyJhbGciOiJIUzI1NiJ9.eyJ"),
    "aws_prefix": _repeat(AKIA),
    "aws_keys_glued": _repeat(AKIA + "IOSFODNN7EXAMPLE"),
    "google_prefix": _repeat("AI" + "za"),
    "github_prefix": _repeat(GHP),
    "github_keys_glued": _repeat(GHP + "a" * 36),
    "stripe_prefix": _repeat("s" + LIVE),
    "stripe_k_live": _repeat(LIVE),
    "bearer_prefix": _repeat("Bearer "),
    "bearer_long_token": _wrapped("Bearer ", "a1.", ""),
    # text shapes
    "long_token_lower": _repeat("a"),
    "long_token_base64": _repeat("Ab1+/"),
    "nested_quotes": _repeat("\"'\\\"{\"a\":\"[`"),
    "json_escapes": _repeat("\\n\\\"1234\\u0041"),
    "unicode_digits_arabic": _repeat("\u0661\u0662\u0663\u0664 "),
    "unicode_digits_fullwidth": _repeat("\uff14\uff11\uff11\uff11 "),
    "unicode_mixed_digits": _repeat("4\u0661 1\uff11-"),
    "confusables": _repeat("\u0410\u041a\u0406\u0410 \uff45\uff59\uff2a \uff20 \u0455k-"),
}
#: Shapes that are real findings, densely (a phone every 16 characters...): their cost is
#: the cost per finding; ``bench/scanner.py`` reports them apart from the near misses.
DENSE = frozenset({"phone_plus", "email_many_domains", "email_domain_api_keys", "email_domain_sk_keys",
                   "pem_begin_glued"})

# credentials (``policies.credentials``): each anchor character repeated, prefixes repeated
# and with near-miss bodies, runs of token characters, assignment separators and keywords
# (``password=`` repeated), URL user information, HTTP schemes.
SHAPES.update({
    "cred_underscores": _repeat("a_"),
    "cred_snake_case": _repeat("get_response_from_backend_"),
    "cred_gitlab_prefix": _repeat("gl" + "pat-"),
    "cred_gitlab_near_miss": _repeat("gl" + "pat-" + "a" * 19 + " "),
    "cred_hf_prefix": _repeat("h" + "f_"),
    "cred_anthropic_prefix": _repeat("sk-" + "ant-api03-"),
    "cred_pypi_prefix": _repeat("pypi-" + "AgEIcHlwaS5vcmc"),
    "cred_vault_dots": _repeat("hv" + "s."),
    "cred_sendgrid_prefix": _repeat("S" + "G."),
    "cred_doppler_prefix": _repeat("dp." + "pt."),
    "cred_discord_segments": _repeat("MTE5ODc2NTQzMjEwOTg3NjU0" + ".abcdef."),
    "cred_dot_runs": _repeat("aaaaaaa."),
    "cred_tildes": _repeat("~"),
    "cred_azure_secret_prefix": _repeat("abc8" + "Q~"),
    "cred_telegram_colons": _repeat("123456789" + ":A"),
    "cred_mailchimp_suffix": _repeat("0123456789abcdef" * 2 + "-u" + "s1"),
    "cred_url_scheme": _repeat("a://"),
    "cred_url_userinfo": _repeat("://u:p"),
    "cred_url_long_password": _wrapped("x://u:", "p", "@"),
    "cred_password_eq": _repeat("password="),
    "cred_password_colon": _repeat("password: "),
    "cred_key_eq": _repeat("key="),
    "cred_token_json": _repeat('"token": "'),
    "cred_keyword_gaps": _repeat("password    "),
    "cred_equals": _repeat("="),
    "cred_basic_prefix": _repeat("Basic "),
    "cred_basic_long": _wrapped("Basic ", "QUJD", ""),
    "cred_hex_run": _repeat("0123456789abcdef"),
    "cred_aws_variants": _repeat("AB" + "IA" + "A3T"),
    "cred_password_values": _repeat("password=abcde1 "),
})
#: ``cred_password_values`` is a password every 16 characters: real findings.
DENSE = DENSE | {"cred_password_values"}

# numbers (``policies.numbers``): near misses that pass every shape test and fail on digit
# values, a checksum, a calling code or the context, each its own candidate (set apart by
# ", " rather than glued into one run); lower-case IBAN prefixes; national and
# international phone shapes; and the same numbers valid, densely.
SHAPES.update({
    "num_luhn_near_miss": _repeat("4111111111111112, "),
    "num_card_glued_word": _repeat("4111111111111111x "),
    "num_card_network_length": _repeat("3411111111111111, "),
    "num_nanp_bad_area": _repeat("123-555-0199, "),
    "num_nanp_part_number": _repeat("800-555-0199-B "),
    "num_nanp_order_label": _repeat("order 800-555-0199, "),
    "num_ssn_bad_area": _repeat("000-12-3456, "),
    "num_ssn_bare_no_keyword": _repeat("078051120, "),
    "num_ipv4_bad_octet": _repeat("999.1.1.1, "),
    "num_plus_short": _repeat("+1 234 567, "),
    "num_plus_bad_code": _repeat("+999 1234 5678, "),
    "num_national_no_trunk": _repeat("130 901820, "),
    "num_national_groups": _repeat("030 90 18 20 12 34 56, "),
    "num_zero_runs": _repeat("0"),
    "num_iban_bad_check": _repeat("DE88370400440532013000 "),
    "num_iban_lower": _repeat("de00 "),
    "num_iban_mixed_case": _repeat("De89370400440532013000 "),
    "num_token_digit_pairs": _repeat("aB12cD34"),
    "num_nanp_valid": _repeat("(415) 555-2671, "),
    "num_national_valid": _repeat("030 901820, "),
    "num_card_valid": _repeat("4111 1111 1111 1111, "),
})
DENSE = DENSE | {"num_nanp_valid", "num_national_valid", "num_card_valid"}


def _cpu_seconds(scanner: Scanner, text: str, runs: int = 3) -> float:
    """Best of ``runs`` scans, in CPU seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        scanner.scan_texts([("t", text)])
        best = min(best, time.process_time() - start)
    return best


def _assert_linear(scanner: Scanner, build: Callable[[int], str], dense: bool = False) -> None:
    small, large = build(SIZE // 4), build(SIZE)
    assert len(large) == SIZE
    t_small, t_large = _cpu_seconds(scanner, small), _cpu_seconds(scanner, large, runs=1)
    if dense:
        findings = len(scanner.scan_texts([("t", large)]).findings)
        assert t_large / findings < MAX_S_PER_FINDING, f"{t_large / findings * 1e6:.1f} µs per finding"
    else:
        per_mb = t_large / (SIZE / (1024 * KB))
        assert per_mb < MAX_S_PER_MB, f"{per_mb:.2f} s per MB"
    if t_large > MAX_RATIO * t_small + SLACK_S:  # maybe noise: measure again before failing
        t_large = _cpu_seconds(scanner, large)
    assert t_large <= MAX_RATIO * t_small + SLACK_S, f"{t_small * 1e3:.1f} ms -> {t_large * 1e3:.1f} ms for 4x"


@pytest.mark.parametrize("name", SHAPES)
def test_shape_scans_in_linear_time(name: str) -> None:
    _assert_linear(SCANNER, SHAPES[name], dense=name in DENSE)


# --------------------------------------------------------------------------- custom regexes
# A policy's regex runs on RE2 (``policies.regex``): linear for every pattern it accepts.
# What RE2 cannot run (it would need backtracking) is rejected at load, naming the
# detector; the patterns that are exponential or quadratic on a backtracking engine are
# accepted and stay linear.

UNSUPPORTED_REGEXES = [
    r"(\w)\1",  # a backreference
    r"foo(?=\s+bar)",  # lookahead
    r"(?<!a)b",  # lookbehind
    r"\w{1000}{1000}",  # an automaton past the memory cap
    r"[unclosed",
]


@pytest.mark.parametrize("regex", UNSUPPORTED_REGEXES)
def test_unsupported_custom_regex_is_rejected_at_load_naming_the_detector(regex: str) -> None:
    with pytest.raises(ValidationError, match="custom detector 'mine': invalid regex .*RE2 syntax"):
        SensitivitySpec(custom=[CustomDetector(name="mine", level="internal", regex=regex)])


#: Accepted regexes, with an adversarial text for each (its prefix repeated, near misses).
#: The first ones take exponential or quadratic time on a backtracking engine.
CUSTOM_CASES = [
    (r"(a+)+$", _repeat("a")),  # nested quantifiers: 26 characters took 7 s on the stdlib
    (r"(a|a)*b", _repeat("a")),
    (r"(\w+\s?)+$", _repeat("ab ")),
    (r"\d+x", _repeat("1")),  # a long run rescanned from each digit: quadratic on the stdlib
    (r"\w+@corp\.com", _repeat("a")),
    (r"\d+$", _wrapped("", "1", "a")),
    (r"(a|a){1,30}", _repeat("a")),
    (r"\d{0,100}\d{0,100}x", _repeat("1")),
    (r"a{300}b", _repeat("a")),
    (r"\bOPS-[0-9]{3,6}\b", _repeat("OPS-1234567 ")),
    (r"T-\d+", _repeat("T-")),
    (r"T-\d+", _wrapped("T-", "1", "")),
    (r"PRJ-\d{4}", _repeat("PRJ-123")),
    (r"\bx+", _repeat("x")),
    (r"\d+x|\d", _repeat("1")),  # after every digit the engine reads to the end of the run
    (r"\d(?:\d*x)?", _repeat("1")),
    (r"(?:\d{1,3}\.){3}\d{1,3}", _repeat("1.")),
    (r"\b[a-z0-9-]{1,63}\.corp\.example\.net\b", _repeat("a")),
    (r"\b(?:EMP|EID)[-_ ]?\d{6}\b", _repeat("EMP-12345")),
]


#: Cases made of real findings (one per digit): bounded per finding, as ``DENSE`` shapes.
DENSE_CUSTOM = frozenset({r"\d+x|\d", r"\d(?:\d*x)?"})


@pytest.mark.parametrize(("regex", "build"), CUSTOM_CASES)
def test_accepted_custom_regex_scans_in_linear_time(regex: str, build: Callable[[int], str]) -> None:
    custom = [CustomDetector(name="mine", level="internal", regex=regex)]
    _assert_linear(Scanner(SensitivitySpec(detectors={}, custom=custom)), build, dense=regex in DENSE_CUSTOM)


def test_custom_regex_offsets_are_characters_in_any_script() -> None:
    """RE2 matches UTF-8 bytes; findings still carry offsets in characters of the text."""
    custom = [CustomDetector(name="mine", level="internal", regex=r"PRJ-\d{4}")]
    text = "é€😀 " * 3 + "prj-1234 ok"
    (finding,) = Scanner(SensitivitySpec(detectors={}, custom=custom)).scan_texts([("t", text)]).findings
    assert text[finding.start : finding.end] == "prj-1234"


def test_custom_keywords_scan_in_linear_time() -> None:
    words = [f"codename{i}" for i in range(50)]
    custom = [CustomDetector(name="codename", level="restricted", keywords=words)]
    _assert_linear(Scanner(SensitivitySpec(detectors={}, custom=custom)), _repeat("codename1x codename"))
