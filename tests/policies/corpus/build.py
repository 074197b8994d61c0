"""Builds the labelled sensitivity corpus (issue 10): ``positives.jsonl`` and ``negatives.jsonl``.

    .venv/bin/python tests/policies/corpus/build.py          # (re)write the two files
    .venv/bin/python tests/policies/corpus/build.py --check  # exit 1 if they are out of date

Deterministic (seeded per section): the same code gives the same files byte for byte.

One case per line::

    {"id": "pos-credit_card-007", "kind": "positive", "family": "credit_card",
     "format": "amex 4-6-5 spaces", "endpoint": "chat", "position": "tool_result",
     "note": "amex 4-6-5 spaces; payment form paste", "value": "3714 496353 98431",
     "body": {...the full request body...}}

``family`` is what a positive must be found as: ``credit_card``, ``iban``, ``email``,
``phone``, ``us_ssn``, ``ip_address``, ``private_key``, ``jwt`` or ``credential`` (any
credential-class detector). ``value`` is the planted text exactly as it appears in the
text that carries it (before that text is itself put into a JSON string, as tool-call
arguments are). Negatives carry a ``category`` instead of a family and no ``value``.

Positives put values from ``values.py`` into the hand-written contexts of ``contexts.py``
(what people paste: configs, logs, e-mails, code, CSV, forms) and the contexts into every
place a request carries text (``POSITIONS``). Negatives (``negatives.py``) are spread over
the same places. Nothing here is derived from the detectors under test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.policies.corpus import contexts as ctx  # noqa: E402
from tests.policies.corpus import values as val  # noqa: E402
from tests.policies.corpus.negatives import KINDS  # noqa: E402

SEED = 20240610
POSITIVES = HERE / "positives.jsonl"
NEGATIVES = HERE / "negatives.jsonl"

Body = dict[str, Any]

#: Every place a request carries text, with the endpoint it belongs to.
POSITIONS: dict[str, str] = {
    "system": "chat", "user": "chat", "user_part": "chat", "assistant_history": "chat",
    "tool_result": "chat", "tool_call_arguments": "chat", "tool_definition": "chat",
    "response_format": "chat", "message_name": "chat", "metadata": "chat", "image_url": "chat",
    "embeddings_input": "embeddings", "embeddings_input_list": "embeddings",
    "completions_prompt": "completions",
}
#: Where most text goes; the common positions appear twice so they get more cases.
TEXT_POSITIONS = ("system", "user", "user", "user_part", "user_part", "assistant_history", "tool_result",
                  "tool_result", "tool_call_arguments", "tool_definition", "response_format",
                  "embeddings_input", "embeddings_input_list", "completions_prompt")
#: Positions that take a bare value (a member value), not a sentence.
BARE_ONLY = frozenset({"message_name", "metadata"})
#: Positions that may take either: a JSON member holding the value, or a sentence.
MEMBER_POSITIONS = BARE_ONLY | {"tool_call_arguments", "tool_definition", "response_format"}

#: Field names for values placed as a JSON member (tool arguments, schema defaults, metadata).
FIELDS: dict[str, tuple[str, ...]] = {
    "credit_card": ("card_number", "pan", "payment_card"), "iban": ("iban", "payout_iban", "account"),
    "email": ("email", "customer_email", "reply_to"), "phone": ("phone", "mobile", "callback_number"),
    "us_ssn": ("ssn", "tax_id"), "ip_address": ("ip", "host", "client_ip"),
    "jwt": ("access_token", "id_token", "auth"), "private_key": ("private_key", "ssh_key"),
}

SYSTEM_INTROS = (
    "You are Acme's internal support assistant. Use the context below when answering.",
    "You are a coding assistant for the platform team. Project notes follow.",
    "You are an operations copilot. Reference material for this session:",
)
ASKS = ("Can you summarise this for me?", "What should I do next?", "Is anything wrong here?",
        "Please turn this into a short checklist.", "Explain this to a new team member.")
DOCS = ("Quarterly planning notes: hiring, roadmap and migration risks.",
        "How to reset your dashboard layout: open Settings, then Layout, then Reset.",
        "Release 4.2 adds CSV export and fixes the timezone bug in reports.",
        "Office closure on public holidays; the help desk stays reachable by chat.")
TOOLS: list[Body] = [{"type": "function", "function": {
    "name": "lookup_record", "description": "Looks up a record in the CRM by a free-text query.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


def call_id(rng: random.Random) -> str:
    return "call_" + val.pick(rng, val.ALNUM, 24)


# --------------------------------------------------------------------------- positions


class Place:
    """Puts one text (or one bare value under a field name) at a named position."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self, position: str, text: str, field: str, value: str) -> Body:
        return getattr(self, position)(text, field, value)  # type: ignore[no-any-return]

    def _chat(self, *messages: Body, **extra: Any) -> Body:
        return {"model": "chat-default", "messages": list(messages), **extra}

    def _ask(self) -> str:
        return self.rng.choice(ASKS)

    def system(self, text: str, field: str, value: str) -> Body:
        role = self.rng.choice(("system", "system", "developer"))
        return self._chat({"role": role, "content": f"{self.rng.choice(SYSTEM_INTROS)}\n\n{text}"},
                          {"role": "user", "content": self._ask()})

    def user(self, text: str, field: str, value: str) -> Body:
        lead = self.rng.choice(("", "", "Can you help with this?\n\n", "Context:\n"))
        return self._chat({"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": lead + text})

    def user_part(self, text: str, field: str, value: str) -> Body:
        first: Body = self.rng.choice((
            {"type": "text", "text": self._ask()},
            {"type": "image_url", "image_url": {"url": "https://cdn.acme-corp.com/uploads/screenshot-2291.png"}},
        ))
        return self._chat({"role": "user", "content": [first, {"type": "text", "text": text}]})

    def assistant_history(self, text: str, field: str, value: str) -> Body:
        return self._chat({"role": "user", "content": "What did we have on file for this?"},
                          {"role": "assistant", "content": f"Here's what I found:\n\n{text}"},
                          {"role": "user", "content": "Thanks, can you shorten that?"})

    def tool_result(self, text: str, field: str, value: str) -> Body:
        cid = call_id(self.rng)
        call = {"id": cid, "type": "function",
                "function": {"name": "lookup_record", "arguments": json.dumps({"query": "latest record"})}}
        return self._chat({"role": "user", "content": "Look up the latest record, please."},
                          {"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": cid, "content": text}, tools=TOOLS)

    def tool_call_arguments(self, text: str, field: str, value: str) -> Body:
        cid = call_id(self.rng)
        args = {"customer_id": self.rng.randint(1000, 99999), field: value} if field else {"note": text}
        call = {"id": cid, "type": "function",
                "function": {"name": "update_record", "arguments": json.dumps(args)}}
        tools = [{"type": "function", "function": {
            "name": "update_record", "description": "Updates a CRM record.",
            "parameters": {"type": "object", "properties": {"customer_id": {"type": "integer"}},
                           "additionalProperties": True}}}]
        return self._chat({"role": "user", "content": "Save that to the customer's record."},
                          {"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": cid, "content": "{\"ok\": true}"}, tools=tools)

    def tool_definition(self, text: str, field: str, value: str) -> Body:
        prop: Body = {"type": "string", "description": "Value to use for the request."}
        description = "Creates a ticket in the helpdesk."
        if field:
            key = self.rng.choice(("default", "examples"))
            prop[key] = [value] if key == "examples" else value
        elif self.rng.random() < 0.5:
            description += f" Notes: {text}"
        else:
            prop["description"] = f"Free text. For example: {text}"
        tool = {"type": "function", "function": {
            "name": "create_ticket", "description": description,
            "parameters": {"type": "object", "properties": {field or "details": prop}}}}
        return self._chat({"role": "user", "content": "Open a ticket for the outage."}, tools=[tool])

    def response_format(self, text: str, field: str, value: str) -> Body:
        props: Body = {"summary": {"type": "string"}}
        schema: Body = {"type": "object", "properties": props, "required": ["summary"]}
        if field:
            key = self.rng.choice(("default", "examples"))
            props[field] = {"type": "string", key: [value] if key == "examples" else value}
        else:
            schema["description"] = f"Extract the fields. Example input: {text}"
        return self._chat({"role": "user", "content": "Extract the fields from the note I sent earlier."},
                          response_format={"type": "json_schema",
                                           "json_schema": {"name": "extraction", "strict": True, "schema": schema}})

    def message_name(self, text: str, field: str, value: str) -> Body:
        return self._chat({"role": "user", "name": value, "content": "Can you check the status of my refund?"})

    def metadata(self, text: str, field: str, value: str) -> Body:
        if field == "email" and self.rng.random() < 0.5:
            return self._chat({"role": "user", "content": self._ask()}, user=value)
        return self._chat({"role": "user", "content": self._ask()},
                          metadata={"source": "helpdesk", field or "context": value}, store=True)

    def image_url(self, text: str, field: str, value: str) -> Body:
        return self._chat({"role": "user", "content": [
            {"type": "text", "text": "What does this screenshot show?"},
            {"type": "image_url", "image_url": {"url": text, "detail": "low"}}]})

    def embeddings_input(self, text: str, field: str, value: str) -> Body:
        return {"model": "text-embedding-3-small", "input": text}

    def embeddings_input_list(self, text: str, field: str, value: str) -> Body:
        docs = [self.rng.choice(DOCS), text, self.rng.choice(DOCS)]
        return {"model": "text-embedding-3-small", "input": docs, "encoding_format": "float"}

    def completions_prompt(self, text: str, field: str, value: str) -> Body:
        if self.rng.random() < 0.3:
            return {"model": "chat-default", "prompt": [text], "max_tokens": 128}
        return {"model": "chat-default", "prompt": f"Summarize the following note.\n\n{text}\n\nSummary:",
                "max_tokens": 128, "temperature": 0.2}


