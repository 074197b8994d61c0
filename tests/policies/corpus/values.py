"""Fake but format-valid sensitive values for the labelled corpus (``build.py``).

Every generator takes a seeded ``random.Random`` and returns ``(value, format)``:
Luhn-valid card numbers of each network in its usual groupings, mod-97-valid IBANs
with each country's length and BBAN shape, SSNs outside the never-issued ranges,
phone numbers in national and international shapes, e-mail addresses, IPv4/IPv6
addresses, JWTs whose header and payload decode to JSON, PEM private keys, and
credentials of many providers with their documented prefixes, lengths and alphabets.

The formats come from the providers' own documentation and common knowledge of what
these values look like, not from the detectors under test. Values are random: none is a
real card, account, key or person. Prefixes are plain literals here; the generated
values exist only in the corpus files.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

Value = tuple[str, str]  # (value, format)

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
ALNUM = string.ascii_letters + DIGITS
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
BASE32 = UPPER + "234567"


def pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------- cards


def luhn_complete(partial: str) -> str:
    """``partial`` + the check digit that makes it pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return partial + str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: network → (prefixes, length, groupings). Groupings are how the number is printed on
#: the card and typed by people.
NETWORKS: dict[str, tuple[tuple[str, ...], int, tuple[tuple[int, ...], ...]]] = {
    "visa": (("4",), 16, ((4, 4, 4, 4),)),
    "visa-19": (("4",), 19, ((4, 4, 4, 4, 3),)),
    "mastercard": (("51", "52", "53", "54", "55"), 16, ((4, 4, 4, 4),)),
    "mastercard-2series": (tuple(str(p) for p in range(2221, 2721)), 16, ((4, 4, 4, 4),)),
    "amex": (("34", "37"), 15, ((4, 6, 5),)),
    "discover": (("6011", "644", "645", "646", "647", "648", "649", "65"), 16, ((4, 4, 4, 4),)),
    "diners": (("36", "38", "300", "301", "302", "303", "304", "305"), 14, ((4, 6, 4),)),
    "jcb": (tuple(str(p) for p in range(3528, 3590)), 16, ((4, 4, 4, 4),)),
    "unionpay": (("62",), 16, ((4, 4, 4, 4),)),
    "unionpay-19": (("62",), 19, ((4, 4, 4, 4, 3), (6, 13))),
    "maestro": (("6759", "5018", "5020", "5038", "6304"), 16, ((4, 4, 4, 4),)),
}


def card(rng: random.Random, network: str, sep: str) -> Value:
    prefixes, length, groupings = NETWORKS[network]
    prefix = rng.choice(prefixes)
    number = luhn_complete(prefix + pick(rng, DIGITS, length - len(prefix) - 1))
    groups = rng.choice(groupings)
    if sep == "":
        printed = number
    else:
        parts, i = [], 0
        for g in groups:
            parts.append(number[i:i + g])
            i += g
        printed = sep.join(parts)
    label = {" ": "spaces", "-": "dashes", "": "no separator"}[sep]
    return printed, f"{network} {'-'.join(map(str, groups)) if sep else length} {label}"


# --------------------------------------------------------------------------- IBAN

#: country → BBAN shape: runs of ``<count><kind>``, kind n (digits), a (upper letters),
#: c (upper letters and digits); a fixed bank code list where banks use letters.
IBAN_SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "DE": ("8n10n", ()), "GB": ("4a6n8n", ("NWBK", "BARC", "HBUK", "LOYD", "MIDL")),
    "FR": ("5n5n11c2n", ()), "ES": ("4n4n1n1n10n", ()), "IT": ("1a5n5n12c", ()),
    "NL": ("4a10n", ("ABNA", "INGB", "RABO", "TRIO")), "BE": ("3n7n2n", ()), "CH": ("5n12c", ()),
    "AT": ("5n11n", ()), "PL": ("8n16n", ()), "SE": ("3n16n1n", ()),
    "IE": ("4a6n8n", ("AIBK", "BOFI")), "PT": ("4n4n11n2n", ()), "DK": ("4n9n1n", ()),
    "NO": ("4n6n1n", ()), "FI": ("3n11n", ()), "LU": ("3n13c", ()), "SA": ("2n18c", ()),
    "AE": ("3n16n", ()), "BR": ("8n5n10n1a1c", ()),
}


