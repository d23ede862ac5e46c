"""A local cluster: one coordinator and N nodes as processes on loopback.

:class:`LocalCluster` starts ``planaria coordinator`` and ``planaria node`` processes (each
``sys.executable -m planaria.cli ...``, output to ``logs/<name>.log`` in the data directory),
writes the ``/cluster`` metadata before the nodes start, and waits until every partition has
a serving primary. Everything it started is recorded in ``cluster.json`` in the data
directory, so another process (``planaria down``, ``planaria status``, ``planaria node kill``)
finds the processes again: :meth:`LocalCluster.open`.

Layout of a data directory::

    cluster.json          ports, ids and pids of the coordinator and the nodes
    cluster.lock          serializes updates of cluster.json between processes
    coordinator/          the coordinator's data
    nodes/<id>/           one node's data (its logs and snapshots)
    logs/<name>.log       stdout and stderr of each process (appended across restarts)

Ports: node ``i`` (from 1) serves RESP on ``base_port + i - 1`` and replication on that port
plus 10,000 (Redis Cluster's bus convention); the coordinator listens on
``coordinator_port`` (default 7000, or ``base_port - 1`` for a base port other than 7001).

With ``coordinator_url`` (``zk://...`` or ``etcd://...``, or the ``planaria://`` address of
a coordinator run elsewhere) no coordinator process is started: the nodes, the ``/cluster``
metadata and :meth:`LocalCluster.status` all use that coordinator.
Every wait is bounded; a process that dies while the cluster starts is reported with the last
lines of its log.

The package only re-exports; each concern has its private module: ``_local``
(:class:`LocalCluster`: lifecycle, membership, status), ``_state`` (cluster.json and its
lock), ``_processes`` (ports, spawning and probing processes), ``_status`` (the status types,
read from the coordinator and the nodes' INFO), ``_resp`` (a small RESP client for the
probes), ``_coordinator`` (calls to the coordinator from synchronous code), ``_errors``.
"""

from planaria.cluster._errors import ClusterError, NoCluster, PortInUse
from planaria.cluster._local import LocalCluster
from planaria.cluster._processes import (
    BUS_PORT_OFFSET,
    DEFAULT_BASE_PORT,
    DEFAULT_COORDINATOR_PORT,
    free_base_port,
)
from planaria.cluster._resp import probe_keys, resp_command
from planaria.cluster._state import STATE_FILE
from planaria.cluster._status import (
    ClusterStatus,
    NodeStatus,
    PartitionStatus,
    info_fields,
    partition_lines,
    status_from_seed,
)

__all__ = [
    "BUS_PORT_OFFSET",
    "DEFAULT_BASE_PORT",
    "DEFAULT_COORDINATOR_PORT",
    "STATE_FILE",
    "ClusterError",
    "ClusterStatus",
    "LocalCluster",
    "NoCluster",
    "NodeStatus",
    "PartitionStatus",
    "PortInUse",
    "free_base_port",
    "info_fields",
    "partition_lines",
    "probe_keys",
    "resp_command",
    "status_from_seed",
]
