"""``policies.conditions``: every fact and operator of a ``when`` clause, the shorthands,
the combinators, the ``why`` texts that ``explain`` shows, and every compile error with
the exact path it names. Plus the loader's view: a bad clause or a rule naming something
that does not exist is a ``PolicyError`` naming ``file:line`` and the dotted path.

Pure and fast: no I/O except one tmp file, no clock (``now`` is given)."""

from __future__ import annotations

from datetime import UTC, datetime
from textwrap import dedent

import pytest

from policies import (
    BackendLoad,
    ConditionError,
    Context,
    PolicyError,
    RequestFacts,
    compile_when,
    load_policy,
    load_policy_text,
)
from router.runtime import KIND_TABLE

# 2026-01-05 is a Monday.
MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def ctx(load: dict[str, BackendLoad] | None = None, **facts: object) -> Context:
    facts.setdefault("model", "chat")
    facts.setdefault("now", MONDAY_NOON)
    return Context(RequestFacts(**facts), load or {})  # type: ignore[arg-type]


def matches(when: dict[str, object], **kw: object) -> bool:
    return compile_when(when).match(ctx(**kw))


# -- facts and operators, by kind -----------------------------------------------------------
STR_CASES = [
    ({"model": {"eq": "chat"}}, {}, True),
    ({"model": {"eq": "chat"}}, {"model": "other"}, False),
    ({"model": {"ne": "chat"}}, {"model": "other"}, True),
    ({"model": {"ne": "chat"}}, {}, False),
    ({"model": {"in": ["a", "chat"]}}, {}, True),
    ({"model": {"in": ["a", "b"]}}, {}, False),
    ({"model": {"not_in": ["a", "b"]}}, {}, True),
    ({"model": {"not_in": ["chat"]}}, {}, False),
    ({"model": {"matches": "^ch"}}, {}, True),
    ({"model": {"matches": "at$"}}, {}, True),  # search, not fullmatch
    ({"model": {"matches": "^x"}}, {}, False),
    ({"team": {"exists": True}}, {"team": "ops"}, True),
    ({"team": {"exists": True}}, {}, False),
    ({"team": {"exists": False}}, {}, True),
    ({"team": {"eq": "ops"}}, {}, False),  # no team: never equal
    ({"team": {"matches": "."}}, {}, False),  # no team: nothing to match
    ({"team": {"not_in": ["ops"]}}, {}, True),
    ({"endpoint": "embeddings"}, {"endpoint": "embeddings"}, True),
    ({"endpoint": "embeddings"}, {}, False),
    ({"metadata.tier": "gold"}, {"metadata": {"tier": "gold"}}, True),
    ({"metadata.tier": "gold"}, {"metadata": {"tier": "silver"}}, False),
    ({"metadata.tier": "gold"}, {}, False),
    ({"metadata.tier": {"exists": True}}, {"metadata": {"tier": "x"}}, True),
    ({"metadata.tier": {"exists": False}}, {"metadata": {"other": "x"}}, True),
    ({"metadata.tier": ["gold", "silver"]}, {"metadata": {"tier": "silver"}}, True),  # list shorthand: in
    ({"metadata.a.b": "x"}, {"metadata": {"a.b": "x"}}, True),  # the key is everything after "metadata."
]
LEVEL_CASES = [
    ({"sensitivity": "internal"}, "internal", True),  # scalar shorthand: eq
    ({"sensitivity": "internal"}, "public", False),
    ({"sensitivity": ["internal", "restricted"]}, "restricted", True),  # list shorthand: in
    ({"sensitivity": ["internal", "restricted"]}, "confidential", False),
    ({"sensitivity": {"eq": "public"}}, "public", True),
    ({"sensitivity": {"ne": "public"}}, "public", False),
    ({"sensitivity": {"ne": "public"}}, "internal", True),
    ({"sensitivity": {"gt": "internal"}}, "internal", False),
    ({"sensitivity": {"gt": "internal"}}, "confidential", True),
    ({"sensitivity": {"gte": "confidential"}}, "internal", False),
    ({"sensitivity": {"gte": "confidential"}}, "confidential", True),
    ({"sensitivity": {"gte": "confidential"}}, "restricted", True),
    ({"sensitivity": {"lt": "confidential"}}, "internal", True),
    ({"sensitivity": {"lt": "confidential"}}, "confidential", False),
    ({"sensitivity": {"lte": "internal"}}, "internal", True),
    ({"sensitivity": {"lte": "internal"}}, "restricted", False),
    ({"sensitivity": {"in": ["public"]}}, "public", True),
    ({"sensitivity": {"gte": "internal", "lt": "restricted"}}, "confidential", True),  # ops are and-ed
    ({"sensitivity": {"gte": "internal", "lt": "restricted"}}, "restricted", False),
]
SET_CASES = [
    ({"tags": "batch"}, {"batch", "x"}, True),  # scalar shorthand: contains
    ({"tags": "batch"}, {"x"}, False),
    ({"tags": ["a", "b"]}, {"b"}, True),  # list shorthand: any
    ({"tags": ["a", "b"]}, {"c"}, False),
    ({"tags": {"contains": "a"}}, {"a"}, True),
    ({"tags": {"any": ["a", "z"]}}, {"a"}, True),
    ({"tags": {"any": ["y", "z"]}}, {"a"}, False),
    ({"tags": {"all": ["a", "b"]}}, {"a", "b", "c"}, True),
    ({"tags": {"all": ["a", "b"]}}, {"a"}, False),
    ({"tags": {"none": ["a", "b"]}}, {"c"}, True),
    ({"tags": {"none": ["a", "b"]}}, {"b"}, False),
    ({"tags": {"empty": True}}, set(), True),
    ({"tags": {"empty": True}}, {"a"}, False),
    ({"tags": {"empty": False}}, {"a"}, True),
    ({"tags": {"empty": False}}, set(), False),
]
NUM_CASES = [
    ({"input_tokens": {"eq": 10}}, {"input_tokens": 10}, True),
    ({"input_tokens": {"ne": 10}}, {"input_tokens": 10}, False),
    ({"input_tokens": {"gt": 10}}, {"input_tokens": 10}, False),
    ({"input_tokens": {"gt": 10}}, {"input_tokens": 11}, True),
    ({"input_tokens": {"gte": 10}}, {"input_tokens": 10}, True),
    ({"input_tokens": {"lt": 10}}, {"input_tokens": 9}, True),
    ({"input_tokens": {"lt": 10}}, {"input_tokens": 10}, False),
    ({"input_tokens": {"lte": 10}}, {"input_tokens": 10}, True),
    ({"input_tokens": {"gt": 2.5}}, {"input_tokens": 3}, True),  # floats compare too
    ({"input_tokens": 7}, {"input_tokens": 7}, True),  # scalar shorthand: eq
    ({"input_tokens": {"gt": 100, "lt": 200}}, {"input_tokens": 150}, True),
    ({"input_tokens": {"gt": 100, "lt": 200}}, {"input_tokens": 250}, False),
    ({"max_tokens": {"gt": 0}}, {}, False),  # unknown: no comparison holds
    ({"max_tokens": {"lt": 1000}}, {}, False),
    ({"max_tokens": {"ne": 5}}, {}, False),
    ({"max_tokens": {"exists": False}}, {}, True),
    ({"max_tokens": {"exists": True}}, {"max_tokens": 64}, True),
    ({"max_tokens": {"lte": 64}}, {"max_tokens": 64}, True),
    ({"budget_remaining": {"lt": 0.2}}, {"budget_remaining": 0.1}, True),
    ({"budget_remaining": {"lt": 0.2}}, {"budget_remaining": 0.5}, False),
    ({"budget_remaining": {"lt": 0.2}}, {}, False),
]
BOOL_CASES = [
    ({"stream": True}, {"stream": True}, True),
    ({"stream": True}, {}, False),
    ({"stream": {"eq": False}}, {}, True),
    ({"tools": True}, {"tools": True}, True),
    ({"tools": False}, {"tools": True}, False),
]


