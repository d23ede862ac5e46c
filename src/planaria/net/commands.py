"""The commands planaria speaks over RESP: their table, parsing into typed requests, and the
rendering of the replication core's answers as Redis would send them.

:func:`parse_request` turns a command (a list of bytes from :class:`~planaria.net.resp.
RequestReader`) into one of:

- :class:`ClientOp`: the data commands (GET, SET, DEL, EXISTS and the string and counter
  commands of docs/compatibility.md) as ``core.messages`` operations on one slot, with the
  request id of a trailing ``REQID <client-id> <seq>`` on every write (DEL: one key);
- a :data:`NodeRequest` the node answers from its own state (INFO and CLUSTER SLOTS, SHARDS,
  NODES, INFO, MYID; BACKUP BEGIN, READ and END, the admin command of ``planaria backup``);
- a :data:`LocalRequest` that needs nothing but the connection (PING, READONLY, COMMAND,
  CLIENT SETINFO, CONFIG GET, HELLO 2, ...), answered by :func:`answer_local`.

It raises :class:`CommandError` (carrying the RESP error to send) for unknown commands, wrong
arity, syntax errors, oversized keys or values and multi-key requests across slots, with
Redis' own words where clients depend on them. The connection stays usable after one.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from planaria.core.containers import WRONGTYPE
from planaria.core.messages import (
    AppendTo,
    ClearExpiry,
    ClientReply,
    Delete,
    ErrorCode,
    Expire,
    Get,
    GetEx,
    GetExpiry,
    HashDelete,
    HashIncrBy,
    HashIncrByFloat,
    HashSet,
    IncrBy,
    IncrByFloat,
    MSet,
    Op,
    Rename,
    Set,
    SetAdd,
    SetPop,
    SetRange,
    SetRemove,
    SetStore,
    ValueRead,
)
from planaria.core.slots import keyslot
from planaria.core.strings import (
    NOT_A_FLOAT,
    NOT_AN_INTEGER,
    OFFSET_OUT_OF_RANGE,
    parse_int64,
    parse_long_double,
)
from planaria.errors import UsageError
from planaria.net import resp

__all__ = [
    "COMMANDS",
    "REQUEST_CLIENT_ID_BYTES_MAX",
    "SCAN_COUNT_MAX",
    "BackupBegin",
    "BackupEnd",
    "BackupRead",
    "ClientCommand",
    "ClientOp",
    "ClusterInfo",
    "ClusterKeyslot",
    "ClusterMyId",
    "ClusterNodes",
    "ClusterShards",
    "ClusterSlots",
    "CommandError",
    "CommandQuery",
    "CommandSpec",
    "ConfigGet",
    "ConnectionState",
    "DataCommand",
    "DbSize",
    "Echo",
    "Hello",
    "Info",
    "Keys",
    "KeyspaceRead",
    "Limits",
    "LocalRequest",
    "NodeRequest",
    "Ping",
    "Quit",
    "RandomKey",
    "ReadOnly",
    "ReadWrite",
    "Request",
    "Scan",
    "Select",
    "answer_local",
    "error_reply",
    "getrange",
    "parse_request",
    "render_info",
    "render_reply",
]


class CommandError(UsageError):
    """A request the server refuses; :attr:`reply` is the RESP error to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = resp.error(message)


@dataclass(frozen=True, slots=True)
class Limits:
    key_bytes_max: int = 8 * 1024
    value_bytes_max: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.key_bytes_max < 1 or self.value_bytes_max < 1:
            raise UsageError("key_bytes_max and value_bytes_max must be >= 1")


# --- the command table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of ``COMMAND``: arity counts the name (negative: at least -arity); key
    positions are argument indexes (first, last (-1: the last argument), step)."""

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    categories: tuple[str, ...] = ()
    summary: str = ""
    group: str = "generic"
    subcommands: tuple[CommandSpec, ...] = ()

    def entry(self) -> list[resp.RespValue]:
        """This command as one ``COMMAND`` / ``COMMAND INFO`` entry (Redis 7 layout)."""
        return [
            self.name,
            self.arity,
            [resp.RespSimple(flag) for flag in self.flags],
            self.first_key,
            self.last_key,
            self.step,
            [resp.RespSimple(category) for category in self.categories],
            [],  # tips
            [],  # key specs (the positions above are all planaria's commands need)
            [sub.entry() for sub in self.subcommands],
        ]

    def docs(self) -> resp.RespMap:
        return resp.RespMap(["summary", self.summary, "since", "1.0.0", "group", self.group])


def _sub(parent: str, name: str, arity: int, flags: tuple[str, ...], summary: str) -> CommandSpec:
    return CommandSpec(
        f"{parent}|{name}", arity, flags, categories=("@slow",), summary=summary, group=parent
    )


def _string(
    name: str, arity: int, write: bool, summary: str, *, last_key: int = 1, step: int = 1
) -> CommandSpec:
    """A string or counter command's row: its flags and categories as Redis 7.0 lists them."""
    flags = ("write", "denyoom") if write else ("readonly",)
    kind = "@write" if write else "@read"
    return CommandSpec(name, arity, flags, 1, last_key, step, (kind, "@string"), summary, "string")


_STRING_COMMANDS = (
    _string("incr", 2, True, "Increments the integer value of a key by one."),
    _string("incrby", 3, True, "Increments the integer value of a key by a number."),
    _string("decr", 2, True, "Decrements the integer value of a key by one."),
    _string("decrby", 3, True, "Decrements the integer value of a key by a number."),
    _string("incrbyfloat", 3, True, "Increments the floating point value of a key."),
    _string("append", 3, True, "Appends a string to the value of a key."),
    _string("strlen", 2, False, "Returns the length of a string value."),
    _string("getrange", 4, False, "Returns a substring of the string stored at a key."),
    _string("setrange", 4, True, "Overwrites part of a string value from an offset."),
    _string("getset", 3, True, "Sets the value of a key and returns its old value."),
    _string("getdel", 2, True, "Returns the value of a key and deletes it."),
    _string("setnx", 3, True, "Sets the value of a key only if it does not exist."),
    _string("mget", -2, False, "Returns the values of keys (all in one slot).", last_key=-1),
    _string("mset", -3, True, "Sets keys (all in one slot).", last_key=-1, step=2),
    _string("msetnx", -3, True, "Sets keys (one slot) only if none exists.", last_key=-1, step=2),
)
_EXPIRY_COMMANDS = (
    _string("setex", 4, True, "Sets the value and the expiry (seconds) of a key."),
    _string("psetex", 4, True, "Sets the value and the expiry (milliseconds) of a key."),
    CommandSpec("getex", -2, ("write", "fast"), 1, 1, 1, ("@write", "@string", "@fast"),
                "Returns the value of a key and sets or removes its expiry.", "string"),
    *(
        CommandSpec(name, -3, ("write", "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast"),
                    summary, "generic")
        for name, summary in (
            ("expire", "Sets a key's time to live in seconds."),
            ("pexpire", "Sets a key's time to live in milliseconds."),
            ("expireat", "Sets a key's expiry to a Unix time in seconds."),
            ("pexpireat", "Sets a key's expiry to a Unix time in milliseconds."),
        )
    ),
    *(
        CommandSpec(name, 2, ("readonly", "fast"), 1, 1, 1, ("@keyspace", "@read", "@fast"),
                    summary, "generic")
        for name, summary in (
            ("ttl", "Returns a key's time to live in seconds."),
            ("pttl", "Returns a key's time to live in milliseconds."),
            ("expiretime", "Returns a key's expiry as a Unix time in seconds."),
            ("pexpiretime", "Returns a key's expiry as a Unix time in milliseconds."),
        )
    ),
    CommandSpec("persist", 2, ("write", "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast"),
                "Removes a key's expiry.", "generic"),
    # Parsed and answered with the expiry commands: one key's value and expiry, moved.
    CommandSpec("rename", 3, ("write",), 1, 2, 1, ("@keyspace", "@write", "@slow"),
                "Renames a key (within a slot), replacing the destination.", "generic"),
    CommandSpec("renamenx", 3, ("write", "fast"), 1, 2, 1, ("@keyspace", "@write", "@fast"),
                "Renames a key (within a slot) only if the new name is free.", "generic"),
)  # fmt: skip


