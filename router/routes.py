"""Every HTTP route of the gateway, in one table (the dashboard adds its own pages)."""

from __future__ import annotations

from aiohttp import web

from router import admin, probes
from router.surfaces import openai

__all__ = ["routes"]


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", openai.chat_completions),
        web.post("/v1/completions", openai.completions),
        web.post("/v1/embeddings", openai.embeddings),
        web.post("/v1/route/explain", openai.explain),
        web.get("/v1/models", openai.models),
        web.get("/healthz", probes.healthz),
        web.get("/readyz", probes.readyz),
        web.get("/admin/backends", admin.admin_backends),
        web.get("/admin/policy", admin.admin_policy),
        web.post("/admin/policy/reload", admin.admin_reload),
        web.post("/admin/keys", admin.admin_create_key),
        web.get("/admin/spend", admin.admin_spend),
        web.get("/admin/keys", admin.list_keys),
        web.delete("/admin/keys/{id}", admin.revoke_key),
    ]