@pytest.mark.parametrize(("when", "facts", "expected"), STR_CASES)
def test_string_facts(when, facts, expected):
    assert matches(when, **facts) is expected


@pytest.mark.parametrize(("when", "level", "expected"), LEVEL_CASES)
def test_level_fact_is_ordered(when, level, expected):
    assert matches(when, sensitivity=level) is expected


@pytest.mark.parametrize("fact", ["tags", "detectors"])
@pytest.mark.parametrize(("when", "values", "expected"), SET_CASES)
def test_set_facts(fact, when, values, expected):
    clause = {fact: when["tags"]}
    assert matches(clause, **{fact: frozenset(values)}) is expected


@pytest.mark.parametrize(("when", "facts", "expected"), NUM_CASES)
def test_number_facts(when, facts, expected):
    assert matches(when, **facts) is expected


@pytest.mark.parametrize(("when", "facts", "expected"), BOOL_CASES)
def test_bool_facts(when, facts, expected):
    assert matches(when, **facts) is expected


def at(hh: int, mm: int, day: int = 5) -> datetime:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize(("window", "now", "expected"), [
    ("09:00-17:00", at(9, 0), True),  # start is inclusive
    ("09:00-17:00", at(12, 30), True),
    ("09:00-17:00", at(16, 59), True),
    ("09:00-17:00", at(17, 0), False),  # end is exclusive
    ("09:00-17:00", at(8, 59), False),
    ("22:00-06:00", at(23, 30), True),  # wraps midnight
    ("22:00-06:00", at(0, 0), True),
    ("22:00-06:00", at(5, 59), True),
    ("22:00-06:00", at(6, 0), False),
    ("22:00-06:00", at(12, 0), False),
    ("22:00-06:00", at(21, 59), False),
    ("00:00-23:59", at(23, 58), True),
])
def test_time_between(window, now, expected):
    assert matches({"time": {"between": window}}, now=now) is expected


