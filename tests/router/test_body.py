"""``router.body.parse_body``: one parse, the few fields the gateway acts on checked, every
other field passed through untouched; wrong types → ``InvalidRequest`` naming the ``param``.
Pure unit tests: no app, no network."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.body import ParsedBody, parse_body
from router.errors import InvalidRequest

MESSAGES = [{"role": "user", "content": "hi"}]
VALID = {
    "chat": {"model": "chat-default", "messages": MESSAGES},
    "completions": {"model": "chat-default", "prompt": "Once upon"},
    "embeddings": {"model": "embed", "input": "hello"},
}
ENDPOINTS = list(VALID)


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def body(endpoint: str, **fields: object) -> dict[str, object]:
    return {**VALID[endpoint], **fields}


def invalid(data: bytes | dict[str, object], endpoint: str) -> InvalidRequest:
    payload = data if isinstance(data, bytes) else raw(data)
    with pytest.raises(InvalidRequest) as info:
        parse_body(payload, endpoint)  # type: ignore[arg-type]
    err = info.value
    assert err.status == 400 and err.error_type == "invalid_request_error"
    assert str(err) == err.message
    return err


# -- valid bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_minimal_valid_body(endpoint: str):
    parsed = parse_body(raw(VALID[endpoint]), endpoint)  # type: ignore[arg-type]
    assert isinstance(parsed, ParsedBody)
    assert parsed.data == VALID[endpoint]
    assert parsed.model == VALID[endpoint]["model"]
    assert parsed.stream is False


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_fields_pass_through_untouched(endpoint: str):
    extra = {
        "x_vendor": {"nested": [1, 2.5, None, True, "s"]},
        "logit_bias": {"50256": -100},
        "response_format": {"type": "json_object"},
        "seed": 7,
        "frequency_penalty": 0.5,
        "unicode": "héllo ✓ 日本",
        "big": 2**53,
        "null_field": None,
    }
    sent = body(endpoint, **extra)
    parsed = parse_body(raw(sent), endpoint)  # type: ignore[arg-type]
    assert parsed.data == sent
    assert list(parsed.data) == list(sent)  # order kept
    assert orjson.dumps(parsed.data) == orjson.dumps(sent)


def test_data_is_the_parsed_object_not_a_copy_of_checked_fields():
    sent = body("chat", tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto",
                messages=[{"role": "system", "content": "s"}, {"role": "user", "content": [
                    {"type": "text", "text": "x"}]}])
    parsed = parse_body(raw(sent), "chat")
    assert parsed.data == sent
    assert type(parsed.data) is dict


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_model_none_when_absent(endpoint: str):
    sent = {k: v for k, v in VALID[endpoint].items() if k != "model"}
    parsed = parse_body(raw(sent), endpoint)  # type: ignore[arg-type]
    assert parsed.model is None
    assert "model" not in parsed.data


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_true(endpoint: str):
    parsed = parse_body(raw(body(endpoint, stream=True, stream_options={"include_usage": True})),
                        endpoint)  # type: ignore[arg-type]
    assert parsed.stream is True
    assert parsed.data["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("value", [False, None])
def test_stream_false_or_null(endpoint: str, value: object):
    parsed = parse_body(raw(body(endpoint, stream=value)), endpoint)  # type: ignore[arg-type]
    assert parsed.stream is False
    assert parsed.data["stream"] is value


def test_embeddings_stream_rejected():
    err = invalid(body("embeddings", stream=True), "embeddings")
    assert err.param == "stream"
    assert err.message == "embeddings cannot be streamed"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 1), ("n", 4), ("n", None),
        ("max_tokens", 0), ("max_tokens", 4096), ("max_tokens", None),
        ("max_completion_tokens", 0), ("max_completion_tokens", 10),
        ("temperature", 0), ("temperature", 0.7), ("temperature", 2), ("temperature", None),
        ("top_p", 1), ("top_p", 0.9),
        ("user", "u-1"), ("user", None),
        ("stop", "\n"), ("stop", ["a", "b"]), ("stop", None),
        ("metadata", {"team": "x"}), ("metadata", None),
        ("stream_options", None),
    ],
)
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_common_fields_accepted(endpoint: str, field: str, value: object):
    parsed = parse_body(raw(body(endpoint, **{field: value})), endpoint)  # type: ignore[arg-type]
    assert parsed.data[field] == value


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [
        ("completions", "prompt", ["a", "b"]),
        ("completions", "prompt", [1, 2, 3]),  # token ids
        ("completions", "prompt", ""),
        ("embeddings", "input", ["a", "b"]),
        ("embeddings", "input", [[1, 2], [3]]),
        ("chat", "messages", [{"role": "system", "content": "s"}, {"role": "user", "content": None}]),
        ("chat", "tools", []),
        ("chat", "tools", None),
    ],
)
def test_required_and_extra_field_shapes_accepted(endpoint: str, field: str, value: object):
    assert parse_body(raw(body(endpoint, **{field: value})), endpoint).data[field] == value  # type: ignore[arg-type]


def test_tools_not_checked_outside_chat():
    # `tools` is a chat field; elsewhere it is passed through like any unknown field
    assert parse_body(raw(body("completions", tools="x")), "completions").data["tools"] == "x"


# -- wrong types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("model", "", "a non-empty string"),
        ("model", 5, "a non-empty string"),
        ("model", None, "a non-empty string"),
        ("model", ["chat"], "a non-empty string"),
        ("stream", "true", "a boolean"),
        ("stream", 1, "a boolean"),
        ("stream", 0, "a boolean"),
        ("stream_options", "yes", "an object"),
        ("stream_options", [], "an object"),
        ("n", True, "an integer from 1 to 2147483647"),
        ("n", False, "an integer from 1 to 2147483647"),
        ("n", 0, "an integer from 1 to 2147483647"),
        ("n", -1, "an integer from 1 to 2147483647"),
        ("n", 2.0, "an integer from 1 to 2147483647"),
        ("n", "2", "an integer from 1 to 2147483647"),
        ("max_tokens", 1.5, "an integer from 0 to 2147483647"),
        ("max_tokens", 1.0, "an integer from 0 to 2147483647"),
        ("max_tokens", -1, "an integer from 0 to 2147483647"),
        ("max_tokens", True, "an integer from 0 to 2147483647"),
        ("max_tokens", "100", "an integer from 0 to 2147483647"),
        ("max_completion_tokens", 2.5, "an integer from 0 to 2147483647"),
        ("max_completion_tokens", False, "an integer from 0 to 2147483647"),
        ("temperature", "0.5", "a number"),
        ("temperature", True, "a number"),
        ("temperature", [0.5], "a number"),
        ("top_p", False, "a number"),
        ("top_p", {}, "a number"),
        ("user", 42, "a string"),
        ("user", {"id": 1}, "a string"),
        ("stop", 1, "a string or an array of strings"),
        ("stop", {"a": 1}, "a string or an array of strings"),
        ("stop", True, "a string or an array of strings"),
        ("metadata", "x", "an object"),
        ("metadata", [1], "an object"),
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_wrong_common_field_types(endpoint: str, field: str, value: object, want: str):
    err = invalid(body(endpoint, **{field: value}), endpoint)
    assert err.param == field
    assert err.message == f"'{field}' must be {want}"


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stop_list_of_non_strings_rejected(endpoint: str):
    err = invalid(body(endpoint, stop=[1, None]), endpoint)
    assert err.param == "stop"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([], "empty"),
        ("hi", "string"),
        ({"role": "user"}, "object"),
        ([{"content": "no role"}], "no role"),
        ([{"role": 1, "content": "x"}], "non-string role"),
        ([{"role": None}], "null role"),
        (["user: hi"], "string message"),
        ([MESSAGES[0], 5], "one bad item"),
        (None, "null"),
    ],
)
def test_chat_messages_wrong(value: object, why: str):
    err = invalid(body("chat", messages=value), "chat")
    assert err.param == "messages", why
    assert err.message == "'messages' must be a non-empty array of message objects, each with a 'role'"


@pytest.mark.parametrize("value", [{}, "f", 1, True])
def test_chat_tools_wrong(value: object):
    err = invalid(body("chat", tools=value), "chat")
    assert (err.param, err.message) == ("tools", "'tools' must be an array of tools")


@pytest.mark.parametrize(("endpoint", "field"), [("completions", "prompt"), ("embeddings", "input")])
@pytest.mark.parametrize("value", [[], 5, None, {"text": "x"}, True])
def test_prompt_and_input_wrong(endpoint: str, field: str, value: object):
    err = invalid(body(endpoint, **{field: value}), endpoint)
    assert err.param == field
    assert err.message == f"'{field}' must be a string or a non-empty array"


@pytest.mark.parametrize(("endpoint", "field"), [("chat", "messages"), ("completions", "prompt"),
                                                 ("embeddings", "input")])
def test_missing_required_field(endpoint: str, field: str):
    sent = {k: v for k, v in VALID[endpoint].items() if k != field}
    err = invalid(sent, endpoint)
    assert err.param == field
    assert err.message == f"missing required parameter '{field}'"


def test_required_field_of_another_endpoint_does_not_count():
    # a chat body sent to /v1/embeddings is missing `input`
    err = invalid(VALID["chat"], "embeddings")
    assert (err.param, err.message) == ("input", "missing required parameter 'input'")


def test_required_fields_checked_before_optional_ones():
    err = invalid({"model": 5}, "chat")
    assert err.param == "messages"


# -- not a JSON object ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_empty_body(endpoint: str):
    err = invalid(b"", endpoint)
    assert err.param is None
    assert err.message == "request body is empty; expected a JSON object"


@pytest.mark.parametrize("payload", [b"[]", b"[{}]", b'"chat"', b"42", b"null", b"true", b"1.5"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_non_object_json(endpoint: str, payload: bytes):
    err = invalid(payload, endpoint)
    assert err.param is None
    assert err.message == "request body must be a JSON object"


@pytest.mark.parametrize(
    "payload",
    [b"{", b"{'model': 'x'}", b"not json", b'{"a": 1,}', b"   ", b"\n", b'{"a": NaN}', b'{"a": 1} x',
     b"\xef\xbb\xbf{}"],
)
def test_invalid_json(payload: bytes):
    err = invalid(payload, "chat")
    assert err.param is None
    assert err.message.startswith("request body is not valid JSON: ")
    assert err.__cause__ is None and err.__suppress_context__


@pytest.mark.parametrize("payload", [b"\xff\xfe{}", b'{"model": "\xff"}', b'{"messages": "\xc3\x28"}',
                                     b'{"a": "\xed\xa0\x80"}'])
def test_invalid_utf8(payload: bytes):
    err = invalid(payload, "chat")
    assert err.param is None
    assert err.message.startswith("request body is not valid JSON: ")
    assert "UTF-8" in err.message


def test_valid_utf8_multibyte_kept():
    sent = body("chat", messages=[{"role": "user", "content": "naïve 日本語 🙂"}])
    parsed = parse_body(json.dumps(sent, ensure_ascii=False).encode("utf-8"), "chat")
    assert parsed.data["messages"][0]["content"] == "naïve 日本語 🙂"  # type: ignore[index]


# -- property: whatever extra fields, data is the parsed JSON --------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
_CHECKED = {"model", "stream", "stream_options", "n", "best_of", "max_tokens", "max_completion_tokens", "seed",
            "top_logprobs", "logprobs", "dimensions", "temperature", "top_p", "user", "stop", "metadata", "tools",
            "messages", "prompt", "input"}


@settings(derandomize=True, max_examples=100, deadline=None)
@given(endpoint=st.sampled_from(ENDPOINTS),
       extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in _CHECKED), _JSON, max_size=5))
def test_property_unchecked_fields_round_trip(endpoint: str, extra: dict[str, object]):
    sent = {**VALID[endpoint], **extra}
    payload = orjson.dumps(sent)
    parsed = parse_body(payload, endpoint)  # type: ignore[arg-type]
    assert parsed.data == orjson.loads(payload)
    assert orjson.dumps(parsed.data) == payload
    assert parsed.stream is False and parsed.model == VALID[endpoint]["model"]


# -- integers in range (issue 11) --------------------------------------------------------------

INT32_MAX = 2**31 - 1


@pytest.mark.parametrize(("endpoint", "field", "low", "high"), [
    ("chat", "max_tokens", 0, INT32_MAX),
    ("chat", "max_completion_tokens", 0, INT32_MAX),
    ("chat", "n", 1, INT32_MAX),
    ("chat", "best_of", 1, INT32_MAX),
    ("chat", "top_logprobs", 0, INT32_MAX),
    ("completions", "logprobs", 0, INT32_MAX),
    ("completions", "max_tokens", 0, INT32_MAX),
    ("embeddings", "dimensions", 1, INT32_MAX),
])
def test_integers_are_range_checked(endpoint: str, field: str, low: int, high: int):
    for value in (low, high):
        assert parse_body(raw(body(endpoint, **{field: value})), endpoint).data[field] == value  # type: ignore[arg-type]
    for value in (low - 1, high + 1, 2**63, 2**64 - 1):
        err = invalid(body(endpoint, **{field: value}), endpoint)
        assert (err.param, err.message) == (field, f"'{field}' must be an integer from {low} to {high}")


def test_a_seed_is_a_64_bit_integer():
    for value in (-(2**63), 0, 2**63 - 1):
        assert parse_body(raw(body("chat", seed=value)), "chat").data["seed"] == value
    for value in (-(2**63) - 1, 2**63, 2**64 - 1, 1.5, "7"):
        err = invalid(body("chat", seed=value), "chat")
        assert (err.param, err.message) == ("seed", "'seed' must be a 64-bit integer")


def test_integers_past_64_bits_are_not_integers():
    """orjson reads an integer past 64 bits as a float: still a 400 naming the field."""
    err = invalid(b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 18446744073709551616}', "chat")
    assert err.param == "max_tokens"


def test_chat_logprobs_is_not_an_integer_field():
    assert parse_body(raw(body("chat", logprobs=True)), "chat").data["logprobs"] is True


@pytest.mark.parametrize("field", ["n", "best_of"])
def test_max_n_caps_n_and_best_of(field: str):
    assert parse_body(raw(body("chat", **{field: 4})), "chat", max_n=4).choices == 4
    err = invalid_with(body("chat", **{field: 5}), "chat", max_n=4)
    assert err.param == field
    assert err.message == f"'{field}' must be at most 4 (this gateway's settings.max_n)"
    assert parse_body(raw(body("chat", **{field: 500})), "chat").choices == 500  # no cap given: offline tools


def test_best_of_is_at_least_n():
    err = invalid(body("completions", n=3, best_of=2), "completions")
    assert (err.param, err.message) == ("best_of", "'best_of' must be at least 'n'")


@pytest.mark.parametrize(("endpoint", "fields", "choices"), [
    ("chat", {}, 1),
    ("chat", {"n": 3}, 3),
    ("chat", {"n": 2, "best_of": 5}, 5),
    ("completions", {"n": 2}, 2),
    ("completions", {"prompt": ["a", "b", "c"], "n": 2}, 6),  # a batch: every prompt gets n answers
    ("completions", {"prompt": [[1, 2], [3]]}, 2),  # a batch of token lists
    ("completions", {"prompt": [1, 2, 3]}, 1),  # one prompt as token ids
    ("embeddings", {"input": ["a", "b"]}, 1),
])
def test_choices_counts_the_answers_asked_for(endpoint: str, fields: dict[str, object], choices: int):
    assert parse_body(raw(body(endpoint, **fields)), endpoint).choices == choices  # type: ignore[arg-type]


def invalid_with(data: dict[str, object], endpoint: str, max_n: int) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw(data), endpoint, max_n=max_n)  # type: ignore[arg-type]
    return info.value


# -- depth (issue 11) -------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A chat body with arrays ``depth`` levels inside it (as text: orjson writes at most 254)."""
    return (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": '
            + b"[" * (depth - 1) + b"[1]" + b"]" * (depth - 1) + b"}")


def test_a_body_as_deep_as_the_scanner_reads_is_accepted_and_scanned_whole():
    from policies.models import SensitivitySpec
    from policies.sensitivity import MAX_DEPTH, Scanner

    parsed = parse_body(nested(MAX_DEPTH), "chat")
    assert Scanner(SensitivitySpec()).scan("chat", parsed.data).unreadable is None


@pytest.mark.parametrize("depth", [65, 254, 255, 1024, 1025, 100_000])
def test_a_body_nested_deeper_is_refused(depth: int):
    err = invalid(nested(depth), "chat")
    assert err.param is None
    assert err.message == ("request body is nested too deeply: objects and arrays may be at most 64 levels "
                           "inside it")


def test_depth_counts_objects_and_arrays_alike():
    deep_objects = b'{"model": "m", "messages": [{"role": "user"}], "x": ' + b'{"a": ' * 65 + b"1" + b"}" * 65 + b"}"
    assert invalid(deep_objects, "chat").message.startswith("request body is nested too deeply")
    wide = orjson.dumps(body("chat", x=[[{"a": [1]}] for _ in range(1000)]))  # many brackets, shallow
    assert parse_body(wide, "chat").data["x"][999] == [{"a": [1]}]  # type: ignore[index]
