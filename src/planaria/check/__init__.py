"""Histories, the linearizability checker, the lost-write, counter and expired-read checkers
and their reports.

Everything here is pure (no I/O, no real time): parsers take lines, the checker takes an
injected clock. ``planaria check FILE...`` (``planaria.cli._check``) is the file-reading
front end.

History format (JSON lines, ``.jsonl``): one event per line, a JSON object with

- ``process``: who issued the operation (integer or string). A process has at most one
  operation pending at a time.
- ``type``: ``"invoke"`` (the operation starts), ``"ok"`` (it completed and took effect),
  ``"fail"`` (it certainly did not take effect: it is dropped), or ``"info"`` (the outcome is
  unknown: it may take effect at any moment after its invocation, or never). An invocation
  without any completion counts as ``info``.
- ``f``: the operation: ``read``/``get``, ``write``/``put``, ``cas``, ``append``, ``delete``.
- ``key`` (optional, default null): operations on different keys are independent.
- ``value`` (optional, default null): the argument on ``invoke`` (``cas`` takes
  ``[old, new]``); the result on ``ok`` (what a read returned). Ignored on ``fail``/``info``.
- ``time`` (optional): when the event happened, any unit, non-decreasing line by line.
  Either every event has one or none has (then the line number is the time).

Example::

    {"process": 0, "type": "invoke", "f": "put", "key": "x", "value": 1, "time": 0.0}
    {"process": 1, "type": "invoke", "f": "get", "key": "x", "value": null, "time": 0.1}
    {"process": 0, "type": "ok", "f": "put", "key": "x", "value": 1, "time": 0.2}
    {"process": 1, "type": "ok", "f": "get", "key": "x", "value": 1, "time": 0.3}

Jepsen log lines (a cas-register) and EDN maps (a key-value map) are read too; see
``docs/history-format.md``.
"""

from __future__ import annotations

from planaria.check.counters import CounterProblem, CounterReport, check_counters
from planaria.check.expiry import ExpiredRead, ExpiryReport, check_expired_reads
from planaria.check.history import UNKNOWN, Event, Operation, operations_from_events
from planaria.check.linearizability import (
    CheckResult,
    PartitionResult,
    Verdict,
    check_operations,
    check_partition,
)
from planaria.check.lostwrites import LostWrite, find_lost_writes
from planaria.check.models import MODELS, CasRegister, Input, KvModel, Model, model_named
from planaria.check.parse import FORMATS, ParsedHistory, detect_format, parse_history
from planaria.check.report import explain, explain_partition, render_html, result_to_json

__all__ = [
    "FORMATS",
    "MODELS",
    "UNKNOWN",
    "CasRegister",
    "CheckResult",
    "CounterProblem",
    "CounterReport",
    "Event",
    "ExpiredRead",
    "ExpiryReport",
    "Input",
    "KvModel",
    "LostWrite",
    "Model",
    "Operation",
    "ParsedHistory",
    "PartitionResult",
    "Verdict",
    "check_counters",
    "check_expired_reads",
    "check_operations",
    "check_partition",
    "default_model",
    "detect_format",
    "explain",
    "explain_partition",
    "find_lost_writes",
    "model_named",
    "operations_from_events",
    "parse_history",
    "render_html",
    "result_to_json",
]


def default_model(format: str, name: str | None = None) -> CasRegister:
    """The model for a history format: ``jepsen-log`` is a cas-register, ``edn`` a kv map
    whose missing keys read as ``""``, ``jsonl`` a kv map whose missing keys read as null.
    ``name`` overrides the choice (keeping the format's missing-key value)."""
    missing = "" if format == "edn" else None
    if name is None:
        name = "cas-register" if format == "jepsen-log" else "kv"
    return model_named(name, missing=missing)
