"""MemoryStore, the pure coordinator state machine: exact timing, atomicity, event order."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.coord import (
    CheckLeader,
    CheckVersion,
    Create,
    DeleteIfVersion,
    EventKind,
    LeadershipLost,
    MemoryStore,
    NodeIdInUse,
    SessionExpired,
    SessionId,
    SetIfVersion,
    VersionConflict,
    WatchEvent,
    WatchId,
    member_key,
)
from planaria.errors import UsageError

PUT, DELETE, RESET = EventKind.PUT, EventKind.DELETE, EventKind.RESET


def store_with_session(ttl_ms: float = 50, now_ms: float = 100) -> tuple[MemoryStore, SessionId]:
    store = MemoryStore()
    return store, store.open_session("n1", ttl_ms, now_ms)


# --- sessions and time ------------------------------------------------------------------------


def test_session_expires_exactly_at_its_deadline() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=100)
    assert store.next_expiry_ms() == 150
    assert store.expire(149.999) == []
    assert store.session_info(s).alive
    [expired] = store.expire(150)
    assert (expired.session, expired.alive, expired.ended_ms) == (s, False, 150)
    assert expired.ended_by == "expired" and expired.expires_ms == 150
    assert store.next_expiry_ms() is None


def test_renewal_moves_the_deadline_from_the_renewal_time() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=100)
    assert store.renew(s, 149) == 199
    assert store.expire(198) == []
    assert [i.session for i in store.expire(199)] == [s]


def test_renewal_at_the_deadline_is_too_late() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=100)
    with pytest.raises(SessionExpired):
        store.renew(s, 150)
    # The expiry noticed by renew() is still reported by the next expire().
    assert [i.session for i in store.expire(150)] == [s]
    assert store.expire(150) == []


def test_sessions_expire_in_deadline_order_then_id() -> None:
    store = MemoryStore()
    late = store.open_session("a", 30, 0)
    early = store.open_session("b", 10, 0)
    tie = store.open_session("c", 5, 5)
    assert [i.session for i in store.expire(100)] == [early, tie, late]


def test_time_never_goes_back() -> None:
    store, s = store_with_session(now_ms=100)
    with pytest.raises(UsageError, match="backwards"):
        store.renew(s, 99)
    with pytest.raises(UsageError):
        store.expire(float("nan"))
    assert store.now_ms == 100


def test_close_is_idempotent_and_reports_how_it_ended() -> None:
    store, s = store_with_session()
    store.create("/e", b"", session=s)
    closed = store.close_session(s, 120)
    assert (closed.ended_by, closed.ended_ms) == ("closed", 120)
    assert store.close_session(s, 130) == closed
    assert store.get("/e") is None
    assert store.expire(1000) == []  # a closed session does not also expire


def test_unknown_sessions_are_usage_errors_ended_ones_are_expired() -> None:
    store, s = store_with_session()
    for bad in (SessionId(99), 0, -1, "1", True):
        with pytest.raises(UsageError):
            store.renew(bad, 100)  # type: ignore[arg-type]
    store.close_session(s)
    with pytest.raises(SessionExpired):
        store.renew(s, 100)
    with pytest.raises(SessionExpired):
        store.create("/e", b"", session=s)


def test_latest_sessions_shows_each_owners_newest_incarnation() -> None:
    store = MemoryStore()
    old = store.open_session("n1", 10, 0)
    other = store.open_session("n2", 100, 0)
    new = store.open_session("n1", 10, 5)
    store.expire(12)  # old expired, new alive
    latest = store.latest_sessions()
    assert latest["n1"].session == new and latest["n1"].alive
    assert latest["n2"].session == other
    assert not store.session_info(old).alive
    assert [i.session for i in store.sessions()] == [other, new]


@pytest.mark.parametrize(
    ("owner", "ttl_ms", "now_ms"),
    [("", 10, 0), (None, 10, 0), ("n", 0, 0), ("n", -1, 0), ("n", float("inf"), 0),
     ("n", "10", 0), ("n", True, 0), ("n", 10, float("nan")), ("n", 10, "0")],
)  # fmt: skip
def test_open_session_refuses_bad_input(owner: object, ttl_ms: object, now_ms: object) -> None:
    with pytest.raises(UsageError):
        MemoryStore().open_session(owner, ttl_ms, now_ms)  # type: ignore[arg-type]


# --- ephemeral keys and registration ----------------------------------------------------------


def test_expiry_deletes_only_that_sessions_ephemerals_in_key_order() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=0)
    keeper = store.open_session("n2", 500, 0)
    watch = store.watch("/")
    store.create("/b", b"", session=s)
    store.create("/a", b"", session=s)
    store.create("/c", b"", session=keeper)
    store.create("/p", b"")
    store.drain_events(watch)
    store.expire(50)
    assert store.drain_events(watch) == [WatchEvent(DELETE, "/a"), WatchEvent(DELETE, "/b")]
    assert [i.key for i in store.list_prefix("/")] == ["/c", "/p"]


def test_deleted_ephemeral_is_not_deleted_again_at_expiry() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=0)
    store.create("/e", b"", session=s)
    store.delete_if_version("/e", version=1)
    store.create("/e", b"persistent now")
    store.expire(50)
    item = store.get("/e")
    assert item is not None and item.session is None


def test_a_new_incarnation_registers_only_once_the_old_session_ended() -> None:
    store = MemoryStore()
    old = store.open_session("n1", 50, 0)
    store.register(old, "n1", "h:1", {"zone": "a"}, now_ms=0)
    new = store.open_session("n1", 50, 10)
    with pytest.raises(NodeIdInUse, match="n1 is registered by another live session"):
        store.register(new, "n1", "h:2", now_ms=10)
    assert store.members()["n1"].session == old
    store.renew(new, 40)
    store.expire(50)  # old expires (its lease surely ran out): the node id is free
    reg = store.register(new, "n1", "h:2", now_ms=50)
    assert (reg.session, reg.address, reg.version, reg.metadata) == (new, "h:2", 1, ())
    store.expire(90)
    assert store.members() == {}
    assert store.get(member_key("n1")) is None


def test_register_refuses_bad_input() -> None:
    store, s = store_with_session()
    for node_id, address, metadata in [
        ("", "h:1", None),
        ("a/b", "h:1", None),
        ("n", "", None),
        ("n", "h:1", {"zone": 3}),
    ]:
        with pytest.raises(UsageError):
            store.register(s, node_id, address, metadata)  # type: ignore[arg-type]
    assert store.members() == {}


# --- versioned keys and multi -------------------------------------------------------------------


def test_conflicts_say_what_was_expected_and_found() -> None:
    store = MemoryStore()
    store.create("/k", b"1")
    cases: list[tuple[Callable[[], object], int | None, int | None]] = [
        (lambda: store.create("/k", b""), None, 1),
        (lambda: store.set_if_version("/k", b"", version=2), 2, 1),
        (lambda: store.delete_if_version("/k", version=3), 3, 1),
        (lambda: store.check_version("/k", 4), 4, 1),
        (lambda: store.set_if_version("/absent", b"", version=1), 1, None),
    ]
    for call, expected, actual in cases:
        with pytest.raises(VersionConflict) as info:
            call()
        assert (info.value.expected, info.value.actual) == (expected, actual)
    store.check_version("/k", 1)


def test_failed_multi_changes_nothing_and_emits_nothing() -> None:
    store, s = store_with_session()
    store.create("/a", b"a")
    store.create("/b", b"b")
    watch = store.watch("/")
    notified: list[int] = []
    store.watch("/", notify=notified.append)
    with pytest.raises(VersionConflict) as info:
        store.multi(
            [
                SetIfVersion("/a", b"a2", 1),
                DeleteIfVersion("/b", 1),
                Create("/c", b"c", session=s),
                CheckVersion("/d", 1),
            ],
            now_ms=110,
        )
    assert info.value.op_index == 3
    assert [(i.key, i.value, i.version) for i in store.list_prefix("/")] == [
        ("/a", b"a", 1),
        ("/b", b"b", 1),
    ]
    assert store.drain_events(watch) == [] and notified == []


def test_multi_is_one_step_for_watchers() -> None:
    store = MemoryStore()
    seen: list[list[str]] = []
    watch = store.watch(
        "/", notify=lambda wid: seen.append([e.key for e in store.drain_events(wid)])
    )
    store.multi([Create("/x", b""), Create("/y", b""), Create("/z", b"")])
    assert seen == [["/x", "/y", "/z"]]  # one notification, after the whole transaction
    assert store.drain_events(watch) == []


def test_multi_refuses_bad_input_before_changing_anything() -> None:
    store = MemoryStore()
    bad: list[object] = [
        [Create("/k", b""), CheckVersion("/k", 1)],
        [Create("k", b"")],
        [Create("/k", "text")],  # type: ignore[arg-type]
        [SetIfVersion("/k", b"", 0)],
        [CheckLeader("/ctl", 1)],
        [CheckLeader("/ctl/", 0)],
        [Create("/k", b"", session=SessionId(0))],
        ["op"],
        "ops",
        42,
    ]
    for ops in bad:
        with pytest.raises(UsageError):
            store.multi(ops)  # type: ignore[arg-type]
    assert store.list_prefix("/") == []


def test_value_limit() -> None:
    store = MemoryStore()
    store.create("/ok", bytearray(512 * 1024))  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        store.create("/big", b"x" * (512 * 1024 + 1))


# --- watches ------------------------------------------------------------------------------


def test_watch_delivers_every_change_in_order_under_its_prefix() -> None:
    store, s = store_with_session(ttl_ms=50, now_ms=0)
    w = store.watch("/cfg/")
    other = store.watch("/members/")
    store.create("/cfg/1", b"a")
    store.create("/cfgx", b"not mine")
    store.set_if_version("/cfg/1", b"b", version=1)
    store.register(s, "n1", "h:1")
    store.multi([DeleteIfVersion("/cfg/1", 2), Create("/cfg/2/deep", b"")])
    assert store.drain_events(w) == [
        WatchEvent(PUT, "/cfg/1", 1),
        WatchEvent(PUT, "/cfg/1", 2),
        WatchEvent(DELETE, "/cfg/1"),
        WatchEvent(PUT, "/cfg/2/deep", 1),
    ]
    store.expire(50)
    assert store.drain_events(other) == [
        WatchEvent(PUT, "/members/n1", 1),
        WatchEvent(DELETE, "/members/n1"),
    ]
    assert store.drain_events(w) == []


def test_drain_all_events_orders_by_watch_then_age() -> None:
    store = MemoryStore()
    w2 = store.watch("/a/")
    w1 = store.watch("/")
    store.create("/a/x", b"")
    store.create("/b", b"")
    assert store.drain_all_events() == [
        (w2, WatchEvent(PUT, "/a/x", 1)),
        (w1, WatchEvent(PUT, "/a/x", 1)),
        (w1, WatchEvent(PUT, "/b", 1)),
    ]
    assert store.drain_all_events() == []


def test_overflowing_watch_turns_into_one_reset() -> None:
    store = MemoryStore()
    w = store.watch("/q/", queue_max=3)
    for n in range(3):
        store.create(f"/q/{n}", b"")
    assert len(store.drain_events(w)) == 3
    for n in range(3, 10):
        store.create(f"/q/{n}", b"")
    assert store.drain_events(w) == [WatchEvent(RESET, "/q/")]
    store.create("/q/after", b"")  # delivery resumes after the reader caught up
    assert store.drain_events(w) == [WatchEvent(PUT, "/q/after", 1)]


def test_notify_may_reenter_the_store() -> None:
    store = MemoryStore()
    mirror: dict[str, bytes] = {}

    def on_event(wid: object) -> None:
        store.drain_events(wid)  # type: ignore[arg-type]
        mirror.clear()
        mirror.update({i.key: i.value for i in store.list_prefix("/")})

    store.watch("/", notify=on_event)
    store.create("/a", b"1")
    store.multi([SetIfVersion("/a", b"2", 1), Create("/b", b"3")])
    assert mirror == {"/a": b"2", "/b": b"3"}


def test_unwatch() -> None:
    store = MemoryStore()
    w = store.watch("/")
    store.create("/a", b"")
    store.unwatch(w)
    store.unwatch(w)  # idempotent
    with pytest.raises(UsageError):
        store.drain_events(w)
    for bad in (99, "1", True):
        with pytest.raises(UsageError):
            store.unwatch(bad)  # type: ignore[arg-type]
    for kwargs in ({"queue_max": 0}, {"notify": 3}):
        with pytest.raises(UsageError):
            store.watch("/", **kwargs)  # type: ignore[arg-type]


# --- elections ----------------------------------------------------------------------------


def test_election_hands_over_on_close_expiry_and_resign_with_growing_tokens() -> None:
    store = MemoryStore()
    a = store.open_session("a", 50, 0)
    b = store.open_session("b", 500, 0)
    c = store.open_session("c", 500, 0)
    ca = store.campaign("/ctl/", a, b"A", now_ms=0)
    cb = store.campaign("/ctl/", b, b"B", now_ms=0)
    cc = store.campaign("/ctl/", c, b"C", now_ms=0)
    assert (ca.token, cb.token, cc.token) == (1, 2, 3)
    assert ca.key == "/ctl/0000000001"
    assert store.leader("/ctl/") == ca
    assert store.campaign("/ctl/", a, b"other value") == ca  # idempotent
    store.expire(50)  # a's session expires: b leads
    assert store.leader("/ctl/") == cb
    a2 = store.open_session("a", 500, 50)
    ca2 = store.campaign("/ctl/", a2, b"A", now_ms=50)
    assert ca2.token == 4  # a new candidacy always gets a larger token
    store.close_session(b, 60)
    assert store.leader("/ctl/") == cc
    assert store.resign("/ctl/", cc.token, now_ms=60)
    assert not store.resign("/ctl/", cc.token)
    leader = store.leader("/ctl/")
    assert leader is not None and leader.session == a2
    leaders = [ca.token, cb.token, cc.token, leader.token]
    assert leaders == sorted(set(leaders))  # strictly growing fencing tokens


def test_fencing_check_in_multi() -> None:
    store = MemoryStore()
    a = store.open_session("a", 50, 0)
    b = store.open_session("b", 500, 0)
    ca = store.campaign("/ctl/", a, now_ms=0)
    cb = store.campaign("/ctl/", b, now_ms=0)
    store.create("/cfg", b"v1")
    store.multi([CheckLeader("/ctl/", ca.token), SetIfVersion("/cfg", b"v2", 1)])
    with pytest.raises(LeadershipLost) as info:
        store.multi([CheckLeader("/ctl/", cb.token), SetIfVersion("/cfg", b"x", 2)])
    assert (info.value.token, info.value.leader_token) == (cb.token, ca.token)
    store.expire(50)
    with pytest.raises(LeadershipLost):
        store.multi([SetIfVersion("/cfg", b"stale", 2), CheckLeader("/ctl/", ca.token)])
    store.multi([SetIfVersion("/cfg", b"v3", 2), CheckLeader("/ctl/", cb.token)])
    store.close_session(b)
    with pytest.raises(LeadershipLost) as info:
        store.multi([CheckLeader("/ctl/", cb.token)])
    assert info.value.leader_token is None
    item = store.get("/cfg")
    assert item is not None and item.value == b"v3"


def test_elections_are_independent_and_ignore_other_keys() -> None:
    store, s = store_with_session()
    store.create("/ctl/notes", b"")  # not a candidate
    store.create("/ctl/0000000000", b"")  # token 0 is never issued
    one = store.campaign("/ctl/", s)
    other = store.campaign("/other/", s)
    assert one.token == other.token == 1
    assert store.leader("/ctl/") == one
    assert store.leader("/none/") is None
    store.create("/x/0000000001", b"")  # a hand-made, persistent candidate-like key
    with pytest.raises(UsageError):
        store.campaign("/x/", s)


def test_campaign_refuses_ended_sessions_and_bad_input() -> None:
    store, s = store_with_session()
    for election, value in [("/ctl", b""), ("ctl/", b""), ("/ctl/", "text")]:
        with pytest.raises(UsageError):
            store.campaign(election, s, value)  # type: ignore[arg-type]
    store.close_session(s)
    with pytest.raises(SessionExpired):
        store.campaign("/ctl/", s)
    with pytest.raises(UsageError):
        store.resign("/ctl/", 0)


# --- a property: watchers can rebuild the state, owners are alive, leaders grow ------------------

_KEYS = ["/a", "/b", "/c/d"]
_KINDS = ["open", "renew", "close", "tick", "create", "set", "delete", "campaign"]
# (kind, a, b): a picks a session, a TTL, a key or a time step; b a version or an owner.
_op = st.tuples(st.sampled_from(_KINDS), st.integers(0, 30), st.integers(-1, 5))


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=60))
def test_random_histories_keep_the_stores_promises(ops: list[tuple[str, int, int]]) -> None:
    store = MemoryStore()
    now = 0
    sessions: list[SessionId] = []
    replica: dict[str, int] = {}  # rebuilt from watch events alone
    leaders: list[int] = []

    def on_event(wid: WatchId) -> None:
        for event in store.drain_events(wid):
            if event.kind is PUT:
                assert event.version is not None
                replica[event.key] = event.version
            else:
                assert event.kind is DELETE
                replica.pop(event.key, None)

    store.watch("/", notify=on_event)
    for kind, a, b in ops:
        session = sessions[a % len(sessions)] if sessions else None
        owner = sessions[b] if 0 <= b < len(sessions) else None
        key = _KEYS[a % len(_KEYS)]
        try:
            if kind == "open":
                sessions.append(store.open_session("n", a + 1, now))
            elif kind == "tick":
                now += a
                store.expire(now)
            elif kind == "create":
                store.create(key, b"", session=owner, now_ms=now)
            elif kind == "set":
                store.set_if_version(key, b"x", version=max(b, 1))
            elif kind == "delete":
                store.delete_if_version(key, version=max(b, 1))
            elif session is None:
                continue
            elif kind == "renew":
                store.renew(session, now)
            elif kind == "close":
                store.close_session(session, now)
            elif kind == "campaign":
                store.campaign("/ctl/", session, now_ms=now)
        except (VersionConflict, SessionExpired):
            pass  # refusals are part of the history; the checks below still hold
        leader = store.leader("/ctl/")
        if leader is not None and (not leaders or leaders[-1] != leader.token):
            leaders.append(leader.token)
        assert replica == {i.key: i.version for i in store.list_prefix("/")}
        for item in store.list_prefix("/"):
            if item.session is not None:  # no ephemeral outlives its session
                info = store.session_info(item.session)
                assert info.alive and info.expires_ms > now
    assert leaders == sorted(set(leaders))  # every new leader has a larger token
