"""planaria.retry.RetryBudget: a Finagle-style token bucket over a sliding window."""

from __future__ import annotations

import threading

import pytest

from planaria.retry import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now_s


def withdraw_all(budget: RetryBudget, limit: int = 10_000) -> int:
    taken = 0
    while taken < limit and budget.try_withdraw():
        taken += 1
    return taken


def test_floor_allows_min_retries_per_second_over_window() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_s=2.0, ttl_s=10.0, clock=Clock())
    assert budget.available() == pytest.approx(20.0)
    assert withdraw_all(budget) == 20
    assert budget.available() == 0.0


def test_ratio_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_s=0.0, ttl_s=10.0, clock=Clock())
    for _ in range(100):
        budget.deposit()
    assert withdraw_all(budget) == 20
    for _ in range(10):
        budget.deposit()
    assert withdraw_all(budget) == 2


def test_empty_budget_takes_nothing() -> None:
    budget = RetryBudget(ratio=0.5, min_retries_per_s=0.0, clock=Clock())
    budget.deposit()  # half a retry: not enough for one
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_deposits_expire_after_ttl() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_retries_per_s=0.0, ttl_s=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.available() == pytest.approx(5.0)
    clock.now_s += 5.0
    assert budget.available() == pytest.approx(5.0)
    clock.now_s += 6.0
    assert budget.available() == 0.0


def test_withdrawals_expire_after_ttl() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, min_retries_per_s=0.3, ttl_s=10.0, clock=clock)
    assert withdraw_all(budget) == 3
    clock.now_s += 4.0
    assert not budget.try_withdraw()
    clock.now_s += 7.0
    assert withdraw_all(budget) == 3


def test_window_slides_slot_by_slot() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=1.0, min_retries_per_s=0.0, ttl_s=10.0, clock=clock)
    budget.deposit()
    assert budget.available() == pytest.approx(1.0)  # placed at t=0
    clock.now_s += 5.0
    assert budget.available() == pytest.approx(1.0)
    budget.deposit()
    budget.deposit()
    assert budget.available() == pytest.approx(3.0)  # placed at t=5
    clock.now_s += 6.0  # t=11: the first deposit left the window, the others did not
    assert budget.available() == pytest.approx(2.0)
    clock.now_s += 5.0  # t=16: all gone
    assert budget.available() == 0.0


def test_unobserved_deposits_are_spread_over_their_interval() -> None:
    # Six deposits between consultations at t=0 and t=5 (1 s slots) are assumed to have
    # arrived evenly, one per slot 0..5, so they leave the 10 s window one slot at a time.
    clock = Clock()
    budget = RetryBudget(ratio=1.0, min_retries_per_s=0.0, ttl_s=10.0, clock=clock)
    for _ in range(6):
        budget.deposit()
    clock.now_s += 5.0
    assert budget.available() == pytest.approx(6.0)
    clock.now_s += 5.0  # t=10: slot 0 expired
    assert budget.available() == pytest.approx(5.0)
    clock.now_s += 3.0  # t=13: slots 0..3 expired
    assert budget.available() == pytest.approx(2.0)


def test_deposits_after_long_quiet_spell_count_only_their_share() -> None:
    # 3600 requests in an hour with no retry in between: only ~10 s worth are recent.
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_retries_per_s=0.0, ttl_s=10.0, clock=clock)
    for _ in range(3600):
        budget.deposit()
    clock.now_s += 3600.0
    assert budget.available() == pytest.approx(0.2 * 10)
    assert withdraw_all(budget) == 2


def test_deposit_reads_no_clock() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    reads = clock.reads
    for _ in range(100):
        budget.deposit()
    assert clock.reads == reads


def test_clock_going_backwards_is_harmless() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=1.0, min_retries_per_s=0.0, ttl_s=10.0, clock=clock)
    budget.deposit()
    clock.now_s -= 100.0
    assert budget.available() == pytest.approx(1.0)
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_concurrent_deposits_are_not_lost() -> None:
    budget = RetryBudget(ratio=0.01, min_retries_per_s=0.0, clock=Clock())
    per_thread, threads_n = 5000, 4

    def deposit_many() -> None:
        for _ in range(per_thread):
            budget.deposit()

    threads = [threading.Thread(target=deposit_many) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.available() == pytest.approx(0.01 * per_thread * threads_n)


def test_concurrent_withdrawals_never_overdraw() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_s=5.0, ttl_s=10.0, clock=Clock())
    taken: list[int] = []

    def drain() -> None:
        taken.append(withdraw_all(budget))

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 50