# --------------------------------------------------------------------------- positives


def render(template: str, value: str, env: str = "") -> tuple[str, str]:
    """The text of a context with ``value`` in it, and the value as it appears there."""
    if "{v_json}" in template:
        needle, marker = json.dumps(value)[1:-1], "{v_json}"
    elif "{v_indent}" in template:
        needle, marker = value.replace("\n", "\n    "), "{v_indent}"
    else:
        needle, marker = value, "{v}"
    return template.replace("{env}", env).replace(marker, needle), needle


class Positives:
    """Assembles the positive cases, family by family."""

    def __init__(self) -> None:
        self.cases: list[Body] = []

    def _rng(self, section: str) -> random.Random:
        return random.Random(f"{SEED}:{section}")

    def add(self, rng: random.Random, family: str, fmt: str, position: str, text: str, needle: str,
            label: str, field: str = "", value: str = "") -> None:
        """One case: ``text`` (holding ``needle``) at ``position``; at a position that
        takes a member value, or by chance at one that may (``MEMBER_POSITIONS``), the
        bare ``value`` under ``field`` instead."""
        if field and (position in BARE_ONLY or (position in MEMBER_POSITIONS and rng.random() < 0.5)):
            needle, label = value, f"bare value under {field!r}"
        else:
            field, value = "", ""
        body = Place(rng)(position, text, field, value)
        n = sum(1 for c in self.cases if c["family"] == family) + 1
        self.cases.append({"id": f"pos-{family}-{n:03d}", "kind": "positive", "family": family, "format": fmt,
                           "endpoint": POSITIONS[position], "position": position, "note": f"{fmt}; {label}",
                           "value": needle, "body": body})

    def family(self, family: str, items: Iterator[tuple[str, str]], contexts: tuple[ctx.Context, ...],
               count: int, positions: tuple[str, ...] = TEXT_POSITIONS) -> None:
        """``count`` cases of ``family`` from ``items`` (value, format), each in the next
        context and the next position (both cycled in a seeded order)."""
        rng = self._rng(family)
        order = list(positions)
        rng.shuffle(order)
        shuffled = list(contexts)
        rng.shuffle(shuffled)
        for i in range(count):
            value, fmt = next(items)
            label, template = shuffled[i % len(shuffled)]
            text, needle = render(template, value)
            field = rng.choice(FIELDS[family])
            self.add(rng, family, fmt, order[i % len(order)], text, needle, label, field, value)


