"""``switchyard policy test`` and ``switchyard explain`` as users run them: real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"
SWITCHYARD = [sys.executable, "-m", "router"]
# No provider keys from the developer's shell; litellm reads its bundled price table (no network).
ENV = {**os.environ, "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "GEMINI_API_KEY": "",
       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
CARD = "4111 1111 1111 1111"
# Self-hosted only: `policy test` then never loads litellm (seconds saved per run).
SELF_HOSTED = """\
version: 1
backends:
  local: {kind: llamacpp, base_url: 'http://127.0.0.1:9/v1', model: m}
  gpu: {kind: vllm, base_url: 'http://127.0.0.1:9/v1', model: m, max_sensitivity: internal}
models:
  local-only: {targets: [local]}
  chat: {targets: [gpu, local]}
"""


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHYARD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV,
                          input=stdin)


def test_shipped_policy_tests_pass():
    files = sorted((ROOT / "policies" / "tests").glob("*.test.yaml"))
    assert len(files) >= 5
    cases = sum(len(yaml.safe_load(f.read_text())["cases"]) for f in files)
    out = run("policy", "test", *[str(f.relative_to(ROOT)) for f in files])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"{cases} passed, 0 failed"
    assert "FAIL" not in out.stderr


def test_a_failing_case_exits_1_with_an_expected_actual_diff(tmp_path):
    test_file = tmp_path / "mine.test.yaml"
    test_file.write_text(yaml.safe_dump({
        "policy": str(DEFAULT),  # absolute: wins over the test file's directory
        "env": {"OPENAI_API_KEY": "sk-test"},
        "cases": [
            {"name": "plain chat stays local", "request": {"model": "chat-default", "messages": [
                {"role": "user", "content": "hello"}]}, "expect": {"rule": "self-hosted-first", "backend": "local"}},
            {"name": "a card goes to gpt (wrong on purpose)", "request": {"model": "chat-default", "messages": [
                {"role": "user", "content": f"card {CARD}"}]},
             "expect": {"rule": "self-hosted-first", "targets": ["gpt-mini"], "sensitivity": "public"}},
        ],
    }, sort_keys=False))
    out = run("policy", "test", str(test_file))
    assert out.returncode == 1
    assert out.stdout.strip() == "1 passed, 1 failed"
    assert f"FAIL {test_file}: a card goes to gpt (wrong on purpose)" in out.stderr
    assert ("    rule:\n      expected: 'self-hosted-first'\n      actual:   'sensitive-stays-home'"
            in out.stderr)
    assert "    targets:\n      expected: ['gpt-mini']\n      actual:   ['local']" in out.stderr
    assert "    sensitivity:\n      expected: 'public'\n      actual:   'restricted'" in out.stderr
    assert "plain chat stays local" not in out.stderr


def test_policy_path_is_relative_to_the_test_file_and_a_missing_one_is_a_failure(tmp_path):
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "p.yaml").write_text(SELF_HOSTED)
    (tmp_path / "cases").mkdir()
    good = tmp_path / "cases" / "good.test.yaml"
    good.write_text(yaml.safe_dump({"policy": "../pol/p.yaml", "cases": [
        {"name": "local", "request": {"model": "local-only", "messages": [{"role": "user", "content": "hi"}]},
         "expect": {"targets": ["local"], "rule": "default"}}]}))
    missing = tmp_path / "cases" / "missing.test.yaml"
    missing.write_text(yaml.safe_dump({"policy": "../nowhere.yaml", "cases": []}))
    out = run("policy", "test", str(good), str(missing))
    assert out.returncode == 1 and out.stdout.strip() == "1 passed, 1 failed"
    assert f"FAIL {missing}: {missing}" in out.stderr and "cannot run" in out.stderr
    out = run("policy", "test", str(good))
    assert out.returncode == 0 and out.stdout.strip() == "1 passed, 0 failed"


def test_explain_prints_the_decision_and_never_the_matched_text(tmp_path):
    request = tmp_path / "req.json"
    request.write_bytes(orjson.dumps({"model": "chat-default", "messages": [
        {"role": "system", "content": "Reply to jane.doe@example.com"},
        {"role": "user", "content": f"My card is {CARD}"}]}))
    out = run("explain", "--policy", str(DEFAULT.relative_to(ROOT)), str(request))
    assert out.returncode == 0, out.stderr
    for secret in (CARD, CARD.replace(" ", ""), "jane.doe", "example.com"):
        assert secret not in out.stdout
    result = orjson.loads(out.stdout)
    assert result["decision"]["rule"] == "sensitive-stays-home"
    assert result["decision"]["targets"] == ["local"] and result["decision"]["unavailable"] is None
    assert result["facts"]["sensitivity"] == "restricted"
    assert result["facts"]["findings"] == [
        {"detector": "email", "level": "confidential", "location": "messages[0].content"},
        {"detector": "credit_card", "level": "restricted", "location": "messages[1].content"}]
    assert [r["rule"] for r in result["rules"]] == ["sensitive-stays-home", "self-hosted-first"]
    assert result["rules"][0]["matched"] is True


def test_explain_reads_stdin_and_takes_a_team():
    body = orjson.dumps({"model": "closed-best", "messages": [{"role": "user", "content": "hello"}]}).decode()
    out = run("explain", "--policy", str(DEFAULT), "-", "--team", "ops", stdin=body)
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert result["facts"]["team"] == "ops" and result["decision"]["rule"] == "default"
    assert result["decision"]["targets"] == []  # no provider keys: every closed target is disabled
    assert "no backend may serve this request under rule 'default'" in result["decision"]["unavailable"]
    assert {c["reason"] for c in result["candidates"]} == {"disabled: no API key"}


def test_explain_with_a_broken_policy_or_request_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nbackends: {}\nmodels: {}\n")
    request = tmp_path / "req.json"
    request.write_text('{"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]}')
    out = run("explain", "--policy", str(bad), str(request))
    assert out.returncode == 1 and f"error: {bad}" in out.stderr and out.stdout == ""
    request.write_text('{"model": "chat-default", "messages": "not a list"}')
    out = run("explain", "--policy", str(DEFAULT), str(request))
    assert out.returncode == 1 and out.stderr.startswith("switchyard: ") and "messages" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_explain_with_an_unknown_model_is_a_clean_error():
    body = '{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'
    out = run("explain", "--policy", str(DEFAULT), "-", stdin=body)
    assert out.returncode == 1 and out.stdout == ""
    assert "Traceback" not in out.stderr
    assert "model 'nope' does not exist" in out.stderr


def test_a_bad_case_fails_that_case_not_the_whole_run(tmp_path):
    test_file = tmp_path / "bad.test.yaml"
    (tmp_path / "p.yaml").write_text(SELF_HOSTED)
    test_file.write_text(yaml.safe_dump({"policy": "p.yaml", "cases": [
        {"name": "unknown alias is an error", "request": {"model": "nope", "messages": [
            {"role": "user", "content": "hi"}]}, "expect": {"error": "does not exist"}},
        {"name": "typo in load", "request": {"model": "chat", "messages": [
            {"role": "user", "content": "hi"}]}, "load": {"gpu": {"queu": 3}}, "expect": {"backend": "gpu"}},
        {"name": "fine", "request": {"model": "local-only", "messages": [
            {"role": "user", "content": "hi"}]}, "expect": {"backend": "local"}},
    ]}, sort_keys=False))
    out = run("policy", "test", str(test_file))
    assert "Traceback" not in out.stderr
    assert out.returncode == 1 and out.stdout.strip() == "2 passed, 1 failed"  # the unknown alias was expected
    assert f"FAIL {test_file}: typo in load" in out.stderr and "queu" in out.stderr
    assert "unknown alias is an error" not in out.stderr and "FAIL" not in out.stderr.split("typo in load")[1]
