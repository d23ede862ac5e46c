"""``planaria check``: exit codes, text and JSON output, HTML report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planaria.cli import main

GOOD = [
    '{"process": 0, "type": "invoke", "f": "put", "key": "k", "value": 1}',
    '{"process": 0, "type": "ok", "f": "put", "key": "k", "value": 1}',
    '{"process": 1, "type": "invoke", "f": "get", "key": "k"}',
    '{"process": 1, "type": "ok", "f": "get", "key": "k", "value": 1}',
]
BAD = [*GOOD[:3], '{"process": 1, "type": "ok", "f": "get", "key": "k", "value": null}']
EDN = [
    '{:process 0, :type :invoke, :f :append, :key "4", :value "x"}',
    '{:process 0, :type :ok, :f :append, :key "4", :value "x"}',
    '{:process 0, :type :invoke, :f :get, :key "4", :value nil}',
    '{:process 0, :type :ok, :f :get, :key "4", :value "x"}',
]
JEPSEN = [
    "INFO  jepsen.util - 1\t:invoke\t:write\t2",
    "INFO  jepsen.util - 1\t:ok\t:write\t2",
    "INFO  jepsen.util - 1\t:invoke\t:read\tnil",
    "INFO  jepsen.util - 1\t:ok\t:read\t2",
]


def _file(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_linearizable_files_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [_file(tmp_path, "a.jsonl", GOOD), _file(tmp_path, "b.edn", EDN)]
    files.append(_file(tmp_path, "c.log", JEPSEN))
    assert main(["check", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": linearizable") == 3


def test_not_linearizable_exits_1_and_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = _file(tmp_path, "good.jsonl", GOOD), _file(tmp_path, "bad.jsonl", BAD)
    assert main(["check", good, bad]) == 1
    out = capsys.readouterr().out
    assert 'bad.jsonl: key "k": not linearizable' in out
    assert "get -> nil" in out and "values possible while it was pending: {1}" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [_file(tmp_path, "good.jsonl", GOOD), _file(tmp_path, "bad.jsonl", BAD)]
    assert main(["check", "--json", *files]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["verdict"] for row in rows] == ["linearizable", "not-linearizable"]
    assert rows[1]["failing"]["key"] == "k"
    assert rows[1]["failing"]["blocked"]["line"] == 3
    assert rows[1]["model"] == "kv" and rows[1]["format"] == "jsonl"


def test_html_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert main(["check", _file(tmp_path, "bad.jsonl", BAD), "--html", str(report)]) == 1
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    assert 'class="op blocked"' in page


def test_explicit_model_and_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, "h.txt", GOOD)
    assert main(["check", "--model", "cas-register", "--format", "jsonl", path]) == 0
    assert main(["check", "--format", "edn", path]) == 2
    assert "h.txt:1:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD[0], "{oops"], "bad.jsonl:2: invalid JSON"),
        ([GOOD[1]], "bad.jsonl:1: process 0 completes 'put' (ok) but has no pending invocation"),
        ([*GOOD[:2], GOOD[1]], "bad.jsonl:3: process 0 completes 'put' (ok) but has no pending"),
        (['{"process": 0, "type": "invoke", "f": "zap"}'], "kv has no operation 'zap'"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    assert main(["check", _file(tmp_path, "bad.jsonl", lines)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.jsonl")
    assert main(["check", missing]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: no such file"
    # a definite violation in another file wins over the unreadable one
    assert main(["check", missing, _file(tmp_path, "bad.jsonl", BAD)]) == 1


def test_timeout_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writers = 12
    lines = [
        json.dumps({"process": p, "type": t, "f": "write", "value": p})
        for t in ("invoke", "ok")
        for p in range(writers)
    ]
    for value in (1, 2):
        lines.append(json.dumps({"process": 99, "type": "invoke", "f": "read"}))
        lines.append(json.dumps({"process": 99, "type": "ok", "f": "read", "value": value}))
    path = _file(tmp_path, "slow.jsonl", lines)
    assert main(["check", "--timeout-s", "1e-9", path]) == 2
    assert "ran out of time" in capsys.readouterr().out
    assert main(["check", "--timeout-s", "0", path]) == 2
