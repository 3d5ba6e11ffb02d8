"""core.events: a plan's routine Events are bounded by a token bucket."""

from __future__ import annotations

from nodeos.core.events import EventBudget


def test_a_burst_then_one_per_refill() -> None:
    budget = EventBudget(burst=3, refill_s=5.0)
    assert [budget.spend(100.0) for _ in range(4)] == [True, True, True, False]
    assert not budget.spend(104.0), "not yet a whole token back"
    assert budget.spend(105.5)
    assert not budget.spend(105.5)


def test_tokens_come_back_up_to_the_burst_only() -> None:
    budget = EventBudget(burst=2, refill_s=1.0)
    assert budget.spend(0.0) and budget.spend(0.0)
    spent = [budget.spend(1000.0) for _ in range(3)]
    assert spent == [True, True, False]


def test_a_clock_that_goes_back_refills_nothing() -> None:
    budget = EventBudget(burst=1, refill_s=1.0)
    assert budget.spend(50.0)
    assert not budget.spend(10.0)
    assert not budget.spend(10.5)


def test_a_5000_node_rollout_posts_a_few_hundred_routine_events_on_its_plan() -> None:
    budget = EventBudget()
    # 8 transitions per node, spread evenly over a 20-minute rollout
    posted = sum(budget.spend(i * 1200.0 / 40000) for i in range(40000))
    assert 100 < posted < 400, posted