def cycle_values(rng: random.Random, make: Callable[[random.Random, str], val.Value],
                 kinds: tuple[str, ...]) -> Iterator[val.Value]:
    i = 0
    while True:
        yield make(rng, kinds[i % len(kinds)])
        i += 1


def cards(rng: random.Random) -> Iterator[val.Value]:
    seps = (" ", "-", "", " ")
    networks = list(val.NETWORKS)
    i = 0
    while True:  # every network in turn; each network's separator changes from one round to the next
        round_, k = divmod(i, len(networks))
        yield val.card(rng, networks[k], seps[(round_ + k) % len(seps)])
        i += 1


def ibans(rng: random.Random) -> Iterator[val.Value]:
    countries = list(val.IBAN_SHAPES)
    i = 0
    while True:
        round_, k = divmod(i, len(countries))
        yield val.iban(rng, countries[k], spaced=(round_ + k) % 2 == 0)
        i += 1


def emails(rng: random.Random) -> Iterator[val.Value]:
    while True:
        yield val.email(rng)


def build_positives() -> list[Body]:
    pos = Positives()
    r = pos._rng
    pos.family("credit_card", cards(r("cards")), ctx.CARD, 66)
    pos.family("iban", ibans(r("ibans")), ctx.IBAN, 32)
    pos.family("email", emails(r("emails")), ctx.EMAIL, 34, TEXT_POSITIONS + ("message_name",) * 3 + ("metadata",) * 2)
    pos.family("phone", cycle_values(r("phones"), val.phone, val.PHONE_STYLES), ctx.PHONE, 32,
               TEXT_POSITIONS + ("metadata", "message_name"))
    pos.family("us_ssn", cycle_values(r("ssns"), val.ssn, ("dashes", "dashes", "spaces", "dashes")), ctx.US_SSN, 17)
    pos.family("us_ssn", cycle_values(r("ssns-bare"), val.ssn, ("bare",)), ctx.US_SSN_BARE, 3,
               ("user", "tool_result", "tool_call_arguments"))
    ip_kinds = ("private 10/8", "public", "private 192.168/16", "private 172.16/12", "public")

    def ips(rng: random.Random) -> Iterator[val.Value]:
        i = 0
        while True:
            yield val.ipv6(rng, ("ipv6 full", "ipv6 compressed")[i % 2]) if i % 4 == 3 else val.ipv4(rng, ip_kinds[i % 5])
            i += 1

    pos.family("ip_address", ips(r("ips")), ctx.IP, 24, TEXT_POSITIONS + ("metadata",))
    pos.family("jwt", cycle_values(r("jwts"), val.jwt, ("HS256", "RS256", "ES256")), ctx.JWT, 16)

    def keys(rng: random.Random) -> Iterator[val.Value]:
        i = 0
        while True:
            kinds = list(val.PEM_KINDS)
            yield val.pgp_private_key(rng) if i % 7 == 6 else val.private_key(rng, kinds[i % len(kinds)])
            i += 1

    key_positions = tuple(p for p in TEXT_POSITIONS if p not in ("tool_definition", "response_format"))
    pos.family("private_key", keys(r("keys")), ctx.PRIVATE_KEY, 14, key_positions)
    credentials(pos)
    image_urls(pos)
    return pos.cases


