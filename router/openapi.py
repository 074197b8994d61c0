"""The gateway's own HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``
(public: it holds no secret).

One path item per route of ``router.routes`` and ``router.dashboard`` (a test walks the
app's router, so a route missing here fails CI). Each operation's ``security`` follows the
route's access level in ``router.routes.ACCESS``. Request bodies describe the fields the
gateway reads and checks (``router.body``) with the constraints it enforces; every other
field is allowed and passes through. Answers and errors have their schemas (errors are
OpenAI-shaped everywhere). The names a client must pick from — model aliases, teams,
sensitivity levels — and ``settings.max_n`` come from the live policy, so the document is
built for the policy being served (``document(policy)``): an alias is an ``enum`` of the
configured names (any other is a documented 404).

Must stay data: no handler logic beyond serialising the document.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from aiohttp import web

from policies import LEVELS, Policy
from router.body import INT32_MAX
from router.reload import SERVING
from router.routes import ACCESS, Access

__all__ = ["OPERATIONS", "document", "openapi_json"]

Json = dict[str, Any]
_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _count(low: int = 0, high: int = INT32_MAX) -> Json:
    return {"type": "integer", "minimum": low, "maximum": high}


def _names(names: list[str], what: str) -> Json:
    """One of ``names`` (the live policy's); any other value is answered with a 4xx."""
    return {"type": "string", "enum": names, "description": what} if names else \
        {"type": "string", "minLength": 1, "description": what}


_SECURITY: dict[Access, list[Json]] = {
    Access.PUBLIC: [],
    Access.CLIENT: [{"virtualKey": []}, {"virtualKeyHeader": []}],
    Access.CLIENT_OR_ADMIN: [{"virtualKey": []}, {"virtualKeyHeader": []}, {"adminKey": []}],
    Access.DASHBOARD: [{"dashboardKey": []}, {"adminKey": []}],
    Access.ADMIN: [{"adminKey": []}],
}

_SECURITY_SCHEMES: Json = {
    "virtualKey": {"type": "http", "scheme": "bearer",
                   "description": "A virtual key (a team's). Not needed while the gateway is open (no credential "
                                  "of any kind configured): the quick start."},
    "virtualKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                         "description": "A virtual key in `x-api-key` (as Anthropic's SDKs send it)."},
    "adminKey": {"type": "http", "scheme": "bearer", "description": "`SWITCHYARD_ADMIN_KEY`."},
    "dashboardKey": {"type": "http", "scheme": "bearer",
                     "description": "`SWITCHYARD_DASHBOARD_KEY` (read-only: metrics and dashboard data)."},
}

_RESPONSE_HEADERS: Json = {
    "x-request-id": {"description": "The client's `x-request-id` (≤ 128 printable characters) or a new id.",
                     "schema": {"type": "string"}},
    "x-switchyard-backend": {"description": "The policy backend that answered, or `none`.",
                             "schema": {"type": "string"}},
    "x-switchyard-route": {"description": "The alias used, or `none`.", "schema": {"type": "string"}},
    "x-switchyard-rule": {"description": "The policy rule that decided the route.", "schema": {"type": "string"}},
    "x-switchyard-tried": {"description": "Backends that failed before the one that answered, in order.",
                           "schema": {"type": "string"}},
    "x-switchyard-cost-usd": {"description": "Actual cost of a non-streaming answer (reporting view).",
                              "schema": {"type": "string"}},
    "x-switchyard-cache": {"description": "`hit`, `miss` or `bypass` (when the cache is on).",
                           "schema": {"type": "string", "enum": ["hit", "miss", "bypass"]}},
}


def _schemas(policy: Policy) -> Json:
    aliases = _names(sorted(policy.models), "A model alias of this gateway's policy (`GET /v1/models`); "
                                            "an unknown one is a 404 `model_not_found`.")
    max_n = policy.settings.max_n
    common: Json = {
        "model": aliases,
        "stream": {"type": "boolean", "description": "Answer as server-sent events."},
        "stream_options": {"type": ["object", "null"],
                           "properties": {"include_usage": {"type": "boolean"}}},
        "n": {**_count(1, max_n), "description": "Answers to generate (at most `settings.max_n`)."},
        "max_tokens": _count(),
        "max_completion_tokens": _count(),
        "seed": _INT64,
        "temperature": {"type": ["number", "null"]},
        "top_p": {"type": ["number", "null"]},
        "presence_penalty": {"type": ["number", "null"]},
        "frequency_penalty": {"type": ["number", "null"]},
        "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "user": {"type": ["string", "null"]},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "metadata": {"type": ["object", "null"]},
    }
    return {
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["message", "type"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
            "description": "Every error, in OpenAI's shape. Messages never hold a credential or an internal "
                           "address.",
        },
        "ContentPart": {
            "type": "object", "required": ["type"], "additionalProperties": True,
            "description": "A part of a message's content. Image URLs: see docs/api.md (what each backend "
                           "kind does with them; the gateway itself never fetches a URL).",
            "properties": {
                "type": {"type": "string", "examples": ["text", "image_url", "input_audio", "file"]},
                "text": {"type": "string"},
                "image_url": {"type": "object", "required": ["url"],
                              "properties": {"url": {"type": "string"},
                                             "detail": {"type": "string", "enum": ["auto", "low", "high"]}}},
                "input_audio": {"type": "object", "properties": {"data": {"type": "string"},
                                                                 "format": {"type": "string"}}},
                "file": {"type": "object", "properties": {"file_id": {"type": "string"},
                                                          "file_data": {"type": "string"},
                                                          "filename": {"type": "string"}}},
            },
        },
        "ChatMessage": {
            "type": "object", "required": ["role"], "additionalProperties": True,
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _ref("ContentPart")},
                                      {"type": "null"}]},
                "name": {"type": "string"},
                "tool_call_id": {"type": "string"},
                "tool_calls": {"type": "array", "items": _ref("ToolCall")},
            },
        },
        "ToolCall": {
            "type": "object", "required": ["id", "type", "function"],
            "properties": {"id": {"type": "string"}, "type": {"const": "function"},
                           "function": {"type": "object", "required": ["name", "arguments"],
                                        "properties": {"name": {"type": "string"},
                                                       "arguments": {"type": "string"}}}},
        },
        "Tool": {
            "type": "object", "required": ["type", "function"], "additionalProperties": True,
            "properties": {"type": {"const": "function"},
                           "function": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string"},
                                                       "description": {"type": "string"},
                                                       "parameters": {"type": "object"},
                                                       "strict": {"type": ["boolean", "null"]}}}},
        },
        "ChatCompletionRequest": {
            "type": "object", "required": ["model", "messages"], "additionalProperties": True,
            "description": "OpenAI's chat completions body. Fields not listed pass through to self-hosted "
                           "backends untouched.",
            "properties": {
                **common,
                "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
                "tools": {"type": ["array", "null"], "items": _ref("Tool")},
                "tool_choice": {"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]},
                                          {"type": "object"}]},
                "parallel_tool_calls": {"type": "boolean"},
                "response_format": {"type": "object", "required": ["type"],
                                    "properties": {"type": {"type": "string",
                                                            "enum": ["text", "json_object", "json_schema"]},
                                                   "json_schema": {"type": "object"}}},
                "logprobs": {"type": ["boolean", "null"]},
                "top_logprobs": _count(),
                "best_of": {**_count(1, max_n), "description": "Servers that take it on chat (vLLM)."},
            },
        },
        "CompletionRequest": {
            "type": "object", "required": ["model", "prompt"], "additionalProperties": True,
            "properties": {
                **common,
                "prompt": {"anyOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    {"type": "array", "minItems": 1,
                     "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}]},
                "best_of": _count(1, max_n),
                "echo": {"type": "boolean"},
                "suffix": {"type": ["string", "null"]},
                "logprobs": _count(),
            },
        },
        "EmbeddingRequest": {
            "type": "object", "required": ["model", "input"], "additionalProperties": True,
            "properties": {
                "model": aliases,
                "input": {"anyOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    {"type": "array", "minItems": 1,
                     "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}]},
                "dimensions": _count(1),
                "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                "user": {"type": "string"},
                "stream": {"const": False, "description": "Embeddings cannot be streamed (400)."},
            },
        },
        "Usage": {
            "type": "object",
            "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                           "total_tokens": {"type": "integer"}},
        },
        "ChatCompletion": {
            "type": "object", "required": ["id", "object", "choices"],
            "properties": {
                "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
                "model": {"type": "string", "description": "The model that answered, as its upstream named it."},
                "choices": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"},
                                   "message": {"type": "object",
                                               "properties": {"role": {"type": "string"},
                                                              "content": {"type": ["string", "null"]},
                                                              "tool_calls": {"type": "array",
                                                                             "items": _ref("ToolCall")}}},
                                   "finish_reason": {"type": ["string", "null"]}}}},
                "usage": _ref("Usage"),
            },
        },
        "Completion": {
            "type": "object", "required": ["id", "object", "choices"],
            "properties": {
                "id": {"type": "string"}, "object": {"const": "text_completion"}, "model": {"type": "string"},
                "choices": {"type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "text": {"type": "string"},
                    "finish_reason": {"type": ["string", "null"]}}}},
                "usage": _ref("Usage"),
            },
        },
        "EmbeddingList": {
            "type": "object", "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"}, "model": {"type": "string"},
                "data": {"type": "array", "items": {"type": "object", "properties": {
                    "object": {"const": "embedding"}, "index": {"type": "integer"},
                    "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}},
                "usage": _ref("Usage"),
            },
        },
        "ModelList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"const": "list"},
                           "data": {"type": "array", "items": {"type": "object", "required": ["id"], "properties": {
                               "id": {"type": "string"}, "object": {"const": "model"},
                               "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}},
        },
        "Explanation": {
            "type": "object", "required": ["facts", "rules", "decision", "candidates"],
            "description": "Why a chat request would go where it goes (docs/policy.md). Calls no backend.",
            "properties": {"facts": {"type": "object"}, "decision": {"type": "object"},
                           "rules": {"type": "array", "items": {"type": "object"}},
                           "candidates": {"type": "array", "items": {"type": "object"}}},
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}},
                   "additionalProperties": True},
        "NewKey": {
            "type": "object", "required": ["team"], "additionalProperties": True,
            "properties": {"team": _names(sorted(policy.teams), "A team of the policy."),
                           "name": {"type": "string"},
                           "expires_in_s": {"type": "number", "exclusiveMinimum": 0},
                           "budget_monthly_usd": {"type": "number", "exclusiveMinimum": 0}},
        },
        "CreatedKey": {
            "type": "object", "required": ["key", "id", "team"],
            "properties": {"key": {"type": "string", "description": "Shown only here."}, "id": {"type": "string"},
                           "team": {"type": "string"}, "name": {"type": "string"},
                           "expires_at": {"type": ["number", "null"]},
                           "budget_monthly_usd": {"type": ["number", "null"]}},
        },
        "Object": {"type": "object", "additionalProperties": True},
        **_agent_schemas(aliases),
    }


