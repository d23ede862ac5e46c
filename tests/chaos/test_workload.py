"""The workload and its history, against in-memory fakes (no processes)."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from pathlib import Path

import pytest

from planaria.chaos.workload import (
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
    check_operations,
    default_model,
    find_lost_writes,
    parse_history,
)


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
