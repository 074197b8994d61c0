"""``Runtime``: what serving one policy needs — the loaded policy, its planner, and one
backend adapter per policy backend. Built once at start (and, later, on reload).

The only place that turns policy ``BackendSpec`` into ``backends.BackendConfig``, and that
hands policy what a backend kind is (``KIND_TABLE``, from ``backends.KIND_TRAITS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp
import orjson

from backends import (
    CLOSED_TRAITS,
    KIND_TRAITS,
    Backend,
    BackendConfig,
    Discovery,
    Health,
    KindTraits,
    PlacementSpec,
    ReplicaPool,
    Scrubber,
    TimeLimits,
    build_backend,
    check_kind,
    provider_price,
)
from policies import BackendSpec, KindInfo, KindTable, LoadedPolicy, Planner, PolicyError, TokenPrice
from policies.sensitivity import Scanner

__all__ = ["KIND_TABLE", "Runtime", "backend_config", "build_planner", "build_runtime", "check_backends",
           "policy_scrubber"]


def _kind_info(traits: KindTraits) -> KindInfo:
    return KindInfo(self_hosted=traits.self_hosted, supports_prefill=traits.supports_prefill)


#: What policy needs to know about each backend kind: pass it to every ``load_policy`` call.
KIND_TABLE = KindTable(MappingProxyType({kind: _kind_info(t) for kind, t in KIND_TRAITS.items()}),
                       other=_kind_info(CLOSED_TRAITS))


@dataclass(frozen=True)
class Runtime:
    loaded: LoadedPolicy
    planner: Planner
    scanner: Scanner
    backends: dict[str, Backend]
    models_json: bytes  # GET /v1/models, serialised once
    #: every configured key and backend address: what error messages and logs must not show
    scrubber: Scrubber = Scrubber()

    async def probe(self) -> dict[str, Health]:
        """Health of every backend, probed concurrently."""
        names = list(self.backends)
        results = await asyncio.gather(*(self.backends[n].health() for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()


def backend_configs(name: str, spec: BackendSpec) -> list[BackendConfig]:
    """One config per server: the backend's, or each replica's of a pool (a discovered pool:
    its DNS name's, so that errors and logs scrub it)."""
    if spec.discovery is not None:
        d = spec.discovery
        return [backend_config(name, spec, f"{d.scheme}://{d.dns}:{d.port}{d.path}".rstrip("/"))]
    if not spec.replicas:
        return [backend_config(name, spec)]
    return [backend_config(name, spec, str(url).rstrip("/")) for url in spec.replicas]


def build_one(name: str, spec: BackendSpec, session: aiohttp.ClientSession) -> Backend:
    """The adapter for a backend: one server's, or a ``ReplicaPool`` over its replicas."""
    if not spec.replicas and spec.discovery is None:
        return build_backend(backend_config(name, spec), session)
    p = spec.placement
    placement = PlacementSpec(p.strategy, p.block_chars, p.saturated_at, p.resume_below, p.failures, p.cooldown_s)
    if spec.discovery is not None:
        d = spec.discovery
        return ReplicaPool(name, [], placement, discovery=Discovery(d.dns, d.port, d.scheme, d.path, d.interval_s),
                           make=lambda url: build_backend(backend_config(name, spec, url.rstrip("/")), session))
    return ReplicaPool(name, [(str(c.base_url), build_backend(c, session)) for c in backend_configs(name, spec)],
                       placement)


def backend_config(name: str, spec: BackendSpec, base_url: str | None = None) -> BackendConfig:
    t = spec.timeouts
    return BackendConfig(
        name=name, kind=spec.kind, model=spec.model,
        base_url=base_url or (str(spec.base_url).rstrip("/") if spec.base_url else None),
        api_key=spec.api_key.get_secret_value() if spec.api_key is not None else None,
        self_hosted=spec.is_self_hosted,
        supports_prefill=spec.can_prefill,
        limits=TimeLimits(connect_s=t.connect_s, first_token_s=t.first_token_s, idle_s=t.idle_s,
                          total_s=t.total_s),
        headers=tuple(spec.headers.items()),
    )


def _enabled(loaded: LoadedPolicy) -> dict[str, BackendSpec]:
    """Backends that can serve: a closed backend whose key resolved empty is left out
    (so a policy whose closed backends all lack keys never loads litellm)."""
    return {name: spec for name, spec in loaded.policy.backends.items() if spec.has_credentials}


def check_backends(loaded: LoadedPolicy, *, include_disabled: bool = False) -> None:
    """Raise ``PolicyError`` naming every backend whose kind no adapter serves."""
    issues = []
    specs = loaded.policy.backends if include_disabled else _enabled(loaded)
    for name, spec in specs.items():
        try:
            check_kind(spec.kind)
        except ValueError as exc:
            issues.append(loaded.issue(("backends", name, "kind"), str(exc)))
    if issues:
        raise PolicyError(issues)


def build_runtime(loaded: LoadedPolicy, session: aiohttp.ClientSession) -> Runtime:
    """Build adapters for every backend; raise ``PolicyError`` naming each unusable one."""
    check_backends(loaded)
    backends = {name: build_one(name, spec, session) for name, spec in _enabled(loaded).items()}
    models = [{"id": alias, "object": "model", "created": 0, "owned_by": "switchyard"}
              for alias in loaded.policy.models]
    return Runtime(loaded, build_planner(loaded), Scanner(loaded.policy.sensitivity), backends,
                   orjson.dumps({"object": "list", "data": models}), policy_scrubber(loaded))


def policy_scrubber(loaded: LoadedPolicy, extra: Iterable[str] = ()) -> Scrubber:
    """What errors and logs must not show: every backend's key, header secrets and address."""
    return Scrubber.for_backends((c for n, s in loaded.policy.backends.items() for c in backend_configs(n, s)),
                                 extra)


def build_planner(loaded: LoadedPolicy) -> Planner:
    """The planner, with provider table prices for enabled closed backends (litellm's table;
    read only when the policy has closed backends, which load litellm anyway)."""
    table = {}
    for name, spec in _enabled(loaded).items():
        found = None if spec.is_self_hosted else provider_price(spec.kind, spec.model)
        if found is not None:
            inp, out, cached, written = found
            table[name] = TokenPrice(inp, out, cached, "table", written)
    return Planner(loaded, table)
