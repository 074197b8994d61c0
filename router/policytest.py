"""``switchyard policy test``: YAML test cases kept next to policies.

A test file names its policy and lists cases: a request (plus team, headers, simulated
load and spill state, a fixed time) and what the policy must decide (rule, first backend,
full target order, denial, unavailability, sensitivity). Planning is the real one
(scanner and planner); no backend is called. Failures print a readable diff.

```yaml
policy: ../default.yaml
env: {OPENAI_API_KEY: sk-test}
cases:
  - name: card numbers stay home
    request: {model: chat-default, messages: [{role: user, content: "card 4111 1111 1111 1111"}]}
    load: {local: {queue: 20}}
    expect: {rule: sensitive-stays-home, backend: local, sensitivity: restricted}
```
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from policies import BackendLoad, Plan, Planner, PolicyError, PolicySettings, UnknownAlias, load_policy, read_yaml
from policies.sensitivity import Scanner
from router.body import parse_body
from router.errors import GatewayError
from router.facts import build_facts
from router.runtime import KIND_TABLE, build_planner, check_backends

__all__ = ["CaseResult", "run_test_file"]

_EXPECT_KEYS = {"rule", "backend", "targets", "denied", "unavailable", "sensitivity", "error"}


@dataclass
class CaseResult:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_test_file(path: Path) -> list[CaseResult]:
    """Run every case of one test file; a broken file is one failed case naming the problem."""
    try:
        spec = read_yaml(path)
        if not isinstance(spec, dict) or not isinstance(spec.get("cases"), list):
            raise ValueError("a test file needs `policy:` and a list of `cases:`")
        env = {**os.environ, **{str(k): str(v) for k, v in _mapping(spec.get("env"), "env").items()}}
        loaded = load_policy(path.parent / str(spec["policy"]), env, kinds=KIND_TABLE)
        check_backends(loaded, include_disabled=True)
    except (ValueError, KeyError, PolicyError) as exc:
        return [CaseResult(str(path), [f"cannot run: {exc}"])]
    planner, scanner = build_planner(loaded), Scanner(loaded.policy.sensitivity)
    return [_run_case(i, case, planner, scanner, loaded.policy.settings) for i, case in enumerate(spec["cases"])]


def _mapping(value: object, name: str) -> dict[object, object]:
    """``value`` as a mapping (absent: empty); anything else is a mistake in the test file."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"`{name}:` must be a mapping")
    return value


def _run_case(i: int, case: object, planner: Planner, scanner: Scanner, settings: PolicySettings) -> CaseResult:
    if not isinstance(case, dict) or not isinstance(case.get("expect"), dict):
        return CaseResult(f"case {i}", ["a case needs request: and expect:"])
    result = CaseResult(str(case.get("name") or f"case {i}"))
    unknown = set(case["expect"]) - _EXPECT_KEYS
    if unknown:
        result.problems.append(f"unknown expect keys {sorted(unknown)} (known: {', '.join(sorted(_EXPECT_KEYS))})")
        return result
    try:
        plan, level = _plan(case, planner, scanner, settings)
    except UnknownAlias as exc:
        _compare(result, "error", case["expect"].get("error"), str(exc), contains=True)
        if "error" not in case["expect"]:
            result.problems.append(str(exc))
        return result
    except (TypeError, ValueError, AttributeError) as exc:
        result.problems.append(f"cannot run this case: {exc}")
        return result
    except GatewayError as exc:
        _compare(result, "error", case["expect"].get("error"), exc.message, contains=True)
        if "error" not in case["expect"]:
            result.problems.append(f"request rejected: {exc.message}")
        return result
    _check(result, case["expect"], plan, level)
    return result


def _plan(case: dict[str, object], planner: Planner, scanner: Scanner, settings: PolicySettings
          ) -> tuple[Plan, str]:
    request = case.get("request")
    body = parse_body(orjson.dumps(request), "chat", settings.max_n)
    headers = {str(k).lower(): str(v) for k, v in _mapping(case.get("headers"), "headers").items()}
    now = case.get("now")
    when = datetime.fromisoformat(str(now).replace("Z", "+00:00")) if now else datetime(2026, 1, 5, 12, tzinfo=UTC)
    team = case.get("team")
    facts, scan = build_facts(body, "chat", headers, scanner, settings,
                              team=team if isinstance(team, str) else None, now=when)
    load = {str(k): BackendLoad(**_mapping(v, f"load.{k}")) for k, v in  # type: ignore[arg-type]
            _mapping(case.get("load"), "load").items()}
    spilled = case.get("spilling")
    spilling = frozenset(str(s) for s in spilled) if isinstance(spilled, list) else frozenset()
    return planner.plan(facts, load, spilling, random.Random(0)), facts.sensitivity


def _check(result: CaseResult, expect: dict[str, object], plan: Plan, level: str) -> None:
    _compare(result, "rule", expect.get("rule"), plan.rule)
    _compare(result, "backend", expect.get("backend"), plan.targets[0] if plan.targets else None)
    _compare(result, "targets", expect.get("targets"), list(plan.targets))
    _compare(result, "sensitivity", expect.get("sensitivity"), level)
    for key, actual in (("denied", plan.denied), ("unavailable", plan.unavailable)):
        want = expect.get(key)
        if want is True and actual is None:
            result.problems.append(f"{key}: expected a {key} answer, got targets {list(plan.targets)}")
        elif want is False and actual is not None:
            result.problems.append(f"{key}: expected none, got {actual!r}")
        elif isinstance(want, str):
            _compare(result, key, want, actual, contains=True)
    if "denied" not in expect and plan.denied is not None:
        result.problems.append(f"unexpectedly denied: {plan.denied!r}")
    if "unavailable" not in expect and plan.unavailable is not None and "backend" in expect:
        result.problems.append(f"unexpectedly unavailable: {plan.unavailable!r}")


def _compare(result: CaseResult, key: str, want: object, actual: object, contains: bool = False) -> None:
    if want is None:
        return
    ok = isinstance(actual, str) and str(want) in actual if contains else want == actual
    if not ok:
        result.problems.append(f"{key}:\n      expected: {want!r}\n      actual:   {actual!r}")
