"""Load signals from self-hosted servers' Prometheus ``/metrics``: a lenient parser for the
text exposition format (``parse_prometheus``), the per-kind metric names (``METRIC_NAMES``)
and the reduction of one scrape to a ``LoadSample`` (queue, running, kv_cache 0..1).

Pure functions and data: no I/O, no clock (``OpenAICompatBackend.load`` does the GET, the
router's ``LoadMonitor`` keeps time). Must not import ``router`` or ``policies``.

What the servers export (checked against their docs and a real llama-server b11434):

* vLLM: ``vllm:num_requests_waiting`` / ``vllm:num_requests_running`` gauges, labelled per
  ``model_name`` and (V1) per ``engine``, so they are summed. KV cache is
  ``vllm:kv_cache_usage_perc`` (V1), ``vllm:gpu_cache_usage_perc`` before it (deprecated, then
  removed); despite ``_perc`` both are a 0..1 fraction ("1 means 100 percent usage"). With
  data parallelism there is one series per engine, so the fraction is averaged, not summed.
* TGI: ``tgi_queue_size`` and ``tgi_batch_current_size`` gauges; no KV-cache gauge.
* llama.cpp (``llama-server --metrics``; 501 without the flag): ``llamacpp:requests_deferred``
  (waiting for a free slot) and ``llamacpp:requests_processing``. Older builds also exported
  ``llamacpp:kv_cache_usage_ratio`` (0..1); current ones do not, so it is tried but optional.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = ["METRIC_NAMES", "LoadSample", "load_sample", "parse_prometheus", "sample_from"]


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One scrape of one server. ``None`` where the server does not export the value."""

    queue: float | None  # requests waiting
    running: float | None  # requests being served
    kv_cache: float | None  # 0..1
    servers: int = 1  # servers the sample speaks for (a pool: its replicas with a sample)
    #: requests waiting + running on all of them (a pool's sum; None: ``queue + running``)
    total_busy: float | None = None


#: kind → (queue names, running names, kv-cache names), each tried in order.
METRIC_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "vllm": (("vllm:num_requests_waiting",), ("vllm:num_requests_running",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "tgi": (("tgi_queue_size",), ("tgi_batch_current_size",), ()),
    "llamacpp": (("llamacpp:requests_deferred",), ("llamacpp:requests_processing",),
                 ("llamacpp:kv_cache_usage_ratio",)),
}

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def parse_prometheus(text: str, *, only: Collection[str] | None = None,
                     average: Collection[str] = ()) -> dict[str, float]:
    """Metric name → value from Prometheus text exposition (0.0.4, OpenMetrics tolerated).

    Samples of one name are summed across label sets (per-model / per-engine series);
    names in ``average`` are averaged instead (ratios such as a KV-cache fraction). ``only``
    restricts the result to those names (and skips parsing the rest). Comments, HELP/TYPE/EOF,
    timestamps and exemplars are ignored; ``NaN``/``+Inf``/``-Inf`` and exponents are read;
    a line that cannot be parsed is skipped, never raised on.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for raw in text.splitlines():
        parsed = _parse_line(raw, only)
        if parsed is None:
            continue
        name, value = parsed
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1
    for name in average:
        if name in sums:
            sums[name] /= counts[name]
    return sums


def _parse_line(raw: str, only: Collection[str] | None) -> tuple[str, float] | None:
    line = raw.strip()
    if not line or line[0] == "#":
        return None
    match = _NAME.match(line)
    name = match.group() if match else ""
    pos = match.end() if match else 0
    if name and only is not None and name not in only:
        return None  # cheap early exit for the names nobody asked for
    if pos < len(line) and line[pos] == "{":
        end, quoted_name = _skip_labels(line, pos)
        if end < 0:
            return None
        if not name:  # Prometheus 3 UTF-8 form: {"metric.name", label="v"} 1
            name = quoted_name or ""
        pos = end
    elif pos < len(line) and not line[pos].isspace():
        return None  # e.g. "metric-name 1": the name ran into junk
    if not name or (only is not None and name not in only):
        return None
    fields = line[pos:].split()
    if not fields or (len(fields) > 1 and not _is_timestamp(fields[1]) and fields[1] != "#"):
        return None
    try:
        return name, float(fields[0])
    except ValueError:
        return None


def _skip_labels(line: str, start: int) -> tuple[int, str | None]:
    """Index just past the ``}`` closing the label set at ``start`` (quotes and backslash
    escapes respected), and a bare quoted string found in it (a UTF-8 metric name);
    ``(-1, None)`` when the set never closes."""
    i, n = start + 1, len(line)
    bare: str | None = None
    token_start = i
    expect_name = True  # a string right after "{" or "," is a name, after "=" a value
    while i < n:
        ch = line[i]
        if ch == '"':
            j, chars = i + 1, []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(line[j])
                j += 1
            if j >= n:
                return -1, None
            if expect_name and bare is None and not line[token_start:i].strip():
                bare = "".join(chars)
            i = j + 1
            continue
        if ch == "}":
            return i + 1, bare
        if ch == ",":
            expect_name, token_start = True, i + 1
        elif ch == "=":
            expect_name = False
        i += 1
    return -1, None


def _is_timestamp(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def sample_from(kind: str, metrics: Mapping[str, float]) -> LoadSample:
    """The load of a ``kind`` server from its parsed metrics (first known name wins per
    value; NaN/Inf count as absent; kv_cache clamped to 0..1)."""
    queue_names, running_names, kv_names = METRIC_NAMES.get(kind, ((), (), ()))
    kv = _first(metrics, kv_names)
    return LoadSample(
        queue=_first(metrics, queue_names),
        running=_first(metrics, running_names),
        kv_cache=None if kv is None else min(1.0, max(0.0, kv)),
    )


def load_sample(kind: str, text: str) -> LoadSample:
    """Parse one ``/metrics`` body of a ``kind`` server straight into a sample: only the
    names that matter are parsed, and the KV-cache fractions are averaged across engines."""
    queue_names, running_names, kv_names = METRIC_NAMES.get(kind, ((), (), ()))
    wanted = frozenset((*queue_names, *running_names, *kv_names))
    return sample_from(kind, parse_prometheus(text, only=wanted, average=kv_names))


def _first(metrics: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        value = metrics.get(name)
        if value is not None and math.isfinite(value):
            return value
    return None
