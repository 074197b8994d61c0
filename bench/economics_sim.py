"""Simulated upstreams and the seeded workload of ``bench/economics.py`` (issue 15).

* ``SimGPU``: one vLLM server on one GPU. ``slots`` requests run at once (continuous
  batching); the rest wait first come, first served in the server's own queue. A request's
  time to first token is its wait plus the prefill of its prompt (``prefill_tps``); its
  other tokens come at ``decode_tps``, a little slower the fuller the batch
  (``batch_slowdown`` per other running request). ``GET /metrics`` exports vLLM v1's
  gauges (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
  ``vllm:kv_cache_usage_perc``, labelled ``model_name`` and ``engine``) and token counters.
* ``SimClosed``: a gpt-4o-class provider. A time to first token of ``ttft_s`` ± a seeded
  jitter, then ``tokens_per_s``; a requests-per-minute limit (sliding minute; past it a 429
  with OpenAI's error body and ``retry-after``/``retry-after-ms``/``x-ratelimit-*``
  headers); ``Authorization: Bearer`` checked; each request billed at its prices from its
  own log (``SimClosed.cost_usd``), never from anything the gateway says.
* ``workload``: Poisson arrivals at a base rate with periodic bursts (×``burst_factor``),
  log-normal prompt and output lengths, a sensitive share (a test card number or IBAN in
  the prompt) and a streamed share; each job carries a unique letters-only marker so a
  leak shows up in the closed provider's log.

Both servers speak the OpenAI chat wire format as vLLM and OpenAI do: ``chat.completion``
JSON, or SSE ``chat.completion.chunk`` events (role chunk, content chunks, a finish chunk,
with ``stream_options.include_usage`` a usage chunk with empty ``choices``, then
``data: [DONE]``), and ``GET /v1/models``. Prompt tokens are the gateway's own estimate
(``router/facts.py``: characters of the message texts // 4, + 1); an answer has exactly
``max_tokens`` tokens of 4 characters each. Timing is real (``asyncio.sleep``), so run the
servers in a process whose event loop is not busy. Every request is logged in memory
(``SimRecord``: arrival, start, first token, end, tokens, status, messages), for the
driver in the same process. Only ``aiohttp`` and ``orjson``: no gateway code.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import orjson
from aiohttp import web

__all__ = ["CARDS", "IBANS", "ClosedSpec", "GpuSpec", "Job", "SimClosed", "SimGPU", "SimRecord", "WorkloadSpec",
           "answer_text", "prompt_tokens", "workload"]

HOST = "127.0.0.1"
CHARS_PER_TOKEN = 4  # the gateway's estimate (router/facts.py)
CHUNK_S = 0.05  # a stream sends what was decoded in about this long per event (vLLM batches too)
CREATED = 1_700_000_000
#: 3 letters + a space: one answer token is 4 characters, as the gateway estimates.
_TOKENS = ("the ", "sun ", "set ", "far ", "and ", "our ", "map ", "was ", "red ", "now ")
Emit = Callable[[int, int], Awaitable[None]]  # (first token index, count) → sent


# -- shared wire format ----------------------------------------------------------------

def prompt_tokens(body: dict[str, Any]) -> int:
    """The gateway's estimate of a chat request's prompt: message texts' characters // 4 + 1."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return chars // CHARS_PER_TOKEN + 1


def answer_text(first: int, count: int) -> str:
    """Tokens ``first`` .. ``first + count - 1`` of every answer (4 characters each)."""
    return "".join(_TOKENS[i % len(_TOKENS)] for i in range(first, first + count))


@dataclass
class SimRecord:
    """One request as the server saw it (times are ``time.monotonic()``)."""

    n: int
    arrival: float
    stream: bool
    messages: list[Any]
    prompt_tokens: int
    max_tokens: int
    status: int = 200
    start: float | None = None  # took a slot (GPU) / began work (closed)
    first_token: float | None = None
    end: float | None = None
    completion_tokens: int = 0
    cancelled: bool = False  # the client went away before the answer was complete
    cost_usd: float = 0.0

    @property
    def served(self) -> bool:
        """A complete answer was sent."""
        return self.status == 200 and not self.cancelled and self.end is not None

    def text(self) -> str:
        """Every message text of the request, for leak checks."""
        return orjson.dumps(self.messages).decode()


def _error(status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
           ) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


