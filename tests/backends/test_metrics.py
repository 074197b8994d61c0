"""Load signals at the backend boundary: ``backends.metrics`` (Prometheus text parsing, the
per-kind metric names, ``LoadSample``) and ``OpenAICompatBackend.load()`` against the fake
upstream and a tiny raw server (hanging or refusing ``/metrics``).

The exposition texts below are written after the servers' documented output: vLLM V1
(labels per ``model_name`` and ``engine``, HELP/TYPE, histograms), TGI (Rust exporter: TYPE
only, labelled counters, summaries) and a real ``llama-server --metrics`` build (b11434),
which ends without a trailing newline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import BackendConfig, TimeLimits
from backends.errors import UpstreamConnectError, UpstreamServerError, UpstreamTimeout
from backends.metrics import METRIC_NAMES, LoadSample, load_sample, parse_prometheus, sample_from
from backends.openai_compat import OpenAICompatBackend
from tests.conftest import free_port
from tests.fakes.openai_upstream import FakeOpenAI

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

VLLM_V1 = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 11825.0
python_gc_objects_collected_total{{generation="1"}} 2112.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 7.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 3.0
vllm:num_requests_waiting{{engine="1",model_name="{MODEL}"}} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.25
vllm:kv_cache_usage_perc{{engine="1",model_name="{MODEL}"}} 0.75
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="{MODEL}"}} 1.2345e+06
vllm:prompt_tokens_total{{engine="1",model_name="{MODEL}"}} 6.5e+05
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{{engine="0",model_name="{MODEL}"}} 1.7371e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",model_name="{MODEL}"}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",model_name="{MODEL}"}} 40.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 42.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="{MODEL}"}} 42.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 9.5
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{block_size="16",cache_dtype="auto",gpu_memory_utilization="0.9",\
prefix_caching_hash_algo="builtin"}} 1.0
"""

VLLM_V0 = f"""\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="{MODEL}"}} 2.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{{model_name="{MODEL}"}} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{model_name="{MODEL}"}} 4.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{model_name="{MODEL}"}} 0.875
# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{{model_name="{MODEL}"}} 0.0
"""

TGI = """\
# TYPE tgi_request_count counter
tgi_request_count 1203
# TYPE tgi_batch_inference_count counter
tgi_batch_inference_count{method="prefill"} 1203
tgi_batch_inference_count{method="decode"} 51022
# TYPE tgi_queue_size gauge
tgi_queue_size 6
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 32
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 16384
# TYPE tgi_request_duration summary
tgi_request_duration{quantile="0"} 0.021
tgi_request_duration{quantile="0.5"} 1.9
tgi_request_duration{quantile="0.99"} 12.4
tgi_request_duration_sum 2876.2
tgi_request_duration_count 1203
# TYPE tgi_batch_next_size histogram
tgi_batch_next_size_bucket{le="1"} 40
tgi_batch_next_size_bucket{le="+Inf"} 1203
tgi_batch_next_size_sum 9021
tgi_batch_next_size_count 1203
"""

