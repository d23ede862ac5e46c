"""Test tiers (CONTRIBUTING.md): the markers that keep ``make test-fast`` fast.

Tests are marked here, by where they are and which fixtures they use, rather than in each
file, so a new test in one of these places is marked without anyone remembering to:

- ``process``: starts a planaria server or command-line program, or an outside program,
  and waits for it (bounded, with generous deadlines);
- ``ensemble``: needs Debian packages (``make system-deps``): ZooKeeper or etcd ensembles,
  redis-cli or redis-benchmark, root for network namespaces;
- ``sweep``: long runs of one property (hundreds of simulator seeds or crash schedules, an
  allocation traced with tracemalloc); the fast tier runs the short ones and leaves the
  sweeps to ``make test``.

``slow`` (real clusters of processes, long runs) is still set by hand where it was.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every ``slow``,
``process`` and ``ensemble`` test joins one group, so they run one at a time on one worker,
as they would alone, while the other worker takes the CPU-bound rest: the parallel run
loads a process test no more than one CPU burner would (scripts/stress-test.sh burns two).
The Hypothesis profile ``fast`` (``HYPOTHESIS_PROFILE=fast``, set by ``make test-fast``)
gives tests that do not choose their own count fewer examples; ``make test`` runs the
default count.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("fast", max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ENSEMBLE_FIXTURES = {"zookeeper", "etcd"}  # tests/coord/conftest.py: real 3-server ensembles

# Node ids (or their prefixes) of tests that start processes, need system packages, or sweep.
PROCESS = (
    "tests/coord/test_server.py::test_coordinator_process_serves_and_stops_on_sigterm",
    "tests/storage/test_storage_process.py",
    "tests/test_cli.py::test_console_script_runs",
    "tests/chaos/test_net.py",
    "tests/node/test_node_processes.py",
    "tests/node/test_hostile_clients.py",
    "tests/membership/test_membership_processes.py",
    "tests/cluster/test_cluster.py",
    "tests/cluster/test_backup_restore.py",
    "tests/cluster/test_cluster_ensembles.py",
    "tests/chaos/test_real_runs.py",
    "tests/chaos/test_counter_ttl_runs.py",
    "tests/client/test_client_cluster.py",
    "tests/node/test_differential.py",
)
ENSEMBLE = (
    "tests/net/test_server.py::test_redis_cli",
    "tests/net/test_server.py::test_redis_benchmark",
    "tests/chaos/test_net.py",
    "tests/cluster/test_cluster_ensembles.py",
    "tests/chaos/test_real_runs.py",
    "tests/node/test_differential.py",
)
SWEEP = (
    "tests/sim/test_sim_sweep.py",
    "tests/sim/test_sim_membership.py::test_membership_changes_mixed_with_every_fault",
    "tests/sim/test_sim_bugs.py::test_a_bounded_sweep_catches_the_bug",
    "tests/storage/test_storage_journal.py::test_synced_records_survive_crashes",
    "tests/storage/test_storage_simcrash.py::test_synced_records_survive_crashes",
    "tests/check/test_check_bounds.py::test_memory_limit_holds_for_the_real_allocation",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        node_id = item.nodeid
        if node_id.startswith(PROCESS):
            item.add_marker(pytest.mark.process)
        if node_id.startswith(ENSEMBLE) or ENSEMBLE_FIXTURES & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.ensemble)
        if node_id.startswith(SWEEP):
            item.add_marker(pytest.mark.sweep)
        if grouped and any(item.get_closest_marker(m) for m in ("slow", "process", "ensemble")):
            item.add_marker(pytest.mark.xdist_group("processes"))
