"""A local cluster: one coordinator and N nodes as processes on loopback (see
:class:`LocalCluster`). This package only re-exports; the code lives in private modules."""

from planaria.cluster._local import (
    BUS_PORT_OFFSET,
    DEFAULT_BASE_PORT,
    DEFAULT_COORDINATOR_PORT,
    STATE_FILE,
    ClusterError,
    ClusterStatus,
    LocalCluster,
    NoCluster,
    NodeStatus,
    PartitionStatus,
    PortInUse,
    free_base_port,
    partition_lines,
    probe_keys,
    resp_command,
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
    "partition_lines",
    "probe_keys",
    "resp_command",
    "status_from_seed",
]
