"""``EtcdCoordinator``: the coordination interface on etcd v3 (``etcd://h1:2379,h2:2379/ns``).

**Why the gRPC gateway and no client library.** etcd serves its v3 API as JSON over HTTP
(``POST /v3/kv/range`` ...) next to gRPC, in every release since 3.3, Debian's 3.4
included. The Python gRPC clients are either abandoned (python-etcd3: no release since 2020,
breaks on current protobuf), async forks of it that are barely maintained (aetcd), or pull in
grpcio and a compiled extension for what is a dozen JSON calls. The gateway needs nothing
but asyncio (``planaria.coord._http``), speaks the same semantics (it is a translation layer
in front of the same server code), and is what ``benchmarks/_cluster_anchors.py`` already
uses. The cost is one HTTP round trip per call, and a connection per lease renewal.

**Mapping.**

- Keys: ``<namespace><key>`` (namespace from the URL path, default ``/planaria``); etcd's
  key ``version`` (1 at create, +1 per change, restarting after a delete) is exactly the
  interface's version. Reads are etcd's default linearizable ranges.
- Sessions are leases: ``open_session`` grants a lease of ``ttl_ms`` (etcd leases are whole
  seconds, at least 1.5 election timeouts: anything else raises ``UsageError``), ``keep_alive``
  renews it, ``close_session`` revokes it. The session id is the lease id; ephemeral keys
  are put with the lease, so etcd deletes them atomically when it expires. etcd may extend
  leases on a leader change (a later expiry is allowed, never an earlier one).
- ``multi`` is one txn: a compare per condition (``version`` equal, 0 for absent), the
  writes on success and, on failure, a range per key so the error says what was there
  (read in the same txn, so it is exact). Puts keep an ephemeral's lease (``ignore_lease``).
- Elections: a candidate key ``<election><token:010d>`` whose token comes from a counter key
  outside the key space (``<namespace>!tokens``), bumped in the same txn, so tokens only grow.
  ``CheckLeader`` compares "the candidate exists and no key lies between the election prefix
  and it": both in the txn, so the fence is atomic.
- Watches: one watch stream per :class:`Watch`, starting at the revision after a read made
  when ``watch`` is called; a broken stream is resumed from the next unseen revision on any
  endpoint (nothing is lost); a compacted revision delivers ``RESET``.

Linearizability of writes is etcd's own (raft); a call with no answer in ``request_timeout_s``
raises ``CoordinatorUnavailable`` (outcome unknown).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from planaria.coord._ensemble import CampaigningCoordinator, TtlNotGranted, applied_results
from planaria.coord._http import GatewayError, HttpUnreachable, JsonHttp
from planaria.coord._watch import QueuedWatch
from planaria.coord.errors import (
    CoordinatorUnavailable,
    LeadershipLost,
    NodeIdInUse,
    SessionExpired,
    VersionConflict,
)
from planaria.coord.interface import Watch
from planaria.coord.layout import Registration, decode_registration, encode_registration, member_key
from planaria.coord.types import (
    Candidate,
    CheckLeader,
    Create,
    DeleteIfVersion,
    EventKind,
    SessionId,
    SetIfVersion,
    TxnOp,
    VersionedValue,
    WatchEvent,
    candidate_key,
    leader_of,
    validate_key,
    validate_ops,
    validate_prefix,
    validate_session_id,
    validate_ttl_ms,
)
from planaria.errors import UsageError

__all__ = ["DEFAULT_NAMESPACE", "EtcdCoordinator", "TtlNotGranted", "smallest_etcd_ttl_ms"]

DEFAULT_NAMESPACE = "/planaria"
_TOKENS = "!tokens"  # "!" sorts before "/": outside every key prefix
_NOT_FOUND = 5  # gRPC status codes the gateway passes on
_INVALID_ARGUMENT = 3
_FAILED_PRECONDITION = 9
_RETRY_WAIT_S = 0.05
_WATCH_QUIET_S = 2.0


def smallest_etcd_ttl_ms(election_timeout_ms: float = 1000.0) -> float:
    """The smallest lease etcd grants: 1.5 election timeouts, rounded up to whole seconds
    (1000 ms with ``--election-timeout`` up to 666 ms; 2000 ms with etcd's default 1000)."""
    seconds = -(-int(1.5 * election_timeout_ms) // 1000)
    return float(max(1, seconds) * 1000)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) else b""


def _int(value: object) -> int:
    """The gateway renders int64 as strings and omits zero values."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        return int(value)
    return 0


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class _EtcdWatch(QueuedWatch):
    def __init__(self, owner: EtcdCoordinator, prefix: str, start_revision: int) -> None:
        super().__init__(prefix)
        self._owner = owner
        self._next_revision = start_revision
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        key = self._owner._raw(self.prefix)
        request = {"key": _b64(key), "range_end": _b64(_range_end(key))}
        while not self.closed:
            create = {**request, "start_revision": str(self._next_revision)}
            stream = self._owner._http.stream("/v3/watch", {"create_request": create})
            try:
                while True:
                    # A paused or cut-off member sends nothing, and TCP does not say: after a
                    # quiet spell, open the stream again (maybe on another member).
                    async with asyncio.timeout(_WATCH_QUIET_S):
                        reply = await anext(stream)
                    result = reply.get("result", {})
                    if _int(result.get("compact_revision")) > 0:
                        await self._reset()
                        break
                    if result.get("canceled"):
                        break
                    self._take(result.get("events", []))
            except (HttpUnreachable, GatewayError, StopAsyncIteration, TimeoutError):
                pass  # resumed below from the next unseen revision: nothing is lost
            finally:
                await stream.aclose()
            await asyncio.sleep(_RETRY_WAIT_S)

    def _take(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kv = event.get("kv", {})
            key = self._owner._key_of(_unb64(kv.get("key")))
            self._next_revision = max(self._next_revision, _int(kv.get("mod_revision")) + 1)
            if key is None:
                continue
            if event.get("type") == "DELETE":
                self._push(WatchEvent(EventKind.DELETE, key))
            else:
                self._push(WatchEvent(EventKind.PUT, key, _int(kv.get("version"))))

    async def _reset(self) -> None:
        while not self.closed:
            try:
                self._next_revision = await self._owner._revision() + 1
                break
            except CoordinatorUnavailable:
                await asyncio.sleep(_RETRY_WAIT_S)
        self._push(WatchEvent(EventKind.RESET, self.prefix))

    async def close(self) -> None:
        if self.closed:
            return
        self._end()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._owner._watches.discard(self)


class EtcdCoordinator(CampaigningCoordinator):
    """A client of an etcd v3 cluster through its gRPC gateway; see the module docstring.

    ``endpoints``: ``(host, port)`` pairs of the members' client URLs (plain HTTP).
    ``namespace``: the key prefix this cluster lives under (several clusters can share etcd).
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        request_timeout_s: float = 1.0,
    ) -> None:
        if not endpoints:
            raise UsageError("an etcd coordinator needs at least one endpoint")
        if not request_timeout_s > 0:
            raise UsageError(f"request_timeout_s must be > 0, not {request_timeout_s!r}")
        if namespace != "":
            validate_key(namespace)
        self._namespace = namespace.encode()
        self._http = JsonHttp(endpoints, timeout_s=request_timeout_s)
        self._watches: set[_EtcdWatch] = set()
        self._my_sessions: set[SessionId] = set()
        self._closed = False

    # --- plumbing ------------------------------------------------------------------------

    def _raw(self, key: str) -> bytes:
        return self._namespace + key.encode()

    def _key_of(self, raw: bytes) -> str | None:
        if not raw.startswith(self._namespace + b"/"):
            return None
        return raw[len(self._namespace) :].decode()

    async def _call(
        self, path: str, body: dict[str, Any], *, definite: bool = False
    ) -> dict[str, Any]:
        """``definite``: let the caller map etcd's definite refusals (``GatewayError``);
        otherwise they are ``UsageError``."""
        if self._closed:
            raise UsageError("this coordinator is closed")
        try:
            return await self._http.post(path, body)
        except HttpUnreachable as exc:
            raise CoordinatorUnavailable(f"etcd unreachable: {exc}") from None
        except GatewayError as exc:
            if exc.code in (_INVALID_ARGUMENT, _FAILED_PRECONDITION, _NOT_FOUND):
                if definite:
                    raise
                raise UsageError(f"etcd refused {path}: {exc.message}") from None
            raise CoordinatorUnavailable(f"etcd: {exc.message}") from None

    async def _revision(self) -> int:
        reply = await self._call("/v3/kv/range", {"key": _b64(self._raw("/")), "count_only": True})
        return _int(reply.get("header", {}).get("revision"))

    def _item(self, kv: dict[str, Any]) -> VersionedValue | None:
        key = self._key_of(_unb64(kv.get("key")))
        if key is None:
            return None
        lease = _int(kv.get("lease"))
        session = SessionId(lease) if lease > 0 else None
        return VersionedValue(key, _unb64(kv.get("value")), _int(kv.get("version")), session)

    def _items(self, kvs: list[dict[str, Any]]) -> list[VersionedValue]:
        items = (self._item(kv) for kv in kvs)
        return sorted((item for item in items if item is not None), key=lambda i: i.key)

    # --- sessions ------------------------------------------------------------------------

    async def open_session(self, owner: str, ttl_ms: float) -> SessionId:
        if not isinstance(owner, str) or not owner:
            raise UsageError(f"owner must be a non-empty str, not {owner!r}")
        ttl_ms = validate_ttl_ms(ttl_ms)
        if ttl_ms % 1000 != 0:
            raise TtlNotGranted(
                f"etcd grants leases in whole seconds, not {ttl_ms} ms "
                f"(the smallest is usually {smallest_etcd_ttl_ms(500):.0f} ms)",
                requested_ms=ttl_ms,
                granted_ms=float(math.ceil(ttl_ms / 1000) * 1000),
            )
        lease_id = secrets.randbits(62) + 1  # ours, so a lost reply cannot leak a lease
        ttl_s = int(ttl_ms // 1000)
        reply = await self._call("/v3/lease/grant", {"ID": str(lease_id), "TTL": str(ttl_s)})
        granted_s = _int(reply.get("TTL"))
        if granted_s != ttl_s:
            await self._revoke(SessionId(lease_id))
            raise TtlNotGranted(
                f"etcd granted a {granted_s} s lease, not {ttl_s} s: its minimum is 1.5 "
                "election timeouts; ask for at least that",
                requested_ms=ttl_ms,
                granted_ms=float(granted_s * 1000),
            )
        session = SessionId(lease_id)
        self._my_sessions.add(session)
        return session

    async def keep_alive(self, session: SessionId) -> None:
        session = validate_session_id(session)
        if self._closed:
            raise UsageError("this coordinator is closed")
        # Lease evidence from the leader, no sync needed: a member that does not lead
        # forwards the renewal to the leader, whose lessor renews it from when it received
        # it and answers the TTL (etcd commit 2e157530, "forward keepalives to leader";
        # etcdserver LeaseRenew), so a member cut off from the leader acknowledges nothing.
        try:
            reply = await self._http.first_of_stream("/v3/lease/keepalive", {"ID": str(session)})
        except (HttpUnreachable, TimeoutError) as exc:
            raise CoordinatorUnavailable(f"etcd unreachable: {exc}") from None
        except GatewayError as exc:
            raise CoordinatorUnavailable(f"etcd: {exc.message}") from None
        if _int(reply.get("result", {}).get("TTL")) <= 0:
            raise SessionExpired(session)

    async def _revoke(self, session: SessionId) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(session)}, definite=True)
        except GatewayError as exc:
            if exc.code != _NOT_FOUND:
                raise UsageError(f"etcd refused to revoke lease {session}: {exc}") from None

    async def close_session(self, session: SessionId) -> None:
        await self._revoke(validate_session_id(session))
        self._my_sessions.discard(session)

    async def _session_ended(self, session: SessionId) -> bool:
        reply = await self._call("/v3/kv/lease/timetolive", {"ID": str(session)})
        return _int(reply.get("TTL")) < 0

    # --- keys ----------------------------------------------------------------------------

    async def get(self, key: str) -> VersionedValue | None:
        reply = await self._call("/v3/kv/range", {"key": _b64(self._raw(validate_key(key)))})
        items = self._items(reply.get("kvs", []))
        return items[0] if items else None

    async def list_prefix(self, prefix: str) -> list[VersionedValue]:
        raw = self._raw(validate_prefix(prefix))
        reply = await self._call(
            "/v3/kv/range", {"key": _b64(raw), "range_end": _b64(_range_end(raw))}
        )
        return self._items(reply.get("kvs", []))

    def _compare(self, op: TxnOp) -> list[dict[str, Any]]:
        if isinstance(op, CheckLeader):
            mine = self._raw(candidate_key(op.election, op.token))
            lower = {"key": _b64(self._raw(op.election)), "range_end": _b64(mine)}
            exists = {"key": _b64(mine), "target": "VERSION", "result": "GREATER", "version": "0"}
            return [exists, {**lower, "target": "VERSION", "result": "EQUAL", "version": "0"}]
        version = 0 if isinstance(op, Create) else op.version
        return [{"key": _b64(self._raw(op.key)), "target": "VERSION", "result": "EQUAL",
                 "version": str(version)}]  # fmt: skip

    def _write(self, op: TxnOp) -> dict[str, Any] | None:
        if isinstance(op, Create):
            put = {"key": _b64(self._raw(op.key)), "value": _b64(op.value)}
            if op.session is not None:
                put["lease"] = str(op.session)
            return {"request_put": put}
        if isinstance(op, SetIfVersion):
            key, value = _b64(self._raw(op.key)), _b64(op.value)
            return {"request_put": {"key": key, "value": value, "ignore_lease": True}}
        if isinstance(op, DeleteIfVersion):
            return {"request_delete_range": {"key": _b64(self._raw(op.key))}}
        return None

    def _probe(self, op: TxnOp) -> dict[str, Any]:
        """A read, on failure, of what the op's condition looked at."""
        if isinstance(op, CheckLeader):
            raw = self._raw(op.election)
            return {"request_range": {"key": _b64(raw), "range_end": _b64(_range_end(raw))}}
        return {"request_range": {"key": _b64(self._raw(op.key))}}

    async def multi(self, ops: Sequence[TxnOp]) -> list[int | None]:
        checked = validate_ops(ops)
        if self._closed:
            raise UsageError("this coordinator is closed")
        if not checked:
            return []
        txn = {
            "compare": [c for op in checked for c in self._compare(op)],
            "success": [w for op in checked if (w := self._write(op)) is not None],
            "failure": [self._probe(op) for op in checked],
        }
        try:
            reply = await self._call("/v3/kv/txn", txn, definite=True)
        except GatewayError as exc:
            if exc.code == _NOT_FOUND and "lease" in exc.message:
                session = next(op.session for op in checked
                               if isinstance(op, Create) and op.session is not None)  # fmt: skip
                raise SessionExpired(session) from None
            raise UsageError(f"etcd refused the transaction: {exc.message}") from None
        if reply.get("succeeded"):
            return applied_results(checked)
        self._raise_conflict(checked, reply.get("responses", []))
        raise AssertionError("unreachable")  # _raise_conflict always raises

    def _raise_conflict(self, ops: list[TxnOp], responses: list[dict[str, Any]]) -> None:
        for index, (op, response) in enumerate(zip(ops, responses, strict=True)):
            items = self._items(response.get("response_range", {}).get("kvs", []))
            if isinstance(op, CheckLeader):
                leader = leader_of(op.election, items)
                if leader is None or leader.token != op.token:
                    leader_token = None if leader is None else leader.token
                    raise LeadershipLost(
                        op.election, token=op.token, leader_token=leader_token, op_index=index
                    )
                continue
            actual = items[0].version if items else None
            expected = None if isinstance(op, Create) else op.version
            if actual != expected:
                raise VersionConflict(op.key, expected=expected, actual=actual, op_index=index)
        raise CoordinatorUnavailable("etcd refused a transaction whose conditions all hold")

    # --- membership ----------------------------------------------------------------------

    async def register(
        self,
        session: SessionId,
        node_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Registration:
        session = validate_session_id(session)
        raw = _b64(self._raw(member_key(node_id)))
        value = _b64(encode_registration(address, metadata))
        put = {"key": raw, "value": value, "lease": str(session)}
        read = {"request_range": {"key": raw}}
        # Put if absent, or if this session holds it; else another live lease holds it
        # (its key would have vanished with it).
        absent = {"key": raw, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        mine = {"key": raw, "target": "LEASE", "result": "EQUAL", "lease": str(session)}
        while True:
            for compare in (absent, mine):
                success = [{"request_put": put}, read]
                txn = {"compare": [compare], "success": success, "failure": [read]}
                try:
                    reply = await self._call("/v3/kv/txn", txn, definite=True)
                except GatewayError as exc:
                    if exc.code == _NOT_FOUND:
                        raise SessionExpired(session) from None
                    raise UsageError(f"etcd refused the registration: {exc.message}") from None
                if reply.get("succeeded"):
                    kvs = reply["responses"][1].get("response_range", {}).get("kvs", [])
                    return decode_registration(self._items(kvs)[0])
            kvs = reply["responses"][0].get("response_range", {}).get("kvs", [])
            if kvs and _int(kvs[0].get("lease")) != session:
                raise NodeIdInUse(node_id, holder=_int(kvs[0].get("lease")))
            # Gone, or ours, between the two looks: look again.

    # --- watches -------------------------------------------------------------------------

    async def watch(self, prefix: str) -> Watch:
        prefix = validate_prefix(prefix)
        revision = await self._revision()
        watch = _EtcdWatch(self, prefix, revision + 1)
        self._watches.add(watch)
        return watch

    # --- election ------------------------------------------------------------------------

    async def _stand(self, election: str, session: SessionId, value: bytes) -> Candidate:
        counter = _b64(self._namespace + _TOKENS.encode())
        while True:
            reply = await self._call("/v3/kv/range", {"key": counter})
            kvs = reply.get("kvs", [])
            seen = _int(kvs[0].get("version")) if kvs else 0
            token = seen + 1
            key = candidate_key(election, token)
            txn = {
                "compare": [
                    {"key": counter, "target": "VERSION", "result": "EQUAL", "version": str(seen)}
                ],
                "success": [
                    {"request_put": {"key": counter, "value": _b64(b"%d" % token)}},
                    {
                        "request_put": {
                            "key": _b64(self._raw(key)),
                            "value": _b64(value),
                            "lease": str(session),
                        }
                    },
                ],
            }
            try:
                reply = await self._call("/v3/kv/txn", txn, definite=True)
            except GatewayError as exc:
                if exc.code == _NOT_FOUND:
                    raise SessionExpired(session) from None
                raise UsageError(f"etcd refused the candidacy: {exc.message}") from None
            if reply.get("succeeded"):
                return Candidate(election, token, session, value, key)
            # Another candidate took this token meanwhile: take the next.

    # --- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for watch in list(self._watches):
            await watch.close()
        for session in sorted(self._my_sessions):
            # Unreachable: the leases expire by their TTL instead.
            with contextlib.suppress(CoordinatorUnavailable):
                await self._revoke(session)
        self._my_sessions.clear()
        self._closed = True
        await self._http.close()