def _bban(rng: random.Random, shape: str, banks: tuple[str, ...]) -> str:
    out: list[str] = []
    num = ""
    for ch in shape:
        if ch.isdigit():
            num += ch
            continue
        n, num = int(num), ""
        if ch == "a" and banks and not out:
            out.append(rng.choice(banks))
        else:
            out.append(pick(rng, {"n": DIGITS, "a": UPPER, "c": UPPER + DIGITS}[ch], n))
    return "".join(out)


def iban_check(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def iban(rng: random.Random, country: str, spaced: bool) -> Value:
    shape, banks = IBAN_SHAPES[country]
    bban = _bban(rng, shape, banks)
    if country == "PT":  # the NIB's own check digits (which make every PT IBAN start PT50)
        bban = bban[:19] + f"{98 - int(bban[:19]) * 100 % 97:02d}"
    compact = country + iban_check(country, bban) + bban
    printed = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if spaced else compact
    return printed, f"{country} {'grouped by 4' if spaced else 'compact'}"


# --------------------------------------------------------------------------- people


FIRST = ("maria", "james", "aisha", "chen", "oliver", "sofia", "lukas", "priya", "mateo", "hannah", "kenji",
         "fatima", "noah", "elena", "david", "amara", "lars", "yuki", "omar", "claire", "tomasz", "grace")
LAST = ("garcia", "smith", "khan", "wang", "brown", "rossi", "muller", "patel", "lopez", "schmidt", "tanaka",
        "haddad", "johnson", "novak", "cohen", "okafor", "nielsen", "sato", "farouk", "martin", "kowalski")
DOMAINS = ("gmail.com", "outlook.com", "yahoo.co.uk", "acme-corp.com", "northwind.io", "globex.de",
           "initech.co", "hooli.com", "mail.umbrella-group.eu", "protonmail.com", "stark-industries.net",
           "web.de", "icloud.com", "contoso.onmicrosoft.com", "students.uni-heidelberg.de")


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def email(rng: random.Random) -> Value:
    first, last = person(rng)
    style = rng.randrange(6)
    local = (f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{rng.randint(1, 99)}",
             f"{first}+invoices", f"{last}.{first[0]}", f"{first}{rng.randint(1970, 2005)}")[style]
    return f"{local}@{rng.choice(DOMAINS)}", ("first.last", "flast", "first_last+digits", "plus tag",
                                             "last.f", "first+year")[style]


def _nanp(rng: random.Random) -> tuple[str, str, str]:
    area = f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}"
    while area[1:] == "11":
        area = f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}"
    exchange = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
    while exchange[1:] == "11":
        exchange = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
    return area, exchange, pick(rng, DIGITS, 4)


def phone(rng: random.Random, style: str) -> Value:
    a, x, s = _nanp(rng)

    def d(n: int) -> str:
        return pick(rng, DIGITS, n)

    shapes: dict[str, Callable[[], str]] = {
        "us (415) 555-0100": lambda: f"({a}) {x}-{s}",
        "us 415-555-0100": lambda: f"{a}-{x}-{s}",
        "us 415.555.0100": lambda: f"{a}.{x}.{s}",
        "us +1 415 555 0100": lambda: f"+1 {a} {x} {s}",
        "us +1-415-555-0100": lambda: f"+1-{a}-{x}-{s}",
        "us e164": lambda: f"+1{a}{x}{s}",
        "us 1 (415) 555-0100": lambda: f"1 ({a}) {x}-{s}",
        "uk landline intl": lambda: f"+44 20 {rng.randint(3, 8)}{d(3)} {d(4)}",
        "uk mobile intl": lambda: f"+44 7{rng.randint(4, 9)}{d(2)} {d(6)}",
        "uk mobile national": lambda: f"07{rng.randint(4, 9)}{d(2)} {d(6)}",
        "de mobile intl": lambda: f"+49 15{rng.randint(1, 9)} {d(8)}",
        "de landline intl": lambda: f"+49 30 {d(8)}",
        "de mobile national": lambda: f"0151 {d(8)}",
        "fr mobile intl": lambda: f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
        "fr mobile national": lambda: f"06 {d(2)} {d(2)} {d(2)} {d(2)}",
        "in mobile intl": lambda: f"+91 9{d(4)} {d(5)}",
        "au mobile intl": lambda: f"+61 4{d(2)} {d(3)} {d(3)}",
        "jp mobile intl": lambda: f"+81 90-{d(4)}-{d(4)}",
        "br mobile intl": lambda: f"+55 11 9{d(4)}-{d(4)}",
        "es mobile intl": lambda: f"+34 6{d(2)} {d(2)} {d(2)} {d(2)}",
        "nl mobile intl": lambda: f"+31 6 {d(8)}",
        "mx intl": lambda: f"+52 55 {d(4)} {d(4)}",
    }
    return shapes[style](), style


