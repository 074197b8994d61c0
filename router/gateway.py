"""``Gateway``: the serving state of one policy — runtime (planner, scanner, backends),
engine (attempts, circuits) and load monitor — plus the two steps every request takes
before any backend is called: build its facts, then plan it.

Swapped as a whole on reload; a request keeps the ``Gateway`` it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from backends import ReplicaPool
from policies import Endpoint, LoadedPolicy, Plan, Policy, RequestFacts, TokenPrice, UnknownAlias
from policies.sensitivity import Scan
from router.body import ParsedBody
from router.deadline import Deadline
from router.engine import Engine
from router.errors import ModelNotFound
from router.facts import build_facts
from router.health import Circuits, CircuitState
from router.load import LoadMonitor
from router.runtime import Runtime, build_runtime
from router.state.admission import Gatekeeper
from router.state.budgets import Budgets
from router.state.cache import ResponseCache
from router.state.keys import KeyRing
from router.state.limits import RateLimiter
from router.state.memory_store import MemoryStore
from router.state.responses import ResponseStore
from router.state.stats import Stats
from router.state.store import Store, StoreUnavailable
from router.telemetry import Telemetry

__all__ = ["OFF_LOOP_BYTES", "Gateway", "build_gateway", "open_gateway"]

log = logging.getLogger("switchyard")

#: Bodies larger than this are scanned in a worker thread (a small scan costs less than the hop).
OFF_LOOP_BYTES = 64 * 1024

@dataclass
class Gateway:
    runtime: Runtime
    engine: Engine
    load: LoadMonitor
    keys: KeyRing
    limits: RateLimiter
    budgets: Budgets
    cache: ResponseCache
    gatekeeper: Gatekeeper
    telemetry: Telemetry
    stats: Stats
    responses: ResponseStore  # stored /v1/responses answers (previous_response_id)
    #: the price savings are measured against (``telemetry.reference_backend``; None: no savings)
    reference_price: TokenPrice | None = None
    auth_required: bool = False
    #: some rule reads ``budget_remaining``: only then is it fetched (one store round trip)
    needs_budget_fact: bool = False
    #: the agent APIs some backend serves natively (``speaks``): only then does a surface hand
    #: the pipeline its own body too
    native_apis: frozenset[str] = frozenset()
    spilling: set[str] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)
    sessions: StickySessions = field(default_factory=lambda: StickySessions())
    _starting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start load scraping in the background: serving never waits for a slow /metrics."""
        self._starting = asyncio.get_running_loop().create_task(self.load.start())

    async def close(self) -> None:
        await self.load.stop()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        await self.runtime.close()

    def heard(self, message: str) -> None:
        """An announcement from a gateway process (``share_placements``)."""
        kind, _, rest = message.partition("\t")
        pool_name, replica, head = rest.split("\t") if kind == _PLACED else ("", "", "")
        pool = self.runtime.backends.get(pool_name)
        if isinstance(pool, ReplicaPool) and len(head) == 32:
            pool.learn(bytes.fromhex(head), replica)

    def facts(self, body: ParsedBody, endpoint: Endpoint, headers: Mapping[str, str],
              team: str | None = None) -> tuple[RequestFacts, Scan]:
        return build_facts(body, endpoint, headers, self.runtime.scanner, self.runtime.loaded.policy.settings,
                           team)

    async def assess(self, body: ParsedBody, endpoint: Endpoint, headers: Mapping[str, str],
                     team: str | None = None) -> tuple[RequestFacts, Scan]:
        """``facts``, with the sensitivity scan of a body over ``OFF_LOOP_BYTES`` run in a worker
        thread, so one large request does not hold up every other request and probe."""
        if body.size <= OFF_LOOP_BYTES:
            return self.facts(body, endpoint, headers, team)
        return await asyncio.to_thread(self.facts, body, endpoint, headers, team)

    def plan(self, facts: RequestFacts, explain: bool = False, session: str | None = None) -> Plan:
        try:
            plan = self.runtime.planner.plan(facts, self.load.snapshot(), frozenset(self.spilling), self.rng,
                                             explain=explain)
        except UnknownAlias as exc:
            raise ModelNotFound(str(exc), param="model") from None
        if not explain:  # remember who is spilling, for the hysteresis of the next decision
            self.spilling.difference_update(plan.spill_checked - plan.spilling)
            self.spilling.update(plan.spilling)
        if session is not None and plan.targets:
            engine = self.engine
            plan = self.sessions.keep(plan, session, lambda name: not engine.spec(name).is_self_hosted,
                                      lambda name: engine.circuits[name].state is CircuitState.CLOSED)
        return plan


