"""What a closed kind cannot take, refused as ``UnsupportedInput`` (400; the engine tries the
next target) instead of fetched or failing as a 502: content URLs (``backends.urls``: which
a kind may send on; the litellm adapter refusing the rest before litellm sees them, for every
provider name litellm knows), token-ID prompts litellm cannot map, and requests litellm's own
translation fails on (both found by schemathesis, bench/fuzz.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from backends.base import BackendConfig
from backends.errors import UnsupportedInput, UpstreamConnectError, UpstreamRejected
from backends.kinds import DIRECT_KINDS
from backends.types import BackendRequest
from backends.urls import IMAGE_URL_PREFIXES, check_content_urls

ROOT = Path(__file__).resolve().parents[2]
DATA = "data:image/png;base64,iVBORw0KGgo="


def chat(*parts: dict[str, Any], role: str = "user") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": role, "content": [{"type": "text", "text": "hi"}, *parts]}]}


def img(url: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def refusal(kind: str, body: dict[str, Any], model: str = "some-model") -> UnsupportedInput | None:
    try:
        check_content_urls(kind, model, body, backend="b1")
    except UnsupportedInput as exc:
        return exc
    return None


@pytest.mark.parametrize(("kind", "url", "refused"), [
    ("openai", "http://10.0.0.1/a.png", False),
    ("openai", "https://example.com/a.png", False),
    ("azure", "https://example.com/a.png", False),
    ("anthropic", "https://example.com/a.png", False),
    ("anthropic", "http://10.0.0.1/a.png", True),   # litellm downloads http:// for Anthropic
    ("anthropic", " https://example.com/a.png", True),
    ("openai", "HTTPS://EXAMPLE.COM/A.PNG", True),   # not a prefix litellm passes on as is
    ("openai", "ftp://example.com/a.png", True),
    ("gemini", "https://example.com/a.png", True),
    ("bedrock", "https://example.com/a.png", True),
    ("gemini", "www.example.com/a.png", True),
    ("gemini", DATA, False),
    ("bedrock", DATA, False),
    ("anthropic", DATA, False),
])
def test_image_url_per_kind(kind: str, url: str, refused: bool) -> None:
    exc = refusal(kind, chat(img(url)))
    assert (exc is not None) is refused
    if exc is not None:
        assert exc.param == "messages[1].content[1].image_url"
        assert exc.status == 400 and exc.error_type == "invalid_request_error" and exc.code == "unsupported_url"
        assert isinstance(exc, UpstreamRejected) and not exc.retryable
        assert exc.message.startswith(f"b1 (kind {kind}) cannot take image URLs") and "data: URL" in exc.message
        assert url.strip() not in exc.message


def test_string_form_other_roles_and_bedrock_invoke() -> None:
    assert refusal("gemini", chat({"type": "image_url", "image_url": "https://x/a.png"})) is not None
    assert refusal("gemini", chat(img("https://x/a.png"), role="tool")) is not None
    assert refusal("anthropic", chat(img("https://x/a.png")), model="invoke/claude-3") is not None


@pytest.mark.parametrize("part", [
    {"type": "file", "file": {"file_id": "https://x/doc.pdf"}},
    {"type": "file", "file": {"file_id": "www.x.org/doc.pdf"}},
    {"type": "document", "source": {"type": "url", "url": "http://10.0.0.1/doc.pdf"}},
    {"type": "input_audio", "input_audio": {"data": "s3://bucket/a.wav", "format": "wav"}},
    {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}},
    {"type": "mystery", "nested": [{"deeper": {"url": "gs://bucket/a.png"}}]},
])
@pytest.mark.parametrize("kind", ["openai", "azure", "anthropic", "gemini"])
def test_urls_in_other_parts_are_refused_for_every_kind(kind: str, part: dict[str, Any]) -> None:
    exc = refusal(kind, chat(part))
    assert exc is not None and exc.param is not None and exc.param.startswith("messages[1].content[1].")
    assert "other than image_url" in exc.message


@pytest.mark.parametrize("body", [
    chat({"type": "text", "text": "see https://example.com and http://10.0.0.1"}),
    chat({"type": "file", "file": {"file_id": "file-abc123"}}),
    chat({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}),
    chat({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
    {"messages": [{"role": "user", "content": "plain https://example.com"}]},
    {"messages": "not a list"}, {"messages": [None, {"content": [None, 3, "x"]}]}, {},
])
def test_what_is_not_a_fetchable_url_passes(body: dict[str, Any]) -> None:
    for kind in ("gemini", "openai", "anthropic"):
        assert refusal(kind, body) is None


def test_deep_parts_do_not_recurse() -> None:
    deep: Any = "https://x/a.png"
    for _ in range(50_000):
        deep = [deep]
    assert refusal("openai", chat({"type": "mystery", "v": deep})) is not None


def closed_kinds() -> list[str]:
    from backends.litellm_backend import litellm

    return sorted({str(getattr(p, "value", p)) for p in litellm.provider_list} - DIRECT_KINDS)


async def test_every_litellm_provider_refuses_before_litellm_is_called(monkeypatch) -> None:
    """Every provider name litellm knows (anything a policy can name): a URL it does not pass
    through is refused by the adapter itself; litellm is never called."""
    from backends import litellm_backend

    def called(*args: object, **kwargs: object) -> None:
        raise AssertionError("litellm was called with a URL it would fetch")

    for name in ("acompletion", "atext_completion", "aembedding"):
        monkeypatch.setattr(litellm_backend.litellm, name, called)
    kinds = closed_kinds()
    assert len(kinds) > 100 and set(IMAGE_URL_PREFIXES) <= set(kinds)
    for kind in kinds:
        backend = litellm_backend.LiteLLMBackend(BackendConfig("b1", kind, "m", api_key="k", self_hosted=False))
        urls = ["http://127.0.0.1:9/a.png"] if kind not in IMAGE_URL_PREFIXES or kind == "anthropic" else []
        for body in [chat(img(url)) for url in urls] + [chat({"type": "file", "file": {"file_id": "http://x/a"}})]:
            request = BackendRequest("chat", body, False, "r1")
            with pytest.raises(UnsupportedInput):
                await backend.complete(request)
            with pytest.raises(UnsupportedInput):
                await backend.open_stream(BackendRequest("chat", {**body, "stream": True}, True, "r1"))


def test_litellm_own_image_download_is_off() -> None:
    """The second line: once the adapter is imported, litellm's own URL-to-base64 helpers
    refuse to download (a fresh interpreter: litellm reads the switch once, at import)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        script = textwrap.dedent(f"""
            import asyncio
            import backends.litellm_backend
            from litellm.litellm_core_utils.prompt_templates import image_handling, factory
            url = "http://127.0.0.1:{port}/a.png"
            for fetch in (image_handling.convert_url_to_base64, factory.convert_url_to_base64,
                          lambda u: asyncio.run(image_handling.async_convert_url_to_base64(u))):
                try:
                    fetch(url)
                except Exception as exc:
                    assert "disabled" in str(exc), exc
                else:
                    raise SystemExit("downloaded")
            print("ok")
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              cwd=str(ROOT))
        assert done.stdout.strip() == "ok", done.stderr[-2000:]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


# -- completions: prompts litellm cannot map for a kind (found by schemathesis: a 502 before) ---

class Called(Exception):
    pass


@pytest.mark.parametrize(("kind", "model", "prompt", "refused"), [
    ("anthropic", "claude-sonnet-4-5", [[1, 2], [3]], "not token IDs"),
    ("anthropic", "claude-sonnet-4-5", [1, 2, 3], "not token IDs"),
    ("openai", "gpt-4o-mini", [1, 2, 3], "not token IDs"),  # a chat model: litellm sends it as chat
    ("openai", "gpt-3.5-turbo-instruct", [[1, 2], [3]], None),
    ("text-completion-openai", "gpt-4o-mini", [1, 2], None),
    ("openai", "gpt-3.5-turbo-instruct", [[1.0, 2]], "token IDs (an array of integers"),
    ("openai", "gpt-3.5-turbo-instruct", [True, 2], "token IDs (an array of integers"),
    ("anthropic", "claude-sonnet-4-5", ["a", "b"], None),
    ("anthropic", "claude-sonnet-4-5", "a", None),
])
async def test_prompts_litellm_cannot_map_are_refused(monkeypatch, kind: str, model: str, prompt: Any,
                                                      refused: str | None) -> None:
    from backends import litellm_backend

    async def called(*args: object, **kwargs: object) -> None:
        raise Called

    monkeypatch.setattr(litellm_backend.litellm, "atext_completion", called)
    backend = litellm_backend.LiteLLMBackend(BackendConfig("b1", kind, model, api_key="k", self_hosted=False))
    request = BackendRequest("completions", {"model": "m", "prompt": prompt}, False, "r1")
    if refused is None:  # litellm is called (its exception is translated like any other)
        with pytest.raises(UpstreamConnectError) as called_info:
            await backend.complete(request)
        assert isinstance(called_info.value.__cause__, Called)
        return
    with pytest.raises(UnsupportedInput) as info:
        await backend.complete(request)
    assert refused in info.value.message and info.value.param == "prompt" and info.value.status == 400


async def test_a_request_litellm_cannot_translate_is_a_400_not_a_connection_error(fake_anthropic) -> None:
    """litellm raises a bare ``Exception`` ("Invalid tool choice") wrapped in an
    ``APIConnectionError``: before, a 502 that opened the backend's circuit for everyone."""
    from backends.litellm_backend import LiteLLMBackend

    backend = LiteLLMBackend(BackendConfig("claude", "anthropic", "claude-x", base_url=fake_anthropic.base_url,
                                           api_key="sk-ant-test", self_hosted=False))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": {}}
    for stream in (False, True):
        request = BackendRequest("chat", {**body, "stream": stream}, stream, "r1")
        with pytest.raises(UnsupportedInput) as info:
            await (backend.open_stream(request) if stream else backend.complete(request))
        assert info.value.status == 400 and not info.value.retryable
        assert info.value.code == "untranslatable_request" and "Invalid tool choice" in info.value.message
    assert fake_anthropic.received == []


def test_translate_tells_litellm_failing_on_its_own_from_a_dead_upstream() -> None:
    import httpx
    import litellm

    from backends.litellm_backend import translate

    def wrapped(cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise litellm.APIConnectionError("boom\nTraceback (most recent call last):\n  File x", "openai",
                                                 "m") from inner
        except litellm.APIConnectionError as outer:
            return outer

    for cause in (Exception("Invalid tool choice"), KeyError("content"), TypeError("x"), AttributeError("y")):
        err = translate(wrapped(cause), "b")
        assert isinstance(err, UnsupportedInput), cause
        assert "Traceback" not in err.message and "File x" not in err.message
    for cause in (httpx.ConnectError("refused"), ConnectionResetError("reset"), RuntimeError("?")):
        assert isinstance(translate(wrapped(cause), "b"), UpstreamConnectError), cause
    assert isinstance(translate(litellm.APIConnectionError("refused", "openai", "m"), "b"), UpstreamConnectError)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_litellm_leaves_the_client_body_as_it_was(kind: str, fake_openai, fake_anthropic) -> None:
    """litellm's translation rewrites the messages it is given in place (a string
    ``image_url`` becomes an object, content parts are reshaped): the body is the client's,
    shared by every attempt of a fail-over and by the request's record, so the adapter must
    hand litellm its own copy."""
    import copy

    from backends.litellm_backend import LiteLLMBackend

    fake = fake_openai if kind == "openai" else fake_anthropic
    backend = LiteLLMBackend(BackendConfig("c", kind, "model-x", base_url=fake.base_url,
                                           api_key="sk-ant-test" if kind == "anthropic" else "sk-test-key",
                                           self_hosted=False))
    body = {"model": "m", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": DATA}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    before = copy.deepcopy(body)
    for stream in (False, True):
        request = BackendRequest("chat", {**body, "stream": stream}, stream, "r1")
        if stream:
            chunks = await backend.open_stream(request)
            try:
                async for _ in chunks:
                    pass
            finally:
                await chunks.aclose()
        else:
            await backend.complete(request)
        assert body == before
