"""One planaria node, and the controller service each node runs as a candidate.

This front only re-exports, lazily (PEP 562): ``from planaria.node import read_configs``
loads the controller service's module, not the node's event loop and sockets.

- ``_node``: :class:`Node`: the disk, the RESP server and the tick; it composes
  ``_session`` (coordinator session, lease, registration), ``_configs`` (the configs and
  members it follows; one partition runtime per replica it holds), ``_effects`` (peer sends,
  snapshot transfers, ISR proposals), ``_requests`` (client commands waiting for replies)
  and ``_views`` (INFO, CLUSTER, BACKUP), over the shared state of ``_context``.
- ``_settings``: :class:`NodeSettings` and the lease rule's constants.
- ``_partition``: a replica's runtime (persist, send, reply, propose; snapshots, transfers).
- ``_transport``: the peer bus (msgpack frames between nodes).
- ``_lease``: the keep-alive thread and the event loop watchdog.
- ``_control``: the controller service (its decisions are ``core.controller``'s) and the
  coordinator records it reads and writes (``/cluster``, configs, membership).
- ``_memory``: the maxmemory limit (noeviction) against the process's resident memory.
- ``_tasks``: cancelling a set of asyncio tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planaria._lazy import lazy_front

if TYPE_CHECKING:
    from planaria.node._control import (
        CLUSTER_KEY,
        MEMBER_STATES,
        MEMBERSHIP_PREFIX,
        ClusterMetadata,
        ControllerService,
        ControlSettings,
        MemberRecord,
        MoveProgress,
        apply_proposal,
        initial_placement,
        mark_member,
        membership_target,
        move_progress,
        read_cluster_metadata,
        read_configs,
        read_membership,
        sessions_from_members,
        write_cluster_metadata,
    )
    from planaria.node._memory import parse_memory
    from planaria.node._node import Node
    from planaria.node._settings import (
        DRIFT_MAX,
        EXIT_LOOP_STALLED,
        LEASE_MARGIN_MS,
        NodeSettings,
    )

# name -> the module that defines it, imported on first access
_LAZY = {
    "DRIFT_MAX": "planaria.node._settings",
    "EXIT_LOOP_STALLED": "planaria.node._settings",
    "LEASE_MARGIN_MS": "planaria.node._settings",
    "Node": "planaria.node._node",
    "parse_memory": "planaria.node._memory",
    "NodeSettings": "planaria.node._settings",
    "CLUSTER_KEY": "planaria.node._control",
    "ClusterMetadata": "planaria.node._control",
    "ControlSettings": "planaria.node._control",
    "ControllerService": "planaria.node._control",
    "MEMBERSHIP_PREFIX": "planaria.node._control",
    "MEMBER_STATES": "planaria.node._control",
    "MemberRecord": "planaria.node._control",
    "MoveProgress": "planaria.node._control",
    "apply_proposal": "planaria.node._control",
    "initial_placement": "planaria.node._control",
    "mark_member": "planaria.node._control",
    "membership_target": "planaria.node._control",
    "move_progress": "planaria.node._control",
    "read_cluster_metadata": "planaria.node._control",
    "read_configs": "planaria.node._control",
    "read_membership": "planaria.node._control",
    "sessions_from_members": "planaria.node._control",
    "write_cluster_metadata": "planaria.node._control",
}

__all__ = [
    "CLUSTER_KEY",
    "DRIFT_MAX",
    "EXIT_LOOP_STALLED",
    "LEASE_MARGIN_MS",
    "MEMBERSHIP_PREFIX",
    "MEMBER_STATES",
    "ClusterMetadata",
    "ControlSettings",
    "ControllerService",
    "MemberRecord",
    "MoveProgress",
    "Node",
    "NodeSettings",
    "apply_proposal",
    "initial_placement",
    "mark_member",
    "membership_target",
    "move_progress",
    "parse_memory",
    "read_cluster_metadata",
    "read_configs",
    "read_membership",
    "sessions_from_members",
    "write_cluster_metadata",
]

__getattr__, __dir__ = lazy_front("planaria.node", _LAZY, globals())
