"""Credentials: the table of credential formats the sensitivity scanner recognises, and the
one pass that finds them (the ``api_key``, ``secret`` and ``private_key`` detectors of
``policies.sensitivity``).

Owns:

* ``RULES``: one ``Rule`` per credential format, by family (cloud, source forge, ML
  platform, payments, messaging, CI, registry, database, generic). A credential is found
  either by its own shape, a provider's prefix, alphabet and length (detector
  ``api_key``: ``ghp_…``, ``AKIA…``, ``sk-ant-api03-…``), or by its context (detector
  ``secret``: a value assigned to a secret-like name, ``aws_secret_access_key = …``,
  ``"password": "…"``; the password of a URL, ``postgres://user:pw@host``; HTTP Basic
  credentials). PEM private keys are ``private_key``. The formats are the providers'
  documented ones, as in the default rules of gitleaks and the plugins of detect-secrets
  (facts, not code);
* ``credential_hits``: every credential in a text, as ``(detector, start, end)``;
* ``member_secret``: whether a JSON member's value is a secret by its member name (the
  scanner sees ``{"db_password": "…"}`` as two texts, the name and the value).

Speed. Every rule hangs off one *anchor* character: the separator in its prefix (``_`` of
``ghp_``, ``-`` of ``glpat-``, ``.`` of ``SG.``, ``~`` of Azure's ``8Q~``), an ``A``
(``AKIA``, ``AIza``, ``EAAA``), the ``=`` or ``:`` of an assignment, the ``B`` of
``Bearer``/``Basic``. The rules of one anchor are one regex that starts with that literal
(sre finds it in C, fast). An alternative whose prefix goes on after the anchor starts
with that literal (sre skips it at once when the next character differs); the others sit
behind the anchor's *lead* (token characters must follow, and a boundary must be within
reach before the anchor: ``_LEADS``) and a *gate* on the body, and only then compare
their prefixes, with lookbehinds. Python runs only on a full match. A text without the
anchor character skips its regex (``in``: memchr). A new rule adds no pass over the text,
only an alternative to try at its anchor's candidates. Measured (``bench/scanner.py``):
five passes run on prose (``- : . A B``), about 2.4 ms per MB in all.

Linear time, whatever the input. Every body and lookaround is bounded. A prefix may not
follow a character of its token's alphabet (checked in the first lookbehind), so inside a
long run of token characters only the run's start is a candidate, and a body is scanned
once; a match is consumed, so its characters are not candidates again. In such a run the
lead fails at each anchor character (``aB1-aB1-…``): two checks there, not one per rule. Assignments are
recognised by a lookbehind trie on the name (reversed keywords, one character per level)
and a gate on the value before Python looks; values are read capped (``_VALUE_MAX``).

What counts. A value of the exact shape of a key is a key, documented examples included
(AWS's ``AKIAIOSFODNN7EXAMPLE``): a gateway cannot tell a documented key from a live one
pasted by mistake, and a false positive keeps a request on self-hosted hardware, while a
false negative sends a key away. Placeholders are not: a body of repeated filler
(``ghp_xxxx…``), ``<your-token>``, ``${VAR}``, ``{{ secrets.X }}``, ``changeme``,
``********``, file paths, URLs, environment lookups, function calls, words. No provider
checksum is verified (GitHub's CRC32): a mistyped or truncated key is still a key.

Pure: no I/O, no clock, no global mutable state. Must not import ``router``, ``backends``
or ``policies.sensitivity`` (which imports this module).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["FAMILIES", "RULES", "Rule", "credential_hits", "member_secret"]

Span = tuple[int, int]
Hit = tuple[str, int, int]  # detector, start, end

API_KEY, SECRET, PRIVATE_KEY = "api_key", "secret", "private_key"

#: Families, in the order of the docs table.
FAMILIES = ("cloud", "source forge", "ML platform", "payments", "messaging", "CI/CD and ops", "registry",
            "SaaS", "database", "generic")


@dataclass(frozen=True, slots=True)
class Rule:
    """One credential format.

    ``regex`` is tried right after an ``anchor`` character (its lookbehinds see what comes
    before); the token starts ``back`` characters before the anchor and ends where the
    regex does, and must pass ``check``. A context rule has ``locate`` instead: given the
    match, it returns the span of the secret itself (a URL's password, an assigned value)
    or None. ``gate`` is a lookahead shared by the rules of an anchor that have the same
    one: tried once per candidate, before their alternatives."""

    name: str
    family: str
    detector: str
    format: str
    anchor: str
    regex: str
    back: int = 0
    gate: str = ""
    check: Callable[[str], bool] | None = None
    locate: Callable[[str, re.Match[str]], Span | None] | None = None


# --------------------------------------------------------------------------- shapes

_ATOM = re.compile(r"\[[^\]]*\]|.")
#: Alphabets (regex class contents).
ALNUM, HEX, UPPER_ALNUM, URLSAFE, B64 = "A-Za-z0-9", "0-9a-f", "A-Z0-9", "A-Za-z0-9_\\-", "A-Za-z0-9+/="
#: What a gate looks at after the anchor: the widest of these alphabets that holds a body's.
_GATE_CLASSES = (ALNUM, URLSAFE, "A-Za-z0-9_+/=.~\\-")


def _extras(chars: str) -> str:
    """The characters of class contents ``chars`` other than letters, digits and ``_`` (in
    ``chars``, a range is letters or digits and a literal dash is ``\\-``), escaped for a
    class: ``"A-Za-z0-9_\\-"`` → ``"\\-"``."""
    found = re.sub(r"\\(.)", r"\1", re.sub(r"[A-Za-z0-9]-[A-Za-z0-9]|[A-Za-z0-9_]", "", chars))
    return "".join(dict.fromkeys("\\-" if ch == "-" else ch for ch in found))


def _clear(look: str, bound: str) -> str:
    """Lookbehinds: ``look`` (fixed width, ending at the current position) does not follow
    a token character (``bound``), unless that is the letter of a backslash escape (``\\n``
    in JSON-encoded text is a boundary)."""
    return f"(?:(?<![{bound}]{look})|(?<=\\\\[A-Za-z]{look}))"


def _token(name: str, family: str, fmt: str, prefix: str, chars: str = ALNUM, size: str = "16,255", *,
           body: str | None = None, check: Callable[[str], bool] | None = None, bound: str | None = None,
           before: tuple[str, int] = ("", 0), gate: str | None = None) -> Rule:
    """A key found by its shape: ``prefix`` (literal characters and ``[...]`` classes), then
    ``[chars]{size}`` (or ``body``), glued to no token character on either side (letters,
    digits, ``_`` and the body's own: ``bound``). ``before``: a fixed-width regex (and its
    width) that must come right before the prefix. ``check`` (default: not filler)
    validates the whole token.

    The anchor is the prefix's last ``_ - . ~``, else its first ``A``. What follows the
    anchor in the prefix is matched first (a literal: sre skips the alternative at once
    when it does not match); when nothing does, a gate on the body is shared with the
    other rules of that anchor."""
    atoms = _ATOM.findall(prefix)
    seps = [i for i, a in enumerate(atoms) if a in ("_", "-", ".", "~")]
    k = seps[-1] if seps else atoms.index("A")
    esc = [a if a.startswith("[") else re.escape(a) for a in atoms]
    look = before[0] + "".join(esc)
    rest = "".join(esc[k + 1 :])
    bound = bound if bound is not None else "A-Za-z0-9_" + _extras(chars)
    tail = body if body is not None else f"[{chars}]{{{size}}}+"
    after = f"(?![{bound}])"
    if "." in bound:  # a dot may end the sentence: not the token's last character
        inner = bound.replace(".", "")
        tail = (body if body is not None else f"[{chars}]{{{size}}}") + "(?<!\\.)"
        after = f"(?![{inner}]|\\.[{inner}])"
    regex = rest + f"(?<={look})" + _clear(look, bound.replace("=", "")) + tail + after
    if gate is None:
        gate = ""
        if not rest:  # the alternative would start with a lookbehind: gate it on the body
            least = int(size.split(",")[0]) if body is None else 16
            wide = next(g for g in _GATE_CLASSES if set(_extras(chars)) <= set(_extras(g)))
            gate = f"(?=[{wide}]{{{min(16, least)}}})"
    return Rule(name, family, API_KEY, fmt, atoms[k], regex, back=before[1] + k, gate=gate,
                check=check or _not_filler)


# checks ---------------------------------------------------------------------------------

#: A run of this many identical characters is filler (``AKIAXXXXXXXXXXXXXXXX``).
_FILLER = re.compile(r"(.)\1{7}")
_PARTS = re.compile(r"[^_-]{16,}")


def _not_filler(token: str) -> bool:
    """Not a placeholder: no run of 8 identical characters, and 6 different ones at least."""
    return _FILLER.search(token) is None and len(set(token)) >= 6


def _random_part(token: str) -> bool:
    """A hyphen/underscore-separated part of 16+ characters mixing at least two of digits,
    upper and lower case (random keys do; words joined by dashes do not)."""
    for m in _PARTS.finditer(token):
        part = m.group()
        if (not part.isalpha()) + (part != part.lower()) + (part != part.upper()) >= 2:
            return _not_filler(token)
    return False


def _has_digit(token: str) -> bool:
    return any("0" <= ch <= "9" for ch in token) and _not_filler(token)


T = _token  # the table reads better with a short name

_TOKENS: tuple[Rule, ...] = (
    # cloud --------------------------------------------------------------------------------
    *(T("aws-access-key-id", "cloud", "AKIA/ASIA/ABIA/ACCA/A3T? + 16 upper-case letters or digits", p,
        UPPER_ALNUM, "16") for p in ("AKIA", "ASIA", "ABIA", "ACCA", "A3T[A-Z0-9]")),
    T("aws-bedrock-api-key", "cloud", "ABSK + 109-269 base64", "ABSK", B64, "109,269"),
    T("gcp-api-key", "cloud", "AIza + 35 of A-Za-z0-9_-", "AIza", URLSAFE, "35"),
    T("gcp-oauth-client-secret", "cloud", "GOCSPX- + 28 of A-Za-z0-9_-", "GOCSPX-", URLSAFE, "28"),
    T("azure-ad-client-secret", "cloud", "3 characters, a digit, Q~, 31-34 of A-Za-z0-9_~.-", "Q~",
      "A-Za-z0-9_~.\\-", "31,34", before=("[A-Za-z0-9_~.]{3}[0-9]", 4)),
    T("azure-devops-pat", "cloud", "52 letters or digits + AZDO + 4 (84 characters)", "AZDO", ALNUM, "4",
      before=("[A-Za-z0-9]{52}", 52)),
    T("alibaba-access-key-id", "cloud", "LTAI + 20 letters or digits", "LTAI", ALNUM, "20", check=_has_digit),
    T("tencent-secret-id", "cloud", "AKID + 32 letters or digits", "AKID", ALNUM, "32", check=_has_digit),
    T("digitalocean-token", "cloud", "dop_v1_/doo_v1_/dor_v1_ + 64 hex", "do[opr]_v1_", HEX, "64"),
    T("cloudflare-origin-ca-key", "cloud", "v1.0- + 24 hex + - + 146 hex", "v1.0-", HEX,
      body="[0-9a-f]{24}-[0-9a-f]{146}", gate="(?=[0-9a-f]{24}-)"),
    T("heroku-api-key", "cloud", "HRKU- + 60 of A-Za-z0-9_-", "HRKU-", URLSAFE, "60"),
    T("flyio-token", "cloud", "fo1_ + 43 of A-Za-z0-9_- / fm2_ + 100+ base64", "f[om][12]_", "A-Za-z0-9+/=_\\-",
      "43,2000"),
    # source forges -----------------------------------------------------------------------
    T("github-token", "source forge", "ghp_/gho_/ghu_/ghs_/ghr_ + 36 letters or digits", "gh[pousr]_", ALNUM,
      "36,255"),
    T("github-fine-grained-pat", "source forge", "github_pat_ + 22-255 of A-Za-z0-9_", "github_pat_",
      "A-Za-z0-9_", "22,255"),
    *(T("gitlab-token", "source forge", "glpat-/gldt-/glrt-/glptt-/glft-/glsoat-/glffct-/glcbt-/glimt-/glagent-/"
        "gloas- + 20-300 of A-Za-z0-9_- (routable: + .xx + 7)", p, URLSAFE,
        body="[A-Za-z0-9_-]{20,300}+(?:\\.[0-9a-z]{9})?")
      for p in ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glsoat-", "glffct-", "glcbt-", "glimt-",
                "glagent-", "gloas-")),
    T("bitbucket-app-password", "source forge", "ATBB + 28-64 letters or digits", "ATBB", ALNUM, "28,64"),
    T("atlassian-api-token", "source forge", "ATATT3/ATCTT3 + 150-300 of A-Za-z0-9_=-", "AT[AC]TT3",
      "A-Za-z0-9_=\\-", "150,300"),
    # ML platforms ------------------------------------------------------------------------
    T("huggingface-token", "ML platform", "hf_ + 34-40 letters or digits", "hf_", ALNUM, "34,40"),
    T("huggingface-org-token", "ML platform", "api_org_ + 34 letters or digits", "api_org_", ALNUM, "34"),
    *(T("openai-key", "ML platform", "sk-proj-/sk-svcacct-/sk-admin- + 20-300 of A-Za-z0-9_-", p, URLSAFE,
        "20,300") for p in ("sk-proj-", "sk-svcacct-", "sk-admin-")),
    T("openai-legacy-key", "ML platform", "sk- + 20 letters or digits + T3BlbkFJ + 20", "sk-", ALNUM,
      body="[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}", gate="(?=[A-Za-z0-9]{28})"),
    *(T("anthropic-key", "ML platform", "sk-ant-api03-/sk-ant-admin01- + 93 of A-Za-z0-9_- + AA", p, URLSAFE,
        "32,300") for p in ("sk-ant-api03-", "sk-ant-admin01-")),
    T("sk-key", "ML platform", "sk- + 20-300 of A-Za-z0-9_- with a random-looking part (DeepSeek, Moonshot, "
      "OpenAI-compatible servers)", "sk-", URLSAFE, "20,300", check=_random_part),
    T("replicate-token", "ML platform", "r8_ + 37 letters or digits", "r8_", ALNUM, "37"),
    T("groq-key", "ML platform", "gsk_ + 52 letters or digits", "gsk_", ALNUM, "52"),
    T("perplexity-key", "ML platform", "pplx- + 48 letters or digits", "pplx-", ALNUM, "48"),
    T("xai-key", "ML platform", "xai- + 80 letters or digits", "xai-", ALNUM, "80"),
    T("langsmith-key", "ML platform", "lsv2_pt_/lsv2_sk_ + 32 hex + _ + 10 hex", "lsv2_[ps][tk]_", HEX,
      body="[0-9a-f]{32}_[0-9a-f]{10}", gate="(?=[0-9a-f]{32}_)"),
    # payments ----------------------------------------------------------------------------
    *(T("stripe-key", "payments", "sk_live_/rk_live_/sk_test_/rk_test_ + 10-247 letters or digits", p, ALNUM,
        "10,247") for p in ("sk_live_", "rk_live_", "sk_test_", "rk_test_", "sk_prod_", "rk_prod_")),
    T("stripe-webhook-secret", "payments", "whsec_ + 32-88 base64", "whsec_", B64, "32,88"),
    T("square-token", "payments", "EAAA + 22-60 of A-Za-z0-9_-", "EAAA", URLSAFE, "22,60", check=_has_digit),
    T("square-legacy-token", "payments", "sq0atp- + 22 / sq0csp- + 43 of A-Za-z0-9_-", "sq0[ac][ts]p-",
      URLSAFE, "22,43"),
    T("braintree-token", "payments", "access_token$production$ + 16 + $ + 32 hex", "access_token$",
      body="(?:production|sandbox)\\$[0-9a-z]{16}\\$[0-9a-f]{32}"),
    T("shopify-token", "payments", "shpat_/shpss_/shpca_/shppa_ + 32 hex", "shp[acps][acst]_", "0-9a-fA-F",
      "32"),
    *(T("flutterwave-key", "payments", "FLWSECK- / FLWSECK_TEST- + 32 hex + -X", p, "0-9a-hA-H", "32",
        body="[0-9a-hA-H]{32}(?:-X)?") for p in ("FLWSECK-", "FLWSECK_TEST-")),
    *(T("plaid-access-token", "payments", "access-production-/access-sandbox- + UUID", p, HEX,
        body="[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", gate="(?=[0-9a-f]{8}-)")
      for p in ("access-production-", "access-development-", "access-sandbox-")),
    # messaging ---------------------------------------------------------------------------
    T("slack-token", "messaging", "xoxb-/xoxp-/xoxa-/xoxr-/xoxs-/xoxe- + 16-250 of A-Za-z0-9- with digits",
      "xox[abeoprs]-", "A-Za-z0-9\\-", "16,250", check=_has_digit),
    T("slack-app-token", "messaging", "xapp- + digit - id - digits - hex", "xapp-", "A-Za-z0-9\\-", "16,250",
      check=_has_digit),
    T("slack-webhook", "messaging", "hooks.slack.com/services|workflows|triggers/...", "hooks.slack.com/",
      body="(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,120}+", bound="A-Za-z0-9_"),
    *(T("discord-webhook", "messaging", "discord.com/api/webhooks/<id>/<60-70 of A-Za-z0-9_->", p,
        body="[0-9]{17,20}/[A-Za-z0-9_-]{60,70}+", bound="A-Za-z0-9_")
      for p in ("discord.com/api/webhooks/", "discordapp.com/api/webhooks/")),
    T("teams-webhook", "messaging", "<tenant>.webhook.office.com/webhookb2/...", "webhook.office.com/webhookb2/",
      body="[A-Za-z0-9@/_-]{60,300}+", bound="A-Za-z0-9_"),
    T("sendgrid-key", "messaging", "SG. + 22 + . + 43 of A-Za-z0-9_-", "SG.", URLSAFE,
      body="[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}+", gate="(?=[A-Za-z0-9_-]{22}\\.)"),
    T("mailgun-key", "messaging", "key- + 32 hex", "key-", HEX, "32"),
    T("brevo-key", "messaging", "xkeysib- + 64 hex + - + 16 letters or digits", "xkeysib-", HEX,
      body="[0-9a-f]{64}-[A-Za-z0-9]{16}", gate="(?=[0-9a-f]{16})"),
    T("twilio-account-sid", "messaging", "AC + 32 hex", "AC", HEX, "32"),
    # CI/CD and ops -----------------------------------------------------------------------
    T("circleci-token", "CI/CD and ops", "CCIPAT_ + 22 letters or digits + _ + 40 hex", "CCIPAT_", ALNUM,
      body="[A-Za-z0-9]{22}_[0-9a-f]{40}", gate="(?=[A-Za-z0-9]{16})"),
    T("buildkite-token", "CI/CD and ops", "bkua_ + 40 hex", "bkua_", HEX, "40"),
    T("terraform-cloud-token", "CI/CD and ops", "14 letters or digits + .atlasv1. + 60-70 of A-Za-z0-9_=-",
      ".atlasv1.", "A-Za-z0-9_=\\-", "60,70", before=("[A-Za-z0-9]{14}", 14)),
    T("vault-token", "CI/CD and ops", "hvs./hvb./hvr. + 90-300 of A-Za-z0-9_-", "hv[sbr].", URLSAFE, "90,300"),
    *(T("doppler-token", "CI/CD and ops", "dp.pt./dp.st./dp.ct./dp.sa./dp.scim./dp.audit. + 40-44 letters or "
        "digits", p, ALNUM, "40,44") for p in ("dp.pt.", "dp.st.", "dp.ct.", "dp.sa.", "dp.scim.", "dp.audit.")),
    T("pulumi-token", "CI/CD and ops", "pul- + 40 hex", "pul-", HEX, "40"),
    T("octopus-deploy-key", "CI/CD and ops", "API- + 26 upper-case letters or digits", "API-", UPPER_ALNUM,
      "26", check=_has_digit),
    T("harness-token", "CI/CD and ops", "pat./sat. + 22 + . + 24 + . + 20", "[ps]at.", URLSAFE,
      body="[A-Za-z0-9_-]{22}\\.[A-Za-z0-9]{24}\\.[A-Za-z0-9]{20}", gate="(?=[A-Za-z0-9_-]{22}\\.)"),
    T("grafana-service-account-token", "CI/CD and ops", "glsa_ + 32 letters or digits + _ + 8 hex", "glsa_",
      ALNUM, body="[A-Za-z0-9]{32}_[0-9a-fA-F]{8}", gate="(?=[A-Za-z0-9]{16})"),
    T("grafana-cloud-token", "CI/CD and ops", "glc_ + 32-400 base64", "glc_", B64, "32,400"),
    T("sentry-token", "CI/CD and ops", "sntrys_/sntryu_ + 64-300 of base64", "sntry[su]_", "A-Za-z0-9+/=_",
      "64,300"),
    T("newrelic-key", "CI/CD and ops", "NRAK-/NRII-/NRJS-/NRRA- + 19-32", "NR[AIJR][AIKS]-", "A-Za-z0-9_\\-",
      "19,32", check=_has_digit),
    T("dynatrace-token", "CI/CD and ops", "dt0c01. + 24 + . + 64", "dt0c01.", ALNUM,
      body="[A-Za-z0-9]{24}\\.[A-Za-z0-9]{64}", gate="(?=[A-Za-z0-9]{16})"),
    T("sonarqube-token", "CI/CD and ops", "squ_/sqp_/sqa_ + 40 hex", "sq[upa]_", HEX, "40"),
    T("1password-service-token", "CI/CD and ops", "ops_eyJ + 250+ base64", "ops_", B64, "250,4000"),
    T("age-secret-key", "CI/CD and ops", "AGE-SECRET-KEY-1 + 58 bech32", "AGE-SECRET-KEY-",
      "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", body="1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
      gate="(?=1[A-Z0-9]{15})"),
    T("openshift-token", "CI/CD and ops", "sha256~ + 43 of A-Za-z0-9_-", "sha256~", URLSAFE, "43"),
    # registries --------------------------------------------------------------------------
    T("npm-token", "registry", "npm_ + 36 letters or digits", "npm_", ALNUM, "36"),
    T("pypi-token", "registry", "pypi-AgEIcHlwaS5vcmc / pypi-AgENdGVzdC5weXBpLm9yZw + 50-1000 of A-Za-z0-9_-",
      "pypi-", URLSAFE, body="AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,1000}+",
      gate="(?=AgE)"),
    T("dockerhub-token", "registry", "dckr_pat_/dckr_oat_ + 27-64 of A-Za-z0-9_-", "dckr_[po]at_", URLSAFE,
      "27,64"),
    T("rubygems-token", "registry", "rubygems_ + 48 hex", "rubygems_", HEX, "48"),
    T("artifactory-key", "registry", "AKCp + 60-80 letters or digits", "AKCp", ALNUM, "60,80"),
    T("clojars-token", "registry", "CLOJARS_ + 60 letters or digits", "CLOJARS_", ALNUM, "60"),
    # SaaS --------------------------------------------------------------------------------
    T("linear-key", "SaaS", "lin_api_ + 40-64 letters or digits", "lin_api_", ALNUM, "40,64"),
    T("linear-oauth-token", "SaaS", "lin_oauth_ + 64 hex", "lin_oauth_", HEX, "64"),
    T("notion-token", "SaaS", "secret_ + 43 letters or digits", "secret_", ALNUM, "43", check=_has_digit),
    T("notion-token-ntn", "SaaS", "ntn_ + 11 digits + 35 letters or digits", "ntn_", ALNUM, "46"),
    T("postman-key", "SaaS", "PMAK- + 24 hex + - + 34 hex", "PMAK-", HEX, body="[0-9a-f]{24}-[0-9a-f]{34}",
      gate="(?=[0-9a-f]{16})"),
    T("prefect-key", "SaaS", "pnu_ + 36 letters or digits", "pnu_", ALNUM, "36"),
    T("readme-key", "SaaS", "rdme_ + 70 letters or digits", "rdme_", ALNUM, "70"),
    *(T("planetscale-token", "SaaS", "pscale_tkn_/pscale_pw_/pscale_oauth_ + 32-64", p, "A-Za-z0-9_=.\\-",
        "32,64") for p in ("pscale_tkn_", "pscale_pw_", "pscale_oauth_")),
    *(T("shippo-token", "SaaS", "shippo_live_/shippo_test_ + 40 hex", p, HEX, "40")
      for p in ("shippo_live_", "shippo_test_")),
    *(T("duffel-token", "SaaS", "duffel_live_/duffel_test_ + 43", p, "A-Za-z0-9_=\\-", "43")
      for p in ("duffel_live_", "duffel_test_")),
    T("typeform-token", "SaaS", "tfp_ + 59", "tfp_", "A-Za-z0-9_=.\\-", "59"),
    T("easypost-key", "SaaS", "EZAK + 54 letters or digits", "EZAK", ALNUM, "54"),
    T("infracost-key", "SaaS", "ico- + 32 letters or digits", "ico-", ALNUM, "32", check=_has_digit),
    T("frameio-token", "SaaS", "fio-u- + 64", "fio-u-", "A-Za-z0-9_=\\-", "64"),
    T("scalingo-token", "SaaS", "tk-us- + 48", "tk-us-", URLSAFE, "48"),
    T("adobe-client-secret", "SaaS", "p8e- + 32 letters or digits", "p8e-", ALNUM, "32", check=_has_digit),
)


# special shapes: what precedes the anchor varies, so ``locate`` finds the start ----------

_URLSAFE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _glued(text: str, i: int) -> bool:
    """``text[i]`` is a letter, digit or ``_`` that is not the letter of a backslash escape."""
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_") and (i == 0 or text[i - 1] != "\\")


def _telegram(text: str, m: re.Match[str]) -> Span | None:
    """``<bot id: 8-10 digits>:<35 characters>``; the match starts at the colon."""
    window = text[max(0, m.start() - 11) : m.start()]
    digits = len(window) - len(window.rstrip("0123456789"))
    s = m.start() - digits
    if not 8 <= digits <= 10 or _glued(text, s - 1) or not _not_filler(text[m.start() + 1 : m.end()]):
        return None
    return s, m.end()


def _discord_bot(text: str, m: re.Match[str]) -> Span | None:
    """``<bot id in base64: 24-26>.<6>.<27-38>``; the match starts at the first dot. The
    first part must decode to the bot's numeric id."""
    window = text[max(0, m.start() - 27) : m.start()]
    first = window[len(window.rstrip(_URLSAFE_CHARS)) :]
    s = m.start() - len(first)
    if s > 0 and text[s - 1] == "\\":  # ``\n`` before it in JSON-encoded text
        s, first = s + 1, first[1:]
    if not 24 <= len(first) <= 26 or first[0] not in "MNO":
        return None
    try:
        bot_id = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    except (binascii.Error, ValueError):
        return None
    return (s, m.end()) if bot_id.isdigit() and _not_filler(text[m.start() : m.end()]) else None


def _mailchimp(text: str, m: re.Match[str]) -> Span | None:
    """``<32 hex>-us<1-2 digits>``; the match starts at the dash."""
    s = m.start() - 32
    return None if _glued(text, s - 1) or not _not_filler(text[s : m.start()]) else (s, m.end())


_SPECIAL: tuple[Rule, ...] = (
    Rule("telegram-bot-token", "messaging", API_KEY, "bot id (8-10 digits) + : + A + 34 of A-Za-z0-9_-", ":",
         "A(?<=[0-9]{8}:A)[A-Za-z0-9_-]{34}(?![A-Za-z0-9_-])", locate=_telegram),
    Rule("discord-bot-token", "messaging", API_KEY, "bot id in base64 (24-26) + . + 6 + . + 27-38 of "
         "A-Za-z0-9_-", ".", "(?<=[A-Za-z0-9_-]{24}\\.)[A-Za-z0-9_-]{6}\\.[A-Za-z0-9_-]{27,38}+(?![A-Za-z0-9_-])",
         gate="(?=[A-Za-z0-9_-]{6}\\.)", locate=_discord_bot),
    Rule("mailchimp-key", "messaging", API_KEY, "32 hex + -us + 1-2 digits", "-",
         "us(?<=[0-9a-f]{32}-us)[0-9]{1,2}(?![A-Za-z0-9_])", locate=_mailchimp),
)


# --------------------------------------------------------------------------- bearer, basic


def _scheme_token(text: str, m: re.Match[str]) -> tuple[int, str] | None:
    """Start and text of the credential after ``Bearer``/``Basic`` and blanks, when the
    scheme word is not glued to a word before it."""
    if _glued(text, m.start() - 1):
        return None
    s = m.start() + (6 if text[m.start() + 1] == "e" else 5)  # Bearer, Basic
    while text[s] in " \t":
        s += 1
    return s, text[s : m.end()]


def _bearer(text: str, m: re.Match[str]) -> Span | None:
    """``Bearer <token>``: the token, when 20+ characters mixing letters and digits."""
    found = _scheme_token(text, m)
    if found is None:
        return None
    s, token = found
    token = token.rstrip(".")
    if any(c.isdigit() for c in token) and any(c.isalpha() for c in token) and _not_filler(token):
        return s, s + len(token)
    return None


def _basic(text: str, m: re.Match[str]) -> Span | None:
    """``Basic <base64 of user:password>``: the base64, when it decodes to printable text
    with a colon and a password that is no placeholder."""
    found = _scheme_token(text, m)
    if found is None:
        return None
    s, token = found
    try:
        decoded = base64.b64decode(token, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not decoded.isprintable() or not _url_password(user, password):
        return None
    return s, m.end()


_SCHEMES: tuple[Rule, ...] = (
    Rule("bearer-token", "generic", API_KEY, "Bearer + 20+ of A-Za-z0-9._~+/- mixing letters and digits", "B",
         "earer[ \t]++[A-Za-z0-9._~+/-]{20,}+=*+(?![A-Za-z0-9._~+/=-])", locate=_bearer),
    Rule("basic-auth", "generic", SECRET, "Basic + base64 of user:password", "B",
         "asic[ \t]++[A-Za-z0-9+/]{8,}+={0,2}+(?![A-Za-z0-9+/=])", locate=_basic),
)


# --------------------------------------------------------------------------- URLs

#: ``scheme://user:password@``: the ``//`` after the scheme's colon (the anchor), then the
#: user information up to ``@`` within the URL.
_URL_USERINFO = "//(?<=[A-Za-z0-9]://)(?=[^\\s/?#@:\"'<>]{0,128}:[^\\s/?#@\"'<>]{1,256}@)"
_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-"


def _url_secret(text: str, m: re.Match[str]) -> Span | None:
    """The password of ``scheme://user:password@host``, unless it is a placeholder."""
    window = text[max(0, m.start() - 32) : m.start()]
    scheme = window[len(window.rstrip(_SCHEME_CHARS)) :]
    if not scheme or not scheme[0].isalpha():
        return None
    s = m.end()
    colon = text.index(":", s)
    at = text.index("@", colon)
    if not _url_password(text[s:colon], text[colon + 1 : at]):
        return None
    return colon + 1, at


def _url_password(user: str, password: str) -> bool:
    """A real password, not a stand-in: not empty, not the user name, not a word people
    put in examples (``password``, ``pass``, ``secret``...), not a template or mask."""
    low = password.lower()
    if len(password) < 3 or low == user.lower() or low.rstrip("0123456789!") in _PLACEHOLDERS:
        return False
    return not (_TEMPLATE.match(password) or _placeholder(low))


_URLS: tuple[Rule, ...] = (
    Rule("url-password", "database", SECRET, "scheme://user:password@host (postgres, mysql, mongodb+srv, "
         "redis, amqp, https...), password not a placeholder", ":", _URL_USERINFO, locate=_url_secret),
)


# --------------------------------------------------------------------------- assignments
# ``name = value``, ``"name": "value"``, ``name: value``, ``name := value``, ``name => value``
# where the name ends with a secret-like word. The regex starts at the ``=`` or ``:``, then
# checks the name backwards with a trie of single-character lookbehinds (the keywords
# reversed, case-insensitive; up to ``_GAP`` quotes, brackets or blanks between the name
# and the separator), then gates the value (not a template, 6+ characters, not a bare word).
# Python then reads the whole name and the value (capped) and decides.

_KEYWORDS = ("password", "passwd", "passphrase", "pwd", "pass", "secret", "token", "key", "auth",
             "credential", "credentials", "creds", "authorization")
_GAP_CHARS = " \t\"'`]\\"
_GAP = 5
#: What may open a value: a quote (after a backslash in JSON-encoded text).
_OPEN = "[ \t]{0,4}+(?:\\\\?[\"'`])?"
#: The value gates: not empty or a template or mask; 6+ characters; not only letters (unless 16+).
_VALUE_GATE = ("(?!\\$[{(A-Za-z_]|<|\\{\\{|%[(A-Za-z]|\\s|\\\\)"
               "(?=(?i:token|bot|apikey|key|digest) [^\\s]|[^\\s\"'`]{6})"
               "(?=[A-Za-z]*+[^A-Za-z\\s\"'`=:,;&]|[A-Za-z]{16}|(?i:token|bot|apikey|key|digest) [^\\s])")


def _keyword_trie(depth: int) -> str:
    """Lookbehinds: one of ``_KEYWORDS`` ends ``depth`` characters before the separator
    (which is at offset 1 behind the current position)."""
    trie: dict[str, Any] = {}
    for word in _KEYWORDS:
        node = trie
        for ch in reversed(word):
            node = node.setdefault(ch, {})
        node[""] = {}
    # first one check of the last two letters, each against the letters keywords end with
    # (``result``, ``value``, ``name`` fail it; then the trie, one letter per level)
    last = "".join(sorted({w[-1] for w in _KEYWORDS}))
    second = "".join(sorted({w[-2] for w in _KEYWORDS}))
    pair = f"[{second}{second.upper()}][{last}{last.upper()}]"
    return f"(?<={pair}{'.' * (depth + 1)})" + _trie_regex(trie, depth)


def _trie_regex(node: dict[str, Any], depth: int) -> str:
    alts = []
    for ch, child in sorted(node.items()):
        if ch:
            alts.append(f"(?<=[{ch}{ch.upper()}]{'.' * (depth + 1)})" + _trie_regex(child, depth + 1))
    if "" in node:
        alts.append("")
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _name_check() -> str:
    """The keyword, after up to ``_GAP`` gap characters: ``(?:K0|(?<=gap.)(?:K1|...))``."""
    gap = "[" + re.escape(_GAP_CHARS).replace("\\ ", " ") + "]"
    regex = _keyword_trie(_GAP)
    for depth in range(_GAP - 1, -1, -1):
        regex = f"(?:{_keyword_trie(depth)}|(?<={gap}{'.' * (depth + 1)}){regex})"
    return regex


_NAME = _name_check()
#: The cheapest necessary check first: right before the separator, a keyword's last letter or a gap.
_BEFORE = ("(?<=[" + "".join(sorted({w[-1] + w[-1].upper() for w in _KEYWORDS}))
           + re.escape(_GAP_CHARS).replace("\\ ", " ") + "].)")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-$"
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
#: The value: up to the closing quote, or to a blank or a delimiter; capped.
_VALUE_MAX = 256
_QUOTED = MappingProxyType({q: re.compile(f"[^{q}\\n\\\\]{{1,{_VALUE_MAX}}}") for q in "\"'`"})
_BARE = re.compile(f"[^\\s\"'`,;&<>]{{1,{_VALUE_MAX}}}")
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "bot", "apikey", "key", "digest"})

