"""Corpus negatives: realistic texts with nothing sensitive in them that look close to
something that is: order, part, invoice and tracking numbers, product codes shaped like
phone numbers, versions, hashes, UUIDs, dates, prices, barcodes, inline base64 images,
placeholder credentials, public keys and certificates, ids that are not secrets, logs,
code with hex constants, maths.

``KINDS`` maps a category to its builders; each builder takes a seeded ``random.Random``
and returns ``(label, text)``. ``build.py`` calls each builder a set number of times.
"""

from __future__ import annotations

import base64
import random
import struct
import uuid
import zlib
from collections.abc import Callable

from tests.policies.corpus.values import ALNUM, B64, DIGITS, HEX, UPPER, URLSAFE, pick

Builder = Callable[[random.Random], tuple[str, str]]


def d(rng: random.Random, n: int) -> str:
    return pick(rng, DIGITS, n)


def nanp_like(rng: random.Random) -> str:
    """Three-three-four digit groups with a plausible area code and exchange."""
    return f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}-{rng.randint(2, 9)}{d(rng, 2)}-{d(rng, 4)}"


def a_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def ulid(rng: random.Random) -> str:
    return "01H" + pick(rng, "0123456789ABCDEFGHJKMNPQRSTVWXYZ", 23)


def isbn13(rng: random.Random) -> str:
    core = "978" + d(rng, 9)
    check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(core)) % 10) % 10
    return core + str(check)