class StickySessions:
    """Closed providers keep their prompt caches warm: a session (a client's conversation key)
    that a closed backend answered is sent to the same closed backend next time, as long as it
    is still among the plan's targets and its circuit is closed — it moves ahead of the other
    *closed* targets only; self-hosted targets keep their place. Per gateway process, the last
    ``SIZE`` sessions (least recently used first out)."""

    SIZE = 100_000

    def __init__(self) -> None:
        self._last: OrderedDict[str, str] = OrderedDict()

    def answered(self, session: str, backend: str) -> None:
        self._last[session] = backend
        self._last.move_to_end(session)
        if len(self._last) > self.SIZE:
            self._last.popitem(last=False)

    def keep(self, plan: Plan, session: str, is_closed: Callable[[str], bool], healthy: Callable[[str], bool]) -> Plan:
        """``plan`` with the session's last closed backend first among the closed targets."""
        backend = self._last.get(session)
        if backend is None or backend not in plan.targets or not healthy(backend):
            return plan
        closed = [t for t in plan.targets if is_closed(t)]
        if not closed or closed[0] == backend or backend not in closed:
            return plan
        order = iter([backend, *(t for t in closed if t != backend)])
        return dataclasses.replace(plan, targets=tuple(next(order) if is_closed(t) else t for t in plan.targets))


async def open_gateway(loaded: LoadedPolicy, session: aiohttp.ClientSession, store: Store,
                       previous: Gateway | None = None, telemetry: Telemetry | None = None,
                       stats: Stats | None = None, deadline: Deadline | None = None) -> Gateway:
    """Build and start the serving state for ``loaded`` (see ``build_gateway``)."""
    gateway = build_gateway(build_runtime(loaded, session), store, previous=previous, telemetry=telemetry,
                            stats=stats, stored_keys=await _store_has_keys(store), deadline=deadline)
    if not gateway.auth_required:
        log.warning("NO VIRTUAL KEYS CONFIGURED: this gateway is OPEN — anyone who can reach it can use it. "
                    "Add teams.<team>.keys to the policy or create keys with `switchyard keys create`.")
    share_placements(gateway, store)
    gateway.start()
    return gateway


#: An announcement of a pool's new conversation: ``pool<TAB>replica id<TAB>head (hex)``.
_PLACED = "placed"


def share_placements(gateway: Gateway, store: Store) -> None:
    """Tell the other gateway processes (through the store) where this one placed a pool's new
    conversations, and learn theirs — so a conversation's later turns reach its replica from
    any process (``backends.pool``); with the memory store it is one process and nothing moves."""
    for name, backend in gateway.runtime.backends.items():
        if isinstance(backend, ReplicaPool):
            backend.announce = functools.partial(_announce, store, name)
    store.on_announcement = gateway.heard


def _announce(store: Store, pool: str, head: bytes, replica: str) -> None:
    store.announce(f"{_PLACED}\t{pool}\t{replica}\t{head.hex()}")


def build_gateway(runtime: Runtime, store: Store, *, previous: Gateway | None = None,
                  telemetry: Telemetry | None = None, stats: Stats | None = None,
                  stored_keys: bool = False, deadline: Deadline | None = None) -> Gateway:
    """The serving state over ``runtime`` (not started). Circuit state carries over from
    ``previous`` for backends whose name and circuit settings did not change; so do its
    telemetry, counters and drain deadline (one per process). ``stored_keys``: the store
    holds virtual keys."""
    loaded = runtime.loaded
    telemetry = telemetry or (previous.telemetry if previous else Telemetry(enabled=False))
    stats = stats or (previous.stats if previous else Stats(store))
    specs = {name: loaded.policy.backends[name].circuit for name in runtime.backends}
    circuits = Circuits(specs, carry=previous.engine.circuits if previous else None)
    settings = loaded.policy.settings
    load = LoadMonitor(runtime.backends, interval_s=settings.load_scrape_interval_s,
                       stale_after_s=settings.load_stale_after_s)
    keys, limits = KeyRing(loaded.policy, store), RateLimiter(loaded.policy, store)
    budgets, cache = Budgets(loaded.policy, store), ResponseCache(loaded.policy.cache, store)
    if isinstance(store, MemoryStore):  # Redis caps its own memory (maxmemory)
        store.max_blob_bytes = int(loaded.policy.cache.max_memory_mb * 1024 * 1024)
    telemetry.record_content = loaded.policy.telemetry.record_content
    deadline = deadline or (previous.engine.deadline if previous else None)
    sessions = previous.sessions if previous is not None else StickySessions()  # kept across reloads
    return Gateway(runtime, Engine(runtime, circuits, load, telemetry, deadline), load, keys, limits, budgets, cache,
                   Gatekeeper(store, limits, budgets, cache), telemetry, stats,
                   ResponseStore(store, settings.responses_ttl_s),
                   reference_price(loaded.policy, runtime.planner.prices),
                   auth_required=keys.has_policy_keys or stored_keys,
                   needs_budget_fact=any("budget_remaining" in r.condition.facts for r in loaded.rules),
                   native_apis=frozenset(api for name in runtime.backends
                                         for api in loaded.policy.backends[name].speaks),
                   sessions=sessions)


def reference_price(policy: Policy, prices: dict[str, TokenPrice]) -> TokenPrice | None:
    """``telemetry.reference_backend``'s price, else the first closed backend's with a known price."""
    name = policy.telemetry.reference_backend
    if name is None:
        name = next((n for n, spec in policy.backends.items()
                     if not spec.is_self_hosted and prices[n].source != "unknown"), None)
    price = prices.get(name) if name is not None else None
    return price if price is not None and price.source != "unknown" else None


async def _store_has_keys(store: Store) -> bool:
    try:
        return bool(await store.list_keys())
    except StoreUnavailable:
        return True  # cannot tell: fail closed, require keys