def _agent_schemas(aliases: Json) -> Json:
    """Anthropic's Messages and OpenAI's Responses (docs/api.md: what is translated, dropped, refused)."""
    text_or_blocks = {"anyOf": [{"type": "string"}, {"type": "array", "items": _ref("Object")}]}
    messages: Json = {
        "type": "object", "required": ["model", "max_tokens", "messages"], "additionalProperties": True,
        "description": "Anthropic's Messages request, translated to chat completions (docs/api.md).",
        "properties": {
            "model": aliases, "max_tokens": _count(1), "stream": {"type": "boolean"},
            "system": text_or_blocks, "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "temperature": {"type": "number"}, "top_p": {"type": "number"},
            "tools": {"type": "array", "items": _ref("Object")}, "tool_choice": _ref("Object"),
            "metadata": {"type": "object"},
            "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role", "content"],
                "properties": {"role": {"type": "string", "enum": ["user", "assistant", "system"]},
                               "content": text_or_blocks}}}}}
    counting = {**messages, "required": ["model", "messages"],
                "description": "A Messages request without `max_tokens`: its input tokens are estimated."}
    return {
        "MessagesRequest": messages,
        "CountTokensRequest": counting,
        "Message": {"type": "object", "required": ["id", "type", "role", "content", "stop_reason", "usage"],
                    "properties": {"id": {"type": "string"}, "type": {"const": "message"},
                                   "role": {"const": "assistant"}, "model": {"type": "string"},
                                   "content": {"type": "array", "items": _ref("Object")},
                                   "stop_reason": {"type": ["string", "null"]}, "usage": _ref("Object")}},
        "TokenCount": {"type": "object", "required": ["input_tokens"],
                       "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
        "AnthropicError": {
            "type": "object", "required": ["type", "error"],
            "description": "Every error on /v1/messages*, in Anthropic's shape.",
            "properties": {"type": {"const": "error"}, "request_id": {"type": "string"},
                           "error": {"type": "object", "required": ["type", "message"],
                                     "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
        "ResponsesRequest": {
            "type": "object", "required": ["model", "input"], "additionalProperties": True,
            "description": "OpenAI's Responses request, translated to chat completions (docs/api.md).",
            "properties": {
                "model": aliases, "input": {"anyOf": [{"type": "string"},
                                                      {"type": "array", "items": _ref("Object")}]},
                "instructions": {"type": ["string", "null"]}, "stream": {"type": "boolean"},
                "store": {"type": "boolean"}, "previous_response_id": {"type": ["string", "null"]},
                "max_output_tokens": {**_count(1), "type": ["integer", "null"]},
                "temperature": {"type": ["number", "null"]}, "top_p": {"type": ["number", "null"]},
                "tools": {"type": "array", "items": _ref("Object")},
                "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}},
        "Response": {"type": "object", "required": ["id", "object", "status", "output"],
                     "properties": {"id": {"type": "string"}, "object": {"const": "response"},
                                    "status": {"type": "string"}, "model": {"type": "string"},
                                    "output": {"type": "array", "items": _ref("Object")},
                                    "usage": {"type": ["object", "null"]}}},
        "ResponseDeleted": {"type": "object", "required": ["id", "deleted"],
                            "properties": {"id": {"type": "string"}, "object": {"type": "string"},
                                           "deleted": {"type": "boolean"}}},
    }


def _json(schema: str, description: str = "OK", headers: bool = False) -> Json:
    response: Json = {"description": description,
                      "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in _RESPONSE_HEADERS}
    return response


def _errors(*statuses: int) -> Json:
    """Error responses: ``statuses`` named, every other one as ``default``."""
    words = {400: "Invalid request (`param` names the field)", 401: "Missing or wrong key",
             403: "Refused by a rule or for this key", 404: "Unknown model alias or resource",
             413: "Body over `settings.max_body_mb`", 422: "Rejected", 429: "Rate limit or budget used up",
             503: "Nothing can serve it now (overloaded, no allowed backend, store down)"}
    out: Json = {str(s): _json("Error", words[s]) for s in statuses}
    out["default"] = _json("Error", "Any other error (502/504: every upstream failed or timed out)")
    return out


_GEN_HEADERS: list[Json] = [
    {"name": "x-switchyard-sensitivity", "in": "header", "required": False,
     "description": "Raise the request's sensitivity level (never lower it); another value is a 400.",
     "schema": {"type": "string", "enum": list(LEVELS)}},
    {"name": "x-switchyard-tags", "in": "header", "required": False,
     "description": "Comma-separated tags for the policy's rules.", "schema": {"type": "string"}},
    {"name": "Cache-Control", "in": "header", "required": False,
     "description": "`no-cache`: not from the cache; `no-store`: not into it either.",
     "schema": {"type": "string"}},
]


def _generation(summary: str, body: str, answer: str, streams: bool) -> Json:
    content: Json = {"application/json": {"schema": _ref(answer)}}
    if streams:
        content["text/event-stream"] = {"schema": {
            "type": "string", "description": "With `stream: true`: `data: {chunk}` events, then `data: [DONE]` "
                                             "(an error event before it if the stream broke)."}}
    ok = {"description": "The answer", "content": content,
          "headers": {name: {"$ref": f"#/components/headers/{name}"} for name in _RESPONSE_HEADERS}}
    return {"summary": summary, "parameters": _GEN_HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
            "responses": {"200": ok, **_errors(400, 401, 403, 404, 413, 429, 503)}}


def _anthropic(summary: str, body: str, answer: str, streams: bool) -> Json:
    """A /v1/messages* operation: its errors in Anthropic's shape."""
    operation = _generation(summary, body, answer, streams)
    if streams:
        operation["responses"]["200"]["content"]["text/event-stream"]["schema"]["description"] = (
            "With `stream: true`: Anthropic's events (`message_start` … `message_stop`; an `error` event if the "
            "stream broke).")
    for status, response in operation["responses"].items():
        if status != "200":
            response["content"]["application/json"]["schema"] = _ref("AnthropicError")
    return operation


def _path_id(description: str) -> Json:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, schema: Json, required: bool = False, description: str = "") -> Json:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _text(media: str, description: str) -> Json:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


#: ``(method, path) → operation`` for every route the app serves (HEAD comes with GET).
OPERATIONS: dict[tuple[str, str], Json] = {
    ("post", "/v1/chat/completions"): _generation("Chat completion (JSON or SSE)", "ChatCompletionRequest",
                                                  "ChatCompletion", streams=True),
    ("post", "/v1/completions"): _generation("Text completion (JSON or SSE)", "CompletionRequest", "Completion",
                                             streams=True),
    ("post", "/v1/embeddings"): _generation("Embeddings", "EmbeddingRequest", "EmbeddingList", streams=False),
    ("post", "/v1/route/explain"): {
        "summary": "Why a chat request would go where it goes (calls no backend)",
        "parameters": [{"$ref": "#/components/parameters/team"}, *_GEN_HEADERS],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}}},
        "responses": {"200": _json("Explanation"), **_errors(400, 401, 403, 404, 413, 429)}},
    ("post", "/v1/messages"): _anthropic("Anthropic Messages (JSON or SSE events), translated to chat",
                                         "MessagesRequest", "Message", streams=True),
    ("post", "/v1/messages/count_tokens"): _anthropic("The gateway's input-token estimate for a Messages body",
                                                      "CountTokensRequest", "TokenCount", streams=False),
    ("post", "/v1/responses"): _generation("OpenAI Responses (JSON or typed SSE events), translated to chat",
                                           "ResponsesRequest", "Response", streams=True),
    ("get", "/v1/responses/{id}"): {"summary": "A stored response of the caller's team",
                                    "parameters": [_path_id("A response id (`resp_…`).")],
                                    "responses": {"200": _json("Response"), **_errors(401, 404, 503)}},
    ("delete", "/v1/responses/{id}"): {"summary": "Delete a stored response of the caller's team",
                                       "parameters": [_path_id("A response id (`resp_…`).")],
                                       "responses": {"200": _json("ResponseDeleted"), **_errors(401, 404, 503)}},
    ("get", "/"): {"summary": "What this service is and where this document is",
                   "responses": {"200": _json("Object")}},
    ("get", "/v1/models"): {"summary": "The policy's model aliases",
                            "responses": {"200": _json("ModelList"), **_errors(401)}},
    ("get", "/healthz"): {"summary": "Liveness", "responses": {"200": _json("Status")}},
    ("get", "/readyz"): {"summary": "Readiness (details with the admin key)",
                         "responses": {"200": _json("Status", "Ready"), "503": _json("Status", "Not ready")}},
    ("get", "/openapi.json"): {"summary": "This document",
                               "responses": {"200": _json("Object", "OpenAPI 3.1 document")}},
    ("get", "/metrics"): {"summary": "Prometheus metrics",
                          "responses": {"200": _text("text/plain", "Prometheus text format"), **_errors(401)}},
    ("get", "/dashboard"): {"summary": "The dashboard page", "responses": {"200": _text("text/html", "HTML")}},
    ("get", "/dashboard/"): {"summary": "The dashboard page", "responses": {"200": _text("text/html", "HTML")}},
    ("get", "/dashboard/assets/{name}"): {
        "summary": "A file of the dashboard page",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The file"}, **_errors(404)}},
    ("get", "/dashboard/data"): {
        "summary": "The dashboard's JSON",
        "parameters": [_query("minutes", {"type": "integer", "minimum": 1, "maximum": 90 * 1440},
                              description="Window, default 60.")],
        "responses": {"200": _json("Object"), **_errors(400, 401, 503)}},
    ("get", "/admin/backends"): {"summary": "Backends, circuits and load",
                                 "responses": {"200": _json("Object"), **_errors(401)}},
    ("get", "/admin/policy"): {"summary": "The active policy and its reloads",
                               "responses": {"200": _json("Object"), **_errors(401)}},
    ("post", "/admin/policy/reload"): {"summary": "Reload the policy file now",
                                       "responses": {"200": _json("Object"),
                                                     "422": _json("Object", "Invalid policy: the old one serves"),
                                                     **_errors(401)}},
    ("post", "/admin/keys"): {
        "summary": "Create a virtual key",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewKey")}}},
        "responses": {"201": _json("CreatedKey", "Created: the key is shown only here"),
                      **_errors(400, 401, 503)}},
    ("get", "/admin/keys"): {"summary": "Virtual keys (never the keys themselves)",
                             "parameters": [{"$ref": "#/components/parameters/team"}],
                             "responses": {"200": _json("Object"), **_errors(401, 503)}},
    ("delete", "/admin/keys/{id}"): {
        "summary": "Revoke a key (by id, at least 8 characters, or the key itself)",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json("Object"), **_errors(400, 401, 503)}},
    ("get", "/admin/spend"): {
        "summary": "A team's spend in the current UTC window",
        "parameters": [{"$ref": "#/components/parameters/teamRequired"},
                       _query("window", {"type": "string", "enum": ["day", "month"]})],
        "responses": {"200": _json("Object"), **_errors(400, 401, 503)}},
}


def document(policy: Policy) -> Json:
    """The OpenAPI 3.1 document of this gateway serving ``policy`` (a new object each time)."""
    paths: Json = {}
    for (method, path), operation in OPERATIONS.items():
        op = {**copy.deepcopy(operation), "operationId": _operation_id(method, path),
              "security": _SECURITY[ACCESS.get(path, Access.ADMIN)]}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard", "version": "1",
                 "description": "OpenAI-compatible LLM routing gateway. See docs/api.md."},
        "paths": paths,
        "components": {"schemas": _schemas(policy), "securitySchemes": _SECURITY_SCHEMES,
                       "headers": _RESPONSE_HEADERS,
                       "parameters": _parameters(policy)},
    }


def _parameters(policy: Policy) -> Json:
    team = _names(sorted(policy.teams), "A team of the policy.")
    return {"team": _query("team", team, description="A team of the policy (on explain: a team other than the "
                                                     "caller's needs the admin key)."),
            "teamRequired": _query("team", team, required=True, description="A team of the policy.")}


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.replace(".", "_").split("/") if w]
    return "_".join([method, *words, *(["index"] if path.endswith("/") else [])])


class Rendered:
    """The serialised document of the policy last served: built once per loaded policy (it
    costs ~0.8 ms, and ``/openapi.json`` is public), again after a reload."""

    __slots__ = ("_body", "_policy")

    def __init__(self) -> None:
        self._policy: Policy | None = None
        self._body = b""

    def body(self, policy: Policy) -> bytes:
        if policy is not self._policy:
            self._policy, self._body = policy, orjson.dumps(document(policy))
        return self._body


#: The app's ``Rendered`` (set by ``router.app.create_app``).
RENDERED = web.AppKey("openapi_rendered", Rendered)


async def openapi_json(request: web.Request) -> web.Response:
    policy = request.app[SERVING].gateway.runtime.loaded.policy
    return web.Response(body=request.app[RENDERED].body(policy), content_type="application/json")