PHONE_STYLES = (
    "us (415) 555-0100", "us 415-555-0100", "us 415.555.0100", "us +1 415 555 0100", "us +1-415-555-0100",
    "us e164", "us 1 (415) 555-0100", "uk landline intl", "uk mobile intl", "uk mobile national",
    "de mobile intl", "de landline intl", "de mobile national", "fr mobile intl", "fr mobile national",
    "in mobile intl", "au mobile intl", "jp mobile intl", "br mobile intl", "es mobile intl", "nl mobile intl",
    "mx intl",
)


def ssn(rng: random.Random, style: str) -> Value:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    number = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    sep = {"dashes": "-", "spaces": " ", "bare": ""}[style]
    return f"{number[:3]}{sep}{number[3:5]}{sep}{number[5:]}", style


# --------------------------------------------------------------------------- network


def ipv4(rng: random.Random, kind: str) -> Value:
    if kind == "private 10/8":
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    if kind == "private 192.168/16":
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    if kind == "private 172.16/12":
        return f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    first = rng.choice([n for n in range(11, 224) if n not in (100, 127, 169, 172, 192, 198, 203)])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind


def ipv6(rng: random.Random, kind: str) -> Value:
    prefix = rng.choice(("2a01:4f8", "2600:1f18", "2604:a880", "2a02:c207", "2406:da18"))
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(6)]
    if kind == "ipv6 compressed":
        return f"{prefix}:{groups[0]}:{groups[1]}::{groups[2]}", kind
    full = [p.zfill(4) for p in prefix.split(":")] + [g.zfill(4) for g in groups]
    return ":".join(full), kind


# --------------------------------------------------------------------------- tokens


def jwt(rng: random.Random, alg: str) -> Value:
    header: dict[str, object] = {"alg": alg, "typ": "JWT"}
    if alg != "HS256":
        header = {"alg": alg, "kid": pick(rng, URLSAFE, 22), "typ": "JWT"}
    first, last = person(rng)
    now = rng.randint(1_700_000_000, 1_730_000_000)
    payload = rng.choice((
        {"sub": f"user_{rng.randint(1000, 99999)}", "name": f"{first.title()} {last.title()}", "iat": now},
        {"iss": "https://auth.acme-corp.com/", "sub": f"auth0|{pick(rng, HEX, 24)}", "aud": "orders-api",
         "iat": now, "exp": now + 3600, "scope": "read:orders write:orders"},
        {"sub": str(rng.randint(10**8, 10**9)), "email_verified": True, "iat": now, "exp": now + 900,
         "roles": ["admin"]},
        {"session_id": pick(rng, HEX, 32), "tenant": "northwind", "iat": now, "exp": now + 86400},
    ))
    sig_len = {"HS256": 32, "RS256": 256, "ES256": 64}[alg]
    token = ".".join((b64url(json.dumps(header, separators=(",", ":")).encode()),
                      b64url(json.dumps(payload, separators=(",", ":")).encode()),
                      b64url(rng.randbytes(sig_len))))
    return token, alg


PEM_KINDS: dict[str, tuple[str, bytes, int]] = {
    # label → (PEM type, DER prefix as real keys of the kind start, body bytes)
    "rsa pkcs1": ("RSA PRIVATE KEY", bytes.fromhex("308204a40201000282010100"), 1180),
    "pkcs8": ("PRIVATE KEY", bytes.fromhex("308204bd020100300d06092a864886f70d0101010500048204a7"), 1190),
    "ec": ("EC PRIVATE KEY", bytes.fromhex("30770201010420"), 112),
    "openssh ed25519": ("OPENSSH PRIVATE KEY", b"openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none", 360),
    "encrypted pkcs8": ("ENCRYPTED PRIVATE KEY", bytes.fromhex("308205363060"), 1300),
    "dsa": ("DSA PRIVATE KEY", bytes.fromhex("308201bb02010002818100"), 430),
}


