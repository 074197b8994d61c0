"""The JSON Schema of a policy file, built from ``policies.models.Policy``: what editors check against.

Owns turning the pydantic models into a JSON Schema (draft 2020-12, readable by draft-07 tools such
as yaml-language-server) that accepts what ``policies.loader`` accepts, not only what the models
accept after loading:

- ``${ENV}`` expansion happens before validation, so wherever a number, boolean, enumerated or
  patterned string is expected the raw file may hold a string with a ``${NAME}`` /
  ``${NAME:-default}`` reference instead (a literal such as ``version: 1`` stays a literal: the
  model takes no string for it);
- the top-level sections whose empty value (YAML null) means the default may be null.

The committed copy is ``policies/policy.schema.json`` (``switchyard policy schema --output …``);
a test keeps it equal to what this module builds. Pure; must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from policies.models import Policy

__all__ = ["ENV_REFERENCE_PATTERN", "SCHEMA_DIALECT", "SCHEMA_ID", "policy_schema", "policy_schema_json"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:switchyard:policy:1"
#: A ``${NAME}`` or ``${NAME:-default}`` reference anywhere in a string (what the loader expands).
ENV_REFERENCE_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"

_TITLE = "Switchyard policy"
_DESCRIPTION = ("A Switchyard routing policy (policies/*.yaml): backends, model aliases, sensitivity, rules, "
                "teams, cache, settings. Generated from policies/models.py by `switchyard policy schema`; "
                "do not edit by hand.")
_ENV_DEF = "EnvReference"
_ENV_REF: dict[str, object] = {"$ref": f"#/$defs/{_ENV_DEF}"}
_ENV_SCHEMA: dict[str, object] = {
    "type": "string",
    "pattern": ENV_REFERENCE_PATTERN,
    "description": "A string with a ${NAME} or ${NAME:-default} reference, expanded from the environment "
                   "when the policy is loaded (before validation).",
}
_NULL: dict[str, object] = {"type": "null"}
#: Keywords that describe a value without constraining it; they stay beside an ``anyOf``.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"})
#: Keywords whose value is one subschema, a list of them, or a name → subschema mapping.
_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "patternProperties")


def policy_schema() -> dict[str, object]:
    """The JSON Schema of a policy file as the loader reads it (raw YAML, before ``${ENV}`` expansion)."""
    schema = Policy.model_json_schema(mode="validation")
    nullable = _null_means_default()
    properties = {name: _accept_env(_either(sub, _NULL) if name in nullable else sub)
                  for name, sub in schema["properties"].items()}
    defs = {name: _accept_env(sub) for name, sub in schema["$defs"].items()}
    return {**schema, "$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, "title": _TITLE, "description": _DESCRIPTION,
            "properties": properties, "$defs": {**defs, _ENV_DEF: _ENV_SCHEMA}}


def policy_schema_json() -> str:
    """``policy_schema()`` serialised the one way the committed file is: sorted keys, two-space indent."""
    return json.dumps(policy_schema(), indent=2, sort_keys=True) + "\n"


def _null_means_default() -> list[str]:
    """Top-level sections the model takes as null (``rules:`` with nothing under it), in field order."""
    return [name for name in Policy.model_fields if _takes_null(name)]


def _takes_null(name: str) -> bool:
    """Ask the model itself; only errors about ``name`` count (``backends`` and ``models`` are missing)."""
    try:
        Policy.model_validate({name: None})
    except ValidationError as exc:
        return all(error["loc"][:1] != (name,) for error in exc.errors())
    return True


def _accept_env(node: object) -> object:
    """``node`` (a schema or a part of one) with an ``${ENV}`` alternative beside every scalar that the
    model would also take as a string after expansion."""
    if not isinstance(node, dict):
        return node
    if _takes_text(node):
        return _either(node, _ENV_REF)
    return {key: _subschemas(key, value) for key, value in node.items()}


def _subschemas(key: str, value: object) -> object:
    if key in _ONE:
        return _accept_env(value)
    if key in _MAP and isinstance(value, dict):
        return {name: _accept_env(sub) for name, sub in value.items()}
    if key not in _LIST or not isinstance(value, list):
        return value
    if key == "anyOf" and any(_takes_text(item) for item in value):  # one flat anyOf: [number, null, ${ENV}]
        return [item if _takes_text(item) else _accept_env(item) for item in value] + [_ENV_REF]
    return [_accept_env(item) for item in value]


def _takes_text(node: object) -> bool:
    """A number, boolean or constrained string: pydantic (lax mode) takes it as text once expanded.
    Not a literal number (``Literal[1]`` takes no string) and not a free string (``${X}`` is one)."""
    if not isinstance(node, Mapping):
        return False
    kind = node.get("type")
    if kind in ("integer", "number", "boolean"):
        return "const" not in node and "enum" not in node
    if kind != "string":
        return False
    return any(k in node for k in ("enum", "const", "pattern")) or node.get("format", "password") != "password"


def _either(node: Mapping[str, object], alternative: Mapping[str, object]) -> dict[str, object]:
    """``node`` or ``alternative``; ``node``'s annotations (title, default, …) stay outside the ``anyOf``."""
    annotations = {k: v for k, v in node.items() if k in _ANNOTATIONS}
    constraints = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
    if list(constraints) == ["anyOf"] and isinstance(constraints["anyOf"], list):
        return {**annotations, "anyOf": [*constraints["anyOf"], alternative]}
    return {**annotations, "anyOf": [constraints, alternative]}
