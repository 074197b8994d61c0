"""Process settings: where to listen, which policy, how many workers. From the CLI,
then ``SWITCHYARD_*`` environment variables, then defaults. Frozen once built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

__all__ = ["DEFAULT_POLICY", "LOOPS", "SETTINGS", "Settings"]

#: The policy served when none is given: the local open model, closed APIs when keys are set.
DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"

#: Event loops ``serve`` can run on.
LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class Settings:
    policy: Path = DEFAULT_POLICY
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = 1
    access_log: bool = True
    log_level: str = "INFO"
    upstream_connections: int = 1000
    redis_url: str | None = None  # shared state; None: in-memory (one process)
    admin_key: str | None = field(default=None, repr=False)  # required on /admin/* when set
    dashboard_key: str | None = field(default=None, repr=False)  # read-only: /dashboard and /metrics
    telemetry: bool = True  # metrics (and traces, when an OTLP endpoint is set); off: neither
    #: On SIGTERM: how long requests in flight get to finish before what still waits on an
    #: upstream is cut (streams end with an error event and [DONE]); see ``router.inflight``.
    drain_s: float = 10.0
    #: The event loop: ``uvloop`` (libuv: about 11 % fewer instructions per request; see
    #: bench/README.md) or ``asyncio`` (the standard library's, to rule uvloop out).
    loop: str = "uvloop"

    def __post_init__(self) -> None:
        if not 0 <= self.drain_s <= 3600:
            raise ValueError(f"the drain deadline must be 0-3600 s, got {self.drain_s!r}")
        if self.loop not in LOOPS:
            raise ValueError(f"the event loop must be one of {', '.join(LOOPS)}, got {self.loop!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        """Explicit (CLI) values win over ``SWITCHYARD_*`` variables, which win over defaults."""
        values: dict[str, object] = {}
        if "SWITCHYARD_POLICY" in env:
            values["policy"] = Path(env["SWITCHYARD_POLICY"])
        if "SWITCHYARD_HOST" in env:
            values["host"] = env["SWITCHYARD_HOST"]
        if "SWITCHYARD_PORT" in env:
            values["port"] = _int(env["SWITCHYARD_PORT"], "SWITCHYARD_PORT")
        if "SWITCHYARD_WORKERS" in env:
            values["workers"] = _int(env["SWITCHYARD_WORKERS"], "SWITCHYARD_WORKERS")
        if "SWITCHYARD_DRAIN_S" in env:
            values["drain_s"] = _seconds(env["SWITCHYARD_DRAIN_S"], "SWITCHYARD_DRAIN_S")
        if "SWITCHYARD_LOG_LEVEL" in env:
            values["log_level"] = env["SWITCHYARD_LOG_LEVEL"].upper()
        if "SWITCHYARD_LOOP" in env:
            values["loop"] = env["SWITCHYARD_LOOP"].strip().lower()
        if env.get("SWITCHYARD_REDIS_URL"):
            values["redis_url"] = env["SWITCHYARD_REDIS_URL"]
        if env.get("SWITCHYARD_ADMIN_KEY"):
            values["admin_key"] = env["SWITCHYARD_ADMIN_KEY"]
        if env.get("SWITCHYARD_DASHBOARD_KEY"):
            values["dashboard_key"] = env["SWITCHYARD_DASHBOARD_KEY"]
        if "SWITCHYARD_TELEMETRY" in env:
            flag = env["SWITCHYARD_TELEMETRY"].strip().lower()
            if flag not in ("on", "off", "1", "0", "true", "false"):
                raise ValueError(f"SWITCHYARD_TELEMETRY must be on or off, got {flag!r}")
            values["telemetry"] = flag in ("on", "1", "true")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("policy"), str):
            values["policy"] = Path(str(values["policy"]))
        return cls(**values)  # type: ignore[arg-type]


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _seconds(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None


SETTINGS = web.AppKey("settings", Settings)
