"""``policies.sensitivity`` scans every string a request sends upstream (issue 10, finding 2).

Regression tests: a card number placed in each place a request can carry text is found,
at level ``restricted`` and with a location naming that place; redaction reaches the same
places; over-deep bodies fail closed; the token estimate counts tools and schemas. Then a
property: a secret planted at a random place of a random valid body (chat with tools,
schemas, parts, names and extra fields; completions; embeddings) always makes the request
``restricted`` unless the place is on the documented allowlist.

Key-like literals are assembled from pieces so secret scanners do not flag this file.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import PolicySettings
from policies.models import SensitivitySpec
from policies.sensitivity import MAX_DEPTH, MAX_TEXTS, MAX_VALUES, Scan, Scanner, iter_texts, redact
from router.body import ParsedBody
from router.facts import build_facts

SCANNER = Scanner(SensitivitySpec())
CARD = "4111 1111 1111 1111"
AWS = "AKIA" + "Z7QH2MBX5RT4WK3N"
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def card_at(endpoint: str, body: dict[str, Any]) -> list[str]:
    """The locations of the card findings in ``body``, after checking the level."""
    scan = SCANNER.scan(endpoint, body)
    assert scan.level == "restricted", scan
    return [f.location for f in scan.findings if f.detector == "credit_card"]


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [*messages] or [{"role": "user", "content": "hi"}], **extra}


def tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", **function}}


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": sorted(properties)}


# --------------------------------------------------------------------------- regressions: chat

CHAT_PLACES: list[tuple[str, dict[str, Any], str]] = [
    ("tool description", chat(tools=[tool(description=f"charge {CARD}")]), "tools[0].function.description"),
    ("tool name", chat(tools=[tool(name=CARD)]), "tools[0].function.name"),
    ("schema description",
     chat(tools=[tool(parameters=schema(city={"type": "string", "description": f"e.g. {CARD}"}))]),
     "tools[0].function.parameters.properties.city.description"),
    ("schema enum",
     chat(tools=[tool(parameters=schema(city={"type": "string", "enum": ["Paris", CARD]}))]),
     "tools[0].function.parameters.properties.city.enum[1]"),
    ("schema default",
     chat(tools=[tool(parameters=schema(city={"type": "string", "default": CARD}))]),
     "tools[0].function.parameters.properties.city.default"),
    ("schema property name", chat(tools=[tool(parameters={"type": "object", "properties": {CARD: {"type": "string"}}})]),
     "tools[0].function.parameters.properties{0}:name"),
    ("schema required", chat(tools=[tool(parameters={"type": "object", "required": [CARD]})]),
     "tools[0].function.parameters.required[0]"),
    ("nested schema",
     chat(tools=[tool(parameters=schema(rows={"type": "array", "items": schema(
         pan={"type": "string", "description": f"like {CARD}"})}))]),
     "tools[0].function.parameters.properties.rows.items.properties.pan.description"),
    ("legacy functions", chat(functions=[{"name": "f", "description": CARD, "parameters": {}}]),
     "functions[0].description"),
    ("tool_choice", chat(tool_choice={"type": "function", "function": {"name": CARD}}),
     "tool_choice.function.name"),
    ("response_format schema",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema(
         card={"type": "string", "description": f"always {CARD}"})}}),
     "response_format.json_schema.schema.properties.card.description"),
    ("response_format description",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "out", "description": CARD}}),
     "response_format.json_schema.description"),
    ("message name", chat({"role": "user", "name": CARD, "content": "hi"}), "messages[0].name"),
    ("input_text part", chat({"role": "user", "content": [{"type": "input_text", "text": CARD}]}),
     "messages[0].content[0].text"),
    ("unknown part type", chat({"role": "user", "content": [{"type": "note", "body": {"value": CARD}}]}),
     "messages[0].content[0].body.value"),
    ("image_url url",
     chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"https://x.test/?c={CARD}"}}]}),
     "messages[0].content[0].image_url.url"),
    ("content object", chat({"role": "user", "content": {"type": "text", "text": CARD}}), "messages[0].content.text"),
    ("refusal", chat({"role": "assistant", "refusal": CARD}), "messages[0].refusal"),
    ("tool call id", chat({"role": "assistant", "tool_calls": [
        {"id": CARD, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
     "messages[0].tool_calls[0].id"),
    ("tool call name", chat({"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": CARD, "arguments": "{}"}}]}),
     "messages[0].tool_calls[0].function.name"),
    ("tool_call_id", chat({"role": "tool", "tool_call_id": CARD, "content": "ok"}), "messages[0].tool_call_id"),
    ("role that is not a role", chat({"role": f"user {CARD}", "content": "hi"}), "messages[0].role"),
    ("type that is not a type", chat({"role": "user", "content": [{"type": CARD, "text": "x"}]}),
     "messages[0].content[0].type"),
    ("stop string", chat(stop=CARD), "stop"),
    ("stop list", chat(stop=["\n", CARD]), "stop[1]"),
    ("user", chat(user=CARD), "user"),
    ("metadata", chat(metadata={"order": CARD}), "metadata.order"),
    ("metadata key", chat(metadata={CARD: "x"}), "metadata{0}:name"),
    ("unknown top-level field", chat(x_note=CARD), "x_note"),
    ("unknown nested field", chat(extra={"deep": [{"note": [CARD]}]}), "extra.deep[0].note[0]"),
    ("unknown field with an odd name", chat(**{"my note": CARD}), "{2}"),
    ("prediction parts", chat(prediction={"type": "content", "content": [{"type": "text", "text": CARD}]}),
     "prediction.content[0].text"),
]


@pytest.mark.parametrize(("body", "location"), [(b, loc) for _, b, loc in CHAT_PLACES],
                         ids=[name for name, _, _ in CHAT_PLACES])
def test_chat_place_is_scanned(body: dict[str, Any], location: str) -> None:
    assert card_at("chat", body) == [location]
    assert location in dict(iter_texts("chat", body))


# --------------------------------------------------------------------------- regressions: completions, embeddings


@pytest.mark.parametrize(("body", "location"), [
    ({"prompt": CARD}, "prompt"),
    ({"prompt": ["fine", CARD]}, "prompt[1]"),
    ({"prompt": [[1, 2, 3], CARD]}, "prompt[1]"),
    ({"prompt": "x", "suffix": CARD}, "suffix"),
    ({"prompt": "x", "stop": [CARD]}, "stop[0]"),
    ({"prompt": "x", "x_extra": {"a": CARD}}, "x_extra.a"),
])
def test_completions_place_is_scanned(body: dict[str, Any], location: str) -> None:
    assert card_at("completions", {"model": "m", **body}) == [location]


@pytest.mark.parametrize(("body", "location"), [
    ({"input": CARD}, "input"),
    ({"input": ["fine", CARD]}, "input[1]"),
    ({"input": [[5, 6], CARD]}, "input[1]"),
    ({"input": "x", "user": CARD}, "user"),
    ({"input": "x", "x_extra": [CARD]}, "x_extra[0]"),
])
def test_embeddings_place_is_scanned(body: dict[str, Any], location: str) -> None:
    assert card_at("embeddings", {"model": "m", **body}) == [location]


@pytest.mark.parametrize(("endpoint", "body", "tokens"), [
    ("completions", {"model": "m", "prompt": [1, 2, 3]}, 3),
    ("completions", {"model": "m", "prompt": [[1, 2], [3, 4, 5]]}, 5),
    ("embeddings", {"model": "m", "input": [4111, 1111, 1111, 1111]}, 4),
    ("embeddings", {"model": "m", "input": [[4111, 1111], [1111, 1111]]}, 4),
])
def test_token_id_arrays_have_nothing_to_find_but_count(endpoint: str, body: dict[str, Any], tokens: int) -> None:
    scan = SCANNER.scan(endpoint, body)
    assert scan == Scan("public", ())
    assert scan.tokens == tokens


# --------------------------------------------------------------------------- the allowlist


def test_structural_fields_are_not_scanned() -> None:
    body = chat({"role": "user", "content": [{"type": "text", "text": "hi"}]},
                tools=[tool(parameters=schema(city={"type": "string"}))])
    body["model"] = CARD  # replaced by each backend's own model name: never sent
    texts = dict(iter_texts("chat", body))
    assert texts == {"messages[0].content[0].text": "hi", "tools[0].function.name": "lookup",
                     "tools[0].function.parameters.properties{0}:name": "city",
                     "tools[0].function.parameters.required[0]": "city"}
    assert SCANNER.scan("chat", body).level == "public"


def test_only_the_top_level_model_is_skipped() -> None:
    assert card_at("chat", chat(metadata={"model": CARD})) == ["metadata.model"]
    assert card_at("chat", chat({"role": "user", "content": "x", "model": CARD})) == ["messages[0].model"]


def test_names_in_locations_are_plain_or_positional() -> None:
    body = chat(metadata={"a b": {"c": CARD}, "jane@example.com": "x", "ok-name_1": CARD})
    scan = SCANNER.scan("chat", body)
    assert [(f.detector, f.location) for f in scan.findings] == [
        ("credit_card", "metadata{0}.c"), ("email", "metadata{1}:name"), ("credit_card", "metadata.ok-name_1")]
    assert "example" not in repr(scan)


# --------------------------------------------------------------------------- depth


def nested(depth: int, leaf: object) -> dict[str, Any]:
    node: Any = leaf
    for i in range(depth):
        node = {"a": node} if i % 2 else [node]
    return node if isinstance(node, dict) else {"a": node}


def test_bodies_up_to_the_depth_cap_are_scanned() -> None:
    body = chat(extra=nested(MAX_DEPTH - 3, CARD))
    scan = SCANNER.scan("chat", body)
    assert scan.level == "restricted" and scan.unreadable is None
    assert scan.detectors == {"credit_card"}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_over_deep_bodies_are_unreadable_and_restricted(depth: int) -> None:
    body = chat(extra=nested(depth, "nothing to see"))
    scan = SCANNER.scan("chat", body)  # no RecursionError: the walk is iterative
    assert scan.level == "restricted"
    assert scan.unreadable is not None and str(MAX_DEPTH) in scan.unreadable
    assert scan.findings == ()
    redact("chat", body, scan, {"credit_card"})
    list(iter_texts("chat", body))


def test_values_that_are_not_json_are_unreadable() -> None:
    scan = SCANNER.scan("chat", chat(extra={"blob": b"4111 1111 1111 1111"}))
    assert scan.level == "restricted" and scan.unreadable is not None
    assert SCANNER.scan("chat", chat(extra={1: "x"})).unreadable is not None  # type: ignore[dict-item]


def test_too_many_strings_are_unreadable() -> None:
    at_cap = {"model": "m", "input": ["word"] * MAX_TEXTS}
    assert SCANNER.scan("embeddings", at_cap).unreadable is None
    over = {"model": "m", "input": ["word"] * MAX_TEXTS + [CARD]}
    scan = SCANNER.scan("embeddings", over)
    assert scan.level == "restricted" and scan.unreadable == f"more than {MAX_TEXTS} strings to scan"


def test_too_many_values_are_unreadable() -> None:
    tokens = {"model": "m", "input": [[7] * 1000 for _ in range(300)]}  # a 300k-token request
    scan = SCANNER.scan("embeddings", tokens)
    assert scan.unreadable is None and scan.tokens == 300_000
    scan = SCANNER.scan("embeddings", {"model": "m", "input": [7] * MAX_VALUES})
    assert scan.level == "restricted" and scan.unreadable == f"more than {MAX_VALUES} values"


@pytest.mark.parametrize("shape", ["tiny strings", "tiny names", "tiny parts", "nested pairs"])
def test_many_small_values_cost_bounded_time(shape: str) -> None:
    n = 2_000_000  # about 8-10 MB as JSON
    value: Any = {"tiny strings": lambda: ["a"] * n, "tiny names": lambda: {f"k{i}": 0 for i in range(n // 4)},
                  "tiny parts": lambda: [{"type": "text", "text": "a"}] * (n // 4),
                  "nested pairs": lambda: [[0]] * n}[shape]()
    start = time.process_time()
    scan = SCANNER.scan("chat", {"model": "m", "messages": [{"role": "user", "content": value}]})
    assert time.process_time() - start < 2.0  # generous: about 0.1-0.4 s
    assert scan.level == "restricted" and scan.unreadable is not None


def test_readable_bodies_give_no_reason() -> None:
    assert SCANNER.scan("chat", chat()).unreadable is None
    assert SCANNER.scan("chat", chat()) == Scan("public", ())


# --------------------------------------------------------------------------- token estimate


def facts_for(body: dict[str, Any]) -> int:
    facts, scan = build_facts(ParsedBody(body, "m", False), "chat", {}, SCANNER, PolicySettings())
    return facts.input_tokens


def test_chars_count_every_text_scanned() -> None:
    base = chat({"role": "user", "content": "hello"}, metadata={"note": "x"}, stop=["END"])
    assert SCANNER.scan("chat", base).chars == len("hello") + len("note") + len("x") + len("END")
    schema_text = "x" * 4000
    with_tools = chat({"role": "user", "content": "hello"},
                      tools=[tool(description=schema_text, parameters=schema(q={"type": "string"}))],
                      response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema(
                          a={"type": "string", "description": schema_text})}})
    assert SCANNER.scan("chat", with_tools).chars > 8000
    assert facts_for(with_tools) >= facts_for(base) + 2000


def test_inline_media_is_scanned_but_not_counted_as_text() -> None:
    image = "data:image/png;base64," + "iVBORw0KGgo" * 10_000
    body = chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                             {"type": "input_audio", "input_audio": {"data": "UklGR" * 1000,
                                                                                      "format": "wav"}}]})
    scan = SCANNER.scan("chat", body)
    assert scan.chars < 200
    assert "messages[0].content[0].image_url.url" in dict(iter_texts("chat", body))
    assert card_at("chat", chat({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:text/plain,{CARD}"}}]})) == [
        "messages[0].content[0].image_url.url"]


def test_token_ids_count_one_token_each() -> None:
    prompt = list(range(3000))
    facts, _ = build_facts(ParsedBody({"model": "m", "prompt": prompt}, "m", False), "completions", {},
                           SCANNER, PolicySettings())
    assert facts.input_tokens >= 3000


# --------------------------------------------------------------------------- redaction at the new places


def test_redact_reaches_every_new_place() -> None:
    body = chat({"role": "user", "name": f"n {CARD}", "content": {"type": "text", "text": f"c {CARD}"}},
                tools=[tool(description=f"d {CARD}", parameters=schema(**{
                    CARD: {"type": "string", "enum": [CARD], "description": "fine"}}))],
                stop=[CARD], x_note={"deep": CARD})
    before = copy.deepcopy(body)
    out = redact("chat", body, SCANNER.scan("chat", body), {"credit_card"})
    assert body == before
    placeholder = "<CREDIT_CARD_1>"
    assert out["messages"][0] == {"role": "user", "name": f"n {placeholder}",
                                  "content": {"type": "text", "text": f"c {placeholder}"}}
    function = out["tools"][0]["function"]
    assert function["description"] == f"d {placeholder}"
    assert function["parameters"] == {"type": "object", "required": [placeholder], "properties": {
        placeholder: {"type": "string", "enum": [placeholder], "description": "fine"}}}
    assert out["stop"] == [placeholder] and out["x_note"] == {"deep": placeholder}
    assert CARD not in json.dumps(out)


def test_redacted_names_keep_their_order_and_do_not_collide() -> None:
    body = chat(metadata={"a": 1, CARD: 2, CARD.replace(" ", ""): 3, "z": {f"k {CARD}": 4}})
    out = redact("chat", body, SCANNER.scan("chat", body), {"credit_card"})
    assert list(out["metadata"]) == ["a", "<CREDIT_CARD_1>", "<CREDIT_CARD_1>_2", "z"]
    assert list(out["metadata"].values())[:3] == [1, 2, 3]
    assert out["metadata"]["z"] == {"k <CREDIT_CARD_1>": 4}


# --------------------------------------------------------------------------- property: plant a secret anywhere

SECRETS = [CARD, CARD.replace(" ", ""), "4111-1111-1111-1111", AWS]
WORDS = st.sampled_from(["alpha", "Paris", "total", "the city", "x", "", "Order 7", "ok."])
NAMES = st.sampled_from(["city", "q", "unit", "notes", "x_extra", "first name", "deep", "a1", "$ref"])


def leaves() -> st.SearchStrategy[Any]:
    return st.one_of(WORDS, st.integers(-5, 5), st.booleans(), st.none(), st.floats(0, 1))


JSONISH: st.SearchStrategy[Any] = st.recursive(
    leaves(), lambda children: st.lists(children, max_size=3) | st.dictionaries(NAMES, children, max_size=3),
    max_leaves=8)


@st.composite
def json_schemas(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    kind = draw(st.sampled_from(["string", "integer", "object", "array"] if depth else ["string", "integer"]))
    node: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        node["description"] = draw(WORDS)
    if kind == "string" and draw(st.booleans()):
        node["enum"] = draw(st.lists(WORDS, min_size=1, max_size=3))
    if kind == "string" and draw(st.booleans()):
        node["default"] = draw(WORDS)
    if kind == "object":
        props = draw(st.dictionaries(NAMES, json_schemas(depth - 1), min_size=1, max_size=3))
        node.update(properties=props, required=sorted(props), additionalProperties=False)
    if kind == "array":
        node["items"] = draw(json_schemas(depth - 1))
    return node


@st.composite
def parts(draw: st.DrawFn) -> Any:
    return draw(st.sampled_from([
        {"type": "text", "text": draw(WORDS)},
        {"type": "input_text", "text": draw(WORDS)},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": draw(st.sampled_from(["note", "custom_part"])), "payload": draw(JSONISH)},
    ]))


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
    msg: dict[str, Any] = {"role": role}
    shape = draw(st.sampled_from(["str", "parts", "object", "none"]))
    msg["content"] = {"str": draw(WORDS), "parts": draw(st.lists(parts(), min_size=1, max_size=3)),
                      "object": {"type": "text", "text": draw(WORDS)}, "none": None}[shape]
    if draw(st.booleans()):
        msg["name"] = draw(st.sampled_from(["jane", "bot_1"]))
    if role == "assistant" and draw(st.booleans()):
        msg["tool_calls"] = [{"id": f"call_{i}", "type": "function", "function": {
            "name": draw(st.sampled_from(["lookup", "get_weather"])),
            "arguments": json.dumps({"q": draw(WORDS)})}} for i in range(draw(st.integers(1, 2)))]
    if role == "tool":
        msg["tool_call_id"] = "call_0"
    return msg


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": draw(st.lists(messages(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {
            "name": draw(st.sampled_from(["lookup", "f"])), "description": draw(WORDS),
            "parameters": draw(json_schemas())}} for _ in range(draw(st.integers(1, 2)))]
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", {"type": "function",
                                                                         "function": {"name": "lookup"}}]))
    if draw(st.booleans()):
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "out", "strict": True, "schema": draw(json_schemas())}}
    if draw(st.booleans()):
        body["stop"] = draw(st.one_of(WORDS, st.lists(WORDS, min_size=1, max_size=2)))
    for name in draw(st.lists(st.sampled_from(["x_extra", "metadata", "user", "my field"]), max_size=2, unique=True)):
        body[name] = draw(JSONISH) if name != "user" else draw(WORDS)
    body.update(draw(st.fixed_dictionaries({}, optional={"temperature": st.floats(0, 1), "n": st.just(1),
                                                         "stream": st.booleans(), "seed": st.integers(0, 9)})))
    return body


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    endpoint = draw(st.sampled_from(["chat", "chat", "completions", "embeddings"]))
    if endpoint == "chat":
        return endpoint, draw(chat_bodies())
    key = "prompt" if endpoint == "completions" else "input"
    value = draw(st.one_of(WORDS, st.lists(WORDS, min_size=1, max_size=3),
                           st.lists(st.integers(0, 50000), min_size=1, max_size=4),
                           st.lists(st.lists(st.integers(0, 50000), min_size=1, max_size=3), min_size=1, max_size=2)))
    body: dict[str, Any] = {"model": "m", key: value}
    if endpoint == "completions" and draw(st.booleans()):
        body["suffix"] = draw(WORDS)
    if draw(st.booleans()):
        body["x_extra"] = draw(JSONISH)
    return endpoint, body


Where = tuple[tuple[Any, ...], str]  # (path to a container, "value" | "name" | "new")


def places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[Where]:
    """Every place a secret can go, found independently of the code under test."""
    if isinstance(node, dict):
        yield path, "new"
        for key, value in node.items():
            yield (*path, key), "name"
            yield (*path, key), "value"
            yield from places(value, (*path, key))
    elif isinstance(node, list):
        yield path, "new"
        for i, value in enumerate(node):
            yield (*path, i), "value"
            yield from places(value, (*path, i))


def plant(body: dict[str, Any], where: Where, secret: str) -> dict[str, Any]:
    planted = copy.deepcopy(body)
    path, how = where
    parent = planted
    for key in path[:-1] if how != "new" else path:
        parent = parent[key]
    if how == "new":
        if isinstance(parent, dict):
            parent["x_planted"] = secret
        else:
            parent.append(secret)
    elif how == "name":
        items = list(parent.items())
        parent.clear()
        parent.update((secret if k == path[-1] else k, v) for k, v in items)
    else:
        parent[path[-1]] = secret
    return planted


def allowlisted(where: Where) -> bool:
    """Places whose text never reaches an upstream: the top-level ``model`` (each backend
    sends its own model name). Structural ``role``/``type`` values are skipped only when
    they are the API's own words, which a secret never is."""
    path, how = where
    return path == ("model",) and how == "value"


@settings(max_examples=150, **SETTINGS)
@given(case=bodies(), secret=st.sampled_from(SECRETS), wrap=st.sampled_from(["{}", "see {} now", "{}\n"]))
def test_property_a_planted_secret_is_always_found(case: tuple[str, dict[str, Any]], secret: str,
                                                   wrap: str) -> None:
    """Each generated body is tried with the secret at every one of its places, in turn."""
    endpoint, body = case
    assert SCANNER.scan(endpoint, body).level == "public"  # the generated body itself is clean
    for where in places(body):
        planted = plant(body, where, wrap.format(secret))
        scan = SCANNER.scan(endpoint, planted)
        if allowlisted(where):
            continue
        assert scan.level == "restricted", (where, planted)
        redacted = redact(endpoint, planted, scan, {"credit_card", "api_key"})
        assert secret not in json.dumps(redacted), (where, redacted)