def png_data_url(rng: random.Random) -> str:
    """A small but well-formed PNG (noise), as a ``data:`` URL."""
    w, h = rng.randint(8, 40), rng.randint(8, 40)
    raw = b"".join(b"\x00" + rng.randbytes(w * 3) for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def jpeg_data_url(rng: random.Random) -> str:
    body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + rng.randbytes(rng.randint(600, 3000))
    return "data:image/jpeg;base64," + base64.b64encode(body + b"\xff\xd9").decode()


def pem_public(rng: random.Random, label: str, size: int) -> str:
    body = base64.b64encode(bytes.fromhex("30820122300d06092a864886f70d01010105000382010f00") + rng.randbytes(size)).decode()
    return "\n".join([f"-----BEGIN {label}-----", *(body[i:i + 64] for i in range(0, len(body), 64)),
                      f"-----END {label}-----"])


def price(rng: random.Random) -> str:
    return f"${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(0, 99):02d}"


# --------------------------------------------------------------------------- builders


ORDERS: list[Builder] = [
    lambda r: ("amazon order", f"Where is my order {r.randint(111, 114)}-{d(r, 7)}-{d(r, 7)}? It said arriving "
                               "Tuesday and nothing came."),
    lambda r: ("shop order", f"Order #{r.randint(1001, 98000)} was shipped in two boxes; only one arrived. "
                             "Draft an apology email."),
    lambda r: ("erp order", f"ORD-2024-{d(r, 7)} status changed from PICKING to SHIPPED at 14:02."),
    lambda r: ("purchase order", f"PO {r.randint(4500000000, 4599999999)} (SAP) needs a goods receipt before "
                                 "the invoice can be posted."),
    lambda r: ("order table", "| order | date | total |\n|---|---|---|\n" + "\n".join(
        f"| SO-{d(r, 6)} | 2024-0{r.randint(1, 9)}-{r.randint(10, 28)} | {price(r)} |" for _ in range(4))),
    lambda r: ("return authorisation", f"RMA {d(r, 4)}-{d(r, 6)} approved; customer ships back by 2024-04-30."),
]

PART_NUMBERS: list[Builder] = [
    lambda r: ("phone-like part with letter suffix", f"Replacement filter {nanp_like(r)}-B fits the 2019 model; "
                                                     "the older unit takes the -A version."),
    lambda r: ("phone-like sku with size", f"SKU {nanp_like(r)}-XL is out of stock, suggest {nanp_like(r)}-L instead."),
    lambda r: ("phone-like part with digit suffix", f"Part no. {nanp_like(r)}-{r.randint(10, 99)} "
                                                    f"(rev C), qty {r.randint(2, 40)}, bin A-{r.randint(1, 30)}"),
    lambda r: ("catalog code with prefix", f"Catalog REF-{nanp_like(r)} replaces REF-{nanp_like(r)} from 2023."),
    lambda r: ("part in bom csv", "line,part_number,description,qty\n" + "\n".join(
        f"{i},{r.randint(100, 999)}-{d(r, 3)}-{d(r, 4)}-{r.choice('ABCDR')},{r.choice(['bracket', 'M4 screw', 'gasket', 'hinge'])},{r.randint(1, 12)}"
        for i in range(1, 5))),
    lambda r: ("model number glued", f"Model HX{d(r, 3)}{d(r, 3)}{d(r, 4)} and HX{d(r, 3)}-{d(r, 3)}-{d(r, 4)}K "
                                     "share the same firmware."),
    lambda r: ("manufacturer part", f"Mouser #{r.randint(500, 999)}-{pick(r, UPPER + DIGITS, 10)} "
                                    f"/ mfr part {pick(r, UPPER, 3)}{d(r, 4)}-{d(r, 3)}"),
    lambda r: ("serial number", f"Serial {pick(r, UPPER + DIGITS, 12)}, purchased 2022-11-03, warranty until 2025-11-03."),
]

INVOICES: list[Builder] = [
    lambda r: ("invoice id", f"Invoice INV-{r.randint(2019, 2024)}-{d(r, 6)} for {price(r)} is overdue by 12 days."),
    lambda r: ("german invoice", f"Rechnung Nr. {r.randint(2022, 2024)}/{d(r, 5)} vom 15.03.2024 über 1.240,00 EUR"),
    lambda r: ("ticket ids", f"See JIRA OPS-{r.randint(100, 9999)} and ZD #{d(r, 7)} for the history."),
    lambda r: ("case number", f"Case 0{d(r, 7)} escalated to tier 2 at 09:41."),
]

VERSIONS: list[Builder] = [
    lambda r: ("semver", f"Upgrading from v{r.randint(1, 4)}.{r.randint(0, 30)}.{r.randint(0, 20)} to "
                         f"v{r.randint(5, 9)}.0.0-rc.{r.randint(1, 5)}+build.{d(r, 4)} broke the tests."),
    lambda r: ("four-part build", f"Windows 11 build 10.0.{r.randint(19041, 22631)}.{r.randint(1000, 3999)} "
                                  "shows the bug; Chrome/124.0.6367.{r.randint(60, 210)} too."),
    lambda r: ("assembly version", f'[assembly: AssemblyVersion("{r.randint(1, 4)}.{r.randint(0, 9)}.{r.randint(0, 9)}.0")]'
                                   f'\n[assembly: AssemblyFileVersion("{r.randint(1, 4)}.{r.randint(0, 9)}.{r.randint(0, 99)}.{d(r, 4)}")]'),
    lambda r: ("requirements", "\n".join(f"{p}=={r.randint(0, 3)}.{r.randint(0, 40)}.{r.randint(0, 12)}"
                                         for p in ("requests", "numpy", "pydantic", "aiohttp", "uvicorn"))),
    lambda r: ("package.json", '{\n  "dependencies": {\n' + ",\n".join(
        f'    "{p}": "^{r.randint(1, 18)}.{r.randint(0, 20)}.{r.randint(0, 9)}"'
        for p in ("react", "@babel/core", "@types/node", "typescript")) + "\n  }\n}"),
    lambda r: ("kernel", f"Linux build-7 5.15.0-{r.randint(50, 120)}-generic #{r.randint(50, 130)}-Ubuntu SMP x86_64"),
    lambda r: ("scoped npm", f"npm i @acme/ui-kit@{r.randint(1, 5)}.{r.randint(0, 9)}.{r.randint(0, 9)} "
                             f"@tanstack/react-query@5.{r.randint(0, 40)}.0"),
    lambda r: ("cuda versions", f"Driver {r.randint(525, 555)}.{r.randint(10, 99)}.{r.randint(1, 9):02d}, "
                                f"CUDA 12.{r.randint(0, 4)}.{r.randint(100, 140)}, cuDNN 8.9.{r.randint(1, 7)}.{r.randint(1, 40)}"),
]

HASHES: list[Builder] = [
    lambda r: ("git log", "\n".join(f"{pick(r, HEX, 7)} {m}" for m in (
        "fix flaky retry test", "bump deps", "add invoice export", "refactor planner"))),
    lambda r: ("commit sha", f"The regression started at commit {pick(r, HEX, 40)}; "
                             f"{pick(r, HEX, 40)} is the last good one."),
    lambda r: ("sha256 checksum", f"{pick(r, HEX, 64)}  switchyard-1.4.2-linux-amd64.tar.gz"),
    lambda r: ("docker digest", f"image: ghcr.io/acme/api@sha256:{pick(r, HEX, 64)}"),
    lambda r: ("npm integrity", f'"integrity": "sha512-{pick(r, B64, 86)}=="'),
    lambda r: ("md5 etag", f'ETag: "{pick(r, HEX, 32)}"\nLast-Modified: Fri, 15 Mar 2024 10:22:31 GMT'),
    lambda r: ("diff header", f"diff --git a/router/app.py b/router/app.py\nindex {pick(r, HEX, 7)}..{pick(r, HEX, 7)} 100644"),
    lambda r: ("container id", f"CONTAINER ID   IMAGE        STATUS\n{pick(r, HEX, 12)}   redis:7.2   Up 3 hours"),
    lambda r: ("pip hash", f"requests==2.31.0 \\\n    --hash=sha256:{pick(r, HEX, 64)}"),
]

IDS: list[Builder] = [
    lambda r: ("uuid in log", f"2024-03-15T10:22:31.123Z ERROR order-service request_id={a_uuid(r)} "
                              "msg=\"inventory timeout\" latency_ms=3021"),
    lambda r: ("uuid json", f'{{"tenant_id": "{a_uuid(r)}", "workspace_id": "{a_uuid(r)}", "role": "viewer"}}'),
    lambda r: ("ulid", f"Created job {ulid(r)}; poll /v1/jobs/{ulid(r)} for status."),
    lambda r: ("trace context", f"traceparent: 00-{pick(r, HEX, 32)}-{pick(r, HEX, 16)}-01"),
    lambda r: ("stripe object ids", f"Refunded charge ch_3{pick(r, ALNUM, 23)} for customer cus_{pick(r, ALNUM, 14)} "
                                    f"(payment intent pi_3{pick(r, ALNUM, 23)})."),
    lambda r: ("slack ids", f"Post it in channel C0{pick(r, UPPER + DIGITS, 9)} and mention user U0{pick(r, UPPER + DIGITS, 9)}."),
    lambda r: ("discord snowflake", f"Message {r.randint(10**18, 13 * 10**17)} in guild {r.randint(10**17, 2 * 10**17)} was deleted."),
    lambda r: ("aws arn", f"arn:aws:iam::{d(r, 12)}:role/github-actions-deploy can't assume "
                          f"arn:aws:iam::{d(r, 12)}:role/OrganizationAccountAccessRole"),
    lambda r: ("openai request id", f"x-request-id: req_{pick(r, HEX, 32)}"),
    lambda r: ("k8s pod names", f"api-{pick(r, HEX[:10], 9)}-{pick(r, 'bcdfghjklmnpqrstvwxz2456789', 5)}   CrashLoopBackOff   7 restarts"),
    lambda r: ("azure subscription", f"az account set --subscription {a_uuid(r)}"),
    lambda r: ("pagination token", f'{{"items": [], "nextPageToken": "{pick(r, URLSAFE, 48)}"}}'),
    lambda r: ("youtube ids", f"Watch https://www.youtube.com/watch?v={pick(r, URLSAFE, 11)} at 12:34."),
]

DATES: list[Builder] = [
    lambda r: ("iso timestamps", f"Started 2024-0{r.randint(1, 9)}-{r.randint(10, 28)}T{r.randint(10, 23)}:{r.randint(10, 59)}:"
                                 f"{r.randint(10, 59)}.{d(r, 3)}Z, finished 2024-03-15 14:30:00+01:00."),
    lambda r: ("epoch seconds", f"expires_at={r.randint(1_700_000_000, 1_760_000_000)} created_at={r.randint(1_600_000_000, 1_700_000_000)}"),
    lambda r: ("epoch millis", f"ts: {r.randint(1_700_000_000_000, 1_760_000_000_000)}"),
    lambda r: ("human dates", f"Moved the review from March {r.randint(1, 28)}, 2024 to 0{r.randint(1, 9)}/{r.randint(10, 28)}/2024 "
                              f"(or {r.randint(10, 28)}.0{r.randint(1, 9)}.2024 in the German office)."),
    lambda r: ("cron", f"schedule: \"{r.randint(0, 59)} {r.randint(0, 23)} * * 1-5\"  # weekdays"),
    lambda r: ("rfc 2822", "Date: Fri, 15 Mar 2024 10:22:31 +0000"),
    lambda r: ("date range", f"Fiscal year 2024-04-01 - 2025-03-31; Q{r.randint(1, 4)} closes 2024-{r.randint(6, 12)}-30."),
    lambda r: ("compact dates", f"backup_20240{r.randint(1, 9)}{r.randint(10, 28)}_{r.randint(10, 23)}{r.randint(10, 59)}{r.randint(10, 59)}.tar.gz"),
]

PRICES: list[Builder] = [
    lambda r: ("price list", "\n".join(f"{n}: {price(r)} (was {price(r)})" for n in ("Starter", "Team", "Enterprise"))),
    lambda r: ("euro formatting", f"Gesamtbetrag: {r.randint(1, 99)}.{r.randint(100, 999)},{r.randint(10, 99)} € inkl. MwSt."),
    lambda r: ("revenue table", "| quarter | revenue | growth |\n|---|---|---|\n" + "\n".join(
        f"| Q{q} 2024 | ${r.randint(1, 9)},{d(r, 3)},{d(r, 3)} | {r.randint(1, 30)}% |" for q in range(1, 5))),
    lambda r: ("budget prose", f"We spent {price(r)} of the {price(r)} budget; forecast is {r.randint(80, 120)}% by year end."),
    lambda r: ("large spaced number", f"Population {r.randint(1, 9)} {d(r, 3)} {d(r, 3)} (2023 census), "
                                      f"area {r.randint(100, 999)} {d(r, 3)} km²"),
    lambda r: ("crypto prices", f"BTC {r.randint(60, 70)},{d(r, 3)}.{d(r, 2)} USD, ETH 3,{d(r, 3)}.{d(r, 2)}; "
                                f"gas {r.randint(10, 90)} gwei"),
]

TRACKING: list[Builder] = [
    lambda r: ("ups", f"UPS tracking 1Z{pick(r, UPPER + DIGITS, 6)}03{d(r, 8)} shows 'label created'."),
    lambda r: ("fedex", f"FedEx {d(r, 4)} {d(r, 4)} {d(r, 4)} delivered to the front desk."),
    lambda r: ("usps 22 digits", f"USPS tracking: 9400 {d(r, 4)} {d(r, 4)} {d(r, 4)} {d(r, 4)} {d(r, 2)}"),
    lambda r: ("dhl", f"DHL Express waybill {d(r, 10)}, customs cleared."),
    lambda r: ("royal mail", f"Royal Mail {pick(r, UPPER, 2)}{d(r, 9)}GB"),
]

BARCODES: list[Builder] = [
    lambda r: ("isbn-13", f"ISBN {isbn13(r)} (hardcover), ISBN 978-{r.randint(0, 1)}-{d(r, 3)}-{d(r, 5)}-{r.randint(0, 9)} (paperback)"),
    lambda r: ("ean", f"EAN {r.choice(['40', '50', '87'])}{d(r, 11)}, UPC {d(r, 12)}, GTIN 0{d(r, 13)}"),
    lambda r: ("doi and arxiv", f"See doi:10.{r.randint(1000, 9999)}/{pick(r, 'abcdefghij', 3)}.{d(r, 6)} and "
                                f"arXiv:24{r.randint(1, 12):02d}.{d(r, 5)}v2"),
    lambda r: ("patents and dockets", f"US Patent {r.randint(9, 11)},{d(r, 3)},{d(r, 3)} B2; Case No. 2:23-cv-{d(r, 5)}"),
    lambda r: ("cve and rfc", f"Patched CVE-2024-{r.randint(1000, 49999)} and CVE-2023-{r.randint(1000, 49999)}; see RFC {r.randint(1000, 9999)}."),
    lambda r: ("vin", f"VIN {pick(r, 'ABCDEFGHJKLMNPRSTUVWXYZ' + DIGITS, 17)}, mileage {r.randint(10, 200)},{d(r, 3)} km"),
    lambda r: ("tariff code", f"HS code {r.randint(8400, 8599)}.{d(r, 2)}.{d(r, 4)}, origin CN, {r.randint(1, 50)} cartons"),
]

IMAGES: list[Builder] = [
    lambda r: ("png data url", png_data_url(r)),
    lambda r: ("jpeg data url", jpeg_data_url(r)),
]

PLACEHOLDERS: list[Builder] = [
    lambda r: ("sk-... placeholder", "OPENAI_API_KEY=sk-...\n# get yours at platform.openai.com/api-keys"),
    lambda r: ("angle-bracket placeholder", "export ANTHROPIC_API_KEY=<your-api-key-here>"),
    lambda r: ("YOUR_API_KEY", 'client = Client(api_key="YOUR_API_KEY")'),
    lambda r: ("env lookup", 'client = OpenAI(api_key=os.environ["OPENAI_API_KEY"])'),
    lambda r: ("shell variable", 'curl -H "Authorization: Bearer $TOKEN" https://api.example.org/v1/me'),
    lambda r: ("templated secret", "env:\n  GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n  NPM_TOKEN: ${{ secrets.NPM_TOKEN }}"),
    lambda r: ("masked password", "username: admin\npassword: ********"),
    lambda r: ("getenv", 'DB_PASSWORD = os.getenv("DB_PASSWORD")\nif not DB_PASSWORD:\n    raise SystemExit("set DB_PASSWORD")'),
    lambda r: ("redacted", "aws_access_key_id = <redacted>\naws_secret_access_key = <redacted>"),
    lambda r: ("x placeholder aws", "AWS_ACCESS_KEY_ID=AKIAXXXXXXXXXXXXXXXX\nAWS_SECRET_ACCESS_KEY=XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
    lambda r: ("x placeholder github", "Your token will look like ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx - keep it secret."),
    lambda r: ("masked dashboard key", f"Key 'ci-bot' sk-...{pick(r, ALNUM, 4)} created Mar 3, last used 2 days ago."),
    lambda r: ("templated db url", "DATABASE_URL=postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}:5432/app"),
    lambda r: ("no-password db url", "DATABASE_URL=postgresql://postgres@localhost:5432/test_db\nREDIS_URL=redis://localhost:6379/0"),
    lambda r: ("getpass", "password = getpass.getpass('Password: ')\nsession.login(user, password)"),
    lambda r: ("typed field", "class Settings(BaseSettings):\n    api_key: SecretStr | None = None\n    password: str = ''"),
    lambda r: ("policy prose", "Passwords must be at least 12 characters and API keys are rotated every 90 days."),
    lambda r: ("k8s secret ref", "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n        key: password"),
    lambda r: ("bearer placeholder", "Authorization: Bearer <access_token>"),
    lambda r: ("token prefix docs", "Slack bot tokens start with xoxb- and user tokens with xoxp-; never paste them here."),
    lambda r: ("hf placeholder", "HF_TOKEN=hf_*** (set in your shell profile)"),
    lambda r: ("key path", "PRIVATE_KEY_PATH=/etc/ssl/private/server.key\nCERT_PATH=/etc/ssl/certs/server.crt"),
    lambda r: ("header extraction", "token = request.headers.get('Authorization', '').removeprefix('Bearer ')"),
    lambda r: ("test fixture token", 'FAKE_TOKEN = "test-token"  # only used by the unit tests, never valid'),
    lambda r: ("default password docs", "Log in with admin / changeme and you'll be asked to set a new password."),
    lambda r: ("jwt docs", "A JWT has three base64url parts separated by dots; the header usually starts with eyJhbGciOi."),
]

PUBLIC_KEYS: list[Builder] = [
    lambda r: ("public key pem", "Verify with this public key:\n" + pem_public(r, "PUBLIC KEY", 240)),
    lambda r: ("certificate pem", pem_public(r, "CERTIFICATE", 700)),
    lambda r: ("ssh public key", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{pick(r, B64, 43)} ci-deploy-key"),
    lambda r: ("base64 text", "echo 'SGVsbG8sIFdvcmxkIQ==' | base64 -d  # prints Hello, World!"),
    lambda r: ("git ssh remote", "git remote add origin git@github.com:acme-corp/switchyard.git"),
]

PROSE: list[Builder] = [
    lambda r: ("lorem ipsum", "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
                              "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation."),
    lambda r: ("meeting notes", f"Notes 2024-03-{r.randint(10, 28)}: revenue up {r.randint(2, 19)}% QoQ; hiring 3 engineers in Q3; "
                                "Priya owns the migration plan, Tom the vendor review."),
    lambda r: ("recipe", f"Preheat to {r.choice([180, 200, 220])}°C. Mix 250 g flour, 2 eggs, 125 ml milk; bake 25-30 minutes."),
    lambda r: ("travel plan", f"Flight LH {r.randint(400, 499)} departs FRA 13:05, gate B{r.randint(10, 60)}, seat {r.randint(10, 40)}C; "
                              f"hotel check-in after 15:00, room {r.randint(100, 999)}."),
    lambda r: ("sports scores", f"Final: {r.randint(80, 130)}-{r.randint(80, 130)}; {r.randint(10, 40)} points, "
                                f"{r.randint(5, 15)} rebounds, {r.randint(30, 48)}:{r.randint(10, 59)} minutes."),
    lambda r: ("office directions", "The office is on the 4th floor, Building 2, 1 Infinite Loop area; parking in lot C."),
    lambda r: ("product review", f"Battery lasts about {r.randint(6, 14)} hours, the 1080p screen is fine, "
                                 f"and at {price(r)} it's a bargain. 4.5/5"),
]

CODE: list[Builder] = [
    lambda r: ("c hex constants", f"#define MAGIC 0x{pick(r, HEX.upper(), 8)}\nstatic const uint32_t crc_table[4] = "
                                  f"{{0x{pick(r, HEX, 8)}, 0x{pick(r, HEX, 8)}, 0x{pick(r, HEX, 8)}, 0x{pick(r, HEX, 8)}}};"),
    lambda r: ("css colors", f".btn {{ color: #{pick(r, HEX, 6)}; background: #{pick(r, HEX, 6)}; }}\n"
                             "@media (max-width: 768px) { .btn { padding: 4px 8px; } }"),
    lambda r: ("python decorator", "@dataclass(frozen=True)\nclass Order:\n    id: int\n    total_cents: int = 0"),
    lambda r: ("numpy array", "np.array([" + ", ".join(f"{r.uniform(-1, 1):.8f}" for _ in range(8)) + "])"),
    lambda r: ("sql query", f"SELECT id, total FROM orders WHERE created_at >= '2024-01-01' AND total > {r.randint(100, 999)} "
                            "ORDER BY total DESC LIMIT 50;"),
    lambda r: ("stack trace", f'Traceback (most recent call last):\n  File "/app/router/pipeline.py", line {r.randint(100, 900)}, '
                              f'in run\n    await self._attempt(call)\nTimeoutError: upstream after {r.randint(10, 60)}.0 s'),
    lambda r: ("memory addresses", f"SIGSEGV at 0x{pick(r, HEX, 12)}; frame #1 0x00007f{pick(r, HEX, 10)} in malloc()"),
    lambda r: ("uuid constants", f'NAMESPACE = uuid.UUID("{a_uuid(r)}")\nCOLLECTION_ID = "{a_uuid(r)}"'),
    lambda r: ("dockerfile", "FROM python:3.12-slim\nRUN pip install --no-cache-dir -r requirements.txt\nEXPOSE 8080\n"
                             'CMD ["uvicorn", "app:app", "--port", "8080"]'),
    lambda r: ("terraform no secrets", 'resource "aws_s3_bucket" "logs" {\n  bucket = "acme-logs-prod"\n  tags = { team = "platform" }\n}'),
    lambda r: ("port mappings", f"ports:\n  - {r.randint(3000, 9000)}:{r.randint(3000, 9000)}\n  - 5432:5432\n  - 6379:6379"),
    lambda r: ("listen on all interfaces", "uvicorn app:app --host 0.0.0.0 --port 8080\ncurl http://127.0.0.1:8080/healthz"),
    lambda r: ("bit manipulation", f"x = (x ^ 0x{pick(r, HEX, 16)}) * 0x{pick(r, HEX, 16)} & 0xFFFFFFFFFFFFFFFF"),
]

LOGS: list[Builder] = [
    lambda r: ("app log", f"2024-03-15 10:22:{r.randint(10, 59)},{d(r, 3)} INFO [http-nio-8080-exec-{r.randint(1, 9)}] "
                          f"c.a.o.OrderController - GET /orders/{d(r, 6)} 200 in {r.randint(5, 400)} ms"),
    lambda r: ("json log", f'{{"level":"warn","ts":{r.randint(1_700_000_000, 1_760_000_000)}.{d(r, 6)},"msg":"retrying",'
                           f'"attempt":{r.randint(1, 5)},"backoff_ms":{r.randint(100, 5000)},"span_id":"{pick(r, HEX, 16)}"}}'),
    lambda r: ("ci log", f"Run #{r.randint(1000, 99999)} · job {d(r, 11)} · step 4/9 · exit code {r.randint(0, 2)} · "
                         f"{r.randint(1, 59)}m {r.randint(1, 59)}s"),
    lambda r: ("metrics", f"http_requests_total{{code=\"200\",route=\"/v1/chat\"}} {r.randint(10**5, 10**8)}\n"
                          f"process_resident_memory_bytes {r.randint(10**8, 10**10)}"),
    lambda r: ("gc log", f"[{r.randint(1, 99)}.{d(r, 3)}s][info][gc] GC({r.randint(1, 999)}) Pause Young "
                         f"{r.randint(100, 999)}M->{r.randint(10, 99)}M({r.randint(1000, 4096)}M) {r.randint(1, 30)}.{d(r, 3)}ms"),
]

MATH: list[Builder] = [
    lambda r: ("int max", "In Java, Integer.MAX_VALUE is 2^31 - 1 = 2147483647 and Long.MAX_VALUE is 9223372036854775807."),
    lambda r: ("pi digits grouped", "pi = 3.14159 26535 89793 23846 26433 83279 50288 41971"),
    lambda r: ("big product", f"{d(r, 9)} * {d(r, 9)} = ? Show the long multiplication steps."),
    lambda r: ("constants", "c = 299 792 458 m/s, N_A = 6.02214076e23 mol^-1, h = 6.62607015e-34 J s"),
    lambda r: ("matrix", "A = [[" + "], [".join(", ".join(str(r.randint(-20, 20)) for _ in range(4)) for _ in range(4))
                         + "]]; compute det(A)."),
    lambda r: ("sequence", "Fibonacci: 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765"),
    lambda r: ("statistics", f"mean={r.uniform(0, 100):.4f}, sd={r.uniform(0, 10):.4f}, n={r.randint(100, 9999)}, "
                             f"p={r.uniform(0, 0.05):.5f}, 95% CI [{r.uniform(0, 50):.2f}, {r.uniform(50, 100):.2f}]"),
    lambda r: ("coordinates", f"Coordinates: {r.uniform(-80, 80):.6f}, {r.uniform(-170, 170):.6f} (WGS84), "
                              f"elevation {r.randint(1, 3000)} m"),
    lambda r: ("unit conversions", f"{r.randint(1, 999)} mi = {r.randint(1, 1600)}.{d(r, 2)} km; 1 TB = 1 099 511 627 776 bytes"),
]

MASKED: list[Builder] = [
    lambda r: ("masked card", f"Paid with Visa **** **** **** {d(r, 4)} on 2024-03-0{r.randint(1, 9)}."),
    lambda r: ("card last four", f"card ending in {d(r, 4)}, expires {r.randint(1, 12):02d}/{r.randint(25, 30)}"),
    lambda r: ("masked x card", f"XXXX-XXXX-XXXX-{d(r, 4)}"),
    lambda r: ("masked ssn", f"SSN on file: ***-**-{d(r, 4)}"),
    lambda r: ("bic and vat", f"BIC DEUTDEFF{r.choice(['XXX', '500', ''])}, USt-IdNr. DE{d(r, 9)}, HRB {d(r, 5)}"),
    lambda r: ("iban format prose", "A German IBAN is DE, two check digits and 18 digits (bank code + account number)."),
    lambda r: ("routing number", f"ABA routing number 0{d(r, 8)} (public, printed on every cheque of the bank)"),
    lambda r: ("zip codes", f"Ship to ZIP 9{d(r, 4)}-{d(r, 4)}; the warehouse is in {r.randint(10, 99)}{d(r, 3)}."),
]

#: category → (builders, number of cases drawn from them, in turn).
KINDS: dict[str, tuple[list[Builder], int]] = {
    "order_number": (ORDERS, 14),
    "part_number": (PART_NUMBERS, 22),
    "invoice_or_ticket": (INVOICES, 8),
    "version": (VERSIONS, 16),
    "hash": (HASHES, 14),
    "identifier": (IDS, 20),
    "date_time": (DATES, 12),
    "price": (PRICES, 10),
    "tracking_number": (TRACKING, 8),
    "barcode_or_reference": (BARCODES, 10),
    "base64_image": (IMAGES, 10),
    "placeholder_credential": (PLACEHOLDERS, 26),
    "public_key_or_encoding": (PUBLIC_KEYS, 7),
    "prose": (PROSE, 10),
    "code": (CODE, 20),
    "log": (LOGS, 10),
    "math": (MATH, 12),
    "masked_or_public_number": (MASKED, 12),
}
