"""``policies.credentials``: every credential rule finds a realistic value of its format
(through the scanner: detector, level and exact span), and near misses, placeholders and
look-alikes are not found.

Every value is built here from a seeded RNG and split literals, so no real secret is in
this file and secret scanners (GitHub push protection) do not flag it. Values of the exact
shape of a key count, documented examples included (``AKIAIOSFODNN7EXAMPLE``): see the
module docstring of ``policies.credentials``.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

import pytest

from policies.credentials import RULES, credential_hits, member_secret
from policies.models import BUILTIN_DETECTORS, SensitivitySpec
from policies.sensitivity import Scanner

SCANNER = Scanner(SensitivitySpec())
ALL = frozenset({"api_key", "secret", "private_key"})

UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"


def found(text: str, scanner: Scanner = SCANNER) -> list[tuple[str, str]]:
    """(detector, matched text) of every finding in ``text``."""
    return [(f.detector, text[f.start : f.end]) for f in scanner.scan_texts([("t", text)]).findings]


def pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def p(*parts: str) -> str:
    """A literal prefix, assembled from pieces so secret scanners do not match this file."""
    return "".join(parts)


Make = Callable[[random.Random], str]


def _discord_bot(r: random.Random) -> str:
    bot_id = base64.urlsafe_b64encode(str(r.randint(10**17, 12 * 10**17)).encode()).decode().rstrip("=")
    return f"{bot_id}.{pick(r, URLSAFE, 6)}.{pick(r, URLSAFE, 38)}"


#: rule name → builders of a fake value of its format (seeded RNG → deterministic).
TOKENS: dict[str, list[Make]] = {
    "aws-access-key-id": [lambda r: p("AK", "IA") + pick(r, UPPER + "234567", 16),
                          lambda r: p("AS", "IA") + pick(r, UPPER + DIGITS, 16),
                          lambda r: p("A3", "T") + pick(r, UPPER + DIGITS, 17)],
    "aws-bedrock-api-key": [lambda r: p("AB", "SK") + pick(r, B64, 130)],
    "gcp-api-key": [lambda r: p("AI", "za") + pick(r, URLSAFE, 35)],
    "gcp-oauth-client-secret": [lambda r: p("GOC", "SPX-") + pick(r, URLSAFE, 28)],
    "azure-ad-client-secret": [lambda r: pick(r, ALNUM, 3) + p("8", "Q~") + pick(r, URLSAFE + "~.", 34)],
    "azure-devops-pat": [lambda r: pick(r, ALNUM, 52) + p("AZ", "DO") + pick(r, ALNUM, 4)],
    "alibaba-access-key-id": [lambda r: p("LT", "AI") + pick(r, LOWER, 10) + pick(r, DIGITS, 10)],
    "tencent-secret-id": [lambda r: p("AK", "ID") + pick(r, ALNUM, 30) + "7z"],
    "digitalocean-token": [lambda r: p("do", "p_v1_") + pick(r, HEX, 64), lambda r: p("do", "o_v1_") + pick(r, HEX, 64)],
    "cloudflare-origin-ca-key": [lambda r: p("v1", ".0-") + pick(r, HEX, 24) + "-" + pick(r, HEX, 146)],
    "heroku-api-key": [lambda r: p("HR", "KU-AA") + pick(r, URLSAFE, 58)],
    "flyio-token": [lambda r: p("fo", "1_") + pick(r, URLSAFE, 43), lambda r: p("fm", "2_") + pick(r, B64, 120)],
    "github-token": [lambda r, c=c: p("gh", c, "_") + pick(r, ALNUM, 36) for c in "pousr"],
    "github-fine-grained-pat": [lambda r: p("github", "_pat_") + pick(r, ALNUM, 22) + "_" + pick(r, ALNUM, 59)],
    "gitlab-token": [lambda r, k=k: p("gl", k, "-") + pick(r, URLSAFE, 20)
                     for k in ("pat", "dt", "rt", "ft", "soat", "ffct", "imt", "agent", "oas")]
                    + [lambda r: p("gl", "ptt-") + pick(r, HEX, 40),
                       lambda r: p("gl", "pat-") + pick(r, URLSAFE, 27) + ".01" + pick(r, LOWER + DIGITS, 7)],
    "bitbucket-app-password": [lambda r: p("AT", "BB") + pick(r, ALNUM, 32) + pick(r, HEX.upper(), 8)],
    "atlassian-api-token": [lambda r: p("ATA", "TT3") + pick(r, URLSAFE, 170) + "=" + pick(r, HEX.upper(), 8)],
    "huggingface-token": [lambda r: p("h", "f_") + pick(r, UPPER + LOWER, 34)],
    "huggingface-org-token": [lambda r: p("api", "_org_") + pick(r, UPPER + LOWER, 34)],
    "openai-key": [lambda r, k=k: p("sk", "-", k, "-") + pick(r, URLSAFE, 74) + p("T3Blbk", "FJ") + pick(r, URLSAFE, 74)
                   for k in ("proj", "svcacct", "admin")],
    "openai-legacy-key": [lambda r: p("s", "k-") + pick(r, ALNUM, 20) + p("T3Blbk", "FJ") + pick(r, ALNUM, 20)],
    "anthropic-key": [lambda r: p("sk-", "ant-api03-") + pick(r, URLSAFE, 93) + "AA",
                      lambda r: p("sk-", "ant-admin01-") + pick(r, URLSAFE, 93) + "AA"],
    "sk-key": [lambda r: p("s", "k-") + pick(r, HEX, 32), lambda r: p("s", "k-") + pick(r, ALNUM, 48)],
    "replicate-token": [lambda r: p("r8", "_") + pick(r, ALNUM, 37)],
    "groq-key": [lambda r: p("gs", "k_") + pick(r, ALNUM, 52)],
    "perplexity-key": [lambda r: p("pp", "lx-") + pick(r, ALNUM, 48)],
    "xai-key": [lambda r: p("xa", "i-") + pick(r, ALNUM, 80)],
    "langsmith-key": [lambda r: p("lsv2", "_pt_") + pick(r, HEX, 32) + "_" + pick(r, HEX, 10)],
    "stripe-key": [lambda r, k=k: p(k, "_") + pick(r, ALNUM, 24) for k in ("sk_live", "rk_live", "sk_test", "rk_test")]
                  + [lambda r: p("sk_", "live_51") + pick(r, ALNUM, 97)],
    "stripe-webhook-secret": [lambda r: p("wh", "sec_") + pick(r, ALNUM, 32)],
    "square-token": [lambda r: p("EA", "AA") + pick(r, URLSAFE, 56) + "9z"],
    "square-legacy-token": [lambda r: p("sq0", "atp-") + pick(r, URLSAFE, 22), lambda r: p("sq0", "csp-") + pick(r, URLSAFE, 43)],
    "braintree-token": [lambda r: p("access", "_token$production$") + pick(r, LOWER + DIGITS, 16) + "$" + pick(r, HEX, 32)],
    "shopify-token": [lambda r, k=k: p("shp", k, "_") + pick(r, HEX, 32) for k in ("at", "ss", "ca", "pa")],
    "flutterwave-key": [lambda r: p("FLWSECK", "_TEST-") + pick(r, HEX, 32) + "-X"],
    "plaid-access-token": [lambda r: p("access", "-production-") + "-".join(pick(r, HEX, n) for n in (8, 4, 4, 4, 12))],
    "slack-token": [lambda r: p("xo", "xb-") + pick(r, DIGITS, 11) + "-" + pick(r, DIGITS, 13) + "-" + pick(r, ALNUM, 24),
                    lambda r: p("xo", "xp-") + "-".join(pick(r, DIGITS, n) for n in (11, 11, 13)) + "-" + pick(r, HEX, 32)],
    "slack-app-token": [lambda r: p("xa", "pp-1-A") + pick(r, UPPER + DIGITS, 10) + "-" + pick(r, DIGITS, 13) + "-"
                        + pick(r, HEX, 64)],
    "slack-webhook": [lambda r: p("hooks.sl", "ack.com/services/T") + pick(r, UPPER + DIGITS, 8) + "/B"
                      + pick(r, UPPER + DIGITS, 8) + "/" + pick(r, ALNUM, 24)],
    "discord-webhook": [lambda r: p("discord", ".com/api/webhooks/") + pick(r, DIGITS, 18) + "/" + pick(r, URLSAFE, 68)],
    "teams-webhook": [lambda r: p("webhook", ".office.com/webhookb2/") + pick(r, HEX, 36) + "@" + pick(r, HEX, 36)
                      + "/IncomingWebhook/" + pick(r, HEX, 32)],
    "sendgrid-key": [lambda r: p("S", "G.") + pick(r, URLSAFE, 22) + "." + pick(r, URLSAFE, 43)],
    "mailgun-key": [lambda r: p("ke", "y-") + pick(r, HEX, 32)],
    "brevo-key": [lambda r: p("xkey", "sib-") + pick(r, HEX, 64) + "-" + pick(r, ALNUM, 16)],
    "twilio-account-sid": [lambda r: p("A", "C") + pick(r, HEX, 32)],
    "telegram-bot-token": [lambda r: str(r.randint(10**8, 8 * 10**9)) + p(":", "AA") + pick(r, URLSAFE, 33)],
    "discord-bot-token": [_discord_bot],
    "mailchimp-key": [lambda r: pick(r, HEX, 32) + p("-u", "s") + str(r.randint(1, 21))],
    "circleci-token": [lambda r: p("CCI", "PAT_") + pick(r, ALNUM, 22) + "_" + pick(r, HEX, 40)],
    "buildkite-token": [lambda r: p("bk", "ua_") + pick(r, HEX, 40)],
    "terraform-cloud-token": [lambda r: pick(r, ALNUM, 14) + p(".atlas", "v1.") + pick(r, URLSAFE, 67)],
    "vault-token": [lambda r: p("hv", "s.") + pick(r, URLSAFE, 92), lambda r: p("hv", "b.") + pick(r, URLSAFE, 150)],
    "doppler-token": [lambda r, k=k: p("dp.", k, ".") + pick(r, ALNUM, 43) for k in ("pt", "st", "sa")],
    "pulumi-token": [lambda r: p("pu", "l-") + pick(r, HEX, 40)],
    "octopus-deploy-key": [lambda r: p("AP", "I-") + pick(r, UPPER, 20) + pick(r, DIGITS, 6)],
    "harness-token": [lambda r: p("pa", "t.") + pick(r, URLSAFE, 22) + "." + pick(r, ALNUM, 24) + "." + pick(r, ALNUM, 20)],
    "grafana-service-account-token": [lambda r: p("gl", "sa_") + pick(r, ALNUM, 32) + "_" + pick(r, HEX, 8)],
    "grafana-cloud-token": [lambda r: p("gl", "c_") + pick(r, B64, 120) + "=="],
    "sentry-token": [lambda r: p("sntr", "yu_") + pick(r, HEX, 64), lambda r: p("sntr", "ys_eyJ") + pick(r, B64, 150)],
    "newrelic-key": [lambda r: p("NR", "AK-") + pick(r, UPPER + DIGITS, 27), lambda r: p("NR", "JS-") + pick(r, HEX, 19)],
    "dynatrace-token": [lambda r: p("dt0", "c01.") + pick(r, UPPER + DIGITS, 24) + "." + pick(r, ALNUM, 64)],
    "sonarqube-token": [lambda r: p("sq", "p_") + pick(r, HEX, 40)],
    "1password-service-token": [lambda r: p("op", "s_eyJ") + pick(r, B64, 300)],
    "age-secret-key": [lambda r: p("AGE-SECRET", "-KEY-1") + pick(r, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)],
    "openshift-token": [lambda r: p("sha2", "56~") + pick(r, URLSAFE, 43)],
    "npm-token": [lambda r: p("np", "m_") + pick(r, ALNUM, 36)],
    "pypi-token": [lambda r: p("pypi-", "AgEIcHlwaS5vcmc") + pick(r, URLSAFE, 120)],
    "dockerhub-token": [lambda r: p("dckr", "_pat_") + pick(r, URLSAFE, 27)],
    "rubygems-token": [lambda r: p("ruby", "gems_") + pick(r, HEX, 48)],
    "artifactory-key": [lambda r: p("AK", "Cp") + pick(r, ALNUM, 69)],
    "clojars-token": [lambda r: p("CLO", "JARS_") + pick(r, LOWER + DIGITS, 60)],
    "linear-key": [lambda r: p("lin", "_api_") + pick(r, ALNUM, 40)],
    "linear-oauth-token": [lambda r: p("lin", "_oauth_") + pick(r, HEX, 64)],
    "notion-token": [lambda r: p("sec", "ret_") + pick(r, ALNUM, 41) + "4q"],
    "notion-token-ntn": [lambda r: p("nt", "n_") + pick(r, DIGITS, 11) + pick(r, ALNUM, 35)],
    "postman-key": [lambda r: p("PM", "AK-") + pick(r, HEX, 24) + "-" + pick(r, HEX, 34)],
    "prefect-key": [lambda r: p("pn", "u_") + pick(r, ALNUM, 36)],
    "readme-key": [lambda r: p("rd", "me_") + pick(r, LOWER + DIGITS, 70)],
    "planetscale-token": [lambda r: p("pscale", "_tkn_") + pick(r, URLSAFE, 43)],
    "shippo-token": [lambda r: p("shippo", "_live_") + pick(r, HEX, 40)],
    "duffel-token": [lambda r: p("duffel", "_test_") + pick(r, URLSAFE, 43)],
    "typeform-token": [lambda r: p("tf", "p_") + pick(r, URLSAFE, 59)],
    "easypost-key": [lambda r: p("EZ", "AK") + pick(r, ALNUM, 54)],
    "infracost-key": [lambda r: p("ic", "o-") + pick(r, ALNUM, 30) + "9x"],
    "frameio-token": [lambda r: p("fio", "-u-") + pick(r, URLSAFE, 64)],
    "scalingo-token": [lambda r: p("tk-", "us-") + pick(r, URLSAFE, 48)],
    "adobe-client-secret": [lambda r: p("p8", "e-") + pick(r, ALNUM, 30) + "5k"],
}

#: Rules found by context, with the text and the secret in it (tested below by syntax).
CONTEXT_RULES = {"assignment", "url-password", "basic-auth", "bearer-token", "private-key"}


def examples() -> list[tuple[str, str, str]]:
    """(rule, detector, value) for every builder, with a per-rule seeded RNG."""
    detectors = {rule.name: rule.detector for rule in RULES}
    out = []
    for name, makers in TOKENS.items():
        rng = random.Random(f"credentials:{name}")
        out.extend((name, detectors[name], make(rng)) for make in makers)
    return out


EXAMPLES = examples()


def test_every_rule_has_an_example() -> None:
    assert {rule.name for rule in RULES} == set(TOKENS) | CONTEXT_RULES


@pytest.mark.parametrize(("rule", "detector", "value"), EXAMPLES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(EXAMPLES)])
def test_token_found_in_every_context(rule: str, detector: str, value: str) -> None:
    for text in (value, f"key={value}\n", f'{{"cfg": "{value}"}}', f"see {value}.", f"'{value}'",
                 f"line one\\n{value}\\n", f"Here it is: {value} (rotate it)", f"export X={value}"):
        assert (detector, value) in found(text), (rule, text)


@pytest.mark.parametrize(("rule", "detector", "value"), EXAMPLES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(EXAMPLES)])
def test_token_glued_to_a_word_is_not_found(rule: str, detector: str, value: str) -> None:
    """A prefix inside a longer word is not a prefix (``xghp_…``); a token followed by more
    token characters is not the token."""
    left = found("x" + value)
    assert (detector, value) not in left and ("api_key", "x" + value) not in left
    if rule not in ("mailchimp-key",):  # ends in digits: more digits make another valid key
        assert (detector, value) not in found(value + "Q7" if value[-1].isalnum() else value + "x")


@pytest.mark.parametrize(("rule", "detector", "value"), EXAMPLES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(EXAMPLES)])
def test_truncated_token_is_not_this_rule(rule: str, detector: str, value: str) -> None:
    """Cut to half its length, a token is no longer of its format (it may still be a
    ``sk-`` key or a bearer token by another rule, never the same span)."""
    half = value[: len(value) // 2]
    spans = {hit[1:] for hit in credential_hits(half, ALL)}
    assert (0, len(half)) not in spans or rule in ("sk-key", "openai-key", "openai-legacy-key", "vault-token", "sentry-token",
                                                    "grafana-cloud-token", "1password-service-token", "flyio-token",
                                                    "atlassian-api-token", "aws-bedrock-api-key", "github-fine-grained-pat",
                                                    "stripe-key", "gitlab-token", "slack-token", "slack-app-token",
                                                    "anthropic-key", "pypi-token", "teams-webhook", "square-token")


def test_documented_examples_count() -> None:
    """AWS's documented example key has the exact shape of a key: found (a gateway cannot
    tell it from a live key pasted by mistake)."""
    example = p("AKIA", "IOSFODNN7EXAMPLE")
    assert found(f"aws_access_key_id = {example}") == [("api_key", example)]


@pytest.mark.parametrize("text", [
    p("gh", "p_") + "x" * 36,  # filler
    p("AKIA", "XXXXXXXXXXXXXXXX"),
    p("AKIA", "IOSFODNN7EXAMPL"),  # one short
    p("akia", "iosfodnn7example"),  # lower case
    p("gh", "p_") + "short",
    p("sk", "_live_") + "...",
    p("pk", "_live_") + "4eC39HqLyjWDarjtT1zdp7dc",  # publishable: not a secret
    p("sk", "-") + "this-is-not-a-key-at-all-really",
    "pip install " + p("sk", "-learn"),
    p("xo", "xb-") + "not-a-token-here",
    "Slack bot tokens start with " + p("xo", "xb-") + " and user tokens with " + p("xo", "xp-") + ".",
    "HF_TOKEN=" + p("h", "f_") + "***",
    p("gl", "pat-") + "xxxxxxxxxxxxxxxxxxxx",
    "key-value store, key-value pairs and a well-known long-established convention",
    "the pass-through mode; token-based auth; API-first design",
    "SG.com is a domain; e.g. hvs. is a prefix",
    p("ATA", "TT3") + "short",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "Qm9ndXNLZXlCb2d1c0tleUJvZ3VzS2V5Qm9ndXNLZXk ci-deploy-key",
    "123e4567-e89b-12d3-a456-426614174000",  # UUID
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # SHA-256
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 and 9fceb02",  # git SHAs
    "image: ghcr.io/acme/api@sha256:" + "ab" * 32,
    '"integrity": "sha512-' + "A1b2" * 21 + 'Zw=="',
    "requests==2.31.0 --hash=sha256:" + "0f" * 32,
    "traceparent: 00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-00f067aa0ba902b7-01",
    "Refunded charge ch_3" + "Nq2vX9kLm4PbR7sT1uW5yZ8a" + " for cus_" + "N3kL9pQ2rS5tV8",
    "x-request-id: req_" + "0123456789abcdef" * 2,
    "12:30:45 on 2024-03-15, 10.0.0.1:8080",
])
def test_not_a_credential(text: str) -> None:
    assert not {"api_key", "secret", "private_key"} & {name for name, _ in found(text)}, found(text)


def test_base64_image_is_not_a_credential() -> None:
    rng = random.Random(7)
    image = "data:image/png;base64," + base64.b64encode(rng.randbytes(3000)).decode()
    assert found(image) == []
    assert found(json.dumps({"image": image, "token_count": 3})) == []


# --------------------------------------------------------------------------- secrets by context

def secret(rng: random.Random, n: int = 24) -> str:
    return pick(rng, ALNUM, n - 2) + rng.choice(DIGITS) + rng.choice("!#%+-")


RNG = random.Random("credentials:context")
PW = secret(RNG)
AWS_SECRET = pick(RNG, B64, 40)


@pytest.mark.parametrize(("template", "value"), [
    ("aws_secret_access_key = {v}", AWS_SECRET),
    ("[default]\naws_secret_access_key={v}\nregion = eu-west-1", AWS_SECRET),
    ('"SecretAccessKey": "{v}",', AWS_SECRET),
    ("export AWS_SECRET_ACCESS_KEY={v}", AWS_SECRET),
    ('secret_key = "{v}"', AWS_SECRET),
    ('password = "{v}"', PW),
    ("password='{v}'", PW),
    ("DB_PASSWORD={v}", PW),
    ("POSTGRES_PASSWORD: {v}", PW),
    ('{{"username": "svc", "password": "{v}"}}', PW),
    ('{{\\"password\\": \\"{v}\\"}}', PW),  # JSON inside a JSON string (tool-call arguments)
    ("spring.datasource.password={v}", PW),
    ("mysqldump --user=backup --password={v} shop", PW),
    ("PGPASSWORD='{v}' psql -h db", PW),
    ("ansible_become_pass: {v}", PW),
    ("password := \"{v}\"", PW),
    ("'password' => '{v}',", PW),
    ("connect(host='db', password='{v}', port=5432)", PW),
    ("Server=db;User Id=sa;Password={v};Encrypt=true", PW),
    ("client_secret={v}&grant_type=client_credentials", PW),
    ("X-Api-Key: {v}", PW),
    ("api_key: {v}", PW),
    ("apiKey: \"{v}\"", PW),
    ("GITHUB_TOKEN={v}", PW),
    ("auth_token = '{v}'", PW),
    ('os.environ["OPENAI_API_KEY"] = "{v}"', PW),
    ("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={v};EndpointSuffix=core.windows.net",
     base64.b64encode(RNG.randbytes(64)).decode()),
    ("HEROKU_API_KEY={v}", "0b8f6e7a-3c1d-4e5f-9a2b-7c6d5e4f3a2b"),
    ("//registry.npmjs.org/:_authToken={v}", "0b8f6e7a-3c1d-4e5f-9a2b-7c6d5e4f3a2b"),
    ("DD_API_KEY={v}", pick(RNG, HEX, 32)),
    ("TWILIO_AUTH_TOKEN = '{v}'", pick(RNG, HEX, 32)),
    ("DATABRICKS_TOKEN={v}", p("da", "pi") + pick(RNG, HEX, 32)),
    ("NUGET_API_KEY={v}", p("oy", "2") + pick(RNG, LOWER + DIGITS, 43)),
    ("TWILIO_API_KEY={v}", p("S", "K") + pick(RNG, HEX, 32)),
    ("key = {v}", pick(RNG, ALNUM, 40)),
    ("Authorization: Token {v}", pick(RNG, HEX, 40)),
    ("password: {v}", "fqT%?)5BvRDZQ%oRsSvT^1]6"),  # a generated password with brackets
    ("password = hunter2", "hunter2"),
])
def test_secret_by_assignment(template: str, value: str) -> None:
    text = template.replace("{v}", value).replace("{{", "{").replace("}}", "}")
    assert ("secret", value) in found(text) or ("api_key", value) in found(text), found(text)


@pytest.mark.parametrize("text", [
    'password = "${DB_PASSWORD}"',
    "password: ${{ secrets.DB_PASSWORD }}",
    "token: <your-token>",
    "api_key: <your-api-key-here>",
    'api_key="YOUR_API_KEY"',
    "password: ********",
    "password = xxxxxxxxxx",
    "password = changeme",
    "password: changeme123",
    'password = "password123"',
    "password = secret",
    "DB_PASSWORD=",
    'password: ""',
    "password: null",
    "password = getpass.getpass('Password: ')",
    'DB_PASSWORD = os.getenv("DB_PASSWORD")',
    'client = OpenAI(api_key=os.environ["OPENAI_API_KEY"])',
    "api_key = settings.OPENAI_API_KEY",
    "token = request.headers.get('Authorization')",
    "api_key: SecretStr | None = None",
    "password: str = ''",
    "PRIVATE_KEY_PATH=/etc/ssl/private/server.key",
    "ssl_key = ./certs/server.key",
    "key_file: ~/.ssh/id_ed25519",
    "token_url: https://login.example.com/oauth/token",
    "password_hash = $2b$12$abcdefghijklmnopqrstuv",
    "password_min_length: 12",
    "max_tokens: 4096",
    "max_tokens=4096, temperature=0.2",
    '"nextPageToken": "' + pick(RNG, URLSAFE, 48) + '"',
    '"csrf_token": "' + pick(RNG, ALNUM, 32) + '"',
    '"request_id": "0b8f6e7a-3c1d-4e5f-9a2b-7c6d5e4f3a2b"',
    "primary_key: order_id",
    "cache_key = 'user:1234:profile'",
    "key: password",
    "access_key_id: AKIA-like-name",
    "key: value",
    "The password must be at least 12 characters; tokens rotate every 90 days.",
    "Passwords must be at least 12 characters and API keys are rotated every 90 days.",
    "secret: !vault |",
    "password: *default_password",
    "password = %(db_password)s",
    "token = {token}",
    "password: ENC(" + pick(RNG, B64, 24) + ")",
    "key = 'value-' + str(i)",
    "sha256: " + pick(RNG, HEX, 64) + "  app.tar.gz",
    "token_type: Bearer",
    'const pass = "xxx"; // filled in later',
])
def test_not_a_secret(text: str) -> None:
    assert "secret" not in {name for name, _ in found(text)}, found(text)


@pytest.mark.parametrize(("url", "password"), [
    ("postgres://app_user:{pw}@orders-db.internal:5432/orders", PW),
    ("postgresql://admin:{pw}@10.0.4.12/analytics", PW),
    ("mysql://root:{pw}@mysql.internal:3306/shop", PW),
    ("mongodb+srv://svc:{pw}@cluster0.x7kq2.mongodb.net/prod?retryWrites=true", PW),
    ("redis://:{pw}@redis.internal:6379/0", PW),
    ("rediss://default:{pw}@cache.example.com:6380", PW),
    ("amqp://worker:{pw}@rabbitmq:5672/%2F", PW),
    ("amqps://worker:{pw}@rabbitmq:5671", PW),
    ("https://deploy:{pw}@nexus.acme-corp.com/repository/pypi/simple", PW),
    ("mssql+pyodbc://etl:{pw}@sqlprod01/warehouse?driver=ODBC+Driver+18", PW),
    ("git clone https://jdoe:{pw}@bitbucket.org/acme/app.git", "Summerwinter2021!"),
])
def test_url_password(url: str, password: str) -> None:
    text = url.replace("{pw}", password)
    assert ("secret", password) in found(text)
    assert ("secret", password) in found(f'DATABASE_URL="{text}"')


@pytest.mark.parametrize("text", [
    "postgres://user:password@localhost:5432/db",
    "postgres://postgres:postgres@localhost/test",
    "amqp://guest:guest@localhost:5672",
    "mysql://root:${MYSQL_ROOT_PASSWORD}@db/app",
    "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}:5432/app",
    "postgres://user:<pass>@host/db",
    "postgres://user:****@host/db",
    "redis://:{password}@host:6379",
    "postgresql://postgres@localhost:5432/test_db",
    "https://example.com:8443/path?x=1",
    "http://user@example.com/",
    "mongodb://user:%s@host/db",
    "ssh://git@github.com:22/acme/repo.git",
    "https://user:pass@example.com",
])
def test_url_without_real_password(text: str) -> None:
    assert "secret" not in {name for name, _ in found(text)}, found(text)


def test_url_with_a_token_as_password_is_also_a_key() -> None:
    token = p("gh", "p_") + pick(random.Random(3), ALNUM, 36)
    text = f"git remote set-url origin https://x-access-token:{token}@github.com/acme/web.git"
    assert found(text) == [("api_key", token)]  # the key, once (the overlapping secret is dropped)


def test_basic_and_bearer_credentials() -> None:
    creds = base64.b64encode(b"ops-bot:" + PW.encode()).decode()
    assert found(f"Authorization: Basic {creds}") == [("secret", creds)]
    token = pick(random.Random(4), ALNUM, 40)
    assert found(f"-H 'Authorization: Bearer {token}'") == [("api_key", token)]
    placeholder = base64.b64encode(b"user:password").decode()
    assert found(f"Authorization: Basic {placeholder}") == []
    assert found("Basic auth is enabled; a Bearer token is required") == []
    assert found("Authorization: Bearer $TOKEN") == []


def test_pem_private_key_in_service_account_json() -> None:
    body = base64.b64encode(random.Random(5).randbytes(600)).decode()
    pem = p("-----BEGIN ", "PRIVATE KEY-----\\n") + "\\n".join(body[i : i + 64] for i in range(0, 600, 64)) \
        + p("\\n-----END ", "PRIVATE KEY-----\\n")
    text = '{"type": "service_account", "private_key_id": "' + pick(RNG, HEX, 40) + '", "private_key": "' + pem + '"}'
    assert [name for name, _ in found(text)] == ["private_key"]


# --------------------------------------------------------------------------- member names


def chat_with_metadata(metadata: dict[str, object]) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": metadata}


def test_member_value_is_a_secret_by_its_name() -> None:
    """A JSON member is two texts to the scanner (its name, its value): the name still
    makes the value a secret."""
    scan = SCANNER.scan("chat", chat_with_metadata({"db_password": PW, "note": PW, "request_id": PW}))
    assert [(f.detector, f.location) for f in scan.findings] == [("secret", "metadata.db_password")]
    assert scan.level == "restricted"
    tool = {"type": "function", "function": {"name": "deploy", "parameters": {
        "type": "object", "properties": {"api_key": {"type": "string", "default": AWS_SECRET}}}}}
    scan = SCANNER.scan("chat", {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": [tool]})
    assert [f.detector for f in scan.findings] == ["secret"]


def test_member_name_rules() -> None:
    assert member_secret("aws_secret_access_key", AWS_SECRET)
    assert member_secret("clientSecret", PW)
    assert member_secret("X-Api-Key", PW)
    assert not member_secret("api_key", "YOUR_API_KEY")
    assert not member_secret("nextPageToken", PW)
    assert not member_secret("token", "two words " + PW)
    assert not member_secret("description", PW)
    assert not member_secret("key_id", PW)


# --------------------------------------------------------------------------- detectors and levels


def test_secret_is_a_builtin_detector_at_restricted() -> None:
    assert BUILTIN_DETECTORS["secret"] == "restricted"
    assert BUILTIN_DETECTORS["api_key"] == "restricted"


def test_detectors_are_switched_apart() -> None:
    off = {name: "off" for name in BUILTIN_DETECTORS}
    key = p("gh", "p_") + pick(random.Random(6), ALNUM, 36)
    text = f"password = {PW}\ntoken: {key}"
    only_keys = Scanner(SensitivitySpec(detectors={**off, "api_key": "restricted"}))
    assert found(text, only_keys) == [("api_key", key)]
    only_secrets = Scanner(SensitivitySpec(detectors={**off, "secret": "confidential"}))
    scan = only_secrets.scan_texts([("t", text)])
    assert [(f.detector, f.level) for f in scan.findings] == [("secret", "confidential")] * 2
    assert scan.level == "confidential"


def test_hits_of_inactive_detectors_are_not_computed() -> None:
    assert credential_hits(f"password = {PW}", frozenset({"api_key"})) == []
    pem = p("-----BEGIN ", "PRIVATE KEY-----\nMIIE\n-----END ", "PRIVATE KEY-----")
    assert credential_hits(pem, frozenset({"secret"})) == []
    assert credential_hits(pem, frozenset({"private_key"})) == [("private_key", 0, len(pem))]


def test_rule_table_is_consistent() -> None:
    families = {rule.family for rule in RULES}
    assert families <= {"cloud", "source forge", "ML platform", "payments", "messaging", "CI/CD and ops", "registry",
                        "SaaS", "database", "generic"}
    assert {rule.detector for rule in RULES} == {"api_key", "secret", "private_key"}
    assert all(rule.format for rule in RULES)
    assert all(len(rule.anchor) == 1 for rule in RULES)


@pytest.mark.parametrize("text", [
    '{"key": "uploads/2024/03/a1b2c3d4e5f6a7b8.png"}',
    '{"key": "session:8f14e45fceea167a5a36dedd4bea2543"}',
    '{"key": "checkout.payment.button_label"}',
    '{"key": "0b8f6e7a-3c1d-4e5f-9a2b-7c6d5e4f3a2b"}',
])
def test_bare_key_names_need_a_random_value(text: str) -> None:
    """``key`` alone says little: an object path, a cache key, a translation key or an id
    under it is not a secret; a random-looking value is (``test_secret_by_assignment``)."""
    assert "secret" not in {name for name, _ in found(text)}, found(text)