def private_key(rng: random.Random, kind: str) -> Value:
    label, prefix, size = PEM_KINDS[kind]
    body = base64.b64encode(prefix + rng.randbytes(size)).decode()
    lines = [body[i:i + (70 if kind.startswith("openssh") else 64)] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]), kind


def pgp_private_key(rng: random.Random) -> Value:
    body = base64.b64encode(bytes.fromhex("9503c604") + rng.randbytes(900)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PGP PRIVATE KEY BLOCK-----", "", *lines, "=" + pick(rng, B64, 4),
                      "-----END PGP PRIVATE KEY BLOCK-----"]), "pgp"


def password(rng: random.Random, style: str) -> str:
    """A password as people and generators make them."""
    if style == "generated":
        return pick(rng, ALNUM, rng.randint(16, 24))
    if style == "generated symbols":
        core = pick(rng, ALNUM + "!#%^*()_=+[]{}?", rng.randint(14, 22))
        return core[:3] + rng.choice("!#%*") + core[3:] + rng.choice(DIGITS)
    words = ("Summer", "Winter", "Dragon", "Monkey", "Sunshine", "Falcon", "Harbor", "Maple")
    return f"{rng.choice(words)}{rng.choice(words).lower()}{rng.randint(10, 2024)}{rng.choice('!#$?')}"


