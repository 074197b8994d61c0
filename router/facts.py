"""Building ``RequestFacts`` — the only view of a request that policy code sees — from a
parsed body, the request headers and the sensitivity scan. Shared by serving, the
explain endpoint and the offline ``switchyard explain`` / ``policy test`` commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from policies import LEVELS, Endpoint, PolicySettings, RequestFacts
from policies.sensitivity import Scan, Scanner
from router.body import ParsedBody
from router.errors import InvalidRequest

__all__ = ["build_facts", "facts_json"]

#: A deliberately simple estimate; usage settles the real count. ``Scan.chars`` counts
#: every text the scan reads — messages, tool definitions and schemas, names, ``stop``,
#: unknown fields (not the API's own field names and enum words, nor inline base64
#: media) — and ``Scan.tokens`` the token ids sent as numbers (token-array prompts/inputs).
_CHARS_PER_TOKEN = 4


def build_facts(body: ParsedBody, endpoint: Endpoint, headers: Mapping[str, str], scanner: Scanner,
                settings: PolicySettings, team: str | None = None, now: datetime | None = None
                ) -> tuple[RequestFacts, Scan]:
    alias = body.model or settings.default_alias
    if alias is None:
        raise InvalidRequest("missing required parameter 'model'", param="model")
    data = body.data
    scan = scanner.scan(endpoint, data, floor=_floor(headers))
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    metadata = data.get("metadata")
    facts = RequestFacts(
        model=alias, endpoint=endpoint, stream=body.stream, team=team, sensitivity=scan.level,
        detectors=scan.detectors, input_tokens=scan.chars // _CHARS_PER_TOKEN + scan.tokens + 1,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None, choices=body.choices,
        tools=bool(data.get("tools")), tags=_tags(headers),
        metadata={k: v for k, v in metadata.items() if isinstance(v, str)} if isinstance(metadata, dict) else {},
        now=now or datetime.now(UTC))
    return facts, scan


def facts_json(facts: RequestFacts, scan: Scan) -> dict[str, object]:
    """A JSON view of the facts; sensitivity findings name detector, level and location only."""
    return {
        "model": facts.model, "endpoint": facts.endpoint, "stream": facts.stream, "team": facts.team,
        "sensitivity": facts.sensitivity, "detectors": sorted(facts.detectors),
        "findings": [{"detector": f.detector, "level": f.level, "location": f.location} for f in scan.findings],
        "unreadable": scan.unreadable,  # why part of the body was not scanned (then: restricted)
        "input_tokens": facts.input_tokens, "max_tokens": facts.max_tokens, "choices": facts.choices,
        "tools": facts.tools,
        "tags": sorted(facts.tags), "metadata": dict(facts.metadata),
        "now": facts.now.isoformat() if facts.now else None, "budget_remaining": facts.budget_remaining,
    }


def _floor(headers: Mapping[str, str]) -> str | None:
    value = headers.get("x-switchyard-sensitivity")
    if value is None:
        return None
    level = value.strip().lower()
    if level not in LEVELS:
        raise InvalidRequest(f"x-switchyard-sensitivity must be one of {', '.join(LEVELS)}",
                             param="x-switchyard-sensitivity")
    return level


def _tags(headers: Mapping[str, str]) -> frozenset[str]:
    value = headers.get("x-switchyard-tags")
    return frozenset(t.strip() for t in value.split(",") if t.strip()) if value else frozenset()