#: How many cases of a credential format (2 unless named here).
CREDENTIAL_COUNTS = {"aws access key id": 4, "aws secret access key": 4, "github classic pat": 4,
                     "github fine-grained pat": 3, "openai project key": 4, "anthropic api key": 3,
                     "stripe live secret key": 3, "slack bot token": 3, "generic api key": 3,
                     "generic bearer token": 3, "github user-to-server token": 1, "openai legacy key": 1,
                     "anthropic admin key": 1, "shopify custom app token": 1, "square legacy access token": 1}


def credentials(pos: Positives) -> None:
    rng = pos._rng("credentials")
    order = list(TEXT_POSITIONS)
    rng.shuffle(order)
    turn = 0
    for fmt, make in val.CREDENTIALS.items():
        env, own = ctx.CREDENTIAL[fmt]
        for i in range(CREDENTIAL_COUNTS.get(fmt, 2)):
            # a format's own contexts first, then the generic ones (.env, export, JSON...)
            contexts = own if own and (i % 3 != 2) else ctx.CREDENTIAL_GENERIC
            label, template = contexts[(i + turn) % len(contexts)] if contexts is own else rng.choice(contexts)
            value = make(rng)
            text, needle = render(template, value, env)
            pos.add(rng, "credential", fmt, order[turn % len(order)], text, needle, label, env.lower(), value)
            turn += 1
    for fmt, url in ctx.DB_URLS.items():
        for i in range(2):
            pw = val.password(rng, "generated") if i == 0 else val.password(rng, "human")[:-1] + "!"
            value = url.replace("{pw}", pw)
            label, template = ctx.DB_URL_CONTEXTS[(i + turn) % len(ctx.DB_URL_CONTEXTS)]
            text, needle = render(template, value)
            pos.add(rng, "credential", fmt, order[turn % len(order)], text, needle, label, "database_url", value)
            turn += 1
    for i, (label, template) in enumerate(ctx.PASSWORD):
        style = ctx.PASSWORD_STYLES[i % len(ctx.PASSWORD_STYLES)]
        value = val.password(rng, style)
        text, needle = render(template, value)
        pos.add(rng, "credential", f"password ({style})", order[turn % len(order)], text, needle, label,
                "password", value)
        turn += 1


