"""The latency prediction: how long a request would wait for its first token and for its whole
answer on a backend, from that backend's load (``BackendLoad``) and capacity.

A self-hosted server serves ``slots`` requests at once (continuous batching); a request that
finds them all busy waits until slots free up. With ``busy`` requests in the server (waiting +
running, the scrape corrected by the gateway's own in-flight count since) and ``usable`` slots
for this request (all of them for a request that must stay home; the unreserved ones for one
that may leave), the request is ``ahead = busy - usable + 1`` places down the queue (0: a slot is
free) and waits about ``ahead × service / usable``, where ``service`` is the time a typical
request holds a slot (its mean prompt over the prefill speed plus its mean answer over the
decode speed). Then:

    ttft    = wait + input_tokens / prefill_tokens_per_s
    latency = ttft + output_tokens / decode_tokens_per_s

Speeds and typical request sizes are the gateway's observations of the backend when it has
some, else the backend's ``capacity`` (else defaults). A closed provider is predicted only from
observations (its time to first token, its decode speed); without them, ``None``.

Pure: no clock, no I/O. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.facts import BackendLoad
from policies.models import BackendSpec, Slo

__all__ = ["DEFAULT_DECODE_TPS", "DEFAULT_PREFILL_TPS", "Prediction", "predict"]

#: Speeds assumed for a self-hosted backend with no ``capacity`` and no observations yet.
DEFAULT_PREFILL_TPS = 2000.0
DEFAULT_DECODE_TPS = 30.0
_NO_LOAD = BackendLoad()


@dataclass(frozen=True, slots=True)
class Prediction:
    ttft_s: float
    latency_s: float | None  # None: a closed provider whose decode speed is not known yet
    wait_s: float = 0.0  # of ttft: waiting for a slot
    ahead: float = 0.0  # requests before this one in the server's queue (0: a slot is free)
    slots: int | None = None  # slots this request may use (None: not known)
    busy: float = 0.0  # requests in the server now
    basis: str = "configured"  # observed | configured | default

    def misses(self, slo: Slo) -> str | None:
        """Why this prediction misses the objective, or ``None``."""
        if slo.ttft_s is not None and self.ttft_s > slo.ttft_s:
            return f"predicted TTFT {self.ttft_s:.2f} s > objective {slo.ttft_s:g} s"
        if slo.latency_s is not None and self.latency_s is not None and self.latency_s > slo.latency_s:
            return f"predicted latency {self.latency_s:.2f} s > objective {slo.latency_s:g} s"
        return None

    def as_dict(self) -> dict[str, object]:
        latency = None if self.latency_s is None else round(self.latency_s, 4)
        return {"ttft_s": round(self.ttft_s, 4), "latency_s": latency,
                "wait_s": round(self.wait_s, 4), "ahead": round(self.ahead, 2), "busy": round(self.busy, 2),
                "slots": self.slots, "basis": self.basis}


def predict(spec: BackendSpec, load: BackendLoad | None, input_tokens: int, output_tokens: int, *,
            may_leave: bool) -> Prediction | None:
    """Predicted time to first token and latency of a request on ``spec`` (see the module)."""
    load = load or _NO_LOAD
    if not spec.is_self_hosted:
        if load.ttft_ewma_s is None:
            return None
        latency = None if load.decode_tps is None else load.ttft_ewma_s + output_tokens / load.decode_tps
        return Prediction(load.ttft_ewma_s, latency, basis="observed")
    cap = spec.capacity
    prefill = load.prefill_tps or (cap.prefill_tokens_per_s if cap else DEFAULT_PREFILL_TPS)
    decode = load.decode_tps or (cap.decode_tokens_per_s if cap else DEFAULT_DECODE_TPS)
    basis = "observed" if load.prefill_tps and load.decode_tps else "configured" if cap else "default"
    busy = float(load.in_flight) if load.busy is None else max(load.busy, float(load.in_flight))
    # the time a typical request holds a slot: what the backend usually serves, else this one
    service = (load.mean_input_tokens or input_tokens) / prefill + (load.mean_output_tokens or output_tokens) / decode
    if cap is not None:
        replicas = max(1, load.replicas)
        usable = (cap.slots - (cap.reserved_slots if may_leave else 0)) * replicas
        ahead = max(0.0, busy - usable + 1)
        wait = ahead * service / usable
        slots: int | None = usable
    else:  # slots unknown: only the server's own queue says a request would wait
        queue = max(0.0, busy - (load.running or 0.0)) if load.busy is not None else 0.0
        ahead, slots = queue, None
        wait = queue * service / max(1.0, load.running or 1.0)
    ttft = wait + input_tokens / prefill
    return Prediction(ttft, ttft + output_tokens / decode, wait, ahead, slots, busy, basis)
