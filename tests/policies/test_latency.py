"""The latency prediction (``policies.latency``) and what the planner does with it: a latency
objective (``slo``) moves a self-hosted target predicted to miss it behind the closed targets
for a request that may leave, never for one that must stay home; reserved slots keep a
burst of requests that may leave off the last slots. Pure unit tests: no I/O, no clock."""

from __future__ import annotations

from textwrap import dedent

import pytest

from policies import BackendLoad, Planner, RequestFacts, load_policy_text
from policies.latency import DEFAULT_PREFILL_TPS, predict
from router.runtime import KIND_TABLE

POLICY = dedent("""\
    version: 1
    backends:
      gpu:
        kind: vllm
        base_url: http://gpu:8000/v1
        model: llama
        capacity: {slots: 4, prefill_tokens_per_s: 1000, decode_tokens_per_s: 20, reserved_slots: 1}
      plain:
        kind: vllm
        base_url: http://plain:8000/v1
        model: llama
      cloud:
        kind: openai
        model: gpt-4o
        api_key: sk-test
    models:
      chat:
        targets: [gpu, cloud]
        slo: {ttft_s: 1.0, latency_s: 30}
      plain:
        targets: [plain, cloud]
      home:
        targets: [gpu]
    rules:
      - name: confidential-stays-home
        when: {sensitivity: {gte: confidential}}
        route: {targets: [gpu, cloud], fallback: next}
      - name: no-objective
        when: {tags: fast-lane}
        route: {targets: [gpu, cloud], slo: {ttft_s: 5}}
    sensitivity: {closed_max: internal}
    """)


@pytest.fixture(scope="module")
def loaded():
    return load_policy_text(POLICY, {}, kinds=KIND_TABLE)


@pytest.fixture(scope="module")
def planner(loaded) -> Planner:
    return Planner(loaded)


def facts(model: str = "chat", tokens: int = 500, max_tokens: int | None = 100, **extra: object) -> RequestFacts:
    return RequestFacts(model=model, input_tokens=tokens, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]


def test_an_idle_server_answers_after_the_prefill_and_the_decode(loaded) -> None:
    p = predict(loaded.policy.backends["gpu"], BackendLoad(busy=0), 500, 100, may_leave=False)
    assert p is not None and (p.wait_s, p.ahead) == (0.0, 0.0)
    assert p.ttft_s == pytest.approx(0.5) and p.latency_s == pytest.approx(0.5 + 100 / 20)
    assert p.basis == "configured" and p.slots == 4


def test_a_full_server_makes_a_request_wait_for_slots_to_free_up(loaded) -> None:
    spec = loaded.policy.backends["gpu"]
    typical = BackendLoad(busy=6, mean_input_tokens=1000, mean_output_tokens=40)  # service: 1 s + 2 s
    p = predict(spec, typical, 500, 100, may_leave=False)
    assert p is not None and p.ahead == 3  # 6 in it, 4 slots: third in the queue
    assert p.wait_s == pytest.approx(3 * 3.0 / 4) and p.ttft_s == pytest.approx(2.25 + 0.5)


def test_the_gateways_own_in_flight_count_covers_a_stale_or_missing_scrape(loaded) -> None:
    spec = loaded.policy.backends["gpu"]
    p = predict(spec, BackendLoad(busy=None, in_flight=5), 100, 10, may_leave=False)
    assert p is not None and p.busy == 5 and p.ahead == 2


def test_reserved_slots_are_not_for_requests_that_may_leave(loaded) -> None:
    spec = loaded.policy.backends["gpu"]
    load = BackendLoad(busy=3)
    leaving, staying = (predict(spec, load, 100, 10, may_leave=m) for m in (True, False))
    assert leaving is not None and staying is not None
    assert (leaving.slots, leaving.ahead) == (3, 1.0)  # the fourth slot is kept
    assert (staying.slots, staying.ahead) == (4, 0.0)  # …for this one


def test_observed_speeds_replace_the_configured_ones(loaded) -> None:
    spec = loaded.policy.backends["gpu"]
    p = predict(spec, BackendLoad(busy=0, prefill_tps=5000, decode_tps=50), 1000, 100, may_leave=False)
    assert p is not None and p.basis == "observed"
    assert p.ttft_s == pytest.approx(0.2) and p.latency_s == pytest.approx(0.2 + 2.0)