def image_urls(pos: Positives) -> None:
    """Credentials in the URL of an image part: presigned and keyed links people paste."""
    rng = pos._rng("image-urls")
    for i in range(3):
        key = val.CREDENTIALS["aws access key id"](rng)
        url = (f"https://acme-uploads.s3.amazonaws.com/scans/receipt-{rng.randint(1000, 9999)}.png"
               f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F2024031{i}%2Fus-east-1%2Fs3%2Faws4_request"
               f"&X-Amz-Date=2024031{i}T102231Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
               f"&X-Amz-Signature={val.pick(rng, val.HEX, 64)}")
        pos.add(rng, "credential", "aws access key id", "image_url", url, key, "s3 presigned url")
    for _ in range(2):
        key = val.CREDENTIALS["google api key"](rng)
        url = f"https://maps.googleapis.com/maps/api/staticmap?center=52.52,13.40&zoom=12&size=600x300&key={key}"
        pos.add(rng, "credential", "google api key", "image_url", url, key, "static maps url")
    token = val.CREDENTIALS["generic api key"](rng)
    pos.add(rng, "credential", "generic api key", "image_url",
            f"https://img.acme-corp.com/render/chart.png?api_key={token}", token, "api_key query parameter")
    for alg in ("HS256", "RS256"):
        token, _ = val.jwt(rng, alg)
        pos.add(rng, "jwt", alg, "image_url", f"https://cdn.acme-corp.com/private/scan-8812.png?token={token}",
                token, "token query parameter")


# --------------------------------------------------------------------------- negatives

NEGATIVE_POSITIONS = ("system", "user", "user", "user_part", "assistant_history", "tool_result", "tool_result",
                      "tool_call_arguments", "tool_definition", "response_format", "embeddings_input",
                      "embeddings_input_list", "completions_prompt", "metadata")


def build_negatives() -> list[Body]:
    cases: list[Body] = []
    for category, (builders, count) in KINDS.items():
        rng = random.Random(f"{SEED}:negative:{category}")
        order = list(("image_url",) if category == "base64_image" else NEGATIVE_POSITIONS)
        rng.shuffle(order)
        for i in range(count):
            label, text = builders[i % len(builders)](rng)
            position = order[i % len(order)]
            body = Place(rng)(position, text, "", "")
            cases.append({"id": f"neg-{category}-{i + 1:03d}", "kind": "negative", "category": category,
                          "endpoint": POSITIONS[position], "position": position, "note": label, "body": body})
    return cases


# --------------------------------------------------------------------------- files


def dump(cases: list[Body]) -> str:
    return "".join(json.dumps(case, ensure_ascii=False) + "\n" for case in cases)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are out of date")
    args = parser.parse_args(argv)
    outputs = {POSITIVES: dump(build_positives()), NEGATIVES: dump(build_negatives())}
    stale = [path.name for path, text in outputs.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run {Path(__file__).name} to rebuild", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
    print(", ".join(f"{path.name}: {text.count(chr(10))} cases" for path, text in outputs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
