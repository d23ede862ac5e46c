"""Client and AsyncClient (every test runs on both) against scripted toy clusters on
loopback: routing, redirects and map refreshes, retries with the same request id, deadlines
and what they raise, breakers, stale reads, bad input."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from planaria.breaker import BreakerState
from planaria.client import AsyncClient, Client, CommandRefused, ReadResult
from planaria.client._core import WriteWindow
from planaria.core.slots import keyslot
from planaria.errors import (
    CircuitOpenError,
    SequenceTooOld,
    Unavailable,
    UnknownOutcome,
    UsageError,
)
from planaria.net import resp
from planaria.net.commands import ClientOp, ConnectionState
from planaria.retry import RetryBudget

from ._cluster import Reply, ScriptedCluster, running
from .conftest import Connect, FakeTime


def key_on(cluster: ScriptedCluster, node: str, prefix: str = "k") -> str:
    """A key whose slot ``node`` is primary of."""
    for i in range(10_000):
        key = f"{prefix}{i}"
        if cluster.primary_of(keyslot(key)) == node:
            return key
    raise AssertionError(f"no key on {node}")


def chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def test_operations_and_request_ids(connect: Connect) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"))
        assert db.get("a") is None
        assert db.set("a", "1") is True
        assert db.get("a") == b"1"
        assert db.get(b"a") == b"1"
        assert db.exists("a") is True
        assert db.set("a", b"2", nx=True) is False
        assert db.set("b", "x", xx=True) is False
        assert db.set("a", "3", if_value="1") is True
        assert db.set("a", "4", if_value="nope") is False
        assert db.get_result("a") == ReadResult(b"3", stale=False)
        assert db.delete("a") is True
        assert db.delete("a") is False
        assert db.exists("a") is False
        assert db.set("ü", "ünïcode") is True
        assert db.get("ü") == "ünïcode".encode()
        writes = cluster.seen_writes()
        assert [w.request_id for w in writes] == [(db.client_id, seq) for seq in range(1, 9)]
        assert len(db.client_id) == 32 and int(db.client_id, 16) >= 0
        reads = [s for s in cluster.seen if s.command in ("GET", "EXISTS")]
        assert reads and all(s.request_id is None for s in reads)
        # Every key went straight to its primary: no redirects needed after the bootstrap.
        assert all(s.node == cluster.primary_of(keyslot(s.key)) for s in cluster.seen)


def test_client_ids_come_from_the_injected_rng(connect: Connect) -> None:
    with running(ScriptedCluster(1)) as cluster:
        import random

        first = connect(cluster.address("n0"), rng=random.Random(1))
        again = connect(cluster.address("n0"), rng=random.Random(1))
        other = connect(cluster.address("n0"), rng=random.Random(2))
        assert first.client_id == again.client_id != other.client_id


def test_bootstrap_skips_a_dead_seed_and_falls_back_to_cluster_slots(connect: Connect) -> None:
    with running(ScriptedCluster(2, shards_supported=False)) as cluster:
        dead = "127.0.0.1:1"  # nothing listens on port 1
        db = connect([dead, cluster.address("n1")])
        assert db.set("k", "v") is True
        assert db.get("k") == b"v"
        assert cluster.topology_requests["n1"] == 2  # SHARDS refused, then SLOTS


def test_no_reachable_seed_is_unavailable_within_the_deadline(connect: Connect) -> None:
    db = connect("127.0.0.1:1", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        db.get("k")
    assert time.monotonic() - started < 2.0
    assert not isinstance(caught.value, UnknownOutcome)


def test_moved_is_followed_and_the_map_refreshed(connect: Connect, fake_time: FakeTime) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n0"))
        key = key_on(cluster, "n0")
        assert db.set(key, "1") is True
        requests_before = sum(cluster.topology_requests.values())
        cluster.fail_over("n0", "n2")  # the client's map is now stale
        assert db.set(key, "2") is True
        hops = [s.node for s in cluster.seen_writes()[1:]]
        assert hops == ["n0", "n2"]  # a MOVED, followed at once
        # Both attempts carry the same request id: one logical write.
        assert len({s.request_id for s in cluster.seen_writes()[1:]}) == 1
        assert cluster.data[key.encode()] == b"2"
        # Refreshes are at most one per refresh_interval_s (0.1 s): none yet.
        assert sum(cluster.topology_requests.values()) == requests_before
        fake_time.sleep(0.1)
        other = key_on(cluster, "n2", prefix="other")  # same moved range, another slot
        assert db.get(other) is None
        assert sum(cluster.topology_requests.values()) == requests_before + 1
        # The whole moved range was re-learnt: straight to n2, no redirect.
        assert [s.node for s in cluster.seen[-1:]] == ["n2"]


def test_moved_to_a_node_missing_from_the_map(connect: Connect) -> None:
    with running(ScriptedCluster(3)) as cluster:
        cluster.layout(["n0", "n1"])  # n2 serves nothing yet
        db = connect(cluster.address("n0"))
        key = key_on(cluster, "n1")
        assert db.set(key, "a") is True
        cluster.fail_over("n1", "n2")
        assert db.get(key) == b"a"
        assert cluster.seen[-1].node == "n2"
        assert db._core.slot_map is not None and cluster.address("n2") in db._core.slot_map


def test_tryagain_then_success_refreshes_and_backs_off(
    connect: Connect, fake_time: FakeTime
) -> None:
    refusals = [2]

    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write and refusals[0] > 0:
            refusals[0] -= 1
            return resp.error("TRYAGAIN partition 3 is not ready")
        return None

    with running(ScriptedCluster(2, script=script)) as cluster:
        db = connect(cluster.address("n0"), refresh_interval_s=0.001)
        assert db.set("k", "v") is True
        writes = cluster.seen_writes()
        assert len(writes) == 3
        assert len({w.request_id for w in writes}) == 1
        assert cluster.applied[b"k"] == 1
        assert len(fake_time.slept) == 2  # backoff (with jitter) between attempts
        assert sum(cluster.topology_requests.values()) >= 2  # bootstrap + a refresh


def test_a_swallowed_write_is_retried_with_the_same_id_and_applied_once(
    connect: Connect,
) -> None:
    swallowed = [0]
    cluster_ref: list[ScriptedCluster] = []

    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write and swallowed[0] == 0:
            swallowed[0] += 1
            cluster = cluster_ref[0]
            cluster.serve(node, _primary_state(), request)  # applied, but the reply is lost
            return cluster.swallow()
        return None

    with running(ScriptedCluster(2, script=script)) as cluster:
        cluster_ref.append(cluster)
        db = connect(cluster.address("n0"), attempt_timeout_s=0.05)
        assert db.set("k", "v", nx=True) is True  # the dedup'd first answer, not "not set"
        writes = cluster.seen_writes()
        assert len(writes) == 2
        assert writes[0].request_id == writes[1].request_id
        assert cluster.applied[b"k"] == 1


def _primary_state() -> Any:
    from planaria.net.commands import ConnectionState

    return ConnectionState(0)


def test_deadline_with_unanswered_writes_is_unknown_outcome(connect: Connect) -> None:
    cluster_ref: list[ScriptedCluster] = []

    def script(node: str, request: ClientOp) -> Reply | None:
        return cluster_ref[0].swallow() if request.is_write else None

    with running(ScriptedCluster(2, script=script)) as cluster:
        cluster_ref.append(cluster)
        db = connect(cluster.address("n0"), timeout_s=0.3, attempt_timeout_s=0.04)
        started = time.monotonic()
        with pytest.raises(UnknownOutcome) as caught:
            db.delete("k")
        assert time.monotonic() - started < 1.0
        assert "may or may not have been applied" in str(caught.value)
        assert not isinstance(caught.value, Unavailable)
        writes = cluster.seen_writes()
        assert len(writes) >= 2
        assert len({w.request_id for w in writes}) == 1


def test_unknown_outcome_of_a_write_without_request_ids_is_not_retried(
    connect: Connect,
) -> None:
    cluster_ref: list[ScriptedCluster] = []

    def script(node: str, request: ClientOp) -> Reply | None:
        return cluster_ref[0].swallow() if request.is_write else None

    with running(ScriptedCluster(1, script=script)) as cluster:
        cluster_ref.append(cluster)
        db = connect(cluster.address("n0"), request_ids=False, attempt_timeout_s=0.04)
        with pytest.raises(UnknownOutcome):
            db.set("k", "v")
        writes = cluster.seen_writes()
        assert [w.request_id for w in writes] == [None]


def test_an_unknown_reply_is_retried_with_the_same_id(connect: Connect) -> None:
    unknowns = [1]

    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write and unknowns[0] > 0:
            unknowns[0] -= 1
            return resp.error("UNKNOWN partition 3: the primary stepped down")
        return None

    with running(ScriptedCluster(2, script=script)) as cluster:
        db = connect(cluster.address("n0"))
        assert db.set("k", "v") is True
        writes = cluster.seen_writes()
        assert len(writes) == 2
        assert writes[0].request_id == writes[1].request_id
        assert cluster.applied[b"k"] == 1


def test_an_unknown_reply_without_request_ids_is_unknown_outcome(connect: Connect) -> None:
    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write:
            return resp.error("UNKNOWN partition 3: the primary stepped down")
        return None

    with running(ScriptedCluster(1, script=script)) as cluster:
        db = connect(cluster.address("n0"), request_ids=False)
        with pytest.raises(UnknownOutcome, match="stepped down"):
            db.set("k", "v")
        assert len(cluster.seen_writes()) == 1  # never retried without an id


def test_definite_refusals_until_the_deadline_are_unavailable(
    connect: Connect, fake_time: FakeTime
) -> None:
    def script(node: str, request: ClientOp) -> Reply | None:
        return resp.error("CLUSTERDOWN partition 0 has fewer in-sync replicas than min_insync")

    with running(ScriptedCluster(2, script=script)) as cluster:
        db = connect(cluster.address("n0"), timeout_s=2.0)
        with pytest.raises(Unavailable) as caught:
            db.set("k", "v")
        assert not isinstance(caught.value, UnknownOutcome)
        assert "was not applied" in str(caught.value)
        assert len(cluster.seen_writes()) > 2
        assert sum(fake_time.slept) <= 2.0  # the waits fit in the deadline


def test_an_empty_retry_budget_gives_up_at_once(connect: Connect) -> None:
    def script(node: str, request: ClientOp) -> Reply | None:
        return resp.error("TRYAGAIN not ready")

    with running(ScriptedCluster(1, script=script)) as cluster:
        budget = RetryBudget(ratio=0.0, min_retries_per_s=0.0)
        db = connect(cluster.address("n0"), retry_budget=budget)
        with pytest.raises(Unavailable):
            db.get("k")
        assert len(cluster.seen) == 1


def test_dead_node_opens_its_breaker_and_calls_go_elsewhere_after_a_refresh(
    connect: Connect, fake_time: FakeTime
) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"), timeout_s=1.0, refresh_interval_s=0.5)
        key = key_on(cluster, "n0")
        assert db.set(key, "before") is True
        dead = cluster.address("n0")
        cluster.stop("n0")
        # No failover yet: every attempt is refused; the breaker opens and then refuses
        # the attempts itself, without connecting.
        with pytest.raises(Unavailable) as caught:
            db.set(key, "during")
        assert db._core.breakers[dead].state is BreakerState.OPEN
        assert any(isinstance(e, CircuitOpenError) for e in chain(caught.value))
        # The controller promotes n1; the next refresh finds it.
        cluster.fail_over("n0", "n1")
        fake_time.sleep(0.5)
        assert db.set(key, "after") is True
        assert cluster.seen_writes()[-1].node == "n1"
        assert db.get(key) == b"after"


def test_stale_reads_fall_back_to_a_backup_and_say_so(connect: Connect) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"), timeout_s=0.5)
        key = key_on(cluster, "n0")
        db.set(key, "v")
        assert db.get_result(key, stale=True) == ReadResult(b"v", stale=False)
        cluster.stop("n0")
        assert db.get_result(key, stale=True) == ReadResult(b"v", stale=True)
        last = cluster.seen[-1]
        assert (last.node, last.readonly) == ("n1", True)  # the backup, over READONLY
        with pytest.raises(Unavailable):
            db.get_result(key)  # stale=False never reads a backup
        with pytest.raises(Unavailable):
            db.get(key)


def test_bad_input_is_a_usage_error_without_retries(connect: Connect) -> None:
    with running(ScriptedCluster(1), key_bytes_max=8) as cluster:
        db = connect(cluster.address("n0"))
        bad_calls: list[Callable[[], object]] = [
            lambda: db.get(5),
            lambda: db.set("k", None),
            lambda: db.set("k", "v", nx=True, xx=True),
            lambda: db.set("k", "v", xx=True, if_value="w"),
            lambda: db.get("k", timeout_s=0),
            lambda: db.delete("k", timeout_s=-1.0),
        ]
        for bad in bad_calls:
            with pytest.raises(UsageError):
                bad()
        assert cluster.seen == []
        with pytest.raises(CommandRefused, match="key too long"):
            db.set("k" * 9, "v")  # the node refuses it: no retry
        assert len(cluster.seen_writes()) == 0  # refused while parsing, never handled
        with pytest.raises(UsageError):
            connect("no-port")
        with pytest.raises(UsageError):
            connect([])


def test_closed_client_refuses_calls(connect: Connect) -> None:
    with running(ScriptedCluster(1)) as cluster:
        db = connect(cluster.address("n0"))
        db.set("k", "v")
        db.close()
        with pytest.raises(UsageError, match="closed"):
            db.get("k")


def test_context_managers() -> None:
    import asyncio

    from planaria.client import AsyncClient

    with running(ScriptedCluster(1)) as cluster:
        with Client(cluster.address("n0")) as db:
            db.set("k", "sync")

        async def main() -> bytes | None:
            async with AsyncClient(cluster.address("n0")) as adb:
                return await adb.get("k")

        assert asyncio.run(main()) == b"sync"


def test_one_client_shared_by_threads() -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = Client(cluster.address("n0"))
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(40):
                    assert db.set(f"w{worker}:{i}", str(i)) is True
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        db.close()
        assert errors == []
        assert len(cluster.data) == 160
        ids = [w.request_id for w in cluster.seen_writes()]
        assert len(set(ids)) == 160
        assert sum(cluster.topology_requests.values()) == 1


def test_reused_connections_survive_a_node_restart(connect: Connect) -> None:
    # The pooled connection dies with the server; the next call still succeeds (a PING
    # health check, or a retry with the same id).
    with running(ScriptedCluster(1)) as cluster:
        db = connect(cluster.address("n0"), health_check_s=0.0)
        db.set("k", "1")
        assert cluster.loop is not None
        import asyncio

        server = cluster.servers["n0"]
        asyncio.run_coroutine_threadsafe(server.close(), cluster.loop).result(5)
        asyncio.run_coroutine_threadsafe(server.start(), cluster.loop).result(5)
        assert db.set("k", "2") is True
        assert len(cluster.seen_writes()) == 2  # the health check caught it: no resend


def test_a_node_that_failed_lately_is_asked_for_the_map_last(fake_time: FakeTime) -> None:
    from planaria import Client

    seeds = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    db = Client(seeds, clock=fake_time.clock, sleep=fake_time.sleep)
    core = db._core
    assert core.refresh_candidates() == seeds
    core.note_unreachable(seeds[0])  # e.g. a paused primary whose breaker is still closed
    assert core.refresh_candidates() == [seeds[1], seeds[2], seeds[0]]
    fake_time.offset_s += 60.0  # long ago: back in its place
    assert core.refresh_candidates() == seeds
    db.close()


# --- the write window: every write in flight stays inside the nodes' dedup window -------------


class SpreadWatch:
    """A script that delays every write a little (so many are in flight at once, answered
    out of order) and records the widest gap between a write's sequence number and the
    oldest write the node holds unanswered when it arrives."""

    def __init__(self) -> None:
        self.cluster: ScriptedCluster | None = None
        self.open: set[int] = set()
        self.widest = 0
        self.rng = random.Random(3)

    def script(self, node: str, request: ClientOp) -> Reply | None:
        cluster, rid = self.cluster, request.request_id
        if cluster is None or rid is None:
            return None
        seq = rid[1]
        self.widest = max(self.widest, seq - min(self.open, default=seq))
        self.open.add(seq)
        delay_s = self.rng.uniform(0, 0.01)

        async def later() -> bytes:
            await asyncio.sleep(delay_s)
            self.open.discard(seq)
            return cluster.serve(node, ConnectionState(0), request)

        return later()


def test_the_write_window_hands_out_numbers_within_its_size() -> None:
    window = WriteWindow(3)
    assert [window.take(), window.take(), window.take(), window.take()] == [1, 2, 3, None]
    assert window.release(2) is False  # 1 is still the oldest: nothing moved
    assert window.take() is None  # 4 would be 3 above 1, still in flight
    assert window.release(1) is True
    assert [window.take(), window.take(), window.take()] == [4, 5, None]
    assert window.in_flight == 3
    for bad in (0, -1, True, 1.5):
        with pytest.raises(UsageError):
            WriteWindow(bad)  # type: ignore[arg-type]


def test_gathered_async_writes_stay_inside_the_window() -> None:
    watch = SpreadWatch()
    with running(ScriptedCluster(3, script=watch.script)) as cluster:
        watch.cluster = cluster

        async def main() -> list[bool]:
            async with AsyncClient(cluster.address("n0"), write_window=4) as db:
                return await asyncio.gather(*(db.set(f"k{i}", "v") for i in range(60)))

        assert asyncio.run(main()) == [True] * 60
    assert len(cluster.data) == 60
    assert 0 < watch.widest < 4


def test_writes_from_threads_stay_inside_the_window() -> None:
    watch = SpreadWatch()
    with running(ScriptedCluster(3, script=watch.script)) as cluster:
        watch.cluster = cluster
        errors: list[BaseException] = []
        with Client(cluster.address("n0"), write_window=3) as db:

            def work(worker: int) -> None:
                try:
                    for i in range(10):
                        assert db.set(f"w{worker}:{i}", "v") is True
                except BaseException as error:
                    errors.append(error)

            threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert errors == []
    assert len(cluster.data) == 60
    assert 0 < watch.widest < 3


def test_a_write_that_finds_the_window_full_until_its_deadline_is_not_sent() -> None:
    cluster_ref: list[ScriptedCluster] = []

    def script(node: str, request: ClientOp) -> Reply | None:
        stuck = request.is_write and request.keys[0] == b"stuck"
        return cluster_ref[0].swallow() if stuck else None

    with running(ScriptedCluster(1, script=script)) as cluster:
        cluster_ref.append(cluster)

        async def main() -> tuple[bool | BaseException, bool | BaseException]:
            async with AsyncClient(
                cluster.address("n0"), write_window=1, timeout_s=0.4, attempt_timeout_s=0.05
            ) as db:
                stuck = asyncio.ensure_future(db.set("stuck", "v"))
                await asyncio.sleep(0)  # the stuck write takes sequence number 1
                other = db.set("other", "v", timeout_s=0.1)
                return await asyncio.gather(stuck, other, return_exceptions=True)

        stuck, other = asyncio.run(main())
    assert isinstance(stuck, UnknownOutcome)
    assert isinstance(other, Unavailable) and "was not sent" in str(other)
    assert {w.key for w in cluster.seen_writes()} == {b"stuck"}


def test_seq_too_old_is_raised_clearly_and_not_retried(connect: Connect) -> None:
    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write:
            return resp.error("SEQTOOOLD partition 0: the REQID sequence number is below ...")
        return None

    with running(ScriptedCluster(1, script=script)) as cluster:
        db = connect(cluster.address("n0"))
        with pytest.raises(SequenceTooOld, match="SEQTOOOLD"):
            db.set("k", "v")
        assert len(cluster.seen_writes()) == 1


def test_string_and_counter_methods_as_redis_py_names_them(connect: Connect) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"))
        assert db.incr("n") == 1
        assert db.incr("n", 10) == 11
        assert db.incrby("n", -20) == -9
        assert db.decr("n") == -10
        assert db.decrby("n", 5) == -15
        assert db.incrbyfloat("f", 10.5) == 10.5
        assert db.incrbyfloat("f", 0.1) == 10.6
        assert db.get("f") == b"10.6"
        assert db.append("s", "Hello") == 5
        assert db.append("s", b" World") == 11
        assert db.strlen("s") == 11
        assert db.getrange("s", 0, 4) == b"Hello"
        assert db.getrange("s", -5, -1) == b"World"
        assert db.setrange("s", 6, "Redis") == 11
        assert db.getset("s", "new") == b"Hello Redis"
        assert db.getdel("s") == b"new"
        assert db.getdel("s") is None
        assert db.setnx("s", "1") is True
        assert db.setnx("s", "2") is False
        assert db.set("s2", "x") is True
        with pytest.raises(CommandRefused, match="not an integer"):
            db.incr("s2")
        # MGET and MSET split by slot; MSETNX only within one.
        keys = [f"m{i}" for i in range(12)]
        assert len({keyslot(key) for key in keys}) > 1
        assert db.mset({key: key.upper() for key in keys}) is True
        assert db.mget(keys) == [key.upper().encode() for key in keys]
        assert db.mget("m1", "nope", "m1") == [b"M1", None, b"M1"]
        assert db.msetnx({"{t}a": "1", "{t}b": "2"}) is True
        assert db.msetnx({"{t}b": "3", "{t}c": "4"}) is False
        with pytest.raises(UsageError, match="one slot"):
            db.msetnx({"a": "1", "b": "2"})
        with pytest.raises(UsageError):
            db.incrby("n", 1.5)
        # Every write carried a request id of its own (the per-slot MSETs of AsyncClient
        # run concurrently, so they may arrive in any order).
        writes = cluster.seen_writes()
        assert sorted(w.request_id for w in writes if w.request_id is not None) == [
            (db.client_id, seq) for seq in range(1, len(writes) + 1)
        ]


def test_expiry_methods_as_redis_py_names_them(connect: Connect) -> None:
    far_s = 4_000_000_000  # a Unix time in 2096
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"))
        assert db.set("k", "v", ex=100) is True
        assert 50 <= db.ttl("k") <= 100  # loose bounds: a loaded machine may stall seconds
        assert 50_000 <= db.pttl("k") <= 100_000
        assert db.set("k", "v", exat=far_s) is True
        assert db.expiretime("k") == far_s
        assert db.pexpiretime("k") == far_s * 1000
        assert db.set("k", "w", keepttl=True) is True
        assert db.expiretime("k") == far_s
        assert db.set("k", "x") is True
        assert db.ttl("k") == -1
        assert db.ttl("missing") == -2
        assert db.expire("k", 100, nx=True) is True
        assert db.expire("k", 50, gt=True) is False
        assert db.expire("k", timedelta(seconds=200), xx=True, gt=True) is True
        assert db.pexpireat("k", far_s * 1000, gt=True) is True
        assert db.expireat("k", datetime.fromtimestamp(far_s - 10, UTC), lt=True) is True
        assert db.expiretime("k") == far_s - 10
        assert db.persist("k") is True
        assert db.persist("k") is False
        assert db.pexpire("k", 100_000) is True
        assert db.getex("k", persist=True) == b"x"
        assert db.ttl("k") == -1
        assert db.getex("k", pxat=far_s * 1000) == b"x"
        assert db.pexpiretime("k") == far_s * 1000
        assert db.getex("nope", ex=10) is None
        assert db.setex("s", 100, "v") is True
        assert db.psetex("p", timedelta(seconds=100), "v") is True
        assert 50 <= db.ttl("s") <= 100 and 50 <= db.ttl("p") <= 100
        assert db.expire("s", 0) is True  # a past time deletes
        assert db.get("s") is None
        with pytest.raises(CommandRefused, match="invalid expire time in 'set' command"):
            db.set("k", "v", px=0)
        with pytest.raises(UsageError, match="at most one"):
            db.set("k", "v", ex=1, px=1)
        with pytest.raises(UsageError, match="nx cannot"):
            db.expire("k", 1, nx=True, gt=True)
        with pytest.raises(UsageError):
            db.expire("k", 1.5)
        # Every write carried a request id of its own, in order (exactly once on retries).
        writes = cluster.seen_writes()
        assert [w.request_id for w in writes] == [
            (db.client_id, seq) for seq in range(1, len(writes) + 1)
        ]


def test_a_swallowed_incr_is_retried_with_the_same_id_and_counted_once(
    connect: Connect,
) -> None:
    swallowed = [0]
    cluster_ref: list[ScriptedCluster] = []

    def script(node: str, request: ClientOp) -> Reply | None:
        if request.is_write and swallowed[0] == 0:
            swallowed[0] += 1
            cluster = cluster_ref[0]
            cluster.serve(node, _primary_state(), request)  # applied, but the reply is lost
            return cluster.swallow()
        return None

    with running(ScriptedCluster(2, script=script)) as cluster:
        cluster_ref.append(cluster)
        db = connect(cluster.address("n0"), attempt_timeout_s=0.05)
        assert db.incr("n", 5) == 5  # the dedup'd first answer, not 10
        writes = cluster.seen_writes()
        assert len(writes) == 2 and writes[0].request_id == writes[1].request_id
        assert cluster.applied[b"n"] == 1 and cluster.data[b"n"] == b"5"


def test_key_space_methods_cover_every_primary(connect: Connect) -> None:
    with running(ScriptedCluster(3)) as cluster:
        db = connect(cluster.address("n1"))
        keys = [f"k{i}".encode() for i in range(60)]
        assert db.mset({key: b"v" for key in keys}) is True
        assert len({cluster.primary_of(keyslot(key)) for key in keys}) == 3
        assert db.dbsize() == 60  # every primary's count, added up
        assert sorted(db.keys()) == sorted(keys)
        assert sorted(db.keys("k1*")) == sorted(k for k in keys if k.startswith(b"k1"))
        assert sorted(db.scan_iter(count=7)) == sorted(keys)  # each once: nothing changed
        assert sorted(db.scan_iter(match="k2?")) == [b"k2%d" % i for i in range(10)]
        assert db.randomkey() in keys
        assert db.type("k1") == "string" and db.type("nope") == "none"
        primaries = db.primaries()
        assert sorted(primaries) == sorted(cluster.address(n) for n in cluster.names)
        cursor, found = db.scan(primaries[0], 0, count=5)
        assert cursor != 0 and len(found) >= 5
        with pytest.raises(UsageError, match="not a primary"):
            db.scan("127.0.0.1:1")
        # UNLINK across slots: one call per key (each with its request id), counted.
        assert db.unlink("k1", "k2", "k3", "nope", "k1") == 3
        assert db.dbsize() == 57
        unlinks = [s for s in cluster.seen_writes() if s.command == "UNLINK"]
        assert len(unlinks) == 4 and all(s.request_id is not None for s in unlinks)
        with pytest.raises(UsageError):
            db.unlink()
        cluster.data.clear()
        assert db.randomkey() is None and db.dbsize() == 0 and list(db.scan_iter()) == []
