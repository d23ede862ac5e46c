"""The workload and its history, against in-memory fakes (no processes)."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from pathlib import Path

import pytest

from planaria.chaos.workload import (
    TTL_MAX_MS,
    TTL_MIN_MS,
    OpFailed,
    OpUnknown,
    Recorder,
    Worker,
    read_final,
    write_history,
    written_keys,
)
from planaria.check import (
    Event,
    Verdict,
    check_counters,
    check_expired_reads,
    check_operations,
    default_model,
    find_lost_writes,
    parse_history,
)
from planaria.check.expiry import SET_PX


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeKv:
    """A linearizable map shared by the clients; optionally forgets writes it acknowledged,
    or answers every ``unknown_every``-th write with a timeout (applied or not)."""

    def __init__(self, stop: threading.Event, ops_max: int, *, forget: bool = False) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = stop
        self.ops = 0
        self.ops_max = ops_max
        self.forget = forget

    def _count(self) -> int:
        self.ops += 1
        if self.ops >= self.ops_max:
            self.stop.set()
        return self.ops

    def get(self, key: str) -> str | None:
        with self.lock:
            self._count()
            return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        with self.lock:
            n = self._count()
            if n % 17 == 0:
                self.data[key] = value
                raise OpUnknown("timed out after applying")
            if n % 23 == 0:
                raise OpFailed("refused")
            if not (self.forget and key.startswith("u") and n % 5 == 0):
                self.data[key] = value

    def cas(self, key: str, old: str | None, new: str) -> bool:
        with self.lock:
            self._count()
            if self.data.get(key) != old:
                return False
            self.data[key] = new
            return True

    def close(self) -> None:
        pass


def run_workers(kv: FakeKv, stop: threading.Event, clients: int = 3) -> Recorder:
    recorder = Recorder()
    workers = [Worker(i, clients, recorder, lambda: kv, stop, seed=5) for i in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10.0)
    assert not any(w.is_alive() for w in workers)
    assert [w.error for w in workers] == [None] * clients
    return recorder


def final_of(kv: FakeKv, keys: list[str]) -> dict[Hashable, Hashable]:
    return {k: kv.data[k] for k in keys if k in kv.data}


def test_a_correct_store_gives_a_linearizable_history_with_nothing_lost(tmp_path: Path) -> None:
    stop = threading.Event()
    kv = FakeKv(stop, ops_max=600)
    recorder = run_workers(kv, stop)
    kinds = {e.type for e in recorder.events}
    assert {"invoke", "ok", "fail", "info"} <= kinds
    assert {e.f for e in recorder.events} == {"get", "put", "cas"}
    # The history file reads back through planaria check's parser.
    write_history(tmp_path / "history.jsonl", recorder.events)
    parsed = parse_history((tmp_path / "history.jsonl").read_text().splitlines())
    assert parsed.format == "jsonl"
    keys = written_keys(recorder.events)
    assert not find_lost_writes(parsed.operations, final_of(kv, keys))
    result = check_operations(default_model("jsonl"), parsed.operations)
    assert result.verdict is Verdict.LINEARIZABLE


def test_a_store_that_forgets_acknowledged_writes_is_caught() -> None:
    stop = threading.Event()
    kv = FakeKv(stop, ops_max=600, forget=True)
    recorder = run_workers(kv, stop)
    from planaria.check import operations_from_events

    ops = operations_from_events(recorder.events)
    lost = find_lost_writes(ops, final_of(kv, written_keys(recorder.events)))
    assert lost and all(str(item.op.key).startswith("u") for item in lost)


def test_after_an_unknown_write_the_thread_is_a_new_process() -> None:
    stop = threading.Event()
    kv = FakeKv(stop, ops_max=200)
    recorder = run_workers(kv, stop, clients=1)
    infos = [e for e in recorder.events if e.type == "info" and e.f != "get"]
    assert infos
    later = [e.process for e in recorder.events if e.time > infos[0].time]
    assert infos[0].process not in later
    assert later[0] == int(infos[0].process) + 1  # type: ignore[call-overload]  # one client: the next id is old + clients


def test_recorder_times_come_from_the_injected_clock() -> None:
    clock = FakeClock()
    recorder = Recorder(clock)
    recorder.invoke("a", "put", "k", "1")
    recorder.complete("a", "ok", "put", "k", "1")
    assert [e.time for e in recorder.events] == pytest.approx([0.001, 0.002])
    assert recorder.counts["ok"] == 1


def test_written_keys_in_first_seen_order() -> None:
    events = [
        Event(0, "invoke", "put", "b", "1", 0.0),
        Event(0, "ok", "put", "b", "1", 0.1),
        Event(0, "invoke", "get", "z", None, 0.2),
        Event(0, "ok", "get", "z", None, 0.3),
        Event(0, "invoke", "cas", "a", ("1", "2"), 0.4),
        Event(0, "invoke", "put", "b", "3", 0.5),
    ]
    assert written_keys(events) == ["b", "a"]


def test_read_final_retries_then_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    answers: list[object] = [OpFailed("no leader"), OpUnknown("timeout"), {"a": "1", "b": None}]

    def read_many(keys: list[str]) -> dict[str, str | None]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    final = read_final(read_many, ["a", "b"], timeout_s=5.0, clock=clock, sleep=clock.sleep)
    assert final == {"a": "1"}  # an absent key is left out

    def never(keys: list[str]) -> dict[str, str | None]:
        raise OpFailed("down")

    with pytest.raises(OpFailed):
        read_final(never, ["a"], timeout_s=1.0, clock=clock, sleep=clock.sleep)


def test_read_final_reads_in_batches() -> None:
    seen: list[int] = []

    def read_many(keys: list[str]) -> dict[str, str | None]:
        seen.append(len(keys))
        return {k: k for k in keys}

    keys = [f"k{i}" for i in range(450)]
    assert len(read_final(read_many, keys, timeout_s=1.0, batch=200)) == 450
    assert seen == [200, 200, 50]


class FakeCounterTtlKv(FakeKv):
    """FakeKv with INCRBY and SET PX on a fake clock (ms); ``double_every``: every n-th
    increment is applied twice (a retry the dedup table missed), ``stale_reads``: reads
    ignore expiry."""

    def __init__(
        self, stop: threading.Event, ops_max: int, *, double_every: int = 0, stale: bool = False
    ) -> None:
        super().__init__(stop, ops_max)
        self.expiry_ms: dict[str, float] = {}
        self.double_every = double_every
        self.stale = stale
        self.increments = 0

    def now_ms(self) -> float:
        return self.ops * 10.0  # every operation takes 10 ms of the store's clock

    def get(self, key: str) -> str | None:
        with self.lock:
            self._count()
            expiry = self.expiry_ms.get(key)
            if expiry is not None and expiry < self.now_ms() and not self.stale:
                return None
            return self.data.get(key)

    def incrby(self, key: str, amount: int) -> int:
        with self.lock:
            self._count()
            self.increments += 1
            times = 2 if self.double_every and self.increments % self.double_every == 0 else 1
            value = int(self.data.get(key, "0")) + amount * times
            self.data[key] = str(value)
            return value

    def set_px(self, key: str, value: str, ttl_ms: int) -> None:
        with self.lock:
            self._count()
            self.data[key] = value
            self.expiry_ms[key] = self.now_ms() + ttl_ms


def run_extended(kv: FakeCounterTtlKv, stop: threading.Event) -> Recorder:
    # The recorder's clock is the store's (10 ms an operation), in seconds.
    recorder = Recorder(lambda: kv.now_ms() / 1000)
    worker = Worker(0, 1, recorder, lambda: kv, stop, seed=5, counters=2, ttls=2)
    worker.run()
    assert worker.error is None
    return recorder


def split(recorder: Recorder, prefix: str) -> list[Event]:
    return [e for e in recorder.events if str(e.key).startswith(prefix)]


def test_counters_and_ttl_keys_are_recorded_and_pass_their_checks_on_a_correct_store() -> None:
    stop = threading.Event()
    kv = FakeCounterTtlKv(stop, ops_max=3000)
    recorder = run_extended(kv, stop)
    counters, ttls = split(recorder, "c"), split(recorder, "t")
    assert {e.f for e in counters} == {"incr", "get"} and {e.key for e in counters} <= {"c0", "c1"}
    assert {e.f for e in ttls} == {SET_PX, "get"} and {e.key for e in ttls} <= {"t0", "t1"}
    amounts = {e.value for e in counters if e.f == "incr" and e.type == "invoke"}
    assert amounts <= set(range(1, 6)) and len(amounts) > 1
    ttl_values = [e.value for e in ttls if e.f == SET_PX and e.type == "invoke"]
    assert all(isinstance(v, tuple) and TTL_MIN_MS <= v[1] <= TTL_MAX_MS for v in ttl_values)
    reports = check_counters(counters, {k: kv.data.get(str(k)) for k in ("c0", "c1")})
    assert reports and all(r.ok for r in reports), [r.problems for r in reports]
    expiry = check_expired_reads(ttls, tolerance_ms=5.0)
    assert expiry.ok and expiry.reads_judged > 0
    assert expiry.reads > expiry.reads_judged  # keys did expire and were read absent


def test_a_store_that_applies_an_increment_twice_is_caught() -> None:
    stop = threading.Event()
    kv = FakeCounterTtlKv(stop, ops_max=3000, double_every=50)
    recorder = run_extended(kv, stop)
    reports = check_counters(split(recorder, "c"), {k: kv.data.get(k) for k in ("c0", "c1")})
    assert {p.check for r in reports for p in r.problems} == {"counter-doubled"}


def test_a_store_whose_reads_ignore_expiry_is_caught() -> None:
    stop = threading.Event()
    kv = FakeCounterTtlKv(stop, ops_max=3000, stale=True)
    recorder = run_extended(kv, stop)
    assert check_expired_reads(split(recorder, "t"), tolerance_ms=5.0).expired_reads > 0


def test_a_register_client_cannot_run_counters() -> None:
    stop = threading.Event()
    kv = FakeKv(stop, ops_max=100)
    worker = Worker(0, 1, Recorder(), lambda: kv, stop, seed=5, counters=1)
    worker.run()
    assert isinstance(worker.error, TypeError)