def test_without_capacity_only_the_servers_own_queue_makes_it_wait(loaded) -> None:
    spec = loaded.policy.backends["plain"]
    idle = predict(spec, BackendLoad(), 2000, 10, may_leave=True)
    assert idle is not None and idle.basis == "default" and idle.ttft_s == pytest.approx(2000 / DEFAULT_PREFILL_TPS)
    queued = predict(spec, BackendLoad(queue=4, running=2, busy=6, mean_input_tokens=2000, mean_output_tokens=30),
                     2000, 10, may_leave=True)
    assert queued is not None and queued.ahead == 4 and queued.wait_s == pytest.approx(4 * (1.0 + 1.0) / 2)


def test_a_closed_provider_is_predicted_from_observations_only(loaded) -> None:
    spec = loaded.policy.backends["cloud"]
    assert predict(spec, BackendLoad(), 500, 100, may_leave=True) is None
    p = predict(spec, BackendLoad(ttft_ewma_s=0.4, decode_tps=80), 500, 100, may_leave=True)
    assert p is not None and p.ttft_s == 0.4 and p.latency_s == pytest.approx(0.4 + 1.25)


def test_a_target_predicted_to_miss_the_objective_goes_behind_the_closed_ones(planner) -> None:
    loaded_gpu = {"gpu": BackendLoad(busy=5, mean_input_tokens=500, mean_output_tokens=100)}
    plan = planner.plan(facts(), loaded_gpu)
    assert plan.targets == ("cloud", "gpu") and "gpu" in plan.late
    assert "predicted TTFT" in plan.late["gpu"] and plan.predictions["gpu"].ttft_s > 1.0
    reason = next(c.reason for c in plan.candidates if c.backend == "gpu")
    assert reason.endswith("behind the closed targets")
    idle = planner.plan(facts(), {"gpu": BackendLoad(busy=0)})
    assert idle.targets == ("gpu", "cloud") and not idle.late


def test_a_long_answer_misses_the_latency_objective(planner) -> None:
    plan = planner.plan(facts(max_tokens=1000), {"gpu": BackendLoad(busy=0)})  # 1,000 tokens at 20/s: 50 s > 30 s
    assert plan.targets[0] == "cloud" and "predicted latency" in plan.late["gpu"]


def test_a_request_that_must_stay_home_keeps_its_target_and_waits(planner) -> None:
    loaded_gpu = {"gpu": BackendLoad(busy=12)}
    plan = planner.plan(facts(sensitivity="confidential"), loaded_gpu)
    assert plan.allowed == frozenset({"gpu"}) and plan.targets == ("gpu",)
    assert not plan.late and plan.hedge is None
    assert plan.predictions["gpu"].ahead == 9  # it sees every slot, reserved ones included


def test_reserved_slots_move_a_request_that_may_leave_even_without_an_objective(planner) -> None:
    three_busy = {"gpu": BackendLoad(busy=3)}
    plan = planner.plan(facts("chat", tags=frozenset({"fast-lane"})), three_busy)  # slo ttft 5 s: met
    assert plan.targets == ("cloud", "gpu") and "unreserved slots are busy" in plan.late["gpu"]
    assert planner.plan(facts("chat", tags=frozenset({"fast-lane"})), {"gpu": BackendLoad(busy=2)}).targets[0] == "gpu"


def test_no_objective_no_reservation_no_prediction_on_the_hot_path(planner) -> None:
    plan = planner.plan(facts("plain"), {"plain": BackendLoad(busy=50)})
    assert plan.targets == ("plain", "cloud") and plan.predictions == {} and plan.slo is None
    explained = planner.plan(facts("plain"), {"plain": BackendLoad(busy=50)}, explain=True)
    assert set(explained.predictions) == {"plain"}  # explain shows it all the same


def test_the_objective_comes_from_the_rule_else_the_alias(planner) -> None:
    assert planner.plan(facts()).slo is not None and planner.plan(facts()).slo.ttft_s == 1.0
    assert planner.plan(facts(tags=frozenset({"fast-lane"}))).slo.ttft_s == 5