#: Name words: the last one decides; the one before it may exclude (``next_page_token``).
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "pwd", "pass", "pw"})
_TOKEN_WORDS = frozenset({"secret", "token", "credential", "credentials", "creds", "auth", "authorization",
                          "apikey", "secretkey", "accesskey", "privatekey", "authkey", "authtoken",
                          "accesstoken", "refreshtoken", "clientsecret", "apitoken", "apisecret"})
_NOT_SECRET_TOKENS = frozenset({"page", "next", "prev", "previous", "continuation", "cursor", "pagination", "sync",
                                "csrf", "xsrf", "public", "publishable", "max", "num", "total", "input", "output",
                                "prompt", "completion", "bos", "eos", "pad", "unk", "sep", "cls", "mask", "special",
                                "reasoning", "cached", "start", "end", "stop", "eot", "new", "oauth"})
_KEY_WORDS = frozenset({"api", "access", "secret", "private", "client", "auth", "account", "service", "signing",
                        "sign", "master", "encryption", "encrypt", "crypto", "cipher", "app", "application",
                        "consumer", "subscription", "storage", "admin", "webhook", "license", "licence", "session",
                        "shared", "sas", "db", "database", "jwt", "hmac", "aes", "write", "read", "ingest",
                        "deploy", "personal", "developer", "integration", "server", "root", "bot", "rest", "mgmt",
                        "management", "live", "prod", "production", "test", "secondary", "x", "ocp", "apim",
                        "user", "org", "organization", "project", "cloud", "search", "agent"})
