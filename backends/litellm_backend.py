"""Closed providers (OpenAI, Anthropic, Gemini, Azure, Bedrock, Mistral, … any litellm
provider) through ``litellm`` as a translation library. The only module that imports
litellm; it is imported lazily (``backends.registry``) so a gateway that only uses
self-hosted backends never loads it.

The gateway owns retries, fallbacks, caching and telemetry, so litellm's are switched
off: ``num_retries=0``/``max_retries=0`` per call, no callbacks, no cache, local price
table (no network fetch at import). litellm exceptions become ``backends.errors``
here. Standard OpenAI parameters pass through; parameters a provider does not support
are dropped (``drop_params``), which keeps fallback across providers working.

The gateway fetches nothing for clients: a chat request whose content holds a URL that
litellm would download for this kind is refused before litellm sees it
(``backends.urls``), and litellm's own image download is switched off
(``MAX_IMAGE_URL_DOWNLOAD_SIZE_MB=0``, read once when litellm is imported) as a second line.
Input litellm cannot translate for a kind (token-ID prompts for chat models) is refused
the same way, as ``UnsupportedInput`` (400; the engine tries the next target), instead of
surfacing as litellm's "connection error".

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch prices at import
os.environ["MAX_IMAGE_URL_DOWNLOAD_SIZE_MB"] = "0"  # never download a client's image URL (not overridable)

import httpx  # noqa: E402
import litellm  # noqa: E402
import orjson  # noqa: E402
from litellm.exceptions import (  # noqa: E402
    APIConnectionError,
    AuthenticationError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    PermissionDeniedError,
    Timeout,
)

from backends.base import BackendConfig, TimeLimits  # noqa: E402
from backends.errors import (  # noqa: E402
    BackendError,
    ContentPolicyViolation,
    ContextLengthExceeded,
    StreamBroken,
    UnsupportedInput,
    UpstreamAuthError,
    UpstreamConnectError,
    UpstreamTimeout,
    error_from_status,
)
from backends.sse import DONE, data_event  # noqa: E402
from backends.types import BackendRequest, BackendResponse, Health  # noqa: E402
from backends.urls import check_content_urls  # noqa: E402

__all__ = ["LiteLLMBackend", "known_provider", "provider_price"]

litellm.suppress_debug_info = True
litellm.telemetry = False
litellm.callbacks = []
litellm.success_callback = []
litellm.failure_callback = []
litellm.cache = None
litellm.num_retries = 0

#: OpenAI request fields forwarded to closed providers (others are only meaningful to
#: OpenAI-compatible servers and are not sent through litellm).
_CHAT_PARAMS = frozenset({
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "user", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "seed", "logprobs", "top_logprobs", "reasoning_effort", "modalities", "audio",
    "prediction", "service_tier", "functions", "function_call", "web_search_options",
})
_COMPLETION_PARAMS = frozenset({
    "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "suffix", "temperature", "top_p", "user",
})
_EMBEDDING_PARAMS = frozenset({"dimensions", "encoding_format", "user"})
#: Kinds whose completions take token IDs as the prompt (``openai`` too, for models litellm
#: does not list as chat models): litellm turns every other prompt into chat messages, which
#: need text.
_TOKEN_PROMPT_KINDS = frozenset({"azure_text", "text-completion-openai", "text-completion-codestral"})
_DROP_FROM_CHUNKS = ("provider_specific_fields", "citations", "service_tier", "obfuscation")


class _Answer(Protocol):
    """What the gateway uses of a litellm response or chunk (a pydantic model)."""

    def model_dump(self, *, warnings: bool) -> dict[str, object]: ...


class _Chunks(Protocol):
    """What the gateway uses of a litellm stream wrapper: an async iterator of chunks."""

    def __aiter__(self) -> AsyncIterator[_Answer]: ...


def provider_price(kind: str, model: str) -> tuple[float, float, float | None, float | None] | None:
    """(input, output, cache read, cache write) USD per token from litellm's price table, if it
    has the model (the cache prices ``None`` when it has none)."""
    entry = litellm.model_cost.get(f"{kind}/{model}") or litellm.model_cost.get(model)
    if not isinstance(entry, dict):
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if not isinstance(inp, int | float) or not isinstance(out, int | float):
        return None
    cached, written = entry.get("cache_read_input_token_cost"), entry.get("cache_creation_input_token_cost")
    return (float(inp), float(out), float(cached) if isinstance(cached, int | float) else None,
            float(written) if isinstance(written, int | float) else None)


def known_provider(kind: str) -> bool:
    """True if litellm knows ``kind`` as a provider name."""
    return kind in {str(getattr(p, "value", p)) for p in litellm.provider_list}


class LiteLLMBackend:
    """One closed-provider model reached through litellm."""

    def __init__(self, config: BackendConfig) -> None:
        if not known_provider(config.kind):
            raise ValueError(f"unknown provider kind {config.kind!r}")
        self.name = config.name
        self.self_hosted = config.self_hosted
        self.config = config
        self._model = f"{config.kind}/{config.model}"

    def _common(self) -> dict[str, object]:
        cfg = self.config
        common: dict[str, object] = {
            "model": self._model, "timeout": cfg.limits.total_s, "num_retries": 0, "max_retries": 0,
            "drop_params": True,
        }
        if cfg.api_key is not None:
            common["api_key"] = cfg.api_key
        if cfg.base_url:
            common["api_base"] = cfg.base_url
        if cfg.headers:
            common["extra_headers"] = dict(cfg.headers)
        return common

    async def complete(self, request: BackendRequest) -> BackendResponse:
        self._check_input(request)
        try:
            async with asyncio.timeout(self.config.limits.total_s):
                result: _Answer = await self._call(request, stream=False)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} gave no answer within {self.config.limits.total_s:g} s",
                                  backend=self.name) from None
        except Exception as exc:  # noqa: BLE001 - translated once, here
            raise translate(exc, self.name) from exc
        return BackendResponse(body=orjson.dumps(_clean(result.model_dump(warnings=False))))

    async def open_stream(self, request: BackendRequest) -> LiteLLMStream:
        if request.endpoint == "embeddings":
            raise error_from_status(400, "embeddings cannot be streamed", backend=self.name)
        self._check_input(request)
        try:
            async with asyncio.timeout(self.config.limits.first_token_s):
                wrapper: _Chunks = await self._call(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} did not start streaming within "
                                  f"{self.config.limits.first_token_s:g} s", backend=self.name) from None
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self.name) from exc
        return LiteLLMStream(self.name, wrapper, self.config.limits)

    def _check_input(self, request: BackendRequest) -> None:
        """Refuse (``UnsupportedInput``, 400; another target may take it) what this kind cannot
        take through litellm: content URLs litellm would fetch, token-ID prompts it cannot map."""
        if request.endpoint == "chat":
            check_content_urls(self.config.kind, self.config.model, request.body, backend=self.name)
        elif request.endpoint == "completions":
            why = self._prompt_refusal(request.body.get("prompt"))
            if why is not None:
                raise UnsupportedInput(f"{self.name} (kind {self.config.kind}) {why}", backend=self.name,
                                       code="unsupported_prompt", param="prompt")

    def _prompt_refusal(self, prompt: object) -> str | None:
        if isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            return None
        if not _token_ids(prompt):
            return "takes a prompt as a string, an array of strings, or token IDs (an array of integers or of " \
                   "such arrays)"
        kind, model = self.config.kind, self.config.model
        if kind in _TOKEN_PROMPT_KINDS or (kind == "openai" and model not in litellm.open_ai_chat_completion_models):
            return None
        return "takes only text prompts (a string or an array of strings) for this model, not token IDs"

    async def _call(self, request: BackendRequest, *, stream: bool) -> Any:
        """litellm's answer (its functions are untyped): an ``_Answer``, or a ``_Chunks`` when ``stream``."""
        # litellm's translation rewrites what it is given in place (string ``image_url``s
        # become objects, parts are reshaped): it gets its own copy, never the client's body,
        # which every attempt of a fail-over and the request's record share. A JSON round
        # trip is the cheapest deep copy (tens of µs; litellm itself costs milliseconds).
        body, kwargs = orjson.loads(orjson.dumps(request.body)), self._common()
        if request.endpoint == "embeddings":
            return await litellm.aembedding(input=body["input"], **_pick(body, _EMBEDDING_PARAMS), **kwargs)
        if stream:
            kwargs["stream"] = True
            options = body.get("stream_options")
            if isinstance(options, Mapping) and options.get("include_usage"):
                kwargs["stream_options"] = {"include_usage": True}
        if request.endpoint == "completions":
            return await litellm.atext_completion(prompt=body["prompt"], **_pick(body, _COMPLETION_PARAMS),
                                                  **kwargs)
        return await litellm.acompletion(messages=body["messages"], **_pick(body, _CHAT_PARAMS), **kwargs)

    async def health(self) -> Health:
        # Probing a paid API costs money and quota; report configuration only.
        return Health(True, "closed provider (not probed)")

    async def load(self) -> None:
        return None  # a provider's load is its own business: 429s tell us

    async def close(self) -> None:
        return None


