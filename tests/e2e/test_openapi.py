"""``GET /openapi.json`` (issue 11, item 6): a valid OpenAPI 3.1 document of the gateway's
own API that describes every route the app serves, with each route's security following
its access level, and the live policy's names (aliases, teams) in it."""

from __future__ import annotations

import aiohttp
import schemathesis
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from policies import load_policy_text
from router.app import create_app
from router.openapi import OPERATIONS, document
from router.routes import ACCESS, Access
from router.runtime import KIND_TABLE
from router.settings import Settings

POLICY = """version: 1
backends:
  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m}
models:
  chat-default: {targets: [gpu]}
  local-only: {targets: [gpu]}
teams:
  search: {}
settings: {max_n: 4}
"""


def loaded():
    return load_policy_text(POLICY, {}, kinds=KIND_TABLE)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document(loaded().policy)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # the OpenAPI 3.1 meta-schema (and JSON Schema 2020-12 for the schemas)
    schema = schemathesis.openapi.from_dict(doc)  # and schemathesis can build every operation from it
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS)


def test_a_broken_document_fails_the_validator() -> None:
    """The validator is not a rubber stamp: the same document with one bad reference fails."""
    doc = document(loaded().policy)
    doc["paths"]["/healthz"]["get"]["responses"]["200"] = {"content": {}}  # no description
    try:
        validate(doc)
    except OpenAPIValidationError:
        return
    raise AssertionError("an invalid document passed validation")


def test_every_route_of_the_app_is_in_the_document() -> None:
    """Walk the app's router: a route added without a path item in ``router.openapi`` fails here."""
    app = create_app(Settings(access_log=False), loaded())
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.method != "HEAD"}
    doc = document(loaded().policy)
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served == described, {"not described": served - described, "not served": described - served}


def test_security_follows_the_access_table() -> None:
    doc = document(loaded().policy)
    schemes = set(doc["components"]["securitySchemes"])
    for path, item in doc["paths"].items():
        for op in item.values():
            names = {name for requirement in op["security"] for name in requirement}
            assert names <= schemes
            level = ACCESS[path]
            assert (op["security"] == []) is (level is Access.PUBLIC), path
            assert ("adminKey" in names) is (level in (Access.ADMIN, Access.CLIENT_OR_ADMIN, Access.DASHBOARD))
            assert ("virtualKey" in names) is (level in (Access.CLIENT, Access.CLIENT_OR_ADMIN))


def test_the_live_policy_names_are_in_it() -> None:
    schemas = document(loaded().policy)["components"]["schemas"]
    model = schemas["ChatCompletionRequest"]["properties"]["model"]
    assert model["enum"] == ["chat-default", "local-only"]
    assert schemas["NewKey"]["properties"]["team"]["enum"] == ["search"]
    assert schemas["ChatCompletionRequest"]["properties"]["n"]["maximum"] == 4


async def test_served_publicly_even_when_keys_are_configured(gateway) -> None:
    url = await gateway(POLICY.replace("search: {}", "search: {keys: [sk-team-search-0123456789]}"))
    async with aiohttp.ClientSession() as http, http.get(url + "/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        doc = await r.json()
    validate(doc)
    assert "/v1/chat/completions" in doc["paths"]
    assert "sk-team-search" not in str(doc)  # names, never keys


async def test_the_document_is_built_once_per_loaded_policy(monkeypatch, gateway, fake_openai):
    """``/openapi.json`` is public: serving it must not rebuild the document each time."""
    import router.openapi

    builds: list[object] = []
    build = router.openapi.document

    def counted(policy):  # type: ignore[no-untyped-def]
        builds.append(policy)
        return build(policy)

    monkeypatch.setattr(router.openapi, "document", counted)
    url = await gateway(f"""version: 1
backends:
  gpu: {{kind: vllm, base_url: '{fake_openai.base_url}', model: m}}
models:
  chat: {{targets: [gpu]}}
settings: {{watch: false}}
""")
    async with aiohttp.ClientSession() as http:
        bodies = []
        for _ in range(3):
            async with http.get(f"{url}/openapi.json") as r:
                assert r.status == 200
                bodies.append(await r.read())
    assert len(builds) == 1 and bodies[0] == bodies[1] == bodies[2]
