"""Chaos testing on real processes, the way Jepsen tests databases: a cluster of local
processes (planaria, Redis Sentinel or etcd), a recorded client workload, a seeded schedule
of faults (kill -9, SIGSTOP, network partitions), and the checks (linearizability, lost
acknowledged writes, availability). ``planaria chaos`` runs it; see docs/chaos.md.

Pure parts: :mod:`planaria.chaos.schedule` and :mod:`planaria.chaos.results`.
"""

from __future__ import annotations

from planaria.chaos.results import FaultRecord, compare_rows, summarize
from planaria.chaos.schedule import (
    FAULT_KINDS,
    Fault,
    format_schedule,
    parse_faults,
    parse_schedule,
    random_schedule,
)

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultRecord",
    "compare_rows",
    "format_schedule",
    "parse_faults",
    "parse_schedule",
    "random_schedule",
    "summarize",
]