def _container(
    name: str, arity: int, flags: str, summary: str, *, last_key: int = 1, slow: bool = False
) -> CommandSpec:
    """A hash or set command's row: ``flags`` as Redis 7.0 lists them (``fast`` among
    them unless ``slow``); its group from its first letter."""
    group = "hash" if name.startswith("h") else "set"
    kind = "@write" if "write" in flags.split() else "@read"
    listed = tuple(flags.split()) + (() if slow else ("fast",))
    speed = "@slow" if slow else "@fast"
    return CommandSpec(name, arity, listed, 1, last_key, 1, (kind, f"@{group}", speed),
                       summary, group)  # fmt: skip


_HASH_COMMANDS = (
    _container("hset", -4, "write denyoom", "Sets fields of a hash."),
    _container("hsetnx", 4, "write denyoom", "Sets a field of a hash if it does not exist."),
    _container("hget", 3, "readonly", "Returns the value of a field of a hash."),
    _container("hmget", -3, "readonly", "Returns the values of fields of a hash."),
    _container("hdel", -3, "write", "Deletes fields of a hash."),
    _container("hgetall", 2, "readonly", "Returns the fields and values of a hash.", slow=True),
    _container("hkeys", 2, "readonly", "Returns the fields of a hash.", slow=True),
    _container("hvals", 2, "readonly", "Returns the values of a hash.", slow=True),
    _container("hlen", 2, "readonly", "Returns the number of fields of a hash."),
    _container("hexists", 3, "readonly", "Says whether a field of a hash exists."),
    _container("hincrby", 4, "write denyoom", "Increments the integer value of a field."),
    _container("hincrbyfloat", 4, "write denyoom", "Increments the float value of a field."),
    _container("hstrlen", 3, "readonly", "Returns the length of the value of a field."),
    _container("hscan", -3, "readonly", "Iterates over the fields and values of a hash.",
               slow=True),
)  # fmt: skip
_SET_COMMANDS = (
    _container("sadd", -3, "write denyoom", "Adds members to a set."),
    _container("srem", -3, "write", "Removes members from a set."),
    _container("sismember", 3, "readonly", "Says whether a member is in a set."),
    _container("smismember", -3, "readonly", "Says whether each member is in a set."),
    _container("smembers", 2, "readonly", "Returns the members of a set.", slow=True),
    _container("scard", 2, "readonly", "Returns the number of members of a set."),
    _container("spop", -2, "write", "Removes and returns random members of a set."),
    _container("srandmember", -2, "readonly", "Returns random members of a set.", slow=True),
    _container("sscan", -3, "readonly", "Iterates over the members of a set.", slow=True),
    *(
        _container(name, -2, "readonly", summary, last_key=-1, slow=True)
        for name, summary in (
            ("sinter", "The intersection of sets (all in one slot)."),
            ("sunion", "The union of sets (all in one slot)."),
            ("sdiff", "The first set less the others (all in one slot)."),
        )
    ),
    *(
        _container(name, -3, "write denyoom", summary, last_key=-1, slow=True)
        for name, summary in (
            ("sinterstore", "Stores the intersection of sets (all in one slot)."),
            ("sunionstore", "Stores the union of sets (all in one slot)."),
            ("sdiffstore", "Stores the first set less the others (all in one slot)."),
        )
    ),
)  # fmt: skip
_STALE = ("loading", "stale")
# The key-space commands, as Redis 7.0's table lists them.
_KEYSPACE_COMMANDS = (
    CommandSpec("type", 2, ("readonly", "fast"), 1, 1, 1, ("@keyspace", "@read", "@fast"),
                "Determines the type of value stored at a key.", "generic"),
    CommandSpec("unlink", -2, ("write", "fast"), 1, -1, 1, ("@keyspace", "@write", "@fast"),
                "Deletes keys (all in one slot), as DEL does.", "generic"),
    CommandSpec("dbsize", 1, ("readonly", "fast"), categories=("@keyspace", "@read", "@fast"),
                summary="The number of keys in the partitions this node leads.",
                group="server"),
    CommandSpec("keys", 2, ("readonly",), categories=("@keyspace", "@read", "@slow",
                "@dangerous"), summary="The keys matching a pattern on this node (capped).",
                group="generic"),
    CommandSpec("randomkey", 1, ("readonly",), categories=("@keyspace", "@read", "@slow"),
                summary="A random key of the partitions this node leads.", group="generic"),
    CommandSpec("scan", -2, ("readonly",), categories=("@keyspace", "@read", "@slow"),
                summary="Iterates over the keys of the partitions this node leads.",
                group="generic"),
)  # fmt: skip
COMMANDS: Mapping[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("get", 2, ("readonly", "fast"), 1, 1, 1, ("@read", "@string", "@fast"),
                    "Returns the value of a key.", "string"),
        CommandSpec("set", -3, ("write", "denyoom"), 1, 1, 1, ("@write", "@string", "@slow"),
                    "Sets the value of a key [NX | XX | IFEQ value] [GET] [KEEPTTL].", "string"),
        CommandSpec("del", -2, ("write",), 1, -1, 1, ("@keyspace", "@write", "@slow"),
                    "Deletes keys (all in one slot).", "generic"),
        CommandSpec("exists", -2, ("readonly", "fast"), 1, -1, 1,
                    ("@keyspace", "@read", "@fast"),
                    "Counts how many of the keys (all in one slot) exist.", "generic"),
        *_STRING_COMMANDS,
        *_EXPIRY_COMMANDS,
        *_KEYSPACE_COMMANDS,
        *_HASH_COMMANDS,
        *_SET_COMMANDS,
        CommandSpec("ping", -1, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Returns PONG, or the message given.", group="connection"),
        CommandSpec("echo", 2, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Returns the message given.", group="connection"),
        CommandSpec("info", -1, ("loading", "stale"), categories=("@slow", "@dangerous"),
                    summary="Returns information about the server.", group="server"),
        CommandSpec("readonly", 1, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Allows stale reads from replicas on this connection.",
                    group="cluster"),
        CommandSpec("readwrite", 1, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Reads from primaries only (the default).", group="cluster"),
        CommandSpec("select", 2, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Selects database 0 (the only one in cluster mode).",
                    group="connection"),
        CommandSpec("quit", -1, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Closes the connection.", group="connection"),
        CommandSpec("hello", -1, ("fast", *_STALE), categories=("@fast", "@connection"),
                    summary="Handshake; RESP2 only.", group="connection"),
        CommandSpec(
            "cluster", -2, (), categories=("@slow",), summary="Cluster topology.",
            group="cluster",
            subcommands=(
                _sub("cluster", "slots", 2, ("loading", "stale"), "Slot ranges and their nodes."),
                _sub("cluster", "shards", 2, ("loading", "stale"), "Shards and their nodes."),
                _sub("cluster", "nodes", 2, ("loading", "stale"), "The nodes, as text."),
                _sub("cluster", "info", 2, ("loading", "stale"), "Cluster state."),
                _sub("cluster", "myid", 2, ("loading", "stale"), "This node's id."),
                _sub("cluster", "keyslot", 3, ("loading", "stale"), "The slot of a key."),
            ),
        ),
        CommandSpec(
            "command", -1, ("loading", "stale"), categories=("@slow", "@connection"),
            summary="The command table.", group="server",
            subcommands=(
                _sub("command", "count", 2, ("loading", "stale"), "Number of commands."),
                _sub("command", "docs", -2, ("loading", "stale"), "Command documentation."),
                _sub("command", "info", -2, ("loading", "stale"), "Command entries."),
                _sub("command", "list", -2, ("loading", "stale"), "Command names."),
                _sub("command", "getkeys", -3, ("loading", "stale"), "Keys of a command."),
            ),
        ),
        CommandSpec(
            "client", -2, (), categories=("@slow", "@connection"),
            summary="Connection settings.", group="connection",
            subcommands=(
                _sub("client", "setname", 3, ("loading", "stale"), "Names the connection."),
                _sub("client", "getname", 2, ("loading", "stale"), "The connection's name."),
                _sub("client", "setinfo", 4, ("loading", "stale"), "Client library info."),
                _sub("client", "id", 2, ("loading", "stale"), "The connection's id."),
            ),
        ),
        CommandSpec(
            "backup", -2, ("admin",), categories=("@slow", "@admin", "@dangerous"),
            summary="Snapshots of partitions for planaria backup.", group="server",
            subcommands=(
                _sub("backup", "begin", 3, ("admin",),
                     "Snapshots a partition this node serves as primary (committed state)."),
                _sub("backup", "read", 5, ("admin",), "A chunk of a snapshot taken by BEGIN."),
                _sub("backup", "end", 3, ("admin",), "Drops a snapshot taken by BEGIN."),
            ),
        ),
        CommandSpec(
            "config", -2, (), categories=("@slow",), summary="Server settings (read only).",
            group="server",
            subcommands=(_sub("config", "get", -3, ("loading", "stale"), "Settings by glob."),),
        ),
    )
}  # fmt: skip

# --- requests ---------------------------------------------------------------------------------


class DataCommand(enum.StrEnum):
    GET = "get"
    SET = "set"
    DEL = "del"
    EXISTS = "exists"
    INCR = "incr"
    INCRBY = "incrby"
    DECR = "decr"
    DECRBY = "decrby"
    INCRBYFLOAT = "incrbyfloat"
    APPEND = "append"
    STRLEN = "strlen"
    GETRANGE = "getrange"
    SETRANGE = "setrange"
    GETSET = "getset"
    GETDEL = "getdel"
    SETNX = "setnx"
    MGET = "mget"
    MSET = "mset"
    MSETNX = "msetnx"
    SETEX = "setex"
    PSETEX = "psetex"
    GETEX = "getex"
    EXPIRE = "expire"
    PEXPIRE = "pexpire"
    EXPIREAT = "expireat"
    PEXPIREAT = "pexpireat"
    TTL = "ttl"
    PTTL = "pttl"
    EXPIRETIME = "expiretime"
    PEXPIRETIME = "pexpiretime"
    PERSIST = "persist"
    TYPE = "type"
    UNLINK = "unlink"
    RENAME = "rename"
    RENAMENX = "renamenx"
    HSET = "hset"
    HSETNX = "hsetnx"
    HGET = "hget"
    HMGET = "hmget"
    HDEL = "hdel"
    HGETALL = "hgetall"
    HKEYS = "hkeys"
    HVALS = "hvals"
    HLEN = "hlen"
    HEXISTS = "hexists"
    HINCRBY = "hincrby"
    HINCRBYFLOAT = "hincrbyfloat"
    HSTRLEN = "hstrlen"
    HSCAN = "hscan"
    SADD = "sadd"
    SREM = "srem"
    SISMEMBER = "sismember"
    SMISMEMBER = "smismember"
    SMEMBERS = "smembers"
    SCARD = "scard"
    SPOP = "spop"
    SRANDMEMBER = "srandmember"
    SSCAN = "sscan"
    SINTER = "sinter"
    SUNION = "sunion"
    SDIFF = "sdiff"
    SINTERSTORE = "sinterstore"
    SUNIONSTORE = "sunionstore"
    SDIFFSTORE = "sdiffstore"


_READS = frozenset(
    (DataCommand.GET, DataCommand.EXISTS, DataCommand.STRLEN, DataCommand.GETRANGE,
     DataCommand.MGET, DataCommand.TTL, DataCommand.PTTL, DataCommand.EXPIRETIME,
     DataCommand.PEXPIRETIME, DataCommand.TYPE, DataCommand.HGET, DataCommand.HMGET,
     DataCommand.HGETALL, DataCommand.HKEYS, DataCommand.HVALS, DataCommand.HLEN,
     DataCommand.HEXISTS, DataCommand.HSTRLEN, DataCommand.HSCAN, DataCommand.SISMEMBER,
     DataCommand.SMISMEMBER, DataCommand.SMEMBERS, DataCommand.SCARD,
     DataCommand.SRANDMEMBER, DataCommand.SSCAN, DataCommand.SINTER, DataCommand.SUNION,
     DataCommand.SDIFF)
)  # fmt: skip
# Redis' ``denyoom`` commands: those that may grow the data, refused once a node is over its
# maxmemory (reads, deletes and expiry changes go on: they never need more room).
_DENIED_WHEN_FULL = frozenset(
    (DataCommand.SET, DataCommand.SETNX, DataCommand.SETEX, DataCommand.PSETEX,
     DataCommand.GETSET, DataCommand.MSET, DataCommand.MSETNX, DataCommand.APPEND,
     DataCommand.SETRANGE, DataCommand.INCR, DataCommand.INCRBY, DataCommand.DECR,
     DataCommand.DECRBY, DataCommand.INCRBYFLOAT, DataCommand.HSET, DataCommand.HSETNX,
     DataCommand.HINCRBY, DataCommand.HINCRBYFLOAT, DataCommand.SADD, DataCommand.SINTERSTORE,
     DataCommand.SUNIONSTORE, DataCommand.SDIFFSTORE)
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClientOp:
    """A data command as core operations, all on ``slot``: one op, but DEL, EXISTS and MGET
    one per key (Delete / Get). ``return_old``: SET ... GET answers the old value.
    ``request_id``: ``(client id, sequence)`` from a trailing ``REQID <client-id> <seq>`` of
    a write with one op (planaria's client sends it so the primary applies a retried write
    once); None when the client sent none (plain Redis clients). ``span``: GETRANGE's start
    and end."""

    command: DataCommand
    ops: tuple[Op, ...]
    slot: int
    return_old: bool = False
    request_id: tuple[str, int] | None = None
    span: tuple[int, int] = (0, 0)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(op.key for op in self.ops)

    @property
    def is_write(self) -> bool:
        return self.command not in _READS

    @property
    def denied_when_full(self) -> bool:
        """Whether a node over its maxmemory refuses it (Redis' ``denyoom``)."""
        return self.command in _DENIED_WHEN_FULL


@dataclass(frozen=True, slots=True)
class Info:
    sections: tuple[str, ...]  # lower case; empty: the default sections


@dataclass(frozen=True, slots=True)
class DbSize:
    """DBSIZE: the keys of the partitions this node leads."""


@dataclass(frozen=True, slots=True)
class Keys:
    """KEYS pattern: the matching keys of the partitions this node leads."""

    pattern: bytes


@dataclass(frozen=True, slots=True)
class RandomKey:
    """RANDOMKEY: a key of the partitions this node leads (null when there is none)."""


@dataclass(frozen=True, slots=True)
class Scan:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type] (core/keyspace.py)."""

    cursor: int
    pattern: bytes | None = None
    count: int = 10
    type: bytes | None = None


KeyspaceRead: TypeAlias = DbSize | Keys | RandomKey | Scan


@dataclass(frozen=True, slots=True)
class ClusterSlots:
    pass


@dataclass(frozen=True, slots=True)
class ClusterShards:
    pass


@dataclass(frozen=True, slots=True)
class ClusterNodes:
    pass


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    pass


@dataclass(frozen=True, slots=True)
class ClusterMyId:
    pass


@dataclass(frozen=True, slots=True)
class BackupBegin:
    """BACKUP BEGIN <partition>: snapshot the partition's committed state (its primary only)."""

    partition: int


@dataclass(frozen=True, slots=True)
class BackupRead:
    """BACKUP READ <token> <offset> <length>: bytes of the snapshot BEGIN answered with."""

    token: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class BackupEnd:
    """BACKUP END <token>: drop the snapshot (it expires by itself when left idle)."""

    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Echo:
    message: bytes


@dataclass(frozen=True, slots=True)
class ReadOnly:
    pass


@dataclass(frozen=True, slots=True)
class ReadWrite:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Select:
    db: int


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int | None
    client_name: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClusterKeyslot:
    key: bytes


@dataclass(frozen=True, slots=True)
class CommandQuery:
    """COMMAND [COUNT | DOCS | INFO | LIST | GETKEYS] [args]; ``sub`` is "" for COMMAND."""

    sub: str
    args: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """CLIENT SETNAME / GETNAME / SETINFO / ID."""

    sub: str
    args: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigGet:
    patterns: tuple[str, ...]


# Answered by the node (its data and topology) / by the connection alone (answer_local).
NodeRequest: TypeAlias = (
    ClientOp
    | DbSize
    | Keys
    | RandomKey
    | Scan
    | Info
    | ClusterSlots
    | ClusterShards
    | ClusterNodes
    | ClusterInfo
    | ClusterMyId
    | BackupBegin
    | BackupRead
    | BackupEnd
)
LocalRequest: TypeAlias = (
    Ping
    | Echo
    | ReadOnly
    | ReadWrite
    | Quit
    | Select
    | Hello
    | ClusterKeyslot
    | CommandQuery
    | ClientCommand
    | ConfigGet
)
Request: TypeAlias = NodeRequest | LocalRequest


_CLUSTER_REQUESTS: Mapping[str, NodeRequest] = {
    "slots": ClusterSlots(),
    "shards": ClusterShards(),
    "nodes": ClusterNodes(),
    "info": ClusterInfo(),
    "myid": ClusterMyId(),
}


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _arity_error(name: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{name}' command")


def _check_arity(spec: CommandSpec, argc: int) -> None:
    if (spec.arity > 0 and argc != spec.arity) or argc < -spec.arity:
        raise _arity_error(spec.name)


def _unknown_command(command: Sequence[bytes]) -> CommandError:
    # Redis' exact words: the name as sent, then up to ~128 bytes of quoted arguments.
    shown = ""
    for arg in command[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{_text(arg)[: 128 - len(shown)]}' "
    name = _text(command[0])[:128]
    return CommandError(f"ERR unknown command '{name}', with args beginning with: {shown}")


def _subcommand(spec: CommandSpec, command: Sequence[bytes]) -> str:
    sub = _text(command[1]).lower()
    for child in spec.subcommands:
        if child.name == f"{spec.name}|{sub}":
            _check_arity(child, len(command))
            return sub
    raise CommandError(
        f"ERR unknown subcommand '{_text(command[1])[:128]}'. Try {spec.name.upper()} HELP."
    )


def _check_key(key: bytes, limits: Limits) -> bytes:
    if len(key) > limits.key_bytes_max:
        raise CommandError(f"ERR key too long ({len(key)} bytes, limit {limits.key_bytes_max})")
    return key


def _check_value(value: bytes, limits: Limits) -> bytes:
    if len(value) > limits.value_bytes_max:
        raise CommandError(
            f"ERR value too long ({len(value)} bytes, limit {limits.value_bytes_max})"
        )
    return value


def _one_slot(keys: Sequence[bytes]) -> int:
    slot = keyslot(keys[0])
    for key in keys[1:]:
        if keyslot(key) != slot:
            raise CommandError("CROSSSLOT Keys in request don't hash to the same slot")
    return slot


_TTL_OPTIONS = frozenset((b"ex", b"px", b"exat", b"pxat"))
_SYNTAX = "ERR syntax error"

# REQID <client-id> <seq>: the id is printable ASCII without spaces (planaria's client sends
# 32 hex digits); the sequence a non-negative 64-bit signed integer.
_REQID = b"reqid"
REQUEST_CLIENT_ID_BYTES_MAX = 64
_REQUEST_SEQ_MAX = 2**63 - 1


def _has_trailing_reqid(command: Sequence[bytes]) -> bool:
    # ``NAME key REQID cid seq`` at the least: a REQID third from the end, after the first key.
    return len(command) >= 5 and command[-3].lower() == _REQID


def _parse_request_id(client_id: bytes, seq: bytes) -> tuple[str, int]:
    if not 1 <= len(client_id) <= REQUEST_CLIENT_ID_BYTES_MAX or not all(
        0x21 <= byte <= 0x7E for byte in client_id
    ):
        raise CommandError(
            f"ERR REQID client id must be 1 to {REQUEST_CLIENT_ID_BYTES_MAX} printable ASCII "
            "characters without spaces"
        )
    if not (seq.isdigit() and len(seq) <= 19 and int(seq) <= _REQUEST_SEQ_MAX):
        raise CommandError("ERR REQID sequence must be an integer from 0 to 2^63-1")
    return client_id.decode("ascii"), int(seq)


def _parse_set(command: Sequence[bytes], limits: Limits) -> ClientOp:
    key = _check_key(command[1], limits)
    value = _check_value(command[2], limits)
    nx = xx = return_old = keep_ttl = False
    if_value: bytes | None = None
    request_id: tuple[str, int] | None = None
    expiry: tuple[bytes, bytes] | None = None  # (EX | PX | EXAT | PXAT, the time as sent)
    i = 3
    while i < len(command):
        option = command[i].lower()
        if option == _REQID:
            if i + 3 != len(command):
                raise CommandError(
                    "ERR syntax error: REQID <client-id> <seq> must be the last option of SET"
                )
            request_id = _parse_request_id(command[i + 1], command[i + 2])
            i += 2
        elif option == b"nx" and not xx and if_value is None:
            nx = True
        elif option == b"xx" and not nx and if_value is None:
            xx = True
        elif option == b"ifeq" and not (nx or xx) and if_value is None and i + 1 < len(command):
            i += 1
            if_value = _check_value(command[i], limits)
        elif option == b"get":
            return_old = True
        elif option == b"keepttl" and expiry is None:
            keep_ttl = True
        elif (
            option in _TTL_OPTIONS
            and not keep_ttl
            and (expiry is None or expiry[0] == option)  # the same one again: the last wins
            and i + 1 < len(command)
        ):
            i += 1
            expiry = (option, command[i])
        else:
            raise CommandError(_SYNTAX)
        i += 1
    expire_ms, relative = (None, False) if expiry is None else _expire_time(*expiry, b"set")
    op = Set(
        key,
        value,
        nx=nx,
        xx=xx,
        if_value=if_value,
        expire_ms=expire_ms,
        relative=relative,
        keep_ttl=keep_ttl,
        get=return_old,
    )
    return ClientOp(DataCommand.SET, (op,), keyslot(key), return_old, request_id)


def _parse_del(command: Sequence[bytes], limits: Limits) -> ClientOp:
    """DEL or UNLINK (the same here: deleting is never slower for a big value)."""
    which = DataCommand.UNLINK if command[0].lower() == b"unlink" else DataCommand.DEL
    if _has_trailing_reqid(command):
        if len(command) != 5:
            raise CommandError(
                f"ERR {which.value.upper()} with REQID takes exactly one key: "
                f"{which.value.upper()} key REQID cid seq"
            )
        key = _check_key(command[1], limits)
        request_id = _parse_request_id(command[3], command[4])
        return ClientOp(which, (Delete(key),), keyslot(key), request_id=request_id)
    keys = [_check_key(key, limits) for key in command[1:]]
    return ClientOp(which, tuple(Delete(key) for key in keys), _one_slot(keys))


# SCAN's COUNT is a hint (Redis' words): a call visits at most this many keys whatever it
# asks, so one call never holds the node for long.
SCAN_COUNT_MAX = 1000
_ULONG_MAX = 2**64 - 1


def _parse_scan_cursor(data: bytes) -> int:
    """The cursor as redis-server 7.0 reads it (``strtoul``: an optional sign, digits;
    no leading space, nothing after, in range; a minus wraps around)."""
    if not data:
        return 0  # nothing read and nothing left: strtoul's 0
    sign = data[:1]
    digits = data[1:] if sign in (b"+", b"-") else data
    if not digits.isdigit():
        raise CommandError("ERR invalid cursor")
    value = int(digits)
    if value > _ULONG_MAX:
        raise CommandError("ERR invalid cursor")
    return (-value) % 2**64 if sign == b"-" else value


def _parse_scan(command: Sequence[bytes]) -> Scan:
    cursor = _parse_scan_cursor(command[1])
    pattern: bytes | None = None
    count = 10
    type_name: bytes | None = None
    i = 2
    while i < len(command):
        option = command[i].lower()
        more = len(command) - i >= 2
        if option == b"count" and more:
            count = _int64(command[i + 1])
            if count < 1:
                raise CommandError(_SYNTAX)
        elif option == b"match" and more:
            pattern = None if command[i + 1] == b"*" else command[i + 1]
        elif option == b"type" and more:
            type_name = command[i + 1]
        else:
            raise CommandError(_SYNTAX)
        i += 2
    return Scan(cursor, pattern, count, type_name)


def _take_request_id(
    spec: CommandSpec, command: Sequence[bytes]
) -> tuple[Sequence[bytes], tuple[str, int] | None]:
    """A write's trailing ``REQID <client-id> <seq>``, taken off: only where the command
    without it has a valid count of arguments (MSET's is odd), so that a plain client's
    arguments are never misread as one (``MSET k reqid k2 v`` sets two keys)."""
    bare = len(command) - 3
    if "write" not in spec.flags or bare < 2 or command[-3].lower() != _REQID:
        return command, None
    if spec.arity > 0 and bare != spec.arity:
        return command, None
    if spec.arity < 0 and (bare < -spec.arity or bare % 2 == 0):
        return command, None
    return command[:-3], _parse_request_id(command[-2], command[-1])


def _int64(data: bytes) -> int:
    value = parse_int64(data)
    if value is None:
        raise CommandError(NOT_AN_INTEGER)
    return value


def _parse_string_command(
    command: DataCommand, spec: CommandSpec, args: Sequence[bytes], limits: Limits
) -> ClientOp:
    """One of the string and counter commands (arity checked after REQID is taken off)."""
    args, request_id = _take_request_id(spec, args)
    _check_arity(spec, len(args))
    if command in (DataCommand.MGET, DataCommand.MSET, DataCommand.MSETNX):
        return _parse_multi_key(command, args, limits, request_id)
    key = _check_key(args[1], limits)
    op: Op
    span = (0, 0)
    if command is DataCommand.INCR:
        op = IncrBy(key, 1)
    elif command is DataCommand.DECR:
        op = IncrBy(key, -1)
    elif command is DataCommand.INCRBY:
        op = IncrBy(key, _int64(args[2]))
    elif command is DataCommand.DECRBY:
        delta = _int64(args[2])
        if delta == -(2**63):  # its negation is out of range
            raise CommandError("ERR decrement would overflow")
        op = IncrBy(key, -delta)
    elif command is DataCommand.INCRBYFLOAT:
        # Not a float: the apply's error, after WRONGTYPE and the value's own (Redis' order).
        op = IncrByFloat(key, args[2])
    elif command is DataCommand.APPEND:
        op = AppendTo(key, _check_value(args[2], limits), limits.value_bytes_max)
    elif command in (DataCommand.STRLEN, DataCommand.GETRANGE):
        op = Get(key)
        if command is DataCommand.GETRANGE:
            span = (_int64(args[2]), _int64(args[3]))
    elif command is DataCommand.SETRANGE:
        offset = _int64(args[2])
        if offset < 0:
            raise CommandError(OFFSET_OUT_OF_RANGE)
        op = SetRange(key, offset, _check_value(args[3], limits), limits.value_bytes_max)
    elif command is DataCommand.GETSET:
        op = Set(key, _check_value(args[2], limits), get=True)
    elif command is DataCommand.GETDEL:
        op = Delete(key, get=True)
    else:  # SETNX
        op = Set(key, _check_value(args[2], limits), nx=True)
    return ClientOp(command, (op,), keyslot(key), request_id=request_id, span=span)


def _parse_multi_key(
    command: DataCommand,
    args: Sequence[bytes],
    limits: Limits,
    request_id: tuple[str, int] | None,
) -> ClientOp:
    if command is DataCommand.MGET:
        keys = [_check_key(key, limits) for key in args[1:]]
        return ClientOp(command, tuple(Get(key) for key in keys), _one_slot(keys))
    if len(args) % 2 == 0:  # a key without its value
        # Redis Cluster looks for CROSSSLOT first, among the keys MSET's table names.
        _one_slot(args[1::2])
        raise _arity_error(command.value)
    pairs = tuple(
        (_check_key(args[i], limits), _check_value(args[i + 1], limits))
        for i in range(1, len(args), 2)
    )
    slot = _one_slot([key for key, _ in pairs])
    op = MSet(pairs, nx=command is DataCommand.MSETNX)
    return ClientOp(command, (op,), slot, request_id=request_id)


# --- hashes and sets --------------------------------------------------------------------------

_VALUE_READS = frozenset(
    (DataCommand.HGET, DataCommand.HMGET, DataCommand.HGETALL, DataCommand.HKEYS,
     DataCommand.HVALS, DataCommand.HLEN, DataCommand.HEXISTS, DataCommand.HSTRLEN,
     DataCommand.SISMEMBER, DataCommand.SMISMEMBER, DataCommand.SMEMBERS, DataCommand.SCARD)
)  # fmt: skip
_SET_STORES: Mapping[DataCommand, str] = {
    DataCommand.SINTERSTORE: "inter",
    DataCommand.SUNIONSTORE: "union",
    DataCommand.SDIFFSTORE: "diff",
}
_LONG_MAX = 2**63 - 1
_OUT_OF_RANGE_POSITIVE = "ERR value is out of range, must be positive"
_NAN_OR_INFINITY = "ERR value is NaN or Infinity"


def _take_trailing_request_id(
    command: Sequence[bytes], fixed: int
) -> tuple[Sequence[bytes], tuple[str, int] | None]:
    """A write's trailing ``REQID <client-id> <seq>`` after at least ``fixed`` arguments,
    taken off only when it is a valid one: otherwise they are the command's own arguments
    (``SADD tags reqid`` adds a member "reqid"; docs/compatibility.md says what is left)."""
    if len(command) < fixed + 3 or command[-3].lower() != _REQID:
        return command, None
    try:
        request_id = _parse_request_id(command[-2], command[-1])
    except CommandError:
        return command, None
    return command[:-3], request_id


def _parse_container_command(
    command: DataCommand, spec: CommandSpec, args: Sequence[bytes], limits: Limits
) -> ClientOp:
    """A hash or set command, with Redis 7.0's checks in Redis' order (arity, the
    arguments read before the key, CROSSSLOT; WRONGTYPE and what Redis reads after the key
    are the apply's or the read's)."""
    request_id = None
    if "write" in spec.flags:
        args, request_id = _take_trailing_request_id(args, abs(spec.arity))
    _check_arity(spec, len(args))
    key = _check_key(args[1], limits)
    op: Op
    if command in _VALUE_READS:
        checked = tuple(_check_value(arg, limits) for arg in args[2:])
        op = ValueRead(key, command.value, checked)
    elif command in (DataCommand.SINTER, DataCommand.SUNION, DataCommand.SDIFF):
        keys = [_check_key(other, limits) for other in args[1:]]
        return ClientOp(command, (ValueRead(key, command.value, (), tuple(keys[1:])),),
                        _one_slot(keys))  # fmt: skip
    elif command in _SET_STORES:
        keys = [_check_key(other, limits) for other in args[1:]]
        slot = _one_slot(keys)
        op = SetStore(key, tuple(keys[1:]), _SET_STORES[command])
        return ClientOp(command, (op,), slot, request_id=request_id)
    elif command in (DataCommand.HSCAN, DataCommand.SSCAN):
        op = _parse_container_scan(key, command, args)
    elif command is DataCommand.SRANDMEMBER:
        if len(args) > 3:
            raise CommandError(_SYNTAX)
        count: tuple[bytes, ...] = ()
        if len(args) == 3:
            value = _int64(args[2])
            if value < -_LONG_MAX:
                raise CommandError(
                    f"ERR value is out of range, value must between {-_LONG_MAX} and {_LONG_MAX}"
                )
            if value < -SRANDMEMBER_COUNT_MAX:
                raise CommandError(
                    f"ERR SRANDMEMBER with a negative count is limited to "
                    f"{SRANDMEMBER_COUNT_MAX} members here"
                )
            count = (b"%d" % value,)
        op = ValueRead(key, command.value, count)
    else:
        op = _parse_container_write(command, key, args, limits)
    return ClientOp(command, (op,), keyslot(key), request_id=request_id)


# SRANDMEMBER key -count answers |count| members, repeats allowed: more than this is refused
# (Redis would build the whole reply; docs/compatibility.md).
SRANDMEMBER_COUNT_MAX = 1024 * 1024


def _parse_container_write(
    command: DataCommand, key: bytes, args: Sequence[bytes], limits: Limits
) -> Op:
    if command in (DataCommand.HSET, DataCommand.HSETNX):
        if len(args) % 2:  # a field without its value
            raise _arity_error(command.value)
        pairs = tuple(
            (_check_value(args[i], limits), _check_value(args[i + 1], limits))
            for i in range(2, len(args), 2)
        )
        return HashSet(key, pairs, nx=command is DataCommand.HSETNX)
    if command is DataCommand.HDEL:
        return HashDelete(key, tuple(_check_value(field, limits) for field in args[2:]))
    if command is DataCommand.HINCRBY:
        return HashIncrBy(key, _check_value(args[2], limits), _int64(args[3]))
    if command is DataCommand.HINCRBYFLOAT:
        delta = parse_long_double(args[3])
        if delta is None:
            raise CommandError(NOT_A_FLOAT)
        if isinstance(delta, float):  # an infinity: Redis refuses it before the key
            raise CommandError(_NAN_OR_INFINITY)
        return HashIncrByFloat(key, _check_value(args[2], limits), args[3])
    if command in (DataCommand.SADD, DataCommand.SREM):
        members = tuple(_check_value(member, limits) for member in args[2:])
        return SetAdd(key, members) if command is DataCommand.SADD else SetRemove(key, members)
    # SPOP
    if len(args) > 3:
        raise CommandError(_SYNTAX)
    if len(args) == 2:
        return SetPop(key)
    count = parse_int64(args[2])
    if count is None or count < 0:  # Redis' getPositiveLong...: one error for both
        raise CommandError(_OUT_OF_RANGE_POSITIVE)
    return SetPop(key, count)


def _parse_container_scan(key: bytes, command: DataCommand, args: Sequence[bytes]) -> ValueRead:
    """HSCAN / SSCAN key cursor [MATCH pattern] [COUNT count]: the cursor is read first (an
    error at once); the options after the key (an error only on a hash or set that
    exists, as Redis reads them), so theirs travels in the read."""
    cursor = _parse_scan_cursor(args[2])
    pattern: bytes | None = None
    count = 10
    error: str | None = None
    i = 3
    while i < len(args) and error is None:
        option = args[i].lower()
        more = len(args) - i >= 2
        if option == b"count" and more:
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                error = NOT_AN_INTEGER
            elif parsed < 1:
                error = _SYNTAX
            else:
                count = parsed
        elif option == b"match" and more:
            pattern = None if args[i + 1] == b"*" else args[i + 1]
        else:
            error = _SYNTAX
        i += 2
    options = (b"%d" % cursor, b"%d" % count) + (() if pattern is None else (pattern,))
    return ValueRead(key, command.value, options, error=error)


# --- expiry ----------------------------------------------------------------------------------

# A relative expiry is made absolute by the primary's clock; Redis refuses one whose sum
# overflows a 64-bit integer. planaria refuses it here, for any clock up to this (2**42 ms
# after 1970: the year 2109), so the primary never has to (docs/compatibility.md).
CLOCK_MS_MAX = 2**42
_INT64_MAX = 2**63 - 1


def _invalid_expire(name: bytes) -> str:
    return f"ERR invalid expire time in '{_text(name).lower()}' command"


def _expire_time(unit: bytes, sent: bytes, name: bytes) -> tuple[int, bool]:
    """SET/SETEX/PSETEX/GETEX's expiry (``unit`` one of ex, px, exat, pxat) as Redis 7.0's
    getExpireMillisecondsOrReply reads it: ``(ms, relative)``. Raises CommandError."""
    value = _int64(sent)
    seconds = unit in (b"ex", b"exat")
    if value <= 0 or (seconds and value > _INT64_MAX // 1000):
        raise CommandError(_invalid_expire(name))
    ms = value * 1000 if seconds else value
    relative = unit in (b"ex", b"px")
    if relative and ms > _INT64_MAX - CLOCK_MS_MAX:
        raise CommandError(_invalid_expire(name))
    return ms, relative


def _split_request_id(
    command: Sequence[bytes], fixed: int
) -> tuple[Sequence[bytes], tuple[str, int] | None]:
    """A trailing ``REQID <client-id> <seq>`` after at least ``fixed`` arguments (name
    included), taken off (the expiry commands' options never take REQID as a value)."""
    if len(command) >= fixed + 3 and command[-3].lower() == _REQID:
        return command[:-3], _parse_request_id(command[-2], command[-1])
    return command, None


_EXPIRE_UNITS: Mapping[DataCommand, tuple[bool, bool]] = {  # (in seconds, relative)
    DataCommand.EXPIRE: (True, True),
    DataCommand.PEXPIRE: (False, True),
    DataCommand.EXPIREAT: (True, False),
    DataCommand.PEXPIREAT: (False, False),
}
_EXPIRE_OPTIONS = (b"nx", b"xx", b"gt", b"lt")
_TTL_READS: Mapping[DataCommand, bool] = {  # relative (ms left) or the Unix time
    DataCommand.TTL: True,
    DataCommand.PTTL: True,
    DataCommand.EXPIRETIME: False,
    DataCommand.PEXPIRETIME: False,
}


def _parse_expiry_command(
    command: DataCommand, spec: CommandSpec, args: Sequence[bytes], limits: Limits
) -> ClientOp:
    """SETEX, PSETEX, GETEX, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, EXPIRETIME,
    PEXPIRETIME, PERSIST, RENAME, RENAMENX, with Redis 7.0's checks in Redis' order."""
    request_id = None
    if "write" in spec.flags:
        args, request_id = _split_request_id(args, abs(spec.arity))
    _check_arity(spec, len(args))
    key = _check_key(args[1], limits)
    slot = keyslot(key)
    op: Op
    if command in _TTL_READS:
        return ClientOp(command, (GetExpiry(key, relative=_TTL_READS[command]),), slot)
    if command in (DataCommand.RENAME, DataCommand.RENAMENX):
        new_key = _check_key(args[2], limits)
        rename = Rename(key, new_key, nx=command is DataCommand.RENAMENX)
        return ClientOp(command, (rename,), _one_slot((key, new_key)), request_id=request_id)
    if command is DataCommand.PERSIST:
        op = ClearExpiry(key)
    elif command in (DataCommand.SETEX, DataCommand.PSETEX):
        unit = b"ex" if command is DataCommand.SETEX else b"px"
        expire_ms, _ = _expire_time(unit, args[2], args[0])
        op = Set(key, _check_value(args[3], limits), expire_ms=expire_ms, relative=True)
    elif command is DataCommand.GETEX:
        op = _parse_getex(key, args)
    else:
        op = _parse_expire(command, key, args)
    return ClientOp(command, (op,), slot, request_id=request_id)


def _parse_expire(command: DataCommand, key: bytes, args: Sequence[bytes]) -> Expire:
    flags = dict.fromkeys(_EXPIRE_OPTIONS, False)
    for option in args[3:]:
        lowered = option.lower()
        if lowered not in flags:
            raise CommandError(f"ERR Unsupported option {_text(option)}")
        flags[lowered] = True
    nx, xx, gt, lt = (flags[option] for option in _EXPIRE_OPTIONS)
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    when = _int64(args[2])
    seconds, relative = _EXPIRE_UNITS[command]
    if seconds:
        if not -(2**63 // 1000) <= when <= _INT64_MAX // 1000:  # C division: toward 0
            raise CommandError(_invalid_expire(args[0]))
        when *= 1000
    if relative and when > _INT64_MAX - CLOCK_MS_MAX:
        raise CommandError(_invalid_expire(args[0]))
    return Expire(key, when, relative=relative, nx=nx, xx=xx, gt=gt, lt=lt)


def _parse_getex(key: bytes, args: Sequence[bytes]) -> GetEx:
    """GETEX's options (a syntax error at once); an invalid time only fails a key that
    exists (Redis reads it after the key), so it travels in the op."""
    expiry: tuple[bytes, bytes] | None = None
    persist = False
    i = 2
    while i < len(args):
        option = args[i].lower()
        if option == b"persist" and expiry is None:
            persist = True
        elif (
            option in _TTL_OPTIONS
            and not persist
            and (expiry is None or expiry[0] == option)
            and i + 1 < len(args)
        ):
            i += 1
            expiry = (option, args[i])
        else:
            raise CommandError(_SYNTAX)
        i += 1
    if expiry is None:
        return GetEx(key, persist=persist)
    try:
        expire_ms, relative = _expire_time(*expiry, b"getex")
    except CommandError as error:
        return GetEx(key, error=str(error))
    return GetEx(key, expire_ms, relative=relative)


def _parse_int(data: bytes) -> int:
    try:
        return int(data)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


def parse_request(command: Sequence[bytes], limits: Limits) -> Request:
    """The typed request for ``command`` (name first, any case). Raises CommandError."""
    name = command[0].lower()
    spec = COMMANDS.get(_text(name))
    if spec is None:
        raise _unknown_command(command)
    string_command = _STRING_DATA.get(name)
    if string_command is not None:
        return _parse_string_command(string_command, spec, command, limits)
    expiry_command = _EXPIRY_DATA.get(name)
    if expiry_command is not None:
        return _parse_expiry_command(expiry_command, spec, command, limits)
    container_command = _CONTAINER_DATA.get(name)
    if container_command is not None:
        return _parse_container_command(container_command, spec, command, limits)
    if name in (b"get", b"exists") and _has_trailing_reqid(command):
        raise CommandError(
            f"ERR REQID is only valid on SET and DEL, not {_text(name).upper()} "
            "(reads need no request id)"
        )
    _check_arity(spec, len(command))
    if name == b"get":
        key = _check_key(command[1], limits)
        return ClientOp(DataCommand.GET, (Get(key),), keyslot(key))
    if name == b"set":
        return _parse_set(command, limits)
    if name in (b"del", b"unlink"):
        return _parse_del(command, limits)
    if name == b"type":
        key = _check_key(command[1], limits)
        return ClientOp(DataCommand.TYPE, (Get(key),), keyslot(key))
    if name == b"dbsize":
        return DbSize()
    if name == b"randomkey":
        return RandomKey()
    if name == b"keys":
        return Keys(command[1])
    if name == b"scan":
        return _parse_scan(command)
    if name == b"exists":
        keys = [_check_key(key, limits) for key in command[1:]]
        return ClientOp(DataCommand.EXISTS, tuple(Get(key) for key in keys), _one_slot(keys))
    if name == b"ping":
        if len(command) > 2:
            raise _arity_error("ping")
        return Ping(command[1] if len(command) == 2 else None)
    if name == b"echo":
        return Echo(command[1])
    if name == b"info":
        return Info(tuple(_text(section).lower() for section in command[1:]))
    if name == b"readonly":
        return ReadOnly()
    if name == b"readwrite":
        return ReadWrite()
    if name == b"quit":
        return Quit()
    if name == b"select":
        return Select(_parse_int(command[1]))
    if name == b"hello":
        return _parse_hello(command)
    if name == b"command" and len(command) == 1:
        return CommandQuery("")
    sub = _subcommand(spec, command)
    if name == b"cluster":
        if sub == "keyslot":
            return ClusterKeyslot(command[2])
        return _CLUSTER_REQUESTS[sub]
    if name == b"command":
        return CommandQuery(sub, tuple(command[2:]))
    if name == b"client":
        return ClientCommand(sub, tuple(command[2:]))
    if name == b"backup":
        return _parse_backup(sub, command)
    # config get
    return ConfigGet(tuple(_text(pattern).lower() for pattern in command[2:]))


_STRING_DATA: Mapping[bytes, DataCommand] = {
    spec.name.encode(): DataCommand(spec.name) for spec in _STRING_COMMANDS
}
_EXPIRY_DATA: Mapping[bytes, DataCommand] = {
    spec.name.encode(): DataCommand(spec.name) for spec in _EXPIRY_COMMANDS
}
_CONTAINER_DATA: Mapping[bytes, DataCommand] = {
    spec.name.encode(): DataCommand(spec.name) for spec in (*_HASH_COMMANDS, *_SET_COMMANDS)
}


def _parse_backup(sub: str, command: Sequence[bytes]) -> BackupBegin | BackupRead | BackupEnd:
    if sub == "begin":
        partition = _parse_int(command[2])
        if partition < 0:
            raise CommandError(f"ERR partition must be >= 0, not {partition}")
        return BackupBegin(partition)
    token = _text(command[2])
    if sub == "end":
        return BackupEnd(token)
    offset, length = _parse_int(command[3]), _parse_int(command[4])
    if offset < 0 or length < 1:
        raise CommandError(f"ERR offset must be >= 0 and length >= 1, not {offset}, {length}")
    return BackupRead(token, offset, length)


def _parse_hello(command: Sequence[bytes]) -> Hello:
    if len(command) == 1:
        return Hello(None)
    try:
        protocol = int(command[1])
    except ValueError:
        raise CommandError("ERR Protocol version is not an integer or out of range") from None
    client_name = None
    i = 2
    while i < len(command):
        option = command[i].lower()
        if option == b"setname" and i + 1 < len(command):
            client_name = command[i + 1]
            i += 2
        elif option == b"auth":
            raise CommandError("ERR AUTH is not supported: planaria has no users")
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{_text(command[i])}'")
    return Hello(protocol, client_name)


# --- connection-local answers -------------------------------------------------------------------


@dataclass(slots=True)
class ConnectionState:
    """What one client connection has told the server about itself."""

    id: int
    peer: str = ""
    readonly: bool = False  # READONLY: stale reads from replicas are fine
    protocol: int = 2  # HELLO 3: maps are sent as RESP3 maps (redis-py 8 asks for RESP3)
    name: bytes | None = None
    library: dict[str, bytes] = field(default_factory=dict)  # CLIENT SETINFO
    closing: bool = False  # QUIT: close once the reply is written


def answer_local(
    request: LocalRequest, state: ConnectionState, settings: Mapping[str, str]
) -> bytes:
    """The reply to a request that needs only the connection (and the server's settings,
    for CONFIG GET). Updates ``state`` (READONLY, CLIENT SETNAME, QUIT)."""
    if isinstance(request, Ping):
        return resp.PONG if request.message is None else resp.bulk(request.message)
    if isinstance(request, Echo):
        return resp.bulk(request.message)
    if isinstance(request, (ReadOnly, ReadWrite)):
        state.readonly = isinstance(request, ReadOnly)
        return resp.OK
    if isinstance(request, Quit):
        state.closing = True
        return resp.OK
    if isinstance(request, Select):
        if request.db != 0:
            return resp.error("ERR SELECT is not allowed in cluster mode")
        return resp.OK
    if isinstance(request, Hello):
        return _answer_hello(request, state)
    if isinstance(request, ClusterKeyslot):
        return resp.integer(keyslot(request.key))
    if isinstance(request, CommandQuery):
        return _answer_command(request, state.protocol)
    if isinstance(request, ClientCommand):
        return _answer_client(request, state)
    found: list[resp.RespValue] = []
    for name, value in settings.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in request.patterns):
            found += [name, value]
    return resp.encode(resp.RespMap(found), state.protocol)


def _answer_hello(request: Hello, state: ConnectionState) -> bytes:
    if request.protocol not in (None, 2, 3):
        return resp.error("NOPROTO unsupported protocol version")
    if request.client_name is not None:
        state.name = request.client_name
    if request.protocol is not None:
        state.protocol = request.protocol
    return resp.encode(
        resp.RespMap(
            [
                "server", "redis", "version", "7.0.0", "proto", state.protocol, "id", state.id,
                "mode", "cluster", "role", "master", "modules", [],
            ]
        ),
        state.protocol,
    )  # fmt: skip


def _answer_command(request: CommandQuery, protocol: int) -> bytes:
    names = [_text(arg).lower() for arg in request.args]
    if request.sub == "":
        return resp.encode([spec.entry() for spec in COMMANDS.values()])
    if request.sub == "count":
        return resp.integer(len(COMMANDS))
    if request.sub == "list":
        return resp.encode(list(COMMANDS))
    if request.sub == "info":
        specs = [COMMANDS.get(name) for name in names] if names else list(COMMANDS.values())
        return resp.encode([spec.entry() if spec else None for spec in specs])
    if request.sub == "docs":
        docs: list[resp.RespValue] = []
        for name in names or list(COMMANDS):
            if name in COMMANDS:
                docs += [name, COMMANDS[name].docs()]
        return resp.encode(resp.RespMap(docs), protocol)
    # getkeys
    spec = COMMANDS.get(names[0])
    if spec is None:
        return resp.error("ERR Invalid command specified")
    if (spec.arity > 0 and len(names) != spec.arity) or len(names) < -spec.arity:
        return resp.error("ERR Invalid number of arguments specified for command")
    if spec.first_key == 0:
        return resp.error("ERR The command has no key arguments")
    last = spec.last_key if spec.last_key >= 0 else len(names) + spec.last_key
    return resp.encode(list(request.args[spec.first_key : last + 1 : spec.step]))


def _answer_client(request: ClientCommand, state: ConnectionState) -> bytes:
    if request.sub == "setname":
        name = request.args[0]
        if any(byte <= 0x20 or byte >= 0x7F for byte in name):
            return resp.error(
                "ERR Client names cannot contain spaces, newlines or special characters."
            )
        state.name = name or None
        return resp.OK
    if request.sub == "getname":
        return resp.bulk(state.name)
    if request.sub == "id":
        return resp.integer(state.id)
    # setinfo
    attribute = _text(request.args[0]).lower()
    if attribute not in ("lib-name", "lib-ver"):
        return resp.error(f"ERR Unrecognized option '{_text(request.args[0])}'")
    state.library[attribute] = request.args[1]
    return resp.OK


# --- rendering the core's answers -----------------------------------------------------------------


def error_reply(
    code: ErrorCode, *, slot: int, partition: int, moved_to: str | None = None
) -> bytes:
    """The RESP error for a replica's refusal (every one means: certainly not applied by
    this request; after SEQTOOOLD an earlier attempt of it may have been).

    Chosen for what redis-py's cluster client does with them: MOVED updates its slot map
    and retries; TRYAGAIN retries soon on the same node (a primary reconciling or renewing
    its lease: a short wait); CLUSTERDOWN reloads the topology and retries (no primary known,
    too few in-sync replicas). BUSY is not retried: an overloaded partition wants less load.
    SEQTOOOLD is not retried either: the same request id would get the same answer.
    """
    if code is ErrorCode.NOT_PRIMARY:
        if moved_to is not None:
            return resp.error(f"MOVED {slot} {moved_to}")
        return resp.error(f"CLUSTERDOWN partition {partition} has no known primary right now")
    if code is ErrorCode.NOT_READY:
        return resp.error(
            f"TRYAGAIN partition {partition} is not ready (its primary is reconciling or "
            "renewing its lease)"
        )
    if code is ErrorCode.NOT_ENOUGH_REPLICAS:
        return resp.error(
            f"CLUSTERDOWN partition {partition} has fewer in-sync replicas than min_insync; "
            "the write was not applied"
        )
    if code is ErrorCode.STALE_EPOCH:
        return resp.error(f"TRYAGAIN partition {partition} saw a stale epoch; retry")
    if code is ErrorCode.SEQ_TOO_OLD:
        return resp.error(
            f"SEQTOOOLD partition {partition}: the REQID sequence number is below this "
            "client's dedup window (its highest applied sequence number minus the window); "
            "not applied now, and an earlier attempt with this id may or may not have been"
        )
    return resp.error(
        f"BUSY partition {partition} is overloaded (too many pending writes); back off and retry"
    )


def render_reply(
    op: ClientOp,
    replies: Sequence[ClientReply],
    *,
    moved_to: str | None = None,
    protocol: int = 2,
) -> bytes:
    """Redis' reply to ``op`` from the core's replies, one per op in order. The first error
    wins (``moved_to``: the primary's ``host:port`` for NOT_PRIMARY, if known). GET: bulk or
    null; SET: +OK, null when NX/XX/IFEQ did not hold, the old value with GET; DEL: how many
    keys existed; EXISTS: how many exist. ``protocol``: the connection's (HGETALL answers a
    map in RESP3)."""
    if len(replies) != len(op.ops):
        raise UsageError(f"{len(op.ops)} ops but {len(replies)} replies")
    command = op.command
    type_blind = command in _TYPE_BLIND
    for reply in replies:
        if reply.error is not None:
            return error_reply(
                reply.error, slot=op.slot, partition=reply.partition, moved_to=moved_to
            )
        if reply.failure is not None and not type_blind:
            return resp.error(reply.failure)
    if command in _CONTAINER_RENDER:
        return _render_container(command, first_result=replies[0].result, protocol=protocol)
    first = replies[0]
    if command is DataCommand.GET:
        return resp.bulk(first.value)
    if command is DataCommand.SET:
        if op.return_old:
            return resp.bulk(first.value)
        return resp.OK if first.applied else resp.NULL
    if command in (DataCommand.DEL, DataCommand.UNLINK):
        return resp.integer(sum(reply.applied for reply in replies))
    if command is DataCommand.TYPE:
        if first.failure == WRONGTYPE and isinstance(first.result, bytes):
            return resp.simple(first.result.decode())  # a hash's or set's type
        return resp.simple("none" if first.value is None else "string")
    if command is DataCommand.EXISTS:
        return resp.integer(
            sum(reply.value is not None or reply.failure is not None for reply in replies)
        )
    if command in _NUMBER_RESULTS:
        if not isinstance(first.result, int):
            raise UsageError(f"{command.value} answered without a number: {first}")
        return resp.integer(first.result)
    if command is DataCommand.INCRBYFLOAT:
        if not isinstance(first.result, bytes):
            raise UsageError(f"incrbyfloat answered without a value: {first}")
        return resp.bulk(first.result)
    if command is DataCommand.STRLEN:
        return resp.integer(len(first.value or b""))
    if command is DataCommand.GETRANGE:
        return resp.bulk(getrange(first.value or b"", *op.span))
    if command in (DataCommand.GETSET, DataCommand.GETDEL):
        return resp.bulk(first.value)
    if command is DataCommand.MGET:
        return resp.array([resp.bulk(reply.value) for reply in replies])
    if command is DataCommand.MSET:
        return resp.OK
    if command in _EXPIRY_RENDER:
        return _render_expiry(command, first)
    return resp.integer(int(first.applied))  # SETNX, MSETNX


_EXPIRY_RENDER = frozenset(_EXPIRY_DATA.values())
# Reads of any type: a hash or set is no error to them (MGET answers null for it).
_TYPE_BLIND = frozenset((DataCommand.TYPE, DataCommand.EXISTS, DataCommand.MGET))
_CONTAINER_RENDER = frozenset(_CONTAINER_DATA.values())
_CONTAINER_NUMBERS = frozenset(
    (DataCommand.HSET, DataCommand.HSETNX, DataCommand.HDEL, DataCommand.HLEN,
     DataCommand.HEXISTS, DataCommand.HINCRBY, DataCommand.HSTRLEN, DataCommand.SADD,
     DataCommand.SREM, DataCommand.SISMEMBER, DataCommand.SCARD, DataCommand.SINTERSTORE,
     DataCommand.SUNIONSTORE, DataCommand.SDIFFSTORE)
)  # fmt: skip


def _render_container(command: DataCommand, first_result: object, protocol: int) -> bytes:
    """A hash or set command's reply from its result (core/containers.py)."""
    result = first_result
    if command in _CONTAINER_NUMBERS:
        if not isinstance(result, int):
            raise UsageError(f"{command.value} answered without a number: {result!r}")
        return resp.integer(result)
    if result is None or isinstance(result, bytes):  # HGET, HINCRBYFLOAT, SPOP, SRANDMEMBER
        return resp.bulk(result)
    if not isinstance(result, tuple):
        raise UsageError(f"{command.value} answered without a list: {result!r}")
    if command is DataCommand.SMISMEMBER:
        return resp.array([resp.integer(int(item or 0)) for item in result])
    if command in (DataCommand.HSCAN, DataCommand.SSCAN):
        cursor, *items = result
        return b"*2\r\n%b%b" % (resp.bulk(_as_bytes(cursor)), _bulks(items))
    if command is DataCommand.HGETALL and protocol == 3:
        return b"%%%d\r\n%b" % (len(result) // 2, b"".join(resp.bulk(_as_bytes(i)) for i in result))
    return _bulks(result)


def _as_bytes(item: object) -> bytes | None:
    if item is None or isinstance(item, bytes):
        return item
    raise UsageError(f"not a string in a reply: {item!r}")


def _bulks(items: Sequence[object]) -> bytes:
    return resp.array([resp.bulk(_as_bytes(item)) for item in items])


def _render_expiry(command: DataCommand, reply: ClientReply) -> bytes:
    if command in (DataCommand.SETEX, DataCommand.PSETEX):
        return resp.OK
    if command is DataCommand.GETEX:
        return resp.bulk(reply.value)
    if command is DataCommand.RENAME:
        return resp.OK
    result = reply.result
    if not isinstance(result, int):
        raise UsageError(f"{command.value} answered without a number: {reply}")
    if command in (DataCommand.TTL, DataCommand.EXPIRETIME) and result >= 0:
        return resp.integer((result + 500) // 1000)  # Redis rounds to the nearest second
    return resp.integer(result)


_NUMBER_RESULTS = frozenset(
    (DataCommand.INCR, DataCommand.INCRBY, DataCommand.DECR, DataCommand.DECRBY,
     DataCommand.APPEND, DataCommand.SETRANGE)
)  # fmt: skip


def getrange(value: bytes, start: int, end: int) -> bytes:
    """GETRANGE's substring as redis-server 7.0 cuts it: negative positions count from the
    end, both ends included, clamped to the string."""
    length = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(length + start, 0)
    if end < 0:
        end = max(length + end, 0)
    end = min(end, length - 1)
    if start > end or length == 0:
        return b""
    return value[start : end + 1]


def render_info(sections: Mapping[str, Mapping[str, object]]) -> bytes:
    """INFO's bulk text: ``# Section`` headers and ``field:value`` lines."""
    lines: list[str] = []
    for section, fields in sections.items():
        if lines:
            lines.append("")
        lines.append(f"# {section}")
        lines.extend(f"{name}:{value}" for name, value in fields.items())
    return resp.bulk(("\r\n".join(lines) + "\r\n").encode())
