"""No open admin by accident (issue 11, item 4): every route declares its access level in
``router.routes.ACCESS``, and each level holds in each way a gateway can be keyed (open, team
keys without an admin key, a dashboard key alone, an admin key); ``explain?team=`` only for
the admin key or the caller's own team; unknown keys cost the store one lookup per TTL;
revoking by id needs at least 8 characters (admin API and CLI)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets

import aiohttp
import pytest

from policies import load_policy_text
from router.app import create_app
from router.keyscli import run_keys
from router.routes import ACCESS, Access
from router.runtime import KIND_TABLE
from router.settings import Settings
from router.state.keys import create_key
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from tests.e2e.test_gateway_sdk import MESSAGES, local

REDIS = "redis://127.0.0.1:6379/0"
ADMIN, READER = "admin-" + secrets.token_hex(12), "dash-" + secrets.token_hex(12)
SEARCH_KEY, BATCH_KEY = "sk-search-" + secrets.token_hex(8), "sk-batch-" + secrets.token_hex(8)

#: One request per admin route (a body that is valid enough to get past auth).
ADMIN_CALLS = [("GET", "/admin/backends", None), ("GET", "/admin/policy", None),
               ("POST", "/admin/policy/reload", None), ("POST", "/admin/keys", {"team": "nope"}),
               ("GET", "/admin/spend?team=search", None), ("GET", "/admin/keys", None),
               ("DELETE", "/admin/keys/abcdef123456", None)]
DASHBOARD_CALLS = [("GET", "/metrics", None), ("GET", "/dashboard/data?minutes=5", None)]
CANONICAL = {"/admin/keys/abcdef123456": "/admin/keys/{id}"}


@pytest.fixture(autouse=True)
async def _deadline():
    async with asyncio.timeout(30):
        yield


def keyed(fake, keys: bool = True) -> str:
    teams = (f'teams:\n  search: {{keys: ["{SEARCH_KEY}"]}}\n  batch: {{keys: ["{BATCH_KEY}"]}}\n' if keys
             else "teams:\n  search: {}\n  batch: {}\n")
    return f"version: 1\nbackends:\n  gpu: {local(fake)}\nmodels:\n  chat: {{targets: [gpu]}}\n{teams}"


async def call(url: str, method: str, path: str, body: dict | None = None, key: str | None = None,
               ) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.request(method, url + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None) if r.content_type == "application/json" else {}


# -- the table --------------------------------------------------------------------------------------

def test_every_route_of_the_app_declares_its_access_level() -> None:
    """Walk the app's router: a route added without an entry in ``ACCESS`` fails here."""
    loaded = load_policy_text("version: 1\nbackends:\n  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', "
                              "model: m}\nmodels:\n  chat: {targets: [gpu]}\n", {}, kinds=KIND_TABLE)
    app = create_app(Settings(access_log=False), loaded)
    paths = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
    assert paths, "no routes?"
    missing = sorted(p for p in paths if p not in ACCESS)
    assert not missing, f"routes without an access level in router.routes.ACCESS: {missing}"
    assert all(ACCESS[p] is Access.ADMIN for p in paths if p.startswith("/admin"))
    assert all(ACCESS[p] in (Access.CLIENT, Access.CLIENT_OR_ADMIN) for p in paths if p.startswith("/v1/"))
    assert {ACCESS["/metrics"], ACCESS["/dashboard/data"]} == {Access.DASHBOARD}
    # the mode test below calls every admin and dashboard route: a new one must join its lists
    guarded = {(route.method, route.resource.canonical) for route in app.router.routes()
               if route.resource is not None and route.method != "HEAD"
               and ACCESS[route.resource.canonical] in (Access.ADMIN, Access.DASHBOARD)}
    called = {(method, CANONICAL.get(path.split("?")[0], path.split("?")[0]))
              for method, path, _ in ADMIN_CALLS + DASHBOARD_CALLS}
    assert guarded == called


# -- each level in each mode ------------------------------------------------------------------------

