"""Every seed that ever failed, replayed in CI (tests/sim/test_sim_regressions.py).

Add a row whenever a run fails: its seed and settings, why it failed, and what is expected
now: ``expect`` is the check a known-bug switch must trip (None: the run must pass), and
``open_bug`` names a protocol bug that is not fixed yet (the row is an xfail until it is:
strict, so a fix shows up as XPASS and the row's ``open_bug`` must then be cleared).

Seeds are tied to the simulator and protocol as they are: a change to either may move a
failure to other seeds, so keep the old rows (they must still pass) and add the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from planaria.sim.nemesis import FAULT_KINDS, FAULT_KINDS_BEFORE_WIPE
from planaria.sim.run import SimConfig

# The rows found before the ``wipe`` fault existed keep the default set they were found with.
ALL = ",".join(FAULT_KINDS_BEFORE_WIPE)
MEMBERSHIP = f"{ALL},membership"
WITH_WIPE = ",".join(FAULT_KINDS)

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

    def config(self) -> SimConfig:
        faults = frozenset(self.faults.split(",")) if self.faults != "none" else frozenset()
        return SimConfig(
            seed=self.seed,
            ops=self.ops,
            partitions=self.partitions,
            faults=faults,
            bugs=frozenset(self.bugs),
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
    # Known-bug switches: each seed must trip its check (the sweeps in test_sim_bugs.py
    # also check that the seeds they find pass without the switch). These rows are
    # refreshed when the simulator or the protocol moves failures to other seeds.
    Regression(0, "acks after the local persist", 150, bugs=("ack-before-replicate",),
               expect="ack-not-replicated"),
    # (Refreshed when the node journal changed what a crash loses, 68, 71, 19 -> 33, 44, 38;
    # when ring points stopped colliding for short node names, -> 45, 55, 45; and when the
    # controller began handing partitions back to their preferred primaries; when the
    # coordinator's clock began to drift with --faults drift, 0, 23 -> 1, 17; and when
    # primaries began to back off failed resends and refill backups that lost data, 1, 17,
    # 45 -> 4, 10, 14, and skip-truncate's 1, 19 -> 31, 27.)
    Regression(4, "an old-epoch append truncates committed entries", bugs=("no-epoch-fence",),
               expect="truncated-committed"),
    Regression(10, "an old-epoch append truncates committed entries", bugs=("no-epoch-fence",),
               expect="truncated-committed"),
    Regression(14, "an old-epoch append truncates committed entries", 150, partitions=2,
               bugs=("no-epoch-fence",), expect="truncated-committed"),
    Regression(1, "an out-of-sync replica is promoted", bugs=("promote-out-of-sync",),
               expect="promoted-out-of-sync"),
    Regression(0, "promotion before the old lease ran out", bugs=("no-lease-wait",),
               expect="two-serving"),
    # Since the isr-joined-behind check (membership work): the stale backup is caught when
    # it rejoins the ISR, before the replicas are compared at the end.
    Regression(31, "a stale suffix survives a primary change", bugs=("skip-truncate",),
               expect="isr-joined-behind"),
    Regression(27, "a stale suffix survives a primary change", 150, partitions=2,
               bugs=("skip-truncate",), expect="diverged"),
    Regression(49, "a wiped backup stays in the ISR and is promoted empty", 150, partitions=2,
               faults=WITH_WIPE, bugs=("wiped-stays-in-sync",), expect="truncated-committed"),
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
)  # fmt: skip