# A real llama-server b11434 (deploy/local-model) answer, cut down; note: no final newline.
LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 5120
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 412.873
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 5
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 1.85"""

# An older llama-server, from before the KV-cache gauges were dropped.
LLAMACPP_OLD = """\
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.5
# HELP llamacpp:kv_cache_tokens KV-cache tokens.
# TYPE llamacpp:kv_cache_tokens gauge
llamacpp:kv_cache_tokens 2048
llamacpp:requests_processing 1
llamacpp:requests_deferred 0
"""


# -- parse_prometheus ------------------------------------------------------------------------

def test_vllm_samples_are_summed_across_label_sets() -> None:
    m = parse_prometheus(VLLM_V1)
    assert m["vllm:num_requests_running"] == 12.0
    assert m["vllm:num_requests_waiting"] == 4.0
    assert m["vllm:kv_cache_usage_perc"] == 1.0  # 0.25 + 0.75: summing is what the parser does
    assert m["vllm:prompt_tokens_total"] == 1_884_500.0
    assert m["python_gc_objects_collected_total"] == 13937.0
    assert m["vllm:cache_config_info"] == 1.0  # info-style gauge, many labels
    # histogram series are their own names; buckets (incl. le="+Inf") add up like any label set
    assert m["vllm:time_to_first_token_seconds_bucket"] == 82.0
    assert m["vllm:time_to_first_token_seconds_count"] == 42.0
    assert m["vllm:time_to_first_token_seconds_sum"] == 9.5
    assert "vllm:time_to_first_token_seconds" not in m
    assert not any(name.startswith("#") or name in ("HELP", "TYPE") for name in m)


def test_tgi_and_llamacpp_texts() -> None:
    tgi = parse_prometheus(TGI)
    assert tgi["tgi_queue_size"] == 6.0 and tgi["tgi_batch_current_size"] == 32.0
    assert tgi["tgi_batch_inference_count"] == 52225.0
    assert tgi["tgi_request_duration"] == pytest.approx(0.021 + 1.9 + 12.4)
    llama = parse_prometheus(LLAMACPP)
    assert llama["llamacpp:requests_deferred"] == 5.0  # the unterminated last line still counts
    assert llama["llamacpp:n_busy_slots_per_decode"] == 1.85
    assert llama["llamacpp:requests_processing"] == 2.0


def test_special_values_timestamps_and_escaped_labels() -> None:
    text = "\n".join([
        "nan_metric NaN",
        "pos_inf +Inf",
        "neg_inf{a=\"b\"} -Inf",
        "sci 1.5e-3",
        "sci_upper 2E+2",
        "with_ts 7 1712345678901",
        "with_ts_neg -3.5 1712345678901",
        'braces{path="/v1/{id}",msg="a } b"} 2',
        'quotes{msg="say \\"hi\\" {x}",other="c:\\\\dir"} 3',
        'spaces{  a = "x y" ,  b="z"  } 4',
        'trailing_comma{a="1",} 5',
        'exemplar_total{a="1"} 6 # {trace_id="abc"} 1.0 1712345678.1',
        "tabs\t8\t1712345678901",
        '{"utf8.metric.name", zone="eu"} 9',
        "  indented 10  ",
        "# EOF",
    ])
    m = parse_prometheus(text)
    assert math.isnan(m["nan_metric"])
    assert m["pos_inf"] == math.inf and m["neg_inf"] == -math.inf
    assert m["sci"] == 0.0015 and m["sci_upper"] == 200.0
    assert m["with_ts"] == 7.0 and m["with_ts_neg"] == -3.5
    assert m["braces"] == 2.0 and m["quotes"] == 3.0 and m["spaces"] == 4.0
    assert m["trailing_comma"] == 5.0 and m["exemplar_total"] == 6.0
    assert m["tabs"] == 8.0 and m["utf8.metric.name"] == 9.0 and m["indented"] == 10.0
    assert len(m) == 15


def test_junk_lines_are_skipped() -> None:
    junk = [
        "",
        "   ",
        "#",
        "# HELP",
        "# TYPE x gauge extra words",
        "just_a_name",
        "no_value{a=\"b\"}",
        "bad_value abc",
        "bad_value_2 1.2.3",
        "bad_timestamp 1 yesterday",
        "unclosed{a=\"b\" 1",
        "unclosed_quote{a=\"b} 1",
        "1starts_with_digit 1",
        "dash-in-name 1",
        "{} 1",
        "=== garbage ===",
        "\x00\x01\x02",
        "ünïcode 1",
        "<html><body>Not Found</body></html>",
    ]
    text = "\n".join(["good 1", *junk, "good 2", "also_good{x=\"y\"} 3\r"])
    assert parse_prometheus(text) == {"good": 3.0, "also_good": 3.0}


def test_only_and_average() -> None:
    m = parse_prometheus(VLLM_V1, only={"vllm:kv_cache_usage_perc", "vllm:num_requests_waiting"},
                         average={"vllm:kv_cache_usage_perc"})
    assert m == {"vllm:num_requests_waiting": 4.0, "vllm:kv_cache_usage_perc": 0.5}


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab_:{}="\\, #\n\t.0123456789eE+-NnaIf'), max_size=200))
def test_parser_never_raises(text: str) -> None:
    result = parse_prometheus(text)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in result.items())


# -- sample_from / load_sample ---------------------------------------------------------------

def test_metric_names_per_kind() -> None:
    assert set(METRIC_NAMES) == {"vllm", "tgi", "llamacpp"}
    assert METRIC_NAMES["vllm"][2] == ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def test_sample_from_each_kind() -> None:
    assert sample_from("vllm", parse_prometheus(VLLM_V1)) == LoadSample(queue=4.0, running=12.0,
                                                                       kv_cache=1.0)
    assert sample_from("vllm", parse_prometheus(VLLM_V0)) == LoadSample(4.0, 2.0, 0.875)
    assert sample_from("tgi", parse_prometheus(TGI)) == LoadSample(6.0, 32.0, None)
    assert sample_from("llamacpp", parse_prometheus(LLAMACPP)) == LoadSample(5.0, 2.0, None)
    assert sample_from("llamacpp", parse_prometheus(LLAMACPP_OLD)) == LoadSample(0.0, 1.0, 0.5)


def test_load_sample_averages_the_kv_fraction_across_engines() -> None:
    assert load_sample("vllm", VLLM_V1) == LoadSample(queue=4.0, running=12.0, kv_cache=0.5)
    assert load_sample("vllm", VLLM_V0) == LoadSample(4.0, 2.0, 0.875)
    assert load_sample("tgi", TGI) == LoadSample(6.0, 32.0, None)
    assert load_sample("llamacpp", LLAMACPP) == LoadSample(5.0, 2.0, None)


def test_sample_from_prefers_the_current_kv_name_and_skips_unusable_values() -> None:
    both = {"vllm:kv_cache_usage_perc": 0.3, "vllm:gpu_cache_usage_perc": 0.9}
    assert sample_from("vllm", both).kv_cache == 0.3
    nan_current = {"vllm:kv_cache_usage_perc": math.nan, "vllm:gpu_cache_usage_perc": 0.9}
    assert sample_from("vllm", nan_current).kv_cache == 0.9
    weird = {"vllm:num_requests_waiting": math.inf, "vllm:num_requests_running": math.nan,
             "vllm:kv_cache_usage_perc": 1.7}
    assert sample_from("vllm", weird) == LoadSample(queue=None, running=None, kv_cache=1.0)
    assert sample_from("vllm", {"vllm:kv_cache_usage_perc": -0.1}).kv_cache == 0.0


def test_sample_from_missing_and_unknown() -> None:
    assert sample_from("vllm", {}) == LoadSample(None, None, None)
    assert sample_from("ollama", parse_prometheus(VLLM_V1)) == LoadSample(None, None, None)
    assert sample_from("tgi", parse_prometheus(VLLM_V1)) == LoadSample(None, None, None)


# -- OpenAICompatBackend.load() --------------------------------------------------------------

FAST = TimeLimits(connect_s=0.3, first_token_s=2.0, idle_s=2.0, total_s=2.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def backend(kind: str, base_url: str, session: aiohttp.ClientSession, *, api_key: str | None = None,
            limits: TimeLimits = FAST) -> OpenAICompatBackend:
    config = BackendConfig(name=f"local-{kind}", kind=kind, model="served", base_url=base_url,
                           api_key=api_key, limits=limits)
    return OpenAICompatBackend(config, session)


@asynccontextmanager
async def raw_metrics(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A bare server answering ``GET /metrics`` with ``handler``; yields its ``/v1`` base URL."""
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_llamacpp_load_reads_the_fake(fake_openai: FakeOpenAI,
                                            session: aiohttp.ClientSession) -> None:
    b = backend("llamacpp", fake_openai.base_url, session, api_key="sk-local")
    assert await b.load() == LoadSample(queue=0.0, running=0.0, kv_cache=None)
    fake_openai.deferred = 3
    assert await b.load() == LoadSample(queue=3.0, running=0.0, kv_cache=None)
    assert [(p.method, p.path) for p in fake_openai.probes] == [("GET", "/metrics")] * 2
    assert fake_openai.probes[0].headers.get("authorization") == "Bearer sk-local"
    assert fake_openai.received == []