MODES = {  # name: (team keys in the policy, admin key, dashboard key)
    "open": (False, None, None),
    "keys-no-admin-key": (True, None, None),
    "keys-dashboard-key-only": (True, None, READER),
    "keys-and-admin-key": (True, ADMIN, None),
    "admin-key-no-keys": (False, ADMIN, READER),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_admin_and_dashboard_paths_in_each_mode(gateway, fake_openai, caplog, mode) -> None:
    caplog.set_level(logging.INFO)
    keys, admin_key, dashboard_key = MODES[mode]
    url = await gateway(keyed(fake_openai, keys), settings=Settings(access_log=False, admin_key=admin_key,
                                                                   dashboard_key=dashboard_key))
    is_open = mode == "open"
    for method, path, body in ADMIN_CALLS:
        for key in (None, "wrong-" + secrets.token_hex(8), READER, SEARCH_KEY):
            status, answer = await call(url, method, path, body, key)
            if is_open and not path.startswith("/admin/keys"):
                assert status != 401, (path, key, answer)
            else:
                assert status == 401, (path, key, answer)
                want = "invalid_admin_key" if admin_key else "admin_key_not_set"
                assert answer["error"]["code"] == want, (path, answer)
        if admin_key:
            status, answer = await call(url, method, path, body, admin_key)
            assert status != 401, (path, answer)
    for method, path, body in DASHBOARD_CALLS:
        for key in (None, "wrong-" + secrets.token_hex(8), SEARCH_KEY):
            status, answer = await call(url, method, path, body, key)
            assert (status != 401) if is_open else (status == 401), (mode, path, key, answer)
        for key in (admin_key, dashboard_key):
            if key:
                status, answer = await call(url, method, path, body, key)
                assert status == 200, (path, answer)
    status, _ = await call(url, "GET", "/healthz")
    assert status == 200  # public in every mode
    if is_open:
        assert "ADMIN API OPEN" in caplog.text and "SWITCHYARD_ADMIN_KEY" in caplog.text
    elif admin_key is None:
        assert "refuses every request: no admin key is set. Set SWITCHYARD_ADMIN_KEY" in caplog.text


async def test_an_unknown_path_under_admin_says_nothing_without_the_key(gateway, fake_openai) -> None:
    url = await gateway(keyed(fake_openai), settings=Settings(access_log=False, admin_key=ADMIN))
    assert (await call(url, "GET", "/admin/nothing-here"))[0] == 401
    assert (await call(url, "GET", "/admin/nothing-here", key=ADMIN))[0] == 404


# -- explain?team= ----------------------------------------------------------------------------------

async def explain(url: str, query: str = "", key: str | None = None) -> tuple[int, dict]:
    return await call(url, "POST", "/v1/route/explain" + query, {"model": "chat", "messages": MESSAGES}, key)


async def test_explain_for_another_team_needs_the_admin_key(gateway, fake_openai) -> None:
    url = await gateway(keyed(fake_openai), settings=Settings(access_log=False, admin_key=ADMIN))
    status, body = await explain(url, "", SEARCH_KEY)
    assert status == 200 and body["facts"]["team"] == "search"  # by default: the caller's own team
    status, body = await explain(url, "?team=search", SEARCH_KEY)
    assert status == 200 and body["facts"]["team"] == "search"
    status, body = await explain(url, "?team=batch", SEARCH_KEY)
    assert status == 403 and body["error"]["type"] == "permission_error" and body["error"]["param"] == "team"
    status, body = await explain(url, "?team=batch", ADMIN)
    assert status == 200 and body["facts"]["team"] == "batch"
    assert (await explain(url, "?team=batch"))[0] == 401
    assert (await explain(url, "?team=batch", READER))[0] == 401


async def test_explain_for_any_team_while_the_gateway_is_open(gateway, fake_openai) -> None:
    url = await gateway(keyed(fake_openai, keys=False))
    status, body = await explain(url, "?team=batch")
    assert status == 200 and body["facts"]["team"] == "batch"


# -- unknown keys and the store ---------------------------------------------------------------------

async def test_repeated_unknown_keys_hit_the_store_once_per_ttl(gateway, fake_openai, monkeypatch) -> None:
    lookups: list[str] = []
    original = MemoryStore.get_key

    async def counting(self, key_hash):  # type: ignore[no-untyped-def]
        lookups.append(key_hash)
        return await original(self, key_hash)

    monkeypatch.setattr(MemoryStore, "get_key", counting)
    url = await gateway(keyed(fake_openai))
    bogus = "sk-sy-" + secrets.token_urlsafe(24)
    for _ in range(20):
        status, body = await call(url, "POST", "/v1/chat/completions", {"model": "chat", "messages": MESSAGES},
                                  bogus)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert len(lookups) == 1  # the other 19 were refused from the negative cache
    status, _ = await call(url, "POST", "/v1/chat/completions", {"model": "chat", "messages": MESSAGES}, SEARCH_KEY)
    assert status == 200 and len(lookups) == 1  # policy keys never ask the store


# -- revoking by id ---------------------------------------------------------------------------------

@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_revoking_by_id_needs_eight_characters_admin_api(gateway, fake_openai, redis) -> None:
    settings = Settings(access_log=False, admin_key=ADMIN, **({"redis_url": REDIS} if redis else {}))
    url = await gateway(keyed(fake_openai), settings=settings)
    status, created = await call(url, "POST", "/admin/keys", {"team": "batch"}, ADMIN)
    assert status == 201
    status, body = await call(url, "DELETE", f"/admin/keys/{created['id'][:7]}", key=ADMIN)
    assert status == 400 and body["error"]["param"] == "id" and "at least 8" in body["error"]["message"]
    assert (await call(url, "POST", "/v1/chat/completions", {"model": "chat", "messages": MESSAGES},
                       created["key"]))[0] == 200  # still valid
    status, body = await call(url, "DELETE", f"/admin/keys/{created['id'][:8]}", key=ADMIN)
    assert status == 200 and body == {"id": created["id"], "revoked": True}


def test_revoking_by_id_needs_eight_characters_cli(capsys) -> None:
    async def make() -> str:
        store = RedisStore(REDIS, timeout_s=2.0)
        try:
            _, record = await create_key(store, "cli-team", "prefix-test")
        finally:
            await store.close()
        return record.key_hash

    key_hash = asyncio.run(make())
    args = argparse.Namespace(redis_url=REDIS, keys_command="revoke", id=key_hash[:7])
    assert run_keys(args, {}) == 1
    assert "at least 8" in capsys.readouterr().err
    args.id = key_hash[:8]
    assert run_keys(args, {}) == 0
    assert capsys.readouterr().out.strip() == f"revoked {key_hash[:12]}"