class LiteLLMStream:
    """Turns litellm's chunk objects into OpenAI SSE events, with first-token/idle limits."""

    def __init__(self, backend: str, wrapper: _Chunks, limits: TimeLimits) -> None:
        self._backend = backend
        self._wrapper = wrapper
        self._first_s = limits.first_token_s
        self._idle_s = limits.idle_s

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        it = self._wrapper.__aiter__()
        limit, what = self._first_s, "first token"
        while True:
            try:
                async with asyncio.timeout(limit):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(f"{self._backend} sent no {what} within {limit:g} s",
                                      backend=self._backend) from None
            except Exception as exc:  # noqa: BLE001
                err = translate(exc, self._backend)
                raise StreamBroken(err.message, backend=self._backend, code=err.code) from exc
            limit, what = self._idle_s, "next event"
            data = _clean(chunk.model_dump(warnings=False))
            if _invented_finish(self._wrapper, data):
                raise StreamBroken(f"{self._backend} stream ended before the provider finished it",
                                   backend=self._backend)
            yield data_event(data)
        yield DONE

    async def aclose(self) -> None:
        response = _http_response(self._wrapper)  # before the wrapper's aclose forgets its stream
        close = getattr(self._wrapper, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001,S110 - best effort on an abandoned stream
                pass
        if response is not None:  # the provider stops generating (and billing) only when it is closed
            try:
                await response.aclose()
            except Exception:  # noqa: BLE001,S110 - best effort on an abandoned stream
                pass


def _http_response(wrapper: object) -> httpx.Response | None:
    """The HTTP response under a litellm stream, when its own ``aclose`` cannot reach it.

    ``CustomStreamWrapper.aclose`` closes its ``completion_stream`` only if that has an
    ``aclose``; the Anthropic iterator (litellm 1.82.6, ``ModelResponseIterator``) holds just
    ``response.aiter_lines()``, an async generator whose frame is the response's method, and
    closing that generator does not close the response. So the response is found there."""
    stream = getattr(getattr(wrapper, "completion_stream", None), "streaming_response", None)
    frame = getattr(stream, "ag_frame", None)
    response = frame.f_locals.get("self") if frame is not None else None
    return response if isinstance(response, httpx.Response) else None


def _invented_finish(wrapper: object, chunk: Mapping[str, object]) -> bool:
    """litellm closes a cut stream with a ``finish_reason`` of its own; the provider's own
    finish is recorded on the wrapper. A finish without one means the answer is truncated."""
    choices = chunk.get("choices")
    finished = isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices)
    if not finished:
        return False
    return (getattr(wrapper, "received_finish_reason", None) is None
            and getattr(wrapper, "intermittent_finish_reason", None) is None)