_NOT_SECRET_KEYS = frozenset({"public", "publishable", "pub", "primary", "foreign", "sort", "partition", "cache",
                              "idempotency", "dedup", "dedupe", "routing", "hash", "lookup", "row", "group", "shard",
                              "composite", "natural", "surrogate", "unique", "index", "sequence", "schema", "bucket",
                              "object", "message", "translation", "i18n", "map", "dict", "field", "column", "hot",
                              "idx", "react", "list", "item", "node", "cursor", "sorting", "ssh", "gpg", "pgp",
                              "host", "label", "i", "redis", "s3", "file", "storage_path"})


def _name_kind(name: str) -> str | None:
    """What the name says its value is: ``"password"``, ``"token"`` (a secret, API key,
    token or credential), ``"key"`` (a bare or unqualified ``key``: only a random-looking
    value counts), or None (not a secret: ``next_page_token``, ``primary_key``, ``key_id``)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return None
    last, prev = words[-1], (words[-2] if len(words) > 1 else "")
    if last in _PASSWORD_WORDS or last.endswith(("password", "passwd", "passphrase")):
        return "password"
    if last in _TOKEN_WORDS or last.endswith(("secret", "token", "apikey")):
        return None if prev in _NOT_SECRET_TOKENS or last in ("tokens",) else "token"
    if last == "key":
        if prev in _NOT_SECRET_KEYS:
            return None
        return "token" if prev in _KEY_WORDS else "key"
    return None


# values ---------------------------------------------------------------------------------

#: Templates and references by their first characters: ``${X}``, ``$(cmd)``, ``$X``, ``{{ x }}``,
#: ``<your-key>``, ``%(x)s``, ``%X%``, ``{x}``, YAML tags, anchors and aliases (``!vault``, ``*default``).
_TEMPLATE = re.compile(r"\$[{(A-Za-z_]|\{\{|<|%[(A-Za-z]|\{[\w.-]*\}$|[!&*][A-Za-z]")
_PLACEHOLDERS = frozenset({
    "password", "passwd", "pass", "pwd", "secret", "token", "apikey", "api_key", "key", "changeme", "changeit",
    "admin", "root", "test", "testing", "default", "none", "null", "nil", "undefined", "empty", "string", "str",
    "text", "value", "guest", "user", "username", "qwerty", "letmein", "welcome", "mypassword", "mysecret",
    "mytoken", "p@ssw0rd", "passw0rd", "pa55word", "p@ssword", "secret_key", "access_token", "xxx",
})
_PLACEHOLDER_PARTS = ("xxxx", "****", "....", "…", "{{", "}}", "example", "placeholder", "changeme",
                      "change_me", "change-me", "your", "redacted", "dummy", "sample", "replace", "insert",
                      "todo", "fixme", "fake", "notreal", "not-real", "not_real", "secret_here", "key_here",
                      "token_here", "-here", "_here")
#: References to a secret, not the secret: dotted names, lookups, calls, paths, URLs, digests.
_REFERENCE = re.compile(
    r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+"  # settings.SECRET_KEY, process.env.TOKEN
    r"|(?:/|\./|\.\./|~/|[A-Za-z]:[\\/]|\\\\).*"  # paths
    r"|.*\.(?i:pem|key|crt|cer|p12|pfx|jks|json|ya?ml|txt|env|pub|der|keystore|ppk|gpg|asc|conf|cfg|ini)"
    r"|[\w.-]+(?:/[\w.-]+)+\.[A-Za-z][A-Za-z0-9]{0,4}"  # relative paths: uploads/2024/a1b2.png
    r"|[A-Za-z][A-Za-z0-9+.-]*://.*"  # URLs (their passwords: the URL rule)
    r"|(?i:sha1|sha256|sha384|sha512|md5)[:-].*"  # digests
    r"|(?:arn|vault|ssm|op|secretsmanager|projects|env|file):.*",  # secret-manager references
)
#: The head of a call or subscript, ``os.getenv("X")``, ``os.environ["X"]``, ``ENC(...)``: a
#: name with a word in it (three letters in a row; ``Zq7(`` starts a password).
_CALL_HEAD = re.compile(r"[\w.$:]{1,64}")
_WORD3 = re.compile(r"[A-Za-z]{3}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Per kind: least length, least Shannon entropy (bits per character).
_MIN_LENGTH = MappingProxyType({"password": 6, "token": 8, "key": 16})
_MIN_ENTROPY = MappingProxyType({"password": 2.3, "token": 3.0, "key": 3.3})


_PLACEHOLDER = re.compile("|".join(map(re.escape, _PLACEHOLDER_PARTS)))
_DIGIT = re.compile("[0-9]")


def _placeholder(low: str) -> bool:
    return _PLACEHOLDER.search(low) is not None


#: ``c * log2(c)`` for the counts of a value's characters (values are capped at ``_VALUE_MAX``).
_C_LOG_C = tuple(c * math.log2(c) if c else 0.0 for c in range(_VALUE_MAX + 1))


def _entropy(value: str) -> float:
    """Shannon entropy of ``value`` (at most ``_VALUE_MAX`` characters), in bits per character."""
    n = len(value)
    return math.log2(n) - sum(map(_C_LOG_C.__getitem__, map(value.count, set(value)))) / n


def _call(value: str) -> bool:
    cut, square = value.find("("), value.find("[")
    if square > 0 and not 0 < cut < square:
        cut = square
    if cut <= 0:
        return False
    head = value[:cut]
    return _CALL_HEAD.fullmatch(head) is not None and _WORD3.search(head) is not None


def _secret_value(value: str, kind: str) -> bool:
    """Whether ``value``, assigned to a name of ``kind``, is a real secret: long enough,
    no template, placeholder or reference, not a bare word or number, mixing kinds of
    characters with enough entropy for its kind."""
    if len(value) < _MIN_LENGTH[kind] or _TEMPLATE.match(value):
        return False
    low = value.lower()
    if low.rstrip("0123456789!.") in _PLACEHOLDERS or _placeholder(low) or _REFERENCE.fullmatch(value):
        return False
    if _call(value):
        return False
    if kind == "key" and (_UUID.fullmatch(value) or ":" in value):
        return False  # an id or a cache key (``session:8f14…``) more often, under a name that does not say secret
    letters = value.replace("_", "").replace("-", "").replace(".", "").replace(" ", "")
    if letters.isalpha():  # words, identifiers; random letters only when long and mixed
        return len(value) >= 20 and value != value.lower() and value != value.upper() and _entropy(value) >= 3.8
    classes = (value != value.upper()) + (value != value.lower()) + bool(_DIGIT.search(value)) + (not value.isalnum())
    return not value.isdigit() and classes >= 2 and _entropy(value) >= _MIN_ENTROPY[kind]


def _assignment(text: str, m: re.Match[str]) -> Span | None:
    """The value assigned to a secret-like name: the match starts at the separator and
    ends where the value starts."""
    k = m.start()
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    while k > 0 and text[k - 1] in "\"'`]\\":
        k -= 1
    window = text[max(0, k - 64) : k]
    kind = _name_kind(window[len(window.rstrip(_NAME_CHARS)) :])
    if kind is None:
        return None
    s = m.end()
    quote = text[s - 1] if text[s - 1] in "\"'`" else ""
    found = (_QUOTED[quote] if quote else _BARE).match(text, s)
    if found is None:
        return None
    value = found.group() if quote else found.group().rstrip(".,:)]}")
    if not quote and value.lower() in _AUTH_SCHEMES and text[s + len(value) : s + len(value) + 1] == " ":
        s += len(value) + 1  # Authorization: Token <value>
        found = _BARE.match(text, s)
        value = found.group().rstrip(".,:)]}") if found else ""
    return (s, s + len(value)) if value and _secret_value(value, kind) else None


_ASSIGNMENTS: tuple[Rule, ...] = (
    Rule("assignment", "generic", SECRET, "a value with enough entropy assigned (= : := => in code, JSON, YAML, "
         ".env, shell, kwargs) to a name ending in password/passwd/pwd/pass/passphrase/secret/token/key/auth/"
         "credential(s)", "=", f"{_BEFORE}{_NAME}(?=>?{_OPEN}{_VALUE_GATE})(?<![=!<>]=)(?!=)>?{_OPEN}",
         locate=_assignment),
    Rule("assignment", "generic", SECRET, "(same, with a colon)", ":",
         f"{_BEFORE}{_NAME}(?==?{_OPEN}{_VALUE_GATE})(?<!::)=?{_OPEN}", locate=_assignment),
)


def member_secret(name: str, value: str) -> bool:
    """Whether ``value`` is a secret because of the JSON member ``name`` it is the value of
    (``{"db_password": "…"}``, ``{"api_key": "…"}``): the same test as an assignment."""
    value = value.strip()
    if not value or len(value) > _VALUE_MAX or any(c.isspace() for c in value):
        return False
    kind = _name_kind(name)
    return kind is not None and _secret_value(value, kind)


# --------------------------------------------------------------------------- private keys

_PEM = Rule("private-key", "generic", PRIVATE_KEY, "-----BEGIN [RSA|EC|OPENSSH|DSA|ENCRYPTED|PGP ]PRIVATE "
            "KEY[ BLOCK]----- … -----END …-----", "-",
            "----BEGIN (?:(?:RSA|EC|OPENSSH|DSA|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z]+ )?PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = re.compile(r"(?:\s*+(?:[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z-]+: [^\n]*))*+")
#: How far after its BEGIN line a key's END line may be.
_PEM_REACH = 16384


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
        yield PRIVATE_KEY, s, done


# --------------------------------------------------------------------------- the table and its passes

#: Every credential rule, in the order tried at an anchor.
RULES: tuple[Rule, ...] = (_PEM, *_SPECIAL, *_TOKENS, *_SCHEMES, *_URLS, *_ASSIGNMENTS)


@dataclass(frozen=True, slots=True)
class _Pass:
    """One anchor's regex and the rules of its alternatives (by group name)."""

    anchor: str
    pattern: re.Pattern[str]
    rules: MappingProxyType[str, Rule]
    detectors: frozenset[str]


