"""``policies.loader`` limits (issue 11, item 9): size, nesting and alias expansion are
checked before anything is built, so a hostile file is a ``PolicyError`` naming the
problem — never a ``RecursionError``, never minutes of CPU. Pure unit tests."""

from __future__ import annotations

import time
from textwrap import dedent

import pytest

from policies import PolicyError, load_policy, load_policy_text, read_yaml
from policies.loader import MAX_DEPTH, MAX_NODES, MAX_POLICY_BYTES
from router.runtime import KIND_TABLE

BASE = dedent("""\
    version: 1
    backends:
      a: {kind: vllm, base_url: 'http://gpu:8000/v1', model: m}
    models:
      chat: {targets: [a]}
    """)


def problem(text: str) -> str:
    started = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, {}, kinds=KIND_TABLE, file="p.yaml")
    assert time.perf_counter() - started < 5, "rejected, but slowly"
    return " ".join(str(i) for i in info.value.issues)


def test_ten_thousand_levels_of_nesting_are_an_error_not_a_recursion_error():
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem(BASE + "x: " + "[" * 10_000 + "]" * 10_000)
    assert "nesting deeper" in problem(BASE + "x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(200)))


def test_the_nesting_limit_leaves_room_for_real_policies():
    nested = "x: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n"
    with pytest.raises(PolicyError) as info:  # deep enough for the limit, then an ordinary error
        load_policy_text(BASE + nested, {}, kinds=KIND_TABLE)
    assert "unknown key 'x'" in str(info.value.issues[0])


def test_a_billion_laughs_is_refused_before_it_is_expanded():
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    assert f"more than {MAX_NODES} nodes once its aliases are expanded" in problem(BASE + "\n".join(lines) + "\n")


def test_merge_keys_that_double_at_every_level_are_refused():
    lines = ["m0: &m0 {a: 1, b: 2}"] + [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 40)]
    assert "once its aliases are expanded" in problem(BASE + "\n".join(lines) + "\n")


def test_a_long_text_repeated_by_aliases_is_refused():
    text = BASE + "t: &t '" + "x" * 100_000 + "'\nr: [" + ", ".join(["*t"] * 100) + "]\n"
    assert "characters of text once its aliases are expanded" in problem(text)


def test_an_alias_inside_the_node_it_names_is_refused():
    assert "refers to a node that contains it" in problem(BASE + "x: &x [1, *x]\n")


def test_too_many_nodes_stop_the_composer_early():
    assert f"more than {MAX_NODES} nodes" in problem(BASE + "x: [" + "a, " * (MAX_NODES + 10) + "]\n")


def test_a_file_over_the_size_limit_is_not_read_past_it(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "# " + "x" * MAX_POLICY_BYTES + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path, {}, kinds=KIND_TABLE)
    assert "larger than 1 MiB" in str(info.value.issues[0])
    assert "larger than 1 MiB" in problem(BASE + "#" * MAX_POLICY_BYTES)


def test_policy_test_files_have_the_same_limits(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text("cases: " + "[" * 10_000 + "]" * 10_000)
    with pytest.raises(PolicyError, match="nesting deeper"):
        read_yaml(path)
    path.write_text("cases: [{name: a, request: {model: chat}}]\n")
    assert read_yaml(path) == {"cases": [{"name": "a", "request": {"model": "chat"}}]}
    path.write_text("")
    assert read_yaml(path) is None


def test_anchors_and_merges_within_limits_still_work():
    text = BASE + dedent("""\
        teams:
          base: &team {limits: {rpm: 10}}
          search: *team
          billing: {<<: *team, budget: {daily_usd: 5}}
        """)
    loaded = load_policy_text(text, {}, kinds=KIND_TABLE)
    assert loaded.policy.teams["search"].limits.rpm == 10 and loaded.policy.teams["billing"].budget.daily_usd == 5