def _token_ids(prompt: object) -> bool:
    """An array of integers, or a non-empty array of such arrays."""
    def ints(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)

    return isinstance(prompt, list) and bool(prompt) and (ints(prompt) or all(ints(p) for p in prompt))


def _pick(body: Mapping[str, object], allowed: frozenset[str]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k in allowed and v is not None}


def _clean(data: dict[str, object]) -> dict[str, object]:
    """Drop litellm's private fields so clients see OpenAI's shape."""
    for key in _DROP_FROM_CHUNKS:
        data.pop(key, None)
    data.pop("_hidden_params", None)
    return data


def translate(exc: BaseException, backend: str) -> BackendError:
    """Map a litellm (or httpx/openai) exception onto the backend error tree."""
    message = str(getattr(exc, "message", None) or exc) or exc.__class__.__name__
    message = message.split("\nTraceback (most recent call last):", 1)[0]  # litellm appends its own
    cause = _transport_cause(exc)
    if isinstance(cause, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeout(f"{backend}: {message}", backend=backend)
    if isinstance(cause, httpx.ConnectError | ConnectionRefusedError):
        return UpstreamConnectError(f"{backend}: cannot connect ({message})", backend=backend)
    if isinstance(exc, ContextWindowExceededError):
        return ContextLengthExceeded(message, backend=backend, code="context_length_exceeded")
    if isinstance(exc, ContentPolicyViolationError):
        return ContentPolicyViolation(message, backend=backend, code="content_policy_violation")
    if isinstance(exc, Timeout):
        return UpstreamTimeout(f"{backend}: {message}", backend=backend)
    if isinstance(exc, APIConnectionError) and cause is None and _untranslatable(exc):
        return UnsupportedInput(f"{backend}: the request cannot be translated for this provider: {message}",
                                backend=backend, code="untranslatable_request")
    if isinstance(exc, APIConnectionError):
        return UpstreamConnectError(f"{backend}: {message}", backend=backend)
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return UpstreamAuthError(f"{backend} refused the gateway's credentials: {message}", backend=backend)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return error_from_status(status, message, backend=backend, retry_after=_retry_after(exc))
    return UpstreamConnectError(f"{backend}: {exc.__class__.__name__}: {message}", backend=backend)


def _transport_cause(exc: BaseException) -> BaseException | None:
    """The transport error under litellm's wrapping (it reports refused connections as 500s)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.TransportError | OSError | TimeoutError):
            return current
        current = current.__cause__ or current.__context__
    return None


#: What litellm's own code raises when it cannot translate a request (a plain ``Exception``
#: too: "Invalid tool choice …"); litellm wraps it in an ``APIConnectionError``.
_TRANSLATION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _untranslatable(exc: BaseException) -> bool:
    """Whether litellm failed on its own (a Python error under it, no transport error): the
    request is one this provider's translation cannot take (litellm raises these while it
    builds the upstream request). The upstream is not to blame; another target may take it."""
    seen: set[int] = set()
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current) is Exception or isinstance(current, _TRANSLATION_ERRORS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
