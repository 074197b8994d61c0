"""The agent surfaces' codecs, pure: Anthropic Messages and OpenAI Responses ⇄ chat
completions (requests, answers, stream events), and the sensitivity property: every text an
upstream will see is in the translated body the scanner reads, and what translation does
not carry is reported, never silently lost."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.sse import DONE, data_event, error_event
from policies import LEVELS
from policies.models import SensitivitySpec
from policies.sensitivity import Scanner
from router.errors import InvalidRequest
from router.surfaces import messages as m
from router.surfaces import responses as r


def events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        name, data = block.split(b"\n", 1)
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        out.append((name[7:].decode(), payload))
    return out


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "model": "m",
                  "choices": [] if delta is None and finish is None else
                  [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return data_event(body)


# -- Messages → chat ------------------------------------------------------------------------

def test_messages_request_translates_system_tools_results_images_and_stops() -> None:
    body = {
        "model": "chat", "max_tokens": 64, "stop_sequences": ["END"], "temperature": 0.1,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in English."}],
        "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look up x"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                              {"type": "text", "text": "Looking."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                               "input": {"q": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                                         {"type": "text", "text": "thanks"}]},
            {"role": "system", "content": "late system note"},
        ],
    }
    t = m.to_chat(body)
    chat = t.chat
    assert chat["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in English."},
        {"role": "user", "content": [{"type": "text", "text": "look up x"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": "Looking.",
         "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
        {"role": "user", "content": "thanks\n\n<system-reminder>\nlate system note\n</system-reminder>"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"},
                                                               "description": "find"}}]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["stop"] == ["END"] and chat["max_tokens"] == 64 and chat["user"] == "u-1"
    assert "stream" not in chat
    assert set(t.dropped) == {"thinking", "cache_control", "tool:web_search"}


def test_roles_alternate_as_strict_chat_templates_want() -> None:
    """What Claude Code and Codex send: a system entry after a user turn, developer items,
    two user turns in a row — as one leading system prompt and alternating turns."""
    got = m.alternate([
        {"role": "system", "content": "A"}, {"role": "system", "content": "B"},
        {"role": "user", "content": "u1"}, {"role": "system", "content": "env"},
        {"role": "user", "content": [{"type": "text", "text": "u2"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
        {"role": "tool", "tool_call_id": "t", "content": "r"}, {"role": "user", "content": "u3"},
        {"role": "system", "content": [{"type": "text", "text": "late"}]}])
    assert got == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": [{"type": "text", "text": "u1\n\n<system-reminder>\nenv\n</system-reminder>"},
                                     {"type": "text", "text": "u2"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
        {"role": "tool", "tool_call_id": "t", "content": "r"},
        {"role": "user", "content": "u3\n\n<system-reminder>\nlate\n</system-reminder>"}]
    assert m.alternate([{"role": "system", "content": "only"}, {"role": "user", "content": "x"}]) == [
        {"role": "system", "content": "only"}, {"role": "user", "content": "x"}]


def test_a_streamed_message_asks_the_upstream_for_usage() -> None:
    chat = m.to_chat({"model": "a", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}).chat
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "a", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "a", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "a", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "a", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}]}, "messages.0.content.0"),
    ({"model": "a", "max_tokens": 5, "mcp_servers": [], "messages": [{"role": "user", "content": "x"}]}, "mcp_servers"),
    ({"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]},
     "messages.0.content.0.content"),
    ({"model": "a", "max_tokens": 5, "tools": [{"type": "bash_20250124", "name": "bash"}],
      "tool_choice": {"type": "tool", "name": "bash"}, "messages": [{"role": "user", "content": "x"}]}, "tool_choice"),
])
def test_what_cannot_be_translated_is_a_400_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        m.to_chat(body)
    assert caught.value.param == param


def test_count_tokens_needs_no_max_tokens() -> None:
    assert "max_tokens" not in m.count_request({"model": "a", "messages": [{"role": "user", "content": "x"}]}).chat


# -- chat → Message --------------------------------------------------------------------------

def test_a_chat_answer_becomes_a_message_with_tool_use_and_cache_usage() -> None:
    answer = {"id": "chatcmpl-9", "model": "served", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60},
                  "cache_creation_input_tokens": 30}}
    msg = m.to_message(answer, "chat")
    assert msg["id"] == "msg_9" and msg["type"] == "message" and msg["model"] == "served"
    assert msg["content"] == [{"type": "text", "text": "Let me check."},
                              {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 30,
                            "cache_read_input_tokens": 60}


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"),
                                              ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_finish_reasons_map_to_stop_reasons(finish: str, stop: str) -> None:
    answer = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert m.to_message(answer, "a")["stop_reason"] == stop


def test_tool_arguments_that_are_not_an_object_are_kept_not_lost() -> None:
    answer = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "not json"}}]}}]}
    assert m.to_message(answer, "a")["content"][0]["input"] == {"arguments": "not json"}


# -- chat chunks → Anthropic events ----------------------------------------------------------

def test_a_chat_stream_becomes_anthropics_event_sequence() -> None:
    s = m.MessagesStream("chat")
    raw = b"".join(s.feed(e) for e in [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk(finish="tool_calls"), chunk(usage={"prompt_tokens": 9, "completion_tokens": 4}), DONE])
    seq = events(raw)
    assert [name for name, _ in seq] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert seq[0][1]["message"]["id"] == "msg_abc"
    assert seq[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(p["delta"]["text"] for n, p in seq if n == "content_block_delta" and p["index"] == 0) == "Hello"
    assert seq[6][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert "".join(p["delta"]["partial_json"] for n, p in seq if p.get("index") == 1 and n == "content_block_delta") \
        == '{"a":1}'
    assert seq[10][1]["delta"]["stop_reason"] == "tool_use"
    assert seq[10][1]["usage"] == {"input_tokens": 9, "output_tokens": 4}


def test_a_broken_stream_ends_with_an_error_event_and_no_message_stop() -> None:
    s = m.MessagesStream("chat")
    raw = s.feed(chunk({"content": "Hi"})) + s.feed(error_event("upstream broke", "server_error")) + s.feed(DONE)
    names = [name for name, _ in events(raw)]
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    assert events(raw)[-1][1]["error"] == {"type": "api_error", "message": "upstream broke"}


# -- Responses → chat ------------------------------------------------------------------------

def test_responses_items_translate_with_calls_outputs_and_custom_tools() -> None:
    body = {"model": "chat", "instructions": "Be brief.", "max_output_tokens": 50, "store": False,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k",
            "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}},
                      {"type": "custom", "name": "apply_patch", "description": "patch",
                       "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
                      {"type": "web_search"}],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev note"}]},
                {"role": "user", "content": "list files"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": '{"cmd":"ls"}'},
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin"},
                {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"},
            ]}
    t, custom = r.to_chat(body)
    chat = t.chat
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief.\n\ndev note"},
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"ls"}'}},
            {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": "done"},
    ]
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["shell", "apply_patch"]
    assert chat["tools"][1]["function"]["parameters"]["required"] == ["input"]
    assert "lark" in chat["tools"][1]["function"]["description"]
    assert custom == {"apply_patch"} and chat["max_tokens"] == 50
    assert set(t.dropped) == {"include", "prompt_cache_key", "reasoning", "tool:web_search"}


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "a", "input": "x", "background": True}, "background"),
    ({"model": "a", "input": 3}, "input"),
    ({"model": "a", "input": [{"type": "item_reference", "id": "x"}]}, "input.0"),
    ({"model": "a", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input.0.content.0"),
    ({"model": "a", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"model": "a", "instructions": "only this", "input": []}, "input"),
])
def test_responses_refusals_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        r.to_chat(body)
    assert caught.value.param == param


def test_history_comes_between_instructions_and_the_new_input() -> None:
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}]
    t = r.to_chat({"model": "a", "instructions": "new rules", "input": "two"}, history)[0]
    assert [msg["content"] for msg in t.chat["messages"]] == ["new rules", "one", "1", "two"]
    assert t.conversation == [*history, {"role": "user", "content": "two"}]  # what is stored: no instructions


def test_a_chat_answer_becomes_a_response_with_function_and_custom_calls() -> None:
    answer = {"model": "served", "created": 7, "choices": [{"finish_reason": "tool_calls", "message": {
        "content": "ok", "tool_calls": [
            {"id": "c1", "function": {"name": "shell", "arguments": '{"cmd":"ls"}'}},
            {"id": "c2", "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin"}'}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}}
    resp = r.to_response(answer, {"model": "chat", "store": False}, "resp_1", {"apply_patch"})
    assert resp["id"] == "resp_1" and resp["status"] == "completed" and resp["model"] == "served"
    kinds = [(item["type"], item.get("call_id")) for item in resp["output"]]
    assert kinds == [("message", None), ("function_call", "c1"), ("custom_tool_call", "c2")]
    assert resp["output"][2]["input"] == "*** Begin"
    assert resp["usage"]["input_tokens_details"] == {"cached_tokens": 4} and resp["usage"]["total_tokens"] == 13
    assert resp["store"] is False
    msg = r.assistant_message(resp)
    assert msg["content"] == "ok" and [c["function"]["name"] for c in msg["tool_calls"]] == ["shell", "apply_patch"]


def test_a_response_cut_by_max_output_tokens_is_incomplete() -> None:
    resp = r.to_response({"choices": [{"finish_reason": "length", "message": {"content": "x"}}]}, {"model": "a"},
                         "resp_1", set())
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["status"] == "incomplete"


def test_a_chat_stream_becomes_typed_response_events() -> None:
    s = r.ResponsesStream({"model": "chat"}, "resp_1", {"apply_patch"})
    raw = b"".join(s.feed(e) for e in [
        chunk({"content": "Hi"}), chunk({"content": " there"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "shell", "arguments": '{"c'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'md":1}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "apply_patch",
                                                                     "arguments": '{"input":"P"}'}}]}),
        chunk(finish="tool_calls"), chunk(usage={"prompt_tokens": 5, "completion_tokens": 2}), DONE])
    seq = events(raw)
    names = [name for name, _ in seq]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    assert [p["sequence_number"] for _, p in seq] == list(range(len(seq)))
    assert "".join(p["delta"] for n, p in seq if n == "response.output_text.delta") == "Hi there"
    assert [p["arguments"] for n, p in seq if n == "response.function_call_arguments.done"] == ['{"cmd":1}']
    assert [p["input"] for n, p in seq if n == "response.custom_tool_call_input.done"] == ["P"]
    final = seq[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call", "custom_tool_call"]
    assert final["usage"]["total_tokens"] == 7 and s.final == final


def test_a_broken_responses_stream_fails_and_never_completes() -> None:
    s = r.ResponsesStream({"model": "chat"}, "resp_1", set())
    raw = s.feed(chunk({"content": "Hi"})) + s.feed(error_event("broke", "server_error")) + s.feed(DONE)
    names = [name for name, _ in events(raw)]
    assert names[-1] == "response.failed" and "response.completed" not in names and s.final is None


# -- sensitivity: what the upstream sees is what was scanned --------------------------------

SCANNER = Scanner(SensitivitySpec())
CARD = "4111 1111 1111 1111"  # payment_card: confidential by default


def _messages_with(secret: str, where: int) -> dict:
    blocks = [
        lambda s: {"system": s},
        lambda s: {"system": [{"type": "text", "text": s}]},
        lambda s: {"messages": [{"role": "user", "content": [{"type": "text", "text": s}]}]},
        lambda s: {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {"deep": [{"x": s}]}}]},
                                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                              "content": "ok"}]}]},
        lambda s: {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                              "content": [{"type": "text", "text": s}]}]}]},
        lambda s: {"messages": [{"role": "system", "content": s}, {"role": "user", "content": "q"}]},
        lambda s: {"tools": [{"name": "f", "description": s, "input_schema": {"type": "object"}}]},
        lambda s: {"stop_sequences": [s]},
        lambda s: {"metadata": {"user_id": s}},
    ]
    body: dict = {"model": "a", "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}
    body.update(blocks[where](secret))
    return body


def _responses_with(secret: str, where: int) -> dict:
    inputs = [
        lambda s: {"instructions": s},
        lambda s: {"input": s},
        lambda s: {"input": [{"role": "user", "content": [{"type": "input_text", "text": s}]}]},
        lambda s: {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": s}]},
        lambda s: {"input": [{"type": "function_call_output", "call_id": "c", "output": s}]},
        lambda s: {"input": [{"type": "custom_tool_call", "call_id": "c", "name": "p", "input": s}]},
        lambda s: {"tools": [{"type": "function", "name": "f", "description": s}]},
        lambda s: {"tools": [{"type": "custom", "name": "p", "description": s}]},
        lambda s: {"input": [{"role": "assistant", "content": [{"type": "output_text", "text": s}]}]},
    ]
    body: dict = {"model": "a", "input": "q"}
    body.update(inputs[where](secret))
    return body


@settings(max_examples=200, derandomize=True, deadline=None)
@given(where=st.integers(0, 8), prefix=st.text(st.characters(codec="ascii", categories=("L", "Zs")), max_size=20),
       surface=st.sampled_from(["messages", "responses"]))
def test_property_a_secret_anywhere_the_upstream_sees_lifts_the_scan(where: int, prefix: str, surface: str) -> None:
    secret = f"{prefix} card {CARD} "
    body = _messages_with(secret, where) if surface == "messages" else _responses_with(secret, where)
    chat = m.to_chat(body).chat if surface == "messages" else r.to_chat(body)[0].chat
    assert CARD in orjson.dumps(chat).decode()  # it reaches the upstream ...
    scan = SCANNER.scan("chat", chat)
    assert LEVELS.index(scan.level) >= LEVELS.index("confidential")  # ... so it was scanned as such


_KINDS = ("text", "thinking", "tool_use", "tool_result", "image", "server")


def _block(kind: str, word: str) -> dict:
    return {"text": {"type": "text", "text": word},
            "thinking": {"type": "thinking", "thinking": word, "signature": "s"},
            "tool_use": {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": word}},
            "tool_result": {"type": "tool_result", "tool_use_id": "t1", "content": word},
            "image": {"type": "image", "source": {"type": "url", "url": f"https://example.invalid/{word}.png"}},
            "server": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {"q": word}}}[kind]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(turns=st.lists(st.lists(st.sampled_from(_KINDS), min_size=1, max_size=4), min_size=1, max_size=5))
def test_property_nothing_is_lost_silently(turns: list[list[str]]) -> None:
    """Every text of a generated conversation reaches the chat body, or the request is
    refused (400), or its kind is reported in ``dropped``."""
    words: list[tuple[str, str]] = []
    messages = []
    for i, kinds in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        blocks = []
        for j, kind in enumerate(kinds):
            word = f"w{i}x{j}{kind}"
            words.append((kind, word))
            blocks.append(_block(kind, word))
        messages.append({"role": role, "content": blocks})
    try:
        t = m.to_chat({"model": "a", "max_tokens": 5, "messages": messages})
    except InvalidRequest:
        return  # refused: nothing was sent
    sent = orjson.dumps(t.chat).decode()
    for kind, word in words:
        assert word in sent or (kind == "thinking" and "thinking" in t.dropped), (kind, word, t.dropped)