#: What every gated alternative of an anchor needs first: token characters next (a dot ending
#: a sentence, a dash between words, a run of dashes fail at once), and a boundary within
#: the last characters before the anchor, as long as its longest prefix (inside a long run
#: of token characters, ``aB1-aB1-aB1-…``, no prefix can start where it must, so the
#: alternatives are not tried at each anchor of the run).
_LEADS = MappingProxyType({
    "-": "(?=[A-Za-z0-9_][A-Za-z0-9_-]{15})(?<![A-Za-z0-9_-]{21})",
    ".": "(?=[A-Za-z0-9_-]{6})(?<![A-Za-z0-9_-]{28}\\.)",
    "_": "(?<=[A-Za-z0-9]{2}_)(?=[A-Za-z0-9+/=][A-Za-z0-9+/=_-]{15})(?<![A-Za-z0-9_-]{21})",
    "~": "(?=[A-Za-z0-9_-][A-Za-z0-9_~.-]{15})(?<![A-Za-z0-9_~.-]{11})",
})


def _long(gate: str) -> bool:
    """Whether ``gate`` asks for 16 token characters or more."""
    counts = re.findall(r"\]\{(\d+)\}", gate)
    return bool(counts) and int(counts[0]) >= 16


def _passes(rules: Iterable[Rule]) -> tuple[_Pass, ...]:
    """One regex per anchor: the anchor, then the rules' alternatives grouped by gate
    (``gate(?:alt|alt...)``), each ending with an empty named group (so an alternative
    still starts with its own first literal, which sre checks before entering it)."""
    by_anchor: dict[str, dict[str, list[str]]] = {}
    named: dict[str, dict[str, Rule]] = {}
    for n, rule in enumerate(rules):
        group = f"r{n}"
        by_anchor.setdefault(rule.anchor, {}).setdefault(rule.gate, []).append(f"{rule.regex}(?P<{group}>)")
        named.setdefault(rule.anchor, {})[group] = rule
    passes = []
    for anchor, gates in by_anchor.items():
        literal = gates.pop("", [])
        short = [f"{gate}(?:{'|'.join(alts)})" for gate, alts in gates.items() if not _long(gate)]
        long = [f"{gate}(?:{'|'.join(alts)})" for gate, alts in gates.items() if _long(gate)]
        if long and short:  # the long gates behind one check of 16 token characters
            long = [f"(?=[A-Za-z0-9_+/=.~-]{{16}})(?:{'|'.join(long)})"]
        gated = "|".join(short + long)
        if gated and anchor in _LEADS:
            gated = f"{_LEADS[anchor]}(?:{gated})"
        body = "|".join(literal + ([gated] if gated else []))
        passes.append(_Pass(anchor, re.compile(re.escape(anchor) + "(?:" + body + ")"),
                            MappingProxyType(named[anchor]), frozenset(r.detector for r in named[anchor].values())))
    return tuple(passes)


_PASSES = _passes(RULES)


def credential_hits(text: str, active: frozenset[str]) -> list[Hit]:
    """Every credential in ``text`` of the ``active`` detectors, as ``(detector, start, end)``."""
    hits: list[Hit] = []
    begins: list[Span] = []
    for one in _PASSES:
        if one.anchor not in text or not one.detectors & active:
            continue
        rules = one.rules
        for m in one.pattern.finditer(text):
            rule = rules[m.lastgroup or ""]
            if rule is _PEM:
                begins.append(m.span())
                continue
            if rule.locate is not None:
                span = rule.locate(text, m)
            else:
                s = m.start() - rule.back
                span = (s, m.end()) if rule.check is None or rule.check(text[s : m.end()]) else None
            if span is not None and rule.detector in active:
                hits.append((rule.detector, *span))
    if begins and PRIVATE_KEY in active:
        hits.extend(_private_keys(text, begins))
    return hits
