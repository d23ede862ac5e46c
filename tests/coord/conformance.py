"""The coordination conformance suite: what every backend must do, tested the same way.

A backend's test module provides a :class:`Backend` harness factory and runs every check::

    from .conformance import CHECKS, run_check

    @pytest.mark.parametrize("name", sorted(CHECKS))
    def test_zookeeper_conforms(name: str) -> None:
        run_check(CHECKS[name], make_zookeeper_backend)

Checks only use the public :class:`~planaria.coord.Coordinator` interface plus the harness
(``advance`` lets coordinator time pass: a fake clock for memory, a real sleep for ZooKeeper
and etcd). Timing assertions keep margins of a quarter TTL, so a real backend with a short
TTL passes; exact boundaries are the memory store's unit tests. Watch checks accept any
delivery the interface allows (coalesced, repeated, RESET), and never wait to prove that
nothing arrives: they send a sentinel change and expect it to be the next event.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable

import pytest

from planaria.coord import (
    MEMBERS_PREFIX,
    Candidate,
    CheckLeader,
    CheckVersion,
    Coordinator,
    CoordinatorUnavailable,
    Create,
    DeleteIfVersion,
    EventKind,
    LeadershipLost,
    NodeIdInUse,
    SessionExpired,
    SessionId,
    SetIfVersion,
    TxnOp,
    VersionConflict,
    Watch,
    WatchEvent,
    member_key,
)
from planaria.errors import UsageError

__all__ = ["CHECKS", "Backend", "BackendFactory", "Check", "run_check"]

EVENT_TIMEOUT_S = 30.0  # only reached when a check fails (a JVM under load is slow)
CHECK_TIMEOUT_S = 120.0


class Backend(abc.ABC):
    """A backend under test: every ``client()`` talks to the same coordinator state."""

    ttl_ms: float  # a session TTL the backend grants, short enough to wait out
    # For sessions a check does not mean to let expire: on a real ensemble time passes for
    # real, and a loaded machine can take longer than ``ttl_ms`` between two renewals.
    lasting_ttl_ms: float = 10_000.0
    expiry_slack_ms: float  # expiry is noticed at most this long after the deadline

    @abc.abstractmethod
    async def client(self) -> Coordinator:
        """A new client (closed by ``aclose``)."""

    @abc.abstractmethod
    async def advance(self, ms: float) -> None:
        """Let ``ms`` of coordinator time pass, and let the backend expire what is due."""

    async def cut(self, client: Coordinator) -> None:
        """Make ``client`` unable to reach the backend (optional capability)."""
        pytest.skip(f"{type(self).__name__} cannot cut a client off")

    async def heal(self, client: Coordinator) -> None:
        pytest.skip(f"{type(self).__name__} cannot cut a client off")

    async def lose_next_reply(self, client: Coordinator) -> None:
        """Let ``client``'s next changing call take effect but fail (optional capability)."""
        pytest.skip(f"{type(self).__name__} cannot lose replies")

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every client and release the backend."""


BackendFactory = Callable[[], Awaitable[Backend]]
Check = Callable[[Backend], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def run_check(fn: Check, factory: BackendFactory) -> None:
    """Run one check on a fresh backend in a fresh event loop."""

    async def main() -> None:
        backend = await factory()
        try:
            await asyncio.wait_for(fn(backend), CHECK_TIMEOUT_S)
        finally:
            await backend.aclose()

    asyncio.run(main())


async def next_event(watch: Watch) -> WatchEvent:
    return await asyncio.wait_for(anext(watch), EVENT_TIMEOUT_S)


async def events_until(watch: Watch, key: str, kind: EventKind) -> list[WatchEvent]:
    """Events up to and including one of ``kind`` at ``key`` (or a RESET)."""
    seen: list[WatchEvent] = []
    while True:
        event = await next_event(watch)
        seen.append(event)
        if event.kind is EventKind.RESET or (event.key == key and event.kind is kind):
            return seen


async def advance_renewing(
    backend: Backend, ms: float, client: Coordinator, sessions: list[SessionId]
) -> None:
    """Let ``ms`` pass in steps of a quarter TTL, renewing ``sessions`` after each."""
    step = backend.ttl_ms / 4
    left = ms
    while left > 0:
        await backend.advance(min(step, left))
        left -= step
        for session in sessions:
            await client.keep_alive(session)


# --- sessions ----------------------------------------------------------------------------


@check
async def check_session_lifecycle(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.lasting_ttl_ms)
    other = await c.open_session("n1", backend.lasting_ttl_ms)
    assert s != other  # ids are never reused, even for the same owner
    await c.keep_alive(s)
    await c.close_session(s)
    with pytest.raises(SessionExpired):
        await c.keep_alive(s)
    await c.close_session(s)  # closing twice is fine
    await c.keep_alive(other)  # closing one session leaves the others alone


@check
async def check_session_expires_only_without_renewal(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.ttl_ms)
    await c.create("/eph", b"x", session=s)
    ttl = backend.ttl_ms
    await advance_renewing(backend, 3 * ttl, c, [s])  # renewed: outlives its TTL
    await c.keep_alive(s)
    await backend.advance(ttl * 3 / 4)
    assert await c.get("/eph") is not None
    await backend.advance(ttl / 4 + backend.expiry_slack_ms)
    assert await c.get("/eph") is None
    with pytest.raises(SessionExpired):
        await c.keep_alive(s)  # a renewal never revives an expired session
    with pytest.raises(SessionExpired):
        await c.create("/eph2", b"x", session=s)
    assert await c.get("/eph2") is None


@check
async def check_ephemerals_vanish_with_their_session_only(backend: Backend) -> None:
    c = await backend.client()
    s1 = await c.open_session("n1", backend.lasting_ttl_ms)
    s2 = await c.open_session("n2", backend.lasting_ttl_ms)
    await c.create("/e/one", b"1", session=s1)
    await c.create("/e/two", b"2", session=s2)
    await c.create("/e/persistent", b"p")
    item = await c.get("/e/one")
    assert item is not None and item.session == s1
    watch = await c.watch("/e/")
    await c.close_session(s1)
    events = await events_until(watch, "/e/one", EventKind.DELETE)
    assert events[-1].kind in (EventKind.DELETE, EventKind.RESET)
    assert [i.key for i in await c.list_prefix("/e/")] == ["/e/persistent", "/e/two"]


@check
async def check_expiry_is_seen_by_watchers(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.ttl_ms)
    await c.create("/e/x", b"1", session=s)
    watch = await c.watch("/e/")
    await backend.advance(backend.ttl_ms + backend.expiry_slack_ms)
    await events_until(watch, "/e/x", EventKind.DELETE)
    assert await c.get("/e/x") is None


@check
async def check_close_ends_sessions_and_refuses_calls(backend: Backend) -> None:
    c = await backend.client()
    observer = await backend.client()
    s = await c.open_session("n1", backend.lasting_ttl_ms)
    await c.create("/e/x", b"1", session=s)
    await c.close()
    assert await observer.get("/e/x") is None
    with pytest.raises(UsageError):
        await c.get("/e/x")
    await c.close()  # idempotent


# --- versioned keys ------------------------------------------------------------------------


@check
async def check_create_if_absent(backend: Backend) -> None:
    c = await backend.client()
    assert await c.get("/k") is None
    assert await c.create("/k", b"v1") == 1
    with pytest.raises(VersionConflict) as info:
        await c.create("/k", b"v2")
    assert (info.value.key, info.value.expected, info.value.actual) == ("/k", None, 1)
    item = await c.get("/k")
    assert item is not None
    assert (item.key, item.value, item.version, item.session) == ("/k", b"v1", 1, None)


@check
async def check_set_and_delete_if_version(backend: Backend) -> None:
    c = await backend.client()
    await c.create("/k", b"a")
    assert await c.set_if_version("/k", b"b", version=1) == 2
    assert await c.set_if_version("/k", b"c", version=2) == 3
    with pytest.raises(VersionConflict) as info:
        await c.set_if_version("/k", b"stale", version=2)
    assert (info.value.expected, info.value.actual) == (2, 3)
    with pytest.raises(VersionConflict):
        await c.delete_if_version("/k", version=1)
    item = await c.get("/k")
    assert item is not None and (item.value, item.version) == (b"c", 3)
    await c.delete_if_version("/k", version=3)
    assert await c.get("/k") is None
    with pytest.raises(VersionConflict) as info:
        await c.set_if_version("/k", b"x", version=3)
    assert info.value.actual is None
    with pytest.raises(VersionConflict):
        await c.delete_if_version("/k", version=3)
    assert await c.create("/k", b"again") == 1  # a re-created key starts over


@check
async def check_writes_are_visible_to_every_client_at_once(backend: Backend) -> None:
    a, b = await backend.client(), await backend.client()
    await a.create("/k", b"1")
    for n in range(2, 6):
        item = await b.get("/k")
        assert item is not None and item.version == n - 1
        await a.set_if_version("/k", str(n).encode(), version=n - 1)
    item = await b.get("/k")
    assert item is not None and item.value == b"5"


@check
async def check_multi_applies_all_or_nothing(backend: Backend) -> None:
    c = await backend.client()
    await c.create("/t/a", b"a")
    await c.create("/t/b", b"b")
    await c.create("/t/c", b"c")
    results = await c.multi(
        [
            SetIfVersion("/t/a", b"a2", 1),
            DeleteIfVersion("/t/b", 1),
            Create("/t/d", b"d"),
            CheckVersion("/t/c", 1),
        ]
    )
    assert results == [2, None, 1, None]
    before = await c.list_prefix("/t/")
    failing: list[TxnOp] = [
        SetIfVersion("/t/a", b"a3", 2),
        Create("/t/e", b"e"),
        CheckVersion("/t/c", 7),  # fails: nothing above may be applied
    ]
    with pytest.raises(VersionConflict) as info:
        await c.multi(failing)
    assert info.value.op_index == 2 and info.value.key == "/t/c"
    assert await c.list_prefix("/t/") == before
    with pytest.raises(VersionConflict) as info:
        await c.multi([Create("/t/f", b"f"), Create("/t/a", b"dup")])
    assert info.value.op_index == 1
    assert await c.get("/t/f") is None
    assert await c.multi([]) == []


@check
async def check_multi_with_an_ended_session_applies_nothing(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.lasting_ttl_ms)
    await c.close_session(s)
    with pytest.raises(SessionExpired):
        await c.multi([Create("/t/a", b"a"), Create("/t/b", b"b", session=s)])
    assert await c.list_prefix("/t/") == []


@check
async def check_list_prefix_is_a_sorted_directory(backend: Backend) -> None:
    c = await backend.client()
    for key in ["/a/z", "/a/b/deep", "/a/m", "/ab/x", "/b"]:
        await c.create(key, key.encode())
    assert [i.key for i in await c.list_prefix("/a/")] == ["/a/b/deep", "/a/m", "/a/z"]
    assert [i.key for i in await c.list_prefix("/a/b/")] == ["/a/b/deep"]
    assert [i.key for i in await c.list_prefix("/none/")] == []
    everything = [i.key for i in await c.list_prefix("/")]
    assert everything == sorted(["/a/z", "/a/b/deep", "/a/m", "/ab/x", "/b"])
    assert all(i.value == i.key.encode() for i in await c.list_prefix("/"))


@check
async def check_bad_input_is_refused(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.lasting_ttl_ms)
    for key in ["", "k", "/k/", "//k", "/a//b", "/a/./b", "/a/../b", "/a\x00b"]:
        with pytest.raises(UsageError):
            await c.create(key, b"v")
        with pytest.raises(UsageError):
            await c.get(key)
    for prefix in ["", "/a", "a/", "//"]:
        with pytest.raises(UsageError):
            await c.list_prefix(prefix)
        with pytest.raises(UsageError):
            await c.watch(prefix)
    with pytest.raises(UsageError):
        await c.create("/k", "text")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        await c.create("/k", b"x" * (1024 * 1024))
    for version in [0, -1, True]:
        with pytest.raises(UsageError):
            await c.set_if_version("/k", b"v", version=version)
    for ttl in [0, -5, float("nan"), float("inf")]:
        with pytest.raises(UsageError):
            await c.open_session("n1", ttl)
    with pytest.raises(UsageError):
        await c.multi([Create("/k", b"1"), SetIfVersion("/k", b"2", 1)])  # one op per key
    with pytest.raises(UsageError):
        await c.multi(["not an op"])  # type: ignore[list-item]
    with pytest.raises(UsageError):
        await c.register(s, "a/b", "host:1")
    with pytest.raises(UsageError):
        await c.campaign("/no-trailing-slash", s)
    assert await c.list_prefix("/") == []  # nothing was written by a refused call


# --- watches -----------------------------------------------------------------------------


@check
async def check_watch_delivers_changes_in_order(backend: Backend) -> None:
    c = await backend.client()
    writer = await backend.client()
    watch = await c.watch("/w/")
    await writer.create("/w/k", b"1")
    for version in range(1, 5):
        await writer.set_if_version("/w/k", b"v", version=version)
    await writer.delete_if_version("/w/k", version=5)
    events = await events_until(watch, "/w/k", EventKind.DELETE)
    if events[-1].kind is not EventKind.RESET:
        puts = [e for e in events if e.kind is EventKind.PUT and e.key == "/w/k"]
        versions = [e.version or 0 for e in puts]
        assert versions == sorted(versions)  # never an older change after a newer one
        assert all(1 <= v <= 5 for v in versions)
    assert await c.get("/w/k") is None  # after an event, re-read
    # A change after the delete is seen too.
    await writer.create("/w/k", b"back")
    events = await events_until(watch, "/w/k", EventKind.PUT)
    item = await c.get("/w/k")
    assert item is not None and item.value == b"back"


@check
async def check_watch_sees_only_its_prefix(backend: Backend) -> None:
    c = await backend.client()
    watch = await c.watch("/w/")
    await c.create("/elsewhere", b"x")
    await c.create("/wx", b"x")  # a string prefix, not the directory
    await c.create("/w/deep/key", b"x")  # any depth counts
    event = await next_event(watch)
    assert event.kind is EventKind.RESET or (event.kind, event.key) == (
        EventKind.PUT,
        "/w/deep/key",
    )


@check
async def check_watch_close_ends_iteration(backend: Backend) -> None:
    c = await backend.client()
    watch = await c.watch("/w/")
    waiter = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    await watch.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, EVENT_TIMEOUT_S)
    await watch.close()  # idempotent
    second = await c.watch("/w/")
    await c.close()  # closing the client ends its watches
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(second), EVENT_TIMEOUT_S)


# --- membership ----------------------------------------------------------------------------


@check
async def check_registration_is_ephemeral_and_held_by_one_live_session(backend: Backend) -> None:
    c = await backend.client()
    other = await backend.client()  # another process
    old = await c.open_session("n1", backend.lasting_ttl_ms)
    reg = await c.register(old, "n1", "10.0.0.1:7000", {"zone": "a", "weight": "2"})
    assert (reg.node_id, reg.address, reg.session) == ("n1", "10.0.0.1:7000", old)
    assert reg.meta() == {"zone": "a", "weight": "2"}
    members = await c.members()
    assert list(members) == ["n1"] and members["n1"].address == "10.0.0.1:7000"
    assert (await c.register(old, "n1", "10.0.0.1:7000")).session == old  # an update
    # A second process with the same node id (a rescheduled pod while the old one is cut
    # off) is refused while the old session lives: taking over would let the controller
    # fail over before the old lease ran out.
    new = await other.open_session("n1", backend.lasting_ttl_ms)
    with pytest.raises(NodeIdInUse) as refused:
        await other.register(new, "n1", "10.0.0.1:7001")
    assert (refused.value.node_id, refused.value.holder) == ("n1", old)
    members = await other.members()
    assert members["n1"].session == old and members["n1"].address == "10.0.0.1:7000"
    await c.close_session(old)  # the old incarnation ended: its registration went with it
    reg2 = await other.register(new, "n1", "10.0.0.1:7001")
    assert reg2.session == new and reg2.meta() == {}
    members = await c.members()
    assert members["n1"].session == new and members["n1"].address == "10.0.0.1:7001"
    item = await c.get(member_key("n1"))
    assert item is not None and item.session == new
    watch = await c.watch(MEMBERS_PREFIX)
    await c.close_session(new)
    await events_until(watch, member_key("n1"), EventKind.DELETE)
    assert await c.members() == {}
    with pytest.raises(SessionExpired):
        await c.register(new, "n1", "10.0.0.1:7001")


# --- election ------------------------------------------------------------------------------


@check
async def check_election_hands_over_with_growing_tokens(backend: Backend) -> None:
    a, b = await backend.client(), await backend.client()
    sa = await a.open_session("ctl-a", backend.lasting_ttl_ms)
    sb = await b.open_session("ctl-b", backend.lasting_ttl_ms)
    first = await a.campaign("/ctl/", sa, b"a")
    assert first.session == sa and first.value == b"a" and first.token >= 1
    assert await a.campaign("/ctl/", sa, b"a") == first  # idempotent per session
    waiting = asyncio.ensure_future(b.campaign("/ctl/", sb, b"b"))
    await asyncio.sleep(0.001)
    assert not waiting.done()
    assert await b.leader("/ctl/") == first
    # The leader's fenced write succeeds.
    await a.create("/cfg", b"0")
    await a.multi([CheckLeader("/ctl/", first.token), SetIfVersion("/cfg", b"1", 1)])
    await a.resign(first)
    second = await asyncio.wait_for(waiting, EVENT_TIMEOUT_S)
    assert second.session == sb and second.token > first.token
    leader = await a.leader("/ctl/")
    assert leader is not None and leader.token == second.token
    # The deposed leader's fenced write fails, and changes nothing.
    with pytest.raises(LeadershipLost) as info:
        await a.multi([SetIfVersion("/cfg", b"stale", 2), CheckLeader("/ctl/", first.token)])
    assert info.value.op_index == 1 and info.value.leader_token == second.token
    item = await a.get("/cfg")
    assert item is not None and item.value == b"1"
    # The old leader stands again: it gets a larger token still, and waits.
    again = asyncio.ensure_future(a.campaign("/ctl/", sa, b"a"))
    await b.close_session(sb)
    third = await asyncio.wait_for(again, EVENT_TIMEOUT_S)
    assert third.token > second.token
    await a.resign(third)
    await a.resign(third)  # idempotent
    assert await a.leader("/ctl/") is None


@check
async def check_election_follows_session_expiry(backend: Backend) -> None:
    a, b = await backend.client(), await backend.client()
    sa = await a.open_session("ctl-a", backend.ttl_ms)
    sb = await b.open_session("ctl-b", backend.lasting_ttl_ms)
    first = await a.campaign("/ctl/", sa)
    waiting = asyncio.ensure_future(b.campaign("/ctl/", sb))
    # Only b renews: a's session expires, and b takes over.
    await advance_renewing(backend, backend.ttl_ms + backend.expiry_slack_ms, b, [sb])
    second: Candidate = await asyncio.wait_for(waiting, EVENT_TIMEOUT_S)
    assert second.session == sb and second.token > first.token
    with pytest.raises(LeadershipLost):
        await b.multi([CheckLeader("/ctl/", first.token)])


@check
async def check_campaign_fails_when_its_session_ends(backend: Backend) -> None:
    a, b = await backend.client(), await backend.client()
    sa = await a.open_session("ctl-a", backend.lasting_ttl_ms)
    sb = await b.open_session("ctl-b", backend.lasting_ttl_ms)
    await a.campaign("/ctl/", sa)
    waiting = asyncio.ensure_future(b.campaign("/ctl/", sb))
    await asyncio.sleep(0.001)
    await b.close_session(sb)
    with pytest.raises(SessionExpired):
        await asyncio.wait_for(waiting, EVENT_TIMEOUT_S)
    with pytest.raises(SessionExpired):
        await b.campaign("/ctl/", sb)


@check
async def check_cancelled_campaign_withdraws(backend: Backend) -> None:
    a, b = await backend.client(), await backend.client()
    sa = await a.open_session("ctl-a", backend.lasting_ttl_ms)
    sb = await b.open_session("ctl-b", backend.lasting_ttl_ms)
    first = await a.campaign("/ctl/", sa)
    waiting = asyncio.ensure_future(b.campaign("/ctl/", sb))
    await asyncio.sleep(0.001)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await a.resign(first)
    assert await a.leader("/ctl/") is None  # b's candidacy went with the cancel


# --- unreachable backend -------------------------------------------------------------------


@check
async def check_unreachable_backend_raises_unknown_outcome(backend: Backend) -> None:
    c = await backend.client()
    s = await c.open_session("n1", backend.lasting_ttl_ms)
    await c.create("/k", b"1")
    await backend.cut(c)
    for call in (
        c.get("/k"),
        c.keep_alive(s),
        c.set_if_version("/k", b"2", version=1),
        c.list_prefix("/"),
    ):
        with pytest.raises(CoordinatorUnavailable):
            await call
    await backend.heal(c)
    item = await c.get("/k")
    assert item is not None and item.value == b"1"
    await c.keep_alive(s)


@check
async def check_lost_reply_is_unknown_outcome(backend: Backend) -> None:
    c = await backend.client()
    await c.create("/k", b"1")
    await backend.lose_next_reply(c)
    with pytest.raises(CoordinatorUnavailable):
        await c.set_if_version("/k", b"2", version=1)
    # The outcome is unknown to the caller, not to the coordinator: re-read decides.
    item = await c.get("/k")
    assert item is not None and (item.value, item.version) == (b"2", 2)
