"""Every seed that ever failed, replayed in CI (tests/sim/test_sim_regressions.py).

Add a row whenever a run fails: its seed and settings, why it failed, and what is expected
now: ``expect`` is the check a known-bug switch must trip (None: the run must pass), and
``open_bug`` names a protocol bug that is not fixed yet (the row is an xfail until it is:
strict, so a fix shows up as XPASS and the row's ``open_bug`` must then be cleared).

Seeds are tied to the simulator and protocol as they are: a change to either may move a
failure to other seeds, so keep the old rows (they must still pass) and add the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from planaria.sim.client import ClientSettings
from planaria.sim.nemesis import (
    FAULT_KINDS,
    FAULT_KINDS_BEFORE_SNAPSHOT,
    FAULT_KINDS_BEFORE_WIPE,
)
from planaria.sim.node import NodeSettings
from planaria.sim.run import SimConfig

# The rows found before the ``wipe`` fault existed keep the default set they were found with.
ALL = ",".join(FAULT_KINDS_BEFORE_WIPE)
MEMBERSHIP = f"{ALL},membership"
# ...and the rows found with ``wipe`` before the ``snapshot`` fault existed, theirs.
WITH_WIPE = ",".join(FAULT_KINDS_BEFORE_SNAPSHOT)
# The default set now: with ``snapshot`` (its drawn thresholds and transfer settings).
WITH_SNAPSHOT = ",".join(FAULT_KINDS)

# The core bug the simulator found first (fixed in core 919bc26): a replica that
# learns a higher epoch from a peer's AppendReply/Append *before* the config of that epoch
# reaches it adopts the epoch as a backup; when the config naming it primary of that very
# epoch then arrives, ``on_config`` sees "same epoch, I am a backup" and never promotes. The
# controller sees a live primary and changes nothing: the partition has no serving primary
# forever (typically: a restarted node promotes itself on a stale config of epoch e, the
# controller bumps to e+1 for the new incarnation, a backup that already saw e+1 fences it).
STUCK_BACKUP = (
    "was: core: a replica that adopted epoch e from a peer ignores the config of epoch e naming "
    "it primary (Replica.on_config), so the partition never gets a serving primary"
)


@dataclass(frozen=True)
class Regression:
    seed: int
    why: str
    ops: int = 300
    partitions: int = 8
    faults: str = ALL
    bugs: tuple[str, ...] = ()
    expect: str | None = None
    open_bug: str | None = None
    checks: str = "all"  # "history": only what a client sees (planaria sim --checks history)
    write_window: int | None = None  # the clients' (default: ClientSettings.write_window)
    nodes: int = 5
    fsync_max_ms: float | None = None  # the nodes' (default: drawn per seed, NodeSettings)
    ttls: int = 0  # TTL keys in the workload (planaria sim --ttls)

    def config(self) -> SimConfig:
        faults = frozenset(self.faults.split(",")) if self.faults != "none" else frozenset()
        client = ClientSettings()
        if self.write_window is not None:
            client = replace(client, write_window=self.write_window)
        node = NodeSettings()
        if self.fsync_max_ms is not None:
            node = replace(node, fsync_max_ms=self.fsync_max_ms, fsync_max_drawn=False)
        return SimConfig(
            seed=self.seed,
            nodes=self.nodes,
            node=node,
            ops=self.ops,
            partitions=self.partitions,
            faults=faults,
            bugs=frozenset(self.bugs),
            checks=self.checks,
            client=client,
            ttls=self.ttls,
        )


REGRESSIONS: tuple[Regression, ...] = (
    # Found while building the simulator (its own bugs, fixed; the seeds must pass).
    Regression(7, "sim: clock offsets were set after the first renewal (a lease in the future)"),
    Regression(11, "sim: a mid-write crash fired after its restart, leaving a node down"),
    Regression(69, "core stuck-backup bug, under the first (HashRing) placement"),
    # Protocol bugs found by the simulator.
    Regression(209, f"no serving primary for p1 after healing; {STUCK_BACKUP}"),
    Regression(270, f"no serving primary for p2 after healing; {STUCK_BACKUP}"),
    Regression(281, f"no serving primary for p3 after healing; {STUCK_BACKUP}"),
    # Found with membership changes (issue 9; fixed, the seeds must pass).
    Regression(7, "config-malformed: the controller dropped a dead backup from the ISR "
               "while it was a primary's handoff target (the transfer must be cancelled)",
               faults=MEMBERSHIP),
    Regression(199, "no-primary: a node whose session open expired before any ack reached "
               "it asked for that dead session forever (sim/node.py), so its ISR proposal "
               "was refused forever", faults=MEMBERSHIP),
    # Found by the history-only workload (issue 16): clients with several writes unanswered
    # under one id. The replicas remember only a client's last write, so an older write
    # whose attempt got no answer is never answered again (nor applied): every seed of a
    # window wider than 1 shows it (fixed by the dedup window; the bug switch
    # dedup-last-only brings it back).
    Regression(0, "unresolved: writes of one client retried after healing got no answer",
               150, checks="history", write_window=4),
    # Known-bug switches: each seed must trip its check (the sweeps in test_sim_bugs.py
    # also check that the seeds they find pass without the switch). These rows are
    # refreshed when the simulator or the protocol moves failures to other seeds.
    Regression(0, "acks after the local persist", 150, bugs=("ack-before-replicate",),
               expect="ack-not-replicated"),
    # (Refreshed when the node journal changed what a crash loses, 68, 71, 19 -> 33, 44, 38;
    # when ring points stopped colliding for short node names, -> 45, 55, 45; when the
    # controller began handing partitions back to their preferred primaries; and when the
    # coordinator's clock began to drift with --faults drift; and when the clients began to keep
    # several operations in flight, issue 16; and when primaries began to back off failed
    # resends and refill backups that lost data, issue 16 too; and when the simulator began
    # to run the node's pipeline with fsync delays, issue 16 part 3; and when every run
    # began to snapshot and compact, issue 17.)
    Regression(5, "an old-epoch append truncates committed entries", bugs=("no-epoch-fence",),
               expect="truncated-committed"),
    Regression(1, "an out-of-sync replica is promoted", bugs=("promote-out-of-sync",),
               expect="promoted-out-of-sync"),
    Regression(0, "promotion before the old lease ran out", bugs=("no-lease-wait",),
               expect="two-serving"),
    # Since the isr-joined-behind check (membership work): the stale backup is caught when
    # it rejoins the ISR, before the replicas are compared at the end.
    Regression(1, "a stale suffix survives a primary change", bugs=("skip-truncate",),
               expect="isr-joined-behind"),
    Regression(34, "a stale suffix survives a primary change", 150, partitions=2,
               bugs=("skip-truncate",), expect="diverged"),
    Regression(218, "a wiped backup stays in the ISR and is promoted empty", 150, partitions=2,
               faults=WITH_WIPE, bugs=("wiped-stays-in-sync",), expect="truncated-committed"),
    Regression(2, "a node back on a replaced disk (after a crash, unmarked) keeps its ISR "
               "places and is promoted empty under its new session", faults=WITH_WIPE,
               bugs=("ignore-data-id",), expect="truncated-committed"),
    # Found with the wipe fault (issue 16; fixed, the seeds must pass).
    Regression(6, "truncated-committed: the simulated journal wipe wiped no log (SimFS "
               "lists files only), so a damaged node came back with its stale logs",
               faults=WITH_WIPE),
    Regression(11, "truncated-committed: a wiped primary led a stale config of its old "
               "session (the node kept its session id across the crash)", faults=WITH_WIPE),
    Regression(10, "config-malformed: every in-sync copy lost left a primary outside an "
               "empty ISR (now: no primary; the nemesis spares the last in-sync copy)",
               faults=WITH_WIPE),
    Regression(23, "no-primary: the last in-sync copy was wiped", faults=WITH_WIPE),
    Regression(620, "no-primary: a lost replica named primary (planned transfer) before its "
               "session's open was acknowledged never took the lead", faults=WITH_WIPE),
    Regression(881, "no-primary: a node refilled after its loss, restarted before it saw "
               "the loss recorded, registered it again and was dropped from the ISR as if "
               "newly lost (now each loss has an id, handled once)", faults=WITH_WIPE),
    Regression(120, "no-primary: a node down for a disk replacement was promoted under its "
               "old session, then registered the loss: nobody left in sync (now a disk is "
               "replaced in a planned stop that ends the session)", faults=WITH_WIPE),
    Regression(24, "no-primary: the last in-sync copy was wiped", faults=WITH_WIPE),
    Regression(451, "no-primary: a wipe counted the primary cut off with some clients "
               "(minority-primary) as the other in-sync copy; its session then expired and "
               "the wiped node was the last one left (now a copy counts only on a node not "
               "paused and not cut from the coordinator)", faults=WITH_WIPE),
    # Found by the 1000-seed sweep after snapshots (issue 17; fixed, the seed must pass).
    Regression(301, "crashed: a snapshot of an entry the replica applied while its disk still "
               "held an older epoch's record at that index (a truncation in flight)"),
    Regression(632, "truncated-committed: a primary sent a commit index covering its own "
               "entry still unsynced; it crashed, lost it and led again without it, and the "
               "backup that had persisted it as committed had to truncate it"),
    # --checks history (issue 16): each known bug switch caught by what clients see alone,
    # with the default settings; the first failing seed of a sweep (docs/simulator.md).
    Regression(3, "acked writes lost when a primary that acks before replicating fails over",
               bugs=("ack-before-replicate",), checks="history", expect="not-linearizable"),
    Regression(1, "an out-of-sync replica promoted: clients read values going back",
               bugs=("promote-out-of-sync",), checks="history", expect="not-linearizable"),
    Regression(4, "a stale suffix survives a primary change: the replicas never converge",
               bugs=("skip-truncate",), checks="history", expect="diverged"),
    # (no-epoch-fence first fails at seed 179 with 300 operations, where a livelock of
    # Appends makes the run slow: its first seeds with 150 were 48 and 343, and 272 since
    # primaries began to back off failed resends and refill backups that lost data. Since
    # the simulator runs the node's pipeline no seed of 0-399 with 150 operations (0-299
    # with 300) fails with the default fsync delays; with fsync delays up to 20 ms, seed 19;
    # since a paused process reads its connections in random order at the resume (issue 16
    # part 3), none of 0-399 with 150 and 20 ms, but seed 72 with the defaults, 162
    # since snapshot transfer merged, and 324 since each seed draws its disks, below.)
    Regression(0, "promotions before the old lease ran out leave a partition unavailable",
               bugs=("no-lease-wait",), checks="history", expect="no-primary"),
    # Issue 16 part 3: a paused process reads its connections in random order at the
    # resume, and a primary can be cut off with some clients (minority-primary). (First
    # seeds on the branch before it merged the node pipeline and compaction: 22 and 361.)
    Regression(93, "a deposed primary answers a read with a value the new primary had "
               "replaced and acknowledged before the read began", faults=WITH_WIPE,
               bugs=("no-lease-wait",), checks="history", expect="not-linearizable"),
    Regression(324, "an old-epoch append replaces entries a backup applied from an empty "
               "heartbeat's commit: it never converges", faults=WITH_WIPE,
               bugs=("no-epoch-fence",), checks="history", expect="diverged"),
    Regression(20, "a wiped backup stays in the ISR, is promoted empty: acknowledged writes "
               "are gone", faults=WITH_WIPE, bugs=("wiped-stays-in-sync",), checks="history",
               expect="not-linearizable"),
    Regression(0, "a client's older write in flight is dropped: its retries never get an "
               "answer", bugs=("dedup-last-only",), checks="history", expect="unresolved"),
    Regression(20, "a node back on a replaced disk keeps its ISR places, is promoted empty: "
               "acknowledged writes are gone", faults=WITH_WIPE, bugs=("ignore-data-id",),
               checks="history", expect="not-linearizable"),
    # The node's effect ordering (core/pipeline.py, run by the simulator since issue 16):
    # effects released before their persists are durable. The monitor sees the first ack;
    # what clients see shows it only when two replicas crash inside the fsync delay of the
    # same write, which takes a slow disk and few nodes (docs/simulator.md).
    Regression(0, "acks leave before any ISR member's fsync", bugs=("release-before-durable",),
               expect="ack-not-replicated"),
    Regression(27, "the primary and the backup that acked crash before their fsyncs: an "
               "acknowledged write is gone", partitions=2, nodes=3, faults="crash,disk",
               fsync_max_ms=20.0, bugs=("release-before-durable",), checks="history",
               expect="not-linearizable"),
    # Since each seed draws its disks (slow: fsyncs up to 10 ms), the default settings too.
    Regression(98, "an ack that left before its fsyncs: the write is gone after two crashes",
               bugs=("release-before-durable",), checks="history", expect="not-linearizable"),
    # Snapshots and compaction (issue 17): a snapshot's compaction past the commit index
    # applies entries not committed yet; a retry gets the stored reply before any backup
    # logged it, and (history) the replica's commit ran ahead of its partition: stuck.
    Regression(2, "uncommitted entries compacted and applied: a retry acked unreplicated",
               faults=WITH_WIPE, bugs=("compact-past-commit",), expect="ack-not-replicated"),
    Regression(13, "uncommitted entries compacted and applied: the partition never serves "
               "again", faults=WITH_WIPE, bugs=("compact-past-commit",), checks="history",
               expect="no-primary"),
    # The snapshot fault (crashes at any write of a snapshot or an install, torn snapshot
    # files, drawn thresholds): found by the first 1000-seed sweep with it.
    Regression(390, "isr-joined-behind: a crash while installing a snapshot (its new segment "
               "not created yet) left a log whose recovery dropped the old segments but kept "
               "their epochs: the snapshot's index read as of epoch 1, not 3 (storage: fixed, "
               "PartitionLog recovery drops the dropped segments' epochs)",
               faults=WITH_SNAPSHOT),
    # Key expiry (issue 20): with TTL keys in the workload. A primary that answers a read
    # without looking at the key's expiry is caught by the monitor (expired-read: the
    # primary's clock, which no client sees); a backup that deletes expired keys by its own
    # clock ends with a state that differs (diverged: a later EXPIRE finds the key on the
    # primary only).
    Regression(1, "a read answered with a key past its expiry", faults=WITH_SNAPSHOT, ttls=4,
               bugs=("read-ignores-expiry",), expect="expired-read"),
    Regression(3, "a backup expired keys by its own clock: its state differs", ttls=4,
               faults=WITH_SNAPSHOT, bugs=("backup-expires-on-its-own",), checks="history",
               expect="diverged"),
)  # fmt: skip