@pytest.mark.parametrize(("days", "day", "expected"), [
    (["mon"], 5, True),  # 2026-01-05: Monday
    (["mon"], 6, False),
    (["sat", "sun"], 10, True),  # Saturday
    (["sat", "sun"], 11, True),  # Sunday
    (["sat", "sun"], 9, False),  # Friday
    (["mon", "tue", "wed", "thu", "fri"], 7, True),
])
def test_time_days(days, day, expected):
    assert matches({"time": {"days": days}}, now=at(12, 0, day)) is expected


def test_time_between_and_days_combine_and_unknown_time_never_matches():
    office = {"time": {"between": "09:00-17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}}
    assert matches(office, now=at(10, 0, 5)) is True
    assert matches(office, now=at(10, 0, 10)) is False  # Saturday
    assert matches(office, now=at(18, 0, 5)) is False
    assert matches({"time": {"between": "00:00-23:59"}}, now=None) is False
    assert matches({"time": {"days": ["mon"]}}, now=None) is False


@pytest.mark.parametrize(("when", "load", "expected"), [
    ({"load.gpu.queue": {"gt": 4}}, {"gpu": BackendLoad(queue=5)}, True),
    ({"load.gpu.queue": {"gt": 4}}, {"gpu": BackendLoad(queue=4)}, False),
    ({"load.gpu.queue": {"gt": 4}}, {}, False),  # no sample: unknown, no comparison holds
    ({"load.gpu.queue": {"exists": False}}, {"gpu": BackendLoad()}, True),
    ({"load.gpu.queue": {"exists": True}}, {"gpu": BackendLoad(queue=0)}, True),
    ({"load.gpu.running": {"gte": 8}}, {"gpu": BackendLoad(running=8)}, True),
    ({"load.gpu.kv_cache": {"gt": 0.9}}, {"gpu": BackendLoad(kv_cache=0.95)}, True),
    ({"load.gpu.kv_cache": {"gt": 0.9}}, {"gpu": BackendLoad(kv_cache=0.5)}, False),
    ({"load.gpu.in_flight": {"eq": 0}}, {}, True),  # in_flight defaults to 0
    ({"load.gpu.in_flight": {"gte": 3}}, {"gpu": BackendLoad(in_flight=3)}, True),
    ({"load.gpu.queue": {"gt": 4}}, {"other": BackendLoad(queue=50)}, False),  # the named backend only
])
def test_load_facts(when, load, expected):
    assert compile_when(when).match(ctx(load=load)) is expected


# -- combinators ------------------------------------------------------------------------------
def test_clauses_of_a_when_are_and_ed():
    when = {"sensitivity": {"gte": "internal"}, "tags": "batch"}
    assert matches(when, sensitivity="internal", tags=frozenset({"batch"}))
    assert not matches(when, sensitivity="public", tags=frozenset({"batch"}))
    assert not matches(when, sensitivity="restricted")


def test_any_all_not():
    when = {"any": [{"team": "ops"}, {"tags": "batch"}]}
    assert matches(when, team="ops") and matches(when, tags=frozenset({"batch"}))
    assert not matches(when, team="dev")
    when = {"all": [{"team": "ops"}, {"tags": "batch"}]}
    assert matches(when, team="ops", tags=frozenset({"batch"}))
    assert not matches(when, team="ops")
    when = {"not": {"team": "ops"}}
    assert matches(when, team="dev") and not matches(when, team="ops")
    nested = {"not": {"any": [{"sensitivity": {"gte": "confidential"}}, {"all": [{"tools": True}, {"stream": True}]}]}}
    assert matches(nested, sensitivity="internal", tools=True)
    assert not matches(nested, sensitivity="internal", tools=True, stream=True)
    assert not matches(nested, sensitivity="restricted")


def test_empty_when_always_matches():
    condition = compile_when({})
    assert condition.match(ctx()) and condition.text == "always"
    assert condition.why(ctx()) == "matched: always"


# -- why: what explain shows ----------------------------------------------------------------
def test_why_of_a_failed_clause_says_no_with_the_actual_value():
    c = compile_when({"sensitivity": {"gte": "confidential"}})
    assert c.why(ctx(sensitivity="public")) == "sensitivity gte 'confidential': no (sensitivity is 'public')"
    assert c.why(ctx(sensitivity="restricted")) == "matched: sensitivity gte 'confidential'"


@pytest.mark.parametrize(("when", "facts", "why"), [
    ({"tags": {"all": ["a", "b"]}}, {"tags": frozenset({"b", "a2"})}, "tags all ['a', 'b']: no (tags is {a2, b})"),
    ({"input_tokens": {"gt": 100}}, {"input_tokens": 42}, "input_tokens gt 100: no (input_tokens is 42)"),
    ({"max_tokens": {"gt": 100}}, {}, "max_tokens gt 100: no (max_tokens is None)"),
    ({"team": "ops"}, {"team": "dev"}, "team eq 'ops': no (team is 'dev')"),
    ({"metadata.tier": "gold"}, {"metadata": {"tier": "tin"}}, "metadata.tier eq 'gold': no (metadata.tier is 'tin')"),
    ({"stream": True}, {}, "stream eq True: no (stream is False)"),
    ({"load.gpu.queue": {"gt": 4}}, {}, "load.gpu.queue gt 4: no (load.gpu.queue is None)"),
])
def test_why_texts_name_the_fact_the_operator_and_the_actual_value(when, facts, why):
    assert compile_when(when).why(ctx(**facts)) == why


def test_why_names_the_first_clause_that_failed():
    c = compile_when({"team": "ops", "sensitivity": {"gte": "internal"}, "tags": "batch"})
    assert c.why(ctx(team="ops", sensitivity="public")) == \
        "sensitivity gte 'internal': no (sensitivity is 'public')"
    assert c.why(ctx(team="ops", sensitivity="internal")) == "tags contains 'batch': no (tags is {})"
    assert c.why(ctx(team="ops", sensitivity="internal", tags=frozenset({"batch"}))).startswith("matched: team eq")


def test_why_of_combinators_says_yes_or_no():
    c = compile_when({"any": [{"team": "ops"}, {"tags": "batch"}]})
    assert c.why(ctx(team="dev")) == ("any(team eq 'ops'; tags contains 'batch'): no (team eq 'ops': no "
                                      "(team is 'dev'); tags contains 'batch': no (tags is {}))")
    assert c.text == "any(team eq 'ops'; tags contains 'batch')"
    inner = compile_when({"tags": "x", "any": [{"team": "ops"}, {"team": "dev"}]})
    assert "): no (team eq 'ops': no (team is 'qa')" in inner.why(ctx(tags=frozenset({"x"}), team="qa"))
    n = compile_when({"not": {"team": "ops"}})
    assert n.text == "not (team eq 'ops')"
    assert n.why(ctx(team="ops")) == "not (team eq 'ops'): matched: team eq 'ops'"  # failed: the inner matched
    a = compile_when({"all": [{"team": "ops"}, {"stream": True}]})
    assert a.why(ctx(team="ops")) == "stream eq True: no (stream is False)"


def test_why_of_a_failed_any_shows_the_actual_values():
    c = compile_when({"any": [{"team": "ops"}, {"tags": "batch"}]})
    why = c.why(ctx(team="dev", tags=frozenset({"web"})))
    assert "'dev'" in why and "web" in why


# -- compile errors name the exact path -----------------------------------------------------
ERRORS = [
    # unknown facts
    ({"colour": "red"}, ("colour",), "unknown fact 'colour'"),
    ({"metadata.": "x"}, ("metadata.",), "unknown fact 'metadata.'"),
    ({"load.gpu": {"gt": 1}}, ("load.gpu",), "unknown fact 'load.gpu'"),
    ({"load.gpu.temperature": {"gt": 1}}, ("load.gpu.temperature",), "unknown fact"),
    ({"Sensitivity": "public"}, ("Sensitivity",), "unknown fact"),  # facts are case-sensitive
    # unknown operators, per kind
    ({"sensitivity": {"gtee": "internal"}}, ("sensitivity", "gtee"), "unknown operator 'gtee' for sensitivity"),
    ({"sensitivity": {"matches": "int"}}, ("sensitivity", "matches"), "unknown operator 'matches'"),
    ({"model": {"gt": "a"}}, ("model", "gt"), "unknown operator 'gt' for model"),
    ({"tags": {"eq": "a"}}, ("tags", "eq"), "unknown operator 'eq' for tags"),
    ({"detectors": {"in": ["email"]}}, ("detectors", "in"), "unknown operator 'in'"),
    ({"input_tokens": {"in": [1, 2]}}, ("input_tokens", "in"), "unknown operator 'in'"),
    ({"stream": {"ne": True}}, ("stream", "ne"), "unknown operator 'ne' for stream"),
    ({"time": {"after": "09:00"}}, ("time", "after"), "unknown operator 'after' for time"),
    ({"time": "09:00-17:00"}, ("time", "eq"), "unknown operator 'eq' for time"),  # no shorthand for time
    ({"load.gpu.queue": {"matches": "1"}}, ("load.gpu.queue", "matches"), "unknown operator"),
    # wrong value types
    ({"sensitivity": "secret"}, ("sensitivity", "eq"), "sensitivity levels are public, internal"),
    ({"sensitivity": {"gte": 2}}, ("sensitivity", "gte"), "sensitivity levels are"),
    ({"sensitivity": {"in": "internal"}}, ("sensitivity", "in"), "sensitivity levels are"),
    ({"sensitivity": ["internal", "top-secret"]}, ("sensitivity", "in"), "sensitivity levels are"),
    ({"team": 3}, ("team", "eq"), "eq takes a string"),
    ({"team": None}, ("team", "eq"), "eq takes a string"),
    ({"team": {"in": "ops"}}, ("team", "in"), "in takes a list of strings"),
    ({"team": {"not_in": ["ops", 1]}}, ("team", "not_in"), "not_in takes a list of strings"),
    ({"team": {"exists": "yes"}}, ("team", "exists"), "exists takes true or false"),
    ({"metadata.tier": {"matches": 1}}, ("metadata.tier", "matches"), "matches takes a string"),
    ({"tags": {"contains": ["a"]}}, ("tags", "contains"), "contains takes a string"),
    ({"tags": {"any": "a"}}, ("tags", "any"), "any takes a list of strings"),
    ({"tags": {"all": [1]}}, ("tags", "all"), "all takes a list of strings"),
    ({"tags": {"none": None}}, ("tags", "none"), "none takes a list of strings"),
    ({"tags": {"empty": 0}}, ("tags", "empty"), "empty takes true or false"),
    ({"input_tokens": {"gt": "10"}}, ("input_tokens", "gt"), "gt takes a number"),
    ({"input_tokens": {"gt": True}}, ("input_tokens", "gt"), "gt takes a number"),  # a bool is not a number
    ({"budget_remaining": {"exists": 1}}, ("budget_remaining", "exists"), "exists takes true or false"),
    ({"load.gpu.queue": {"gt": None}}, ("load.gpu.queue", "gt"), "gt takes a number"),
    ({"stream": "yes"}, ("stream", "eq"), "takes true or false"),
    ({"tools": 1}, ("tools", "eq"), "takes true or false"),
    ({"time": {"days": ["monday"]}}, ("time", "days"), "days takes a list of mon, tue"),
    ({"time": {"days": "mon"}}, ("time", "days"), "days takes a list"),
    # bad regex
    ({"model": {"matches": "(unclosed"}}, ("model", "matches"), "invalid regex"),
    ({"metadata.x": {"matches": "*"}}, ("metadata.x", "matches"), "invalid regex"),
    # bad time formats
    ({"time": {"between": "9:00-17:00"}}, ("time", "between"), "between takes \"HH:MM-HH:MM\""),
    ({"time": {"between": "09:00"}}, ("time", "between"), "HH:MM-HH:MM"),
    ({"time": {"between": "09:00 - 17:00"}}, ("time", "between"), "HH:MM-HH:MM"),
    ({"time": {"between": 900}}, ("time", "between"), "HH:MM-HH:MM"),
    ({"time": {"between": "24:00-06:00"}}, ("time", "between"), "hours 00-23, minutes 00-59"),
    ({"time": {"between": "09:00-17:60"}}, ("time", "between"), "hours 00-23, minutes 00-59"),
    # combinators
    ({"any": []}, ("any",), "any needs a non-empty list"),
    ({"all": {"team": "ops"}}, ("all",), "all needs a non-empty list"),
    ({"any": [{"team": "ops"}, {"colour": 1}]}, ("any", 1, "colour"), "unknown fact 'colour'"),
    ({"all": [{"team": {"eqq": "a"}}]}, ("all", 0, "team", "eqq"), "unknown operator 'eqq'"),
    ({"any": ["team"]}, ("any", 0), "when must be a mapping"),
    ({"not": "ops"}, ("not",), "when must be a mapping"),
    ({"not": {"tags": {"bogus": 1}}}, ("not", "tags", "bogus"), "unknown operator 'bogus'"),
    ({"any": [{"not": {"all": [{"sensitivity": {"gte": "x"}}]}}]},
     ("any", 0, "not", "all", 0, "sensitivity", "gte"), "sensitivity levels are"),
]


@pytest.mark.parametrize(("when", "loc", "message"), ERRORS)
def test_compile_errors_name_the_exact_path(when, loc, message):
    with pytest.raises(ConditionError) as info:
        compile_when(when)
    assert info.value.loc == loc
    assert message in info.value.message and str(info.value) == info.value.message


def test_compile_error_paths_start_at_the_given_location():
    with pytest.raises(ConditionError) as info:
        compile_when({"sensitivity": {"gtee": "internal"}}, ("rules", 2, "when"))
    assert info.value.loc == ("rules", 2, "when", "sensitivity", "gtee")
    with pytest.raises(ConditionError) as info:
        compile_when(["not", "a", "mapping"], ("rules", 0, "when"))  # type: ignore[arg-type]
    assert info.value.loc == ("rules", 0, "when")


def test_unknown_operator_error_lists_the_allowed_ones():
    with pytest.raises(ConditionError) as info:
        compile_when({"sensitivity": {"gtee": "internal"}})
    assert "(allowed: eq, gt, gte, in, lt, lte, ne)" in info.value.message
    with pytest.raises(ConditionError) as info:
        compile_when({"colour": 1})
    assert "metadata.<key>" in info.value.message and "load.<backend>.<queue|running|kv_cache|in_flight>" in \
        info.value.message


@pytest.mark.parametrize(("when", "loc"), [({"sensitivity": {}}, ("sensitivity",)), ({"tags": {}}, ("tags",)),
                                           ({"any": [{"team": "a"}, {"metadata.x": {}}]}, ("any", 1, "metadata.x"))])
def test_a_fact_without_any_operator_is_an_error_not_a_match_all(when, loc):
    with pytest.raises(ConditionError) as info:
        compile_when(when)
    assert info.value.loc == loc
    assert "give at least one operator (allowed: " in info.value.message


# -- through the loader: PolicyError with file:line and path ---------------------------------
BASE = dedent("""\
    version: 1
    backends:
      local: {kind: vllm, base_url: 'http://127.0.0.1:1/v1', model: m}
      gpt: {kind: openai, model: gpt-4o-mini, api_key: sk-test}
    models:
      chat: {targets: [local, gpt]}
    sensitivity:
      custom:
        - {name: codename, level: restricted, keywords: [bluebird]}
    rules:
    """)  # rules start on line 11


def issues_of(rules: str, file: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(BASE + dedent(rules), {}, kinds=KIND_TABLE, file=file)
    return [str(i) for i in info.value.issues]


def test_unknown_operator_in_a_policy_names_file_line_and_path():
    issues = issues_of("""\
        - name: ok
          when: {tags: batch}
          route: {targets: [local]}
        - name: typo
          when:
            sensitivity:
              gtee: confidential
          route: {targets: [local]}
        """)
    assert issues == ["p.yaml:17 rules[1].when.sensitivity.gtee: unknown operator 'gtee' for sensitivity "
                      "(allowed: eq, gt, gte, in, lt, lte, ne)"]


def test_unknown_fact_and_bad_value_in_nested_combinators_are_located():
    issues = issues_of("""\
        - name: nested
          when:
            any:
              - {team: ops}
              - not:
                  colour: red
          route: {targets: [local]}
        - name: bad-time
          when: {time: {between: "25:00-01:00"}}
          route: {targets: [local]}
        """)
    assert issues[0].startswith("p.yaml:16 rules[0].when.any[1].not.colour: unknown fact 'colour'")
    assert issues[1] == "p.yaml:19 rules[1].when.time.between: hours 00-23, minutes 00-59"


def test_rule_naming_an_unknown_backend_alias_or_detector_is_an_error_with_its_path():
    issues = issues_of("""\
        - name: refs
          when: {model: chat-defualt}
          route:
            targets: [local, gpu-b]
            redact: [email, codename, ssn]
        - name: weights
          when: {model: {in: [chat, closed]}}
          route: {strategy: weighted, weights: {local: 1, ghost: 2}}
        """)
    assert issues == [
        "p.yaml:12 rules[0].when.model: unknown model alias 'chat-defualt' (aliases: chat)",
        "p.yaml:14 rules[0].route.targets[1]: unknown backend 'gpu-b'",
        "p.yaml:15 rules[0].route.redact[2]: unknown detector 'ssn'",  # custom 'codename' is known
        "p.yaml:17 rules[1].when.model: unknown model alias 'closed' (aliases: chat)",
        "p.yaml:18 rules[1].route.weights.ghost: unknown backend 'ghost'",
    ]


def test_route_shape_errors_are_located():
    issues = issues_of("""\
        - name: deny-and-targets
          route: {deny: "no", targets: [local]}
        - name: weighted-without-weights
          route: {strategy: weighted}
        """)
    assert issues[0].startswith("p.yaml:12 rules[0].route: deny cannot be combined with targets")
    assert issues[1].startswith("p.yaml:14 rules[1].route: strategy weighted needs weights")


def test_policy_file_errors_name_the_real_file(tmp_path):
    path = tmp_path / "team.yaml"
    path.write_text(BASE + "  - name: r\n    when: {tags: {has: x}}\n    route: {targets: [local]}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path, {}, kinds=KIND_TABLE)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:12 rules[0].when.tags.has: unknown operator 'has' for tags (allowed: all, any, contains, empty, none)"]


def test_a_valid_policy_compiles_every_rule_in_order():
    loaded = load_policy_text(BASE + dedent("""\
        - name: home
          when: {sensitivity: {gte: confidential}}
          route: {targets: [local], fallback: none}
        - name: rest
          route: {strategy: cheapest}
        """), {}, kinds=KIND_TABLE)
    assert [r.name for r in loaded.rules] == ["home", "rest"]
    home, rest = loaded.rules
    assert home.condition.match(ctx(sensitivity="restricted")) and not home.condition.match(ctx())
    assert rest.condition.text == "always"