def test_policy_mistakes_are_refused_at_load() -> None:
    from policies import PolicyError

    for bad, why in (("capacity: {slots: 2, reserved_slots: 2}", "reserved_slots"),
                     ("capacity: {slots: 0}", "slots")):
        text = POLICY.replace("capacity: {slots: 4, prefill_tokens_per_s: 1000, decode_tokens_per_s: 20, "
                              "reserved_slots: 1}", bad)
        with pytest.raises(PolicyError, match=why):
            load_policy_text(text, {}, kinds=KIND_TABLE)
    with pytest.raises(PolicyError, match="ttft_s and/or latency_s"):
        load_policy_text(POLICY.replace("slo: {ttft_s: 1.0, latency_s: 30}", "slo: {}"), {}, kinds=KIND_TABLE)
    with pytest.raises(PolicyError, match="capacity is for self-hosted"):
        load_policy_text(POLICY.replace("    api_key: sk-test\n", "    api_key: sk-test\n    capacity: {slots: 4}\n"),
                         {}, kinds=KIND_TABLE)


def test_gpu_economics_amortised_marginal_and_break_even() -> None:
    from policies import gpu_economics, resolve_prices

    text = dedent("""\
        version: 1
        backends:
          gpu: {kind: vllm, base_url: http://gpu/v1, model: m, price: {gpu_hour_usd: 3.6, tokens_per_s: 1000}}
          idle: {kind: vllm, base_url: http://idle/v1, model: m, price: {gpu_hour_usd: 3.6, tokens_per_s: 1000}}
          mini: {kind: openai, model: gpt-4o-mini, api_key: sk, price: {input_per_mtok_usd: 0.15, output_per_mtok_usd: 0.6}}
          big: {kind: openai, model: gpt-4o, api_key: sk, price: {input_per_mtok_usd: 2.5, output_per_mtok_usd: 10}}
        models:
          chat: {targets: [gpu, mini]}
        """)
    loaded = load_policy_text(text, {}, kinds=KIND_TABLE)
    prices = resolve_prices(loaded.policy, {})
    served = {"gpu": (1_350_000, 450_000)}  # in an hour: 1.8 M tokens of a possible 3.6 M
    gpu, idle = gpu_economics(loaded.policy, prices, served, 3600, reference="big")
    assert (gpu.backend, gpu.hours, gpu.served_tokens) == ("gpu", 1.0, 1_800_000)
    assert gpu.utilisation == pytest.approx(0.5) and gpu.amortised_usd == pytest.approx(3.6)
    assert gpu.amortised_usd_per_mtok == pytest.approx(2.0)  # $3.60 over 1.8 M tokens
    assert gpu.closed_usd == pytest.approx(1.35 * 2.5 + 0.45 * 10)  # the same tokens at gpt-4o
    # break-even: $1/M-token-equivalent at full throughput over each model's blended 3:1 price
    assert gpu.break_even["big"] == pytest.approx(1.0 / (0.75 * 2.5 + 0.25 * 10))  # 25 %: pays off at 50 %
    assert gpu.break_even["mini"] == pytest.approx(1.0 / (0.75 * 0.15 + 0.25 * 0.6))  # > 1: never against mini
    assert idle.served_tokens == 0 and idle.amortised_usd_per_mtok is None and idle.utilisation == 0


def test_cheapest_orders_by_marginal_cost_a_full_gpu_is_not_free() -> None:
    text = dedent("""\
        version: 1
        backends:
          gpu: {kind: vllm, base_url: http://gpu/v1, model: m, capacity: {slots: 2},
                price: {gpu_hour_usd: 36, tokens_per_s: 100}}
          mini: {kind: openai, model: gpt-4o-mini, api_key: sk, price: {input_per_mtok_usd: 0.15, output_per_mtok_usd: 0.6}}
          big: {kind: openai, model: gpt-4o, api_key: sk, price: {input_per_mtok_usd: 2.5, output_per_mtok_usd: 10}}
        models:
          chat: {targets: [big, gpu, mini]}
        rules:
          - {name: cheap, route: {strategy: cheapest}}
        """)
    planner = Planner(load_policy_text(text, {}, kinds=KIND_TABLE))
    request = facts("chat", tokens=1000, max_tokens=100)
    assert planner.plan(request, {"gpu": BackendLoad(busy=1)}).targets == ("gpu", "mini", "big")  # a free slot: ~$0
    # both slots busy: the GPU at its amortised $100/M tokens is dearer than either closed model
    assert planner.plan(request, {"gpu": BackendLoad(busy=2)}).targets == ("mini", "big", "gpu")