@pytest.mark.parametrize("kind", ["openai_compatible", "ollama"])
async def test_kinds_without_metrics_give_none(kind: str, fake_openai: FakeOpenAI,
                                               session: aiohttp.ClientSession) -> None:
    assert await backend(kind, fake_openai.base_url, session).load() is None
    assert fake_openai.probes == []


async def test_vllm_load_over_http(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=VLLM_V1, content_type="text/plain")

    async with raw_metrics(handler) as base_url:
        assert await backend("vllm", base_url, session).load() == LoadSample(4.0, 12.0, 0.5)


async def test_dead_upstream_is_a_connect_error(session: aiohttp.ClientSession) -> None:
    b = backend("llamacpp", f"http://127.0.0.1:{free_port()}/v1", session)
    with pytest.raises(UpstreamConnectError) as info:
        await b.load()
    assert info.value.backend == "local-llamacpp" and "local-llamacpp" in str(info.value)


async def test_metrics_disabled_is_a_server_error(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:  # llama-server without --metrics
        return web.json_response({"error": {"code": 501, "message": "This server does not support "
                                             "metrics endpoint. Start it with `--metrics`",
                                             "type": "not_supported_error"}}, status=501)

    async with raw_metrics(handler) as base_url:
        with pytest.raises(UpstreamServerError) as info:
            await backend("llamacpp", base_url, session).load()
    assert info.value.backend == "local-llamacpp"
    assert "501" in str(info.value) and "--metrics" in str(info.value)


async def test_hanging_metrics_time_out_within_connect_s(session: aiohttp.ClientSession) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="llamacpp:requests_deferred 1\n")

    async with raw_metrics(handler) as base_url:
        b = backend("llamacpp", base_url, session, limits=TimeLimits(connect_s=0.2))
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeout) as info:
                await b.load()
        finally:
            release.set()
        elapsed = time.monotonic() - started
    assert arrived.is_set()
    assert 0.15 <= elapsed < 1.5
    assert info.value.backend == "local-llamacpp" and "0.2 s" in str(info.value)