#: credential format → generator. Lengths and alphabets as the providers issue them.
CREDENTIALS: dict[str, Callable[[random.Random], str]] = {
    "aws access key id": lambda r: r.choice(("AKIA", "AKIA", "ASIA")) + pick(r, BASE32, 16),
    "aws secret access key": lambda r: pick(r, B64, 40),
    "github classic pat": lambda r: "ghp_" + pick(r, ALNUM, 36),
    "github fine-grained pat": lambda r: "github_pat_" + pick(r, ALNUM, 22) + "_" + pick(r, ALNUM, 59),
    "github oauth token": lambda r: "gho_" + pick(r, ALNUM, 36),
    "github app installation token": lambda r: "ghs_" + pick(r, ALNUM, 36),
    "github user-to-server token": lambda r: "ghu_" + pick(r, ALNUM, 36),
    "gitlab pat": lambda r: "glpat-" + pick(r, URLSAFE, 20),
    "gitlab runner token": lambda r: "glrt-" + pick(r, URLSAFE, 20),
    "gitlab deploy token": lambda r: "gldt-" + pick(r, URLSAFE, 20),
    "bitbucket app password": lambda r: "ATBB" + pick(r, ALNUM, 32) + pick(r, HEX.upper(), 8),
    "hugging face token": lambda r: "hf_" + pick(r, string.ascii_letters, 34),
    "openai project key": lambda r: "sk-proj-" + pick(r, URLSAFE, 74) + "T3BlbkFJ" + pick(r, URLSAFE, 74),
    "openai legacy key": lambda r: "sk-" + pick(r, ALNUM, 20) + "T3BlbkFJ" + pick(r, ALNUM, 20),
    "openai service account key": lambda r: "sk-svcacct-" + pick(r, URLSAFE, 74) + "T3BlbkFJ" + pick(r, URLSAFE, 74),
    "anthropic api key": lambda r: "sk-ant-api03-" + pick(r, URLSAFE, 93) + "AA",
    "anthropic admin key": lambda r: "sk-ant-admin01-" + pick(r, URLSAFE, 93) + "AA",
    "stripe live secret key": lambda r: "sk_live_51" + pick(r, ALNUM, 97),
    "stripe live secret key (short)": lambda r: "sk_live_" + pick(r, ALNUM, 24),
    "stripe restricted key": lambda r: "rk_live_51" + pick(r, ALNUM, 97),
    "stripe test secret key": lambda r: "sk_test_51" + pick(r, ALNUM, 97),
    "stripe webhook secret": lambda r: "whsec_" + pick(r, ALNUM, 32),
    "square access token": lambda r: "EAAA" + pick(r, URLSAFE, 60),
    "square legacy access token": lambda r: "sq0atp-" + pick(r, URLSAFE, 22),
    "square oauth secret": lambda r: "sq0csp-" + pick(r, URLSAFE, 43),
    "shopify admin token": lambda r: "shpat_" + pick(r, HEX, 32),
    "shopify shared secret": lambda r: "shpss_" + pick(r, HEX, 32),
    "shopify custom app token": lambda r: "shpca_" + pick(r, HEX, 32),
    "slack bot token": lambda r: f"xoxb-{pick(r, DIGITS, 11)}-{pick(r, DIGITS, 13)}-{pick(r, ALNUM, 24)}",
    "slack user token": lambda r: (f"xoxp-{pick(r, DIGITS, 11)}-{pick(r, DIGITS, 11)}-{pick(r, DIGITS, 13)}-"
                                   f"{pick(r, HEX, 32)}"),
    "slack app token": lambda r: f"xapp-1-A{pick(r, UPPER + DIGITS, 10)}-{pick(r, DIGITS, 13)}-{pick(r, HEX, 64)}",
    "slack webhook url": lambda r: (f"https://hooks.slack.com/services/T{pick(r, UPPER + DIGITS, 8)}/"
                                    f"B{pick(r, UPPER + DIGITS, 10)}/{pick(r, ALNUM, 24)}"),
    "discord bot token": lambda r: (b64url(str(r.randint(10**17, 12 * 10**17)).encode()) + "."
                                    + pick(r, URLSAFE, 6) + "." + pick(r, URLSAFE, 38)),
    "discord webhook url": lambda r: (f"https://discord.com/api/webhooks/{r.randint(10**17, 12 * 10**17)}/"
                                      f"{pick(r, URLSAFE, 68)}"),
    "telegram bot token": lambda r: f"{r.randint(10**8, 8 * 10**9)}:AA{pick(r, URLSAFE, 33)}",
    "twilio api key": lambda r: "SK" + pick(r, HEX, 32),
    "twilio auth token": lambda r: pick(r, HEX, 32),
    "sendgrid api key": lambda r: "SG." + pick(r, URLSAFE, 22) + "." + pick(r, URLSAFE, 43),
    "mailgun api key": lambda r: "key-" + pick(r, HEX, 32),
    "mailchimp api key": lambda r: pick(r, HEX, 32) + f"-us{r.randint(1, 21)}",
    "npm token": lambda r: "npm_" + pick(r, ALNUM, 36),
    "pypi token": lambda r: "pypi-AgEIcHlwaS5vcmc" + pick(r, URLSAFE, 120),
    "docker hub pat": lambda r: "dckr_pat_" + pick(r, URLSAFE, 27),
    "google api key": lambda r: "AIza" + pick(r, URLSAFE, 35),
    "google oauth client secret": lambda r: "GOCSPX-" + pick(r, URLSAFE, 28),
    "azure storage account key": lambda r: base64.b64encode(r.randbytes(64)).decode(),
    "azure ad client secret": lambda r: pick(r, ALNUM, 3) + "8Q~" + pick(r, URLSAFE + "~.", 34),
    "digitalocean token": lambda r: "dop_v1_" + pick(r, HEX, 64),
    "databricks token": lambda r: "dapi" + pick(r, HEX, 32),
    "atlassian api token": lambda r: "ATATT3xFfGF0" + pick(r, URLSAFE, 170) + "=" + pick(r, HEX.upper(), 8),
    "new relic user key": lambda r: "NRAK-" + pick(r, UPPER + DIGITS, 27),
    "datadog api key": lambda r: pick(r, HEX, 32),
    "hashicorp vault token": lambda r: "hvs." + pick(r, URLSAFE, 92),
    "linear api key": lambda r: "lin_api_" + pick(r, ALNUM, 40),
    "postman api key": lambda r: f"PMAK-{pick(r, HEX, 24)}-{pick(r, HEX, 34)}",
    "grafana service account token": lambda r: "glsa_" + pick(r, ALNUM, 32) + "_" + pick(r, HEX, 8),
    "django secret key": lambda r: pick(r, LOWER + DIGITS + "!@#$%^&*(-_=+)", 50),
    "jwt signing secret": lambda r: pick(r, HEX, 64),
    "generic api key": lambda r: pick(r, ALNUM, 32),
    "generic bearer token": lambda r: pick(r, ALNUM + "-_.", 40),
    "oauth client secret": lambda r: pick(r, ALNUM + "-_", 40),
}
