"""Every HTTP route of the gateway, and who may call it, in one table each.

``routes()`` is what the app serves (the dashboard adds its own pages:
``router.dashboard.routes``); ``ACCESS`` says, for every route path, which caller the
``authenticate`` middleware lets in. A route with no entry is refused to all but the admin
key (fail closed), and a test walks the app's router so that a new route without one fails.

Levels::

    public           anyone: liveness, the readiness summary, the API document, the dashboard
                     page and its assets (they hold no data; the page asks for a key)
    client           a virtual key → its team; anyone while the gateway is open (no keys at all)
    client_or_admin  as client, or the admin key (``/v1/route/explain?team=`` for any team)
    dashboard        the read-only dashboard key or the admin key (``/metrics``, dashboard data)
    admin            the admin key (``/admin/*``)

"Open" means no credential of any kind is configured (no virtual key, no admin key, no
dashboard key): the quick start, where every level is open except key management. As soon
as one virtual key exists, admin paths need the admin key (401 ``admin_key_not_set`` while
none is set) and dashboard paths need the dashboard or the admin key.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

from aiohttp import web

__all__ = ["ACCESS", "Access", "access_of", "routes"]


class Access(StrEnum):
    PUBLIC = "public"
    CLIENT = "client"
    CLIENT_OR_ADMIN = "client_or_admin"
    DASHBOARD = "dashboard"
    ADMIN = "admin"


def routes() -> list[web.RouteDef]:
    # Handlers are imported here: they import the middlewares, which import ``ACCESS``.
    from router import admin, openapi, probes
    from router.surfaces import agents, openai

    return [
        web.post("/v1/chat/completions", openai.chat_completions),
        web.post("/v1/completions", openai.completions),
        web.post("/v1/embeddings", openai.embeddings),
        web.post("/v1/messages", agents.messages),
        web.post("/v1/messages/count_tokens", agents.count_tokens),
        web.post("/v1/responses", agents.create_response),
        web.get("/v1/responses/{id}", agents.get_response, allow_head=False),
        web.delete("/v1/responses/{id}", agents.delete_response),
        web.get("/", probes.root),
        web.post("/v1/route/explain", openai.explain),
        web.get("/v1/models", openai.models),
        web.get("/healthz", probes.healthz),
        web.get("/readyz", probes.readyz),
        web.get("/openapi.json", openapi.openapi_json),
        web.get("/admin/backends", admin.admin_backends),
        web.get("/admin/policy", admin.admin_policy),
        web.post("/admin/policy/reload", admin.admin_reload),
        web.post("/admin/keys", admin.admin_create_key),
        web.get("/admin/spend", admin.admin_spend),
        web.get("/admin/keys", admin.list_keys),
        web.delete("/admin/keys/{id}", admin.revoke_key),
    ]


#: Who may call each route, by its path as registered (``resource.canonical``).
ACCESS = MappingProxyType({
    "/v1/chat/completions": Access.CLIENT,
    "/v1/completions": Access.CLIENT,
    "/v1/embeddings": Access.CLIENT,
    "/v1/messages": Access.CLIENT,
    "/v1/messages/count_tokens": Access.CLIENT,
    "/v1/responses": Access.CLIENT,
    "/v1/responses/{id}": Access.CLIENT,
    "/": Access.PUBLIC,  # agents probe their base URL (Claude Code sends HEAD /)
    "/v1/route/explain": Access.CLIENT_OR_ADMIN,
    "/v1/models": Access.CLIENT,
    "/healthz": Access.PUBLIC,
    "/readyz": Access.PUBLIC,  # ready or not; the details for the admin key (router.probes)
    "/openapi.json": Access.PUBLIC,
    "/metrics": Access.DASHBOARD,  # Prometheus scrapes with the dashboard key (docs/operations.md)
    "/dashboard": Access.PUBLIC,
    "/dashboard/": Access.PUBLIC,
    "/dashboard/assets/{name}": Access.PUBLIC,
    "/dashboard/data": Access.DASHBOARD,
    "/admin/backends": Access.ADMIN,
    "/admin/policy": Access.ADMIN,
    "/admin/policy/reload": Access.ADMIN,
    "/admin/keys": Access.ADMIN,
    "/admin/spend": Access.ADMIN,
    "/admin/keys/{id}": Access.ADMIN,
})


def access_of(request: web.Request) -> Access:
    """The level of the route ``request`` matched; a path that matched none (a 404 or 405 to
    come) gets its prefix's level, so that probing ``/admin/…`` without the key says nothing."""
    resource = request.match_info.route.resource
    if resource is not None:
        return ACCESS.get(resource.canonical, Access.ADMIN)
    path = request.path
    if path.startswith("/v1/"):
        return Access.CLIENT
    if path.startswith("/admin/") or path == "/admin":
        return Access.ADMIN
    return Access.PUBLIC
