"""Parsers for JSON lines, Jepsen logs and EDN maps, and the errors on bad input."""

from __future__ import annotations

import pytest

from planaria.check import UNKNOWN, detect_format, parse_history
from planaria.check.parse import Keyword, parse_edn_value
from planaria.errors import HistoryError

JEPSEN = [
    "2017-01-01 INFO  jepsen.core - setting up",
    "INFO  jepsen.util - 3\t:invoke\t:read\tnil",
    "INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]",
    "INFO  jepsen.util - 3\t:ok\t:read\t3",
    "INFO  jepsen.util - 2\t:fail\t:cas\t[3 0]",
    "INFO  jepsen.util - 1\t:invoke\t:write\t2",
    "INFO  jepsen.util - 1\t:info\t:write\t:timed-out",
    "INFO  jepsen.util - :nemesis\t:info\t:start\tnil",
]

EDN = [
    '{:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}',
    "{:process :nemesis, :type :info, :f :start, :value nil}",
    '{:process 0, :type :ok, :f :append, :key "4", :value "x 0 1 y"}',
]


def test_jepsen_log() -> None:
    history = parse_history(JEPSEN)
    assert history.format == "jepsen-log"
    read, write = history.operations
    assert (read.f, read.output, read.line, read.ret) == ("read", 3, 2, 4.0)
    assert (write.f, write.value, write.output, write.ret) == ("write", 2, UNKNOWN, None)


def test_edn_maps() -> None:
    history = parse_history(EDN)
    assert history.format == "edn"
    (op,) = history.operations
    assert (op.process, op.f, op.key, op.value, op.output) == (
        0,
        "append",
        "4",
        "x 0 1 y",
        "x 0 1 y",
    )


def test_edn_values() -> None:
    assert parse_edn_value('[1 -2 nil true :k "s\\"q" 1.5]') == (
        1,
        -2,
        None,
        True,
        Keyword("k"),
        's"q',
        1.5,
    )
    assert parse_edn_value("{:a [1 2], :b {}}") == ((Keyword("a"), (1, 2)), (Keyword("b"), ()))
    for bad in ("[1 2", "{:a}", "1 2", "]", "#{1}"):
        with pytest.raises(HistoryError):
            parse_edn_value(bad)


def test_jsonl_with_times_and_lists() -> None:
    lines = [
        '{"process": "a", "type": "invoke", "f": "cas", "key": "k", "value": [1, 2], "time": 5}',
        "",
        '{"process": "a", "type": "ok", "f": "cas", "key": "k", "value": [1, 2], "time": 7.5}',
    ]
    history = parse_history(lines)
    assert history.format == "jsonl"
    (op,) = history.operations
    assert (op.value, op.call, op.ret, op.line) == ((1, 2), 5.0, 7.5, 1)


def test_jsonl_without_times_uses_line_numbers() -> None:
    lines = [
        '{"process": 0, "type": "invoke", "f": "get", "key": "k"}',
        '{"process": 0, "type": "ok", "f": "get", "key": "k", "value": null}',
    ]
    (op,) = parse_history(lines).operations
    assert (op.call, op.ret) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"process": 0, "type": "invoke", "f": "get"}', "{not json"],
            r"f\.jsonl:2: invalid JSON",
        ),
        (['{"process": 0, "type": "begin", "f": "get"}'], r"f\.jsonl:1: event type"),
        (['{"process": 0, "f": "get"}'], r"f\.jsonl:1: missing field 'type'"),
        (["[1, 2]"], r"f\.jsonl:1: expected a JSON object"),
        (
            ['{"process": 0, "type": "ok", "f": "get", "value": 1}'],
            r"f\.jsonl:1: process 0 completes 'get' \(ok\) but has no pending invocation",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "put", "value": 1}',
                '{"process": 0, "type": "ok", "f": "put", "value": 1}',
                '{"process": 0, "type": "ok", "f": "put", "value": 1}',
            ],
            r"f\.jsonl:3: .*no pending invocation \(it never started, or it completed already\)",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "put", "value": 1}',
                '{"process": 0, "type": "invoke", "f": "get"}',
            ],
            r"f\.jsonl:2: process 0 invokes 'get' while its 'put' invoked at line 1",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "put", "value": 1}',
                '{"process": 0, "type": "ok", "f": "get"}',
            ],
            r"f\.jsonl:2: process 0 completes 'get' but invoked 'put'",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "put", "time": 3}',
                '{"process": 0, "type": "ok", "f": "put", "time": 2}',
            ],
            r"f\.jsonl:2: time goes backwards",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "put", "time": 3}',
                '{"process": 0, "type": "ok", "f": "put"}',
            ],
            r"f\.jsonl:2: either every event has a time or none has",
        ),
        (['{"process": 0, "type": "invoke", "f": "put", "time": NaN}'], r"time must be a finite"),
    ],
)
def test_bad_jsonl(lines: list[str], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        parse_history(lines, format="jsonl", path="f.jsonl")


def test_bad_jepsen_and_edn_lines_name_their_line() -> None:
    with pytest.raises(HistoryError, match=r"h:2: malformed Jepsen event line"):
        parse_history([JEPSEN[1], "INFO  jepsen.util - 3 :ok"], path="h")
    with pytest.raises(HistoryError, match=r"h:2: "):
        parse_history([EDN[0], '{:process 0, :type :ok, :f :append, :key "4"'], path="h")
    with pytest.raises(HistoryError, match=r"h:1: process must be"):
        parse_history(["{:process nil, :type :invoke, :f :get}"], path="h")


def test_format_detection() -> None:
    assert detect_format(["", *JEPSEN]) == "jepsen-log"
    assert detect_format(EDN) == "edn"
    assert detect_format(['{"process": 0}']) == "jsonl"
    with pytest.raises(HistoryError, match="cannot tell the history format"):
        detect_format(["hello", ""])
    with pytest.raises(HistoryError, match="unknown history format"):
        parse_history(EDN, format="yaml")