class _ChatSim:
    """What both servers share: lifecycle, the request log, the chat handler and its wire
    format. Subclasses decide admission, the wait before the first token and decode speed."""

    name = "sim"

    def __init__(self, model: str, seed: int) -> None:
        self.model = model
        self.log: list[SimRecord] = []
        self.rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.routes(app)
        self._app = app

    def routes(self, app: web.Application) -> None:
        """Extra routes of a subclass."""

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self._app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- hooks -------------------------------------------------------------------------
    def admit(self, request: web.Request, record: SimRecord) -> web.Response | None:
        """A refusal (logged with its status), or None to serve the request."""
        return None

    async def until_first_token(self, record: SimRecord) -> None:
        """Wait as the server would before the first token; set ``record.start``."""
        record.start = time.monotonic()

    def decode_tps(self) -> float:
        raise NotImplementedError

    def finish(self, record: SimRecord) -> None:
        """The request is over (served, refused after start, or cancelled)."""

    # -- handlers ----------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": self.model, "object": "model", "created": CREATED, "owned_by": self.name}]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        record = SimRecord(len(self.log), arrival, body.get("stream") is True, body["messages"],
                           prompt_tokens(body), int(cap))
        self.log.append(record)
        refusal = self.admit(request, record)
        if refusal is not None:
            record.status, record.end = refusal.status, arrival
            return refusal
        try:
            return await self._serve(request, body, record)
        except asyncio.CancelledError:
            record.cancelled = True
            raise
        finally:
            record.end = time.monotonic()
            self.finish(record)

    async def _serve(self, request: web.Request, body: dict[str, Any], record: SimRecord) -> web.StreamResponse:
        cid = f"chatcmpl-{self.name}-{record.n}"
        if not record.stream:
            await self.until_first_token(record)
            await self._decode(record, _no_emit)
            return web.json_response(self.completion(cid, record))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)  # headers at once, as vLLM's and OpenAI's streams do
        await self.until_first_token(record)
        await resp.write(self._event(cid, {"role": "assistant", "content": ""}, None, usage))

        async def emit(first: int, count: int) -> None:
            await resp.write(self._event(cid, {"content": answer_text(first, count)}, None, usage))

        await self._decode(record, emit)
        await resp.write(self._event(cid, {}, "stop", usage))
        if usage:
            tail = {**self._head(cid, "chat.completion.chunk"), "choices": [], "usage": self.usage(record)}
            await resp.write(b"data: " + orjson.dumps(tail) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _decode(self, record: SimRecord, emit: Emit) -> None:
        """The first token right away (prefill made it), the rest at the decode speed."""
        record.first_token = time.monotonic()
        record.completion_tokens = 1
        await emit(0, 1)
        while record.completion_tokens < record.max_tokens:
            speed = self.decode_tps()
            count = min(record.max_tokens - record.completion_tokens, max(1, round(speed * CHUNK_S)))
            await asyncio.sleep(count / speed)
            record.completion_tokens += count
            await emit(record.completion_tokens - count, count)

    # -- bodies ------------------------------------------------------------------------
    def _head(self, cid: str, obj: str) -> dict[str, Any]:
        return {"id": cid, "object": obj, "created": CREATED, "model": self.model}

    def usage(self, record: SimRecord) -> dict[str, int]:
        return {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
                "total_tokens": record.prompt_tokens + record.completion_tokens}

    def completion(self, cid: str, record: SimRecord) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer_text(0, record.completion_tokens)}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**self._head(cid, "chat.completion"), "choices": [choice], "usage": self.usage(record)}

    def _event(self, cid: str, delta: dict[str, str], finish: str | None, usage: bool) -> bytes:
        chunk = {**self._head(cid, "chat.completion.chunk"),
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(self.chunk_extras(chunk, usage)) + b"\n\n"

    def chunk_extras(self, chunk: dict[str, Any], usage: bool) -> dict[str, Any]:
        return chunk


async def _no_emit(first: int, count: int) -> None:
    return None


# -- the GPU ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuSpec:
    slots: int = 4
    prefill_tps: float = 5000.0  # prompt tokens per second, per request
    decode_tps: float = 60.0  # answer tokens per second of one request alone in the batch
    batch_slowdown: float = 0.03  # decode slows by this fraction per other running request
    kv_tokens: int = 65536  # KV-cache capacity in tokens (for kv_cache_usage_perc)
    max_model_len: int = 8192
    gpu_hour_usd: float = 3.0  # what the GPU costs per hour (amortised cost)
    model: str = "meta-llama/Llama-3.1-8B-Instruct"


class SimGPU(_ChatSim):
    """One vLLM server on one GPU (module docstring). ``log`` holds every request."""

    name = "vllm"

    def __init__(self, spec: GpuSpec = GpuSpec(), seed: int = 0) -> None:
        super().__init__(spec.model, seed)
        self.spec = spec
        self.running: list[SimRecord] = []  # in a slot: prefill or decode
        self._busy = 0  # slots taken (a slot handed to a waiter stays taken)
        self._waiting: deque[asyncio.Future[None]] = deque()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, request: web.Request, record: SimRecord) -> web.Response | None:
        if record.prompt_tokens + record.max_tokens > self.spec.max_model_len:
            record.status = 400
            message = (f"This model's maximum context length is {self.spec.max_model_len} tokens. However, you "
                       f"requested {record.prompt_tokens + record.max_tokens} tokens.")
            body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
            return web.json_response(body, status=400)
        return None

    async def until_first_token(self, record: SimRecord) -> None:
        await self._acquire()
        record.start = time.monotonic()
        self.running.append(record)
        await asyncio.sleep(record.prompt_tokens / self.spec.prefill_tps)

    def decode_tps(self) -> float:
        return self.spec.decode_tps / (1 + self.spec.batch_slowdown * max(0, len(self.running) - 1))

    def finish(self, record: SimRecord) -> None:
        if record in self.running:
            self.running.remove(record)
        if record.start is not None:
            self._release()

    async def _acquire(self) -> None:
        """A slot, first come first served: at once when one is free and nobody waits."""
        if self._busy < self.spec.slots and not self._waiting:
            self._busy += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # the slot was handed over as the client left: pass it on
            else:
                self._waiting.remove(ticket)
            raise

    def _release(self) -> None:
        """A slot came free: hand it to the first waiter, or free it."""
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self._busy -= 1

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        labels = f'engine="0",model_name="{self.model}"'
        kv = sum(r.prompt_tokens + r.completion_tokens for r in self.running) / self.spec.kv_tokens
        served = [r for r in self.log if r.served]
        lines = []
        for name, kind, help_, value in (
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
             len(self.running)),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", self.waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", min(1.0, kv)),
            ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
             sum(r.prompt_tokens for r in self.log if r.first_token is not None)),
            ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
             sum(r.completion_tokens for r in self.log)),
            ("vllm:request_success_total", "counter", "Count of successfully processed requests.", len(served)),
        ):
            base = name.removesuffix("_total")
            lines += [f"# HELP {base} {help_}", f"# TYPE {base} {kind}", f"{name}{{{labels}}} {float(value)!r}"]
        return web.Response(body=("\n".join(lines) + "\n").encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def busy_slot_seconds(self) -> float:
        """Slot time used so far (prefill and decode), for utilisation."""
        now = time.monotonic()
        return sum((r.end or now) - r.start for r in self.log if r.start is not None)


# -- the closed provider ---------------------------------------------------------------

@dataclass(frozen=True)
class ClosedSpec:
    model: str = "gpt-4o"
    api_key: str = "sk-sim-closed-0123456789"
    ttft_s: float = 0.35
    ttft_jitter_s: float = 0.08  # standard deviation of a normal jitter, seeded
    tokens_per_s: float = 80.0
    rpm: int = 600  # requests per minute; past it, 429
    input_per_mtok_usd: float = 2.50
    output_per_mtok_usd: float = 10.00


class SimClosed(_ChatSim):
    """A gpt-4o-class provider (module docstring). ``log`` holds every request, refused ones
    included (they reached the provider: a leak check reads them too)."""

    name = "openai"

    def __init__(self, spec: ClosedSpec = ClosedSpec(), seed: int = 0) -> None:
        super().__init__(spec.model, seed)
        self.spec = spec
        self._minute: deque[float] = deque()  # times of the requests admitted in the last 60 s

    def admit(self, request: web.Request, record: SimRecord) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _error(401, "You didn't provide an API key. You need to provide your API key in an "
                               "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                          "invalid_request_error", None)
        if header.removeprefix("Bearer ") != self.spec.api_key:
            return _error(401, "Incorrect API key provided. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                          "invalid_api_key")
        return self._rate_limit(record.arrival)

    def _rate_limit(self, now: float) -> web.Response | None:
        while self._minute and self._minute[0] <= now - 60:
            self._minute.popleft()
        limit = self.spec.rpm
        if len(self._minute) < limit:
            self._minute.append(now)
            return None
        wait = max(0.001, self._minute[0] + 60 - now)
        message = (f"Rate limit reached for {self.model} in organization org-switchyard-sim on requests per min "
                   f"(RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in {wait:.3g}s. Visit "
                   "https://platform.openai.com/account/rate-limits to learn more.")
        headers = {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000)),
                   "x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": "0",
                   "x-ratelimit-reset-requests": f"{wait:.3g}s"}
        return _error(429, message, "requests", "rate_limit_exceeded", headers)

    async def until_first_token(self, record: SimRecord) -> None:
        record.start = time.monotonic()
        await asyncio.sleep(max(0.05, self.rng.gauss(self.spec.ttft_s, self.spec.ttft_jitter_s)))

    def decode_tps(self) -> float:
        return self.spec.tokens_per_s

    def finish(self, record: SimRecord) -> None:
        """Bill what was done: the prompt once work began, and every token produced."""
        if record.start is not None:
            record.cost_usd = (record.prompt_tokens * self.spec.input_per_mtok_usd
                               + record.completion_tokens * self.spec.output_per_mtok_usd) / 1e6

    def cost_usd(self) -> float:
        """What this provider billed, from its own log."""
        return sum(r.cost_usd for r in self.log)

    def completion(self, cid: str, record: SimRecord) -> dict[str, Any]:
        return {**super().completion(cid, record), "system_fingerprint": "fp_sim", "service_tier": "default"}

    def chunk_extras(self, chunk: dict[str, Any], usage: bool) -> dict[str, Any]:
        chunk.update(system_fingerprint="fp_sim", service_tier="default")
        if usage:
            chunk["usage"] = None  # OpenAI sends "usage": null on every chunk but the last
        return chunk


# -- workload --------------------------------------------------------------------------

#: Test numbers that pass the checksums the gateway's detectors use (Luhn, mod 97).
CARDS = ("4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881", "3782 822463 10005")
IBANS = ("DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
         "NL91ABNA0417164300")
_WORDS = ("order", "shipment", "delivery", "warehouse", "customer", "invoice", "return", "policy", "summary",
          "please", "explain", "status", "update", "account", "product", "review", "weekly", "report", "travel",
          "booking", "meeting", "schedule", "project", "budget", "quality", "support", "request", "answer",
          "draft", "letter", "friendly", "short", "detail", "reason", "team", "plan", "market", "store")
_SYSTEM = "You are a helpful assistant for the operations team. Answer clearly and briefly."


@dataclass(frozen=True)
class WorkloadSpec:
    duration_s: float = 90.0
    base_rate: float = 1.4  # arrivals per second outside bursts
    burst_every_s: float = 30.0  # every this many seconds, the last…
    burst_s: float = 10.0  # …this many are a burst at burst_factor × base_rate (first burst: 20-30 s)
    burst_factor: float = 3.0
    prompt_median: int = 400  # tokens; log-normal
    prompt_sigma: float = 0.9
    prompt_max: int = 4000
    output_median: int = 70  # tokens; log-normal
    output_sigma: float = 0.8
    output_max: int = 1024
    sensitive_share: float = 0.2
    stream_share: float = 0.6

    def rate(self, t: float) -> float:
        burst = (t % self.burst_every_s) >= self.burst_every_s - self.burst_s  # quiet first: a warm start
        return self.base_rate * (self.burst_factor if burst else 1.0)

    @property
    def mean_rate(self) -> float:
        share = min(1.0, self.burst_s / self.burst_every_s)
        return self.base_rate * (1 + (self.burst_factor - 1) * share)


@dataclass(frozen=True)
class Job:
    """One request of the workload: sent ``at`` seconds after the replay starts."""

    n: int
    at: float
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    stream: bool
    sensitive: bool
    marker: str  # unique, letters only: found in a log, it names this job

    @property
    def prompt_tokens(self) -> int:
        return prompt_tokens({"messages": list(self.messages)})


def marker(n: int) -> str:
    """A unique 7-letter marker for job ``n`` (letters only: no detector fires on it)."""
    letters = []
    for _ in range(6):
        n, rest = divmod(n, 26)
        letters.append(chr(ord("a") + rest))
    return "q" + "".join(reversed(letters))


def workload(spec: WorkloadSpec, seed: int) -> list[Job]:
    """The jobs for ``seed``: the same list every time (one ``random.Random(seed)``).
    Arrivals are a Poisson process of rate ``spec.rate(t)`` (by thinning)."""
    rng = random.Random(seed)
    peak = spec.base_rate * max(1.0, spec.burst_factor)
    jobs: list[Job] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= spec.duration_s:
            return jobs
        if rng.random() * peak > spec.rate(t):
            continue
        jobs.append(_job(spec, rng, len(jobs), t))


def _job(spec: WorkloadSpec, rng: random.Random, n: int, at: float) -> Job:
    tokens = _lognormal(rng, spec.prompt_median, spec.prompt_sigma, 16, spec.prompt_max)
    output = _lognormal(rng, spec.output_median, spec.output_sigma, 4, spec.output_max)
    sensitive = rng.random() < spec.sensitive_share
    stream = rng.random() < spec.stream_share
    tag = marker(n)
    head = f"Case {tag}. "
    if sensitive:
        head += (f"The customer paid with card {rng.choice(CARDS)}; " if rng.random() < 0.5
                 else f"Refund to IBAN {rng.choice(IBANS)}; ") + "check it against the ledger. "
    want = (tokens - 1) * CHARS_PER_TOKEN - len(_SYSTEM)  # prompt_tokens() of the job is about `tokens`
    words = [head]
    size = len(head)
    while size < want:
        word = rng.choice(_WORDS) + " "
        words.append(word)
        size += len(word)
    user = "".join(words).rstrip()
    messages = ({"role": "system", "content": _SYSTEM}, {"role": "user", "content": user})
    return Job(n, at, messages, output, stream, sensitive, tag)


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))
