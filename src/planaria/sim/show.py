"""Short, readable renderings of messages and configs for traces."""

from __future__ import annotations

from planaria.core.messages import (
    Append,
    AppendReply,
    ClientReply,
    ClientRequest,
    ConfigUpdate,
    Delete,
    Entry,
    Get,
    IncrBy,
    Op,
    PartitionConfig,
    ProposeIsr,
    Set,
)
from planaria.sim.wire import ConfigSnapshot, IsrRequest, Renew, RenewAck

__all__ = ["show"]


def _op(op: Op | None) -> str:
    if op is None:
        return "barrier"
    key = op.key.decode(errors="replace")
    if isinstance(op, Get):
        return f"get {key}"
    if isinstance(op, Delete):
        return f"del {key}"
    if isinstance(op, IncrBy):
        return f"incrby {key} {op.delta}"
    if not isinstance(op, Set):
        return f"{type(op).__name__.lower()} {key}"
    value = op.value.decode(errors="replace")
    expiry = "" if op.expire_ms is None else f" {'px' if op.relative else 'pxat'} {op.expire_ms}"
    if op.if_value is not None:
        return f"cas {key} {op.if_value.decode(errors='replace')!r}->{value!r}{expiry}"
    return f"set {key}={value!r}{expiry}"


def _entry(entry: Entry) -> str:
    return f"{entry.epoch}.{entry.index}:{_op(entry.op)}"


def _config(config: PartitionConfig) -> str:
    return (
        f"p{config.partition} e{config.epoch} v{config.version} primary={config.primary} "
        f"isr={','.join(sorted(config.isr))}"
    )


def show(detail: object) -> str:
    """A one-line description of a message (or anything else: its repr)."""
    if isinstance(detail, Append):
        entries = " ".join(_entry(e) for e in detail.entries[:4])
        more = f" +{len(detail.entries) - 4}" if len(detail.entries) > 4 else ""
        return (
            f"Append p{detail.partition} e{detail.epoch} "
            f"prev={detail.prev_epoch}.{detail.prev_index} commit={detail.commit_index} "
            f"[{entries}{more}]"
        )
    if isinstance(detail, AppendReply):
        outcome = (
            f"ok match={detail.match_index}" if detail.success else f"NO hint={detail.hint_index}"
        )
        return f"AppendReply p{detail.partition} e{detail.epoch} {outcome}"
    if isinstance(detail, ClientRequest):
        rid = f"{detail.request_id[0]}#{detail.request_id[1]}"
        return f"Request p{detail.partition} {rid} {_op(detail.op)}"
    if isinstance(detail, ClientReply):
        rid = f"{detail.request_id[0]}#{detail.request_id[1]}"
        if detail.error is not None:
            return (
                f"Reply p{detail.partition} {rid} ERROR {detail.error} hint={detail.primary_hint}"
            )
        value = None if detail.value is None else detail.value.decode(errors="replace")
        return (
            f"Reply p{detail.partition} {rid} ok value={value!r} applied={detail.applied} "
            f"version={detail.version}"
        )
    if isinstance(detail, ConfigUpdate):
        return f"ConfigUpdate {_config(detail.config)}"
    if isinstance(detail, PartitionConfig):
        return _config(detail)
    if isinstance(detail, ConfigSnapshot):
        return f"ConfigSnapshot ({len(detail.configs)} partitions)"
    if isinstance(detail, Renew):
        return f"Renew session={detail.session} nonce={detail.nonce}"
    if isinstance(detail, RenewAck):
        return f"RenewAck session={detail.session} ok={detail.ok}"
    if isinstance(detail, IsrRequest | ProposeIsr):
        p = detail.proposal if isinstance(detail, IsrRequest) else detail
        return (
            f"ProposeIsr p{p.partition} e{p.epoch} from v{p.expected_version} "
            f"isr={','.join(sorted(p.isr))}"
        )
    return str(detail)
