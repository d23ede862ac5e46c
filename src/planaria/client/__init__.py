"""planaria's smart client: ``Client`` (blocking, thread-safe) and ``AsyncClient`` (asyncio).

    with Client("127.0.0.1:7001") as db:
        db.set("user:1", "ada")            # True: applied
        db.get("user:1")                   # b"ada"
        db.get_result("user:1", stale=True)  # ReadResult(value=b"ada", stale=False)

Routing. The cluster map comes from any seed node (CLUSTER SHARDS, else CLUSTER SLOTS); a key
goes to its slot's primary. A MOVED redirect is followed at once (up to two per attempt) and,
like TRYAGAIN, CLUSTERDOWN, timeouts and unreachable nodes, makes the client refresh the map
(at most once per ``refresh_interval_s``, so also periodically while errors persist).

Deadlines and retries. Each call has a deadline (``timeout_s``, default 5 s) that bounds
everything: map refreshes, every attempt (each at most ``attempt_timeout_s``) and the waits
between them. Retries use ``planaria.retry``: exponential backoff with full jitter, under a
``RetryBudget`` shared by every call of the client, so an outage does not multiply the load.
Each node has a ``CircuitBreaker``: a node that keeps failing is skipped at once until a trial
call finds it healthy again.

Request ids and outcomes. Every write carries ``REQID <client id> <seq>`` (a random 128-bit
client id and a per-client sequence); every attempt of one call sends the same id, so the
primary applies a write retried across a failover once. Writes in flight at once (threads,
``asyncio.gather``) reach a primary in any order; each is applied once as long as their
sequence numbers stay within the nodes' dedup window (``ReplicaSettings.dedup_window``, 64),
so a write waits for a sequence number while it would be ``write_window`` (64) or more above
the oldest write still in flight. What a call raises:

- ``UsageError`` at once for bad input and for requests the node refuses as malformed;
- ``UnknownOutcome`` when it gave up and some attempt was sent but never answered (a timeout,
  a lost connection): the write may or may not have been applied. Never a failure;
- ``Unavailable`` when it gave up and every attempt was definitely refused or never sent:
  nothing was applied (also a write that found no free sequence number within its deadline).

With ``request_ids=False`` (for servers that do not know REQID, such as Redis itself) a write
whose outcome is unknown is not retried: it raises ``UnknownOutcome`` at once.

Stale reads. ``get_result(key, stale=True)`` reads from the primary when it can; when the
primary is unreachable (or has no lease) it reads from a backup over a READONLY connection
and says so: ``ReadResult.stale`` is True. Such a value may be behind the latest write.
"""

from __future__ import annotations

from planaria.client._async_client import AsyncClient
from planaria.client._core import ReadResult
from planaria.client._protocol import ClusterDown, CommandRefused, Overloaded, TryAgain
from planaria.client._sync_client import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClusterDown",
    "CommandRefused",
    "Overloaded",
    "ReadResult",
    "TryAgain",
]

# Defined in the private modules below (AsyncClient is the source Client is generated from:
# scripts/unasync.py); documented and imported as planaria.client's.
for _public in (AsyncClient, Client, ReadResult):
    _public.__module__ = __name__
