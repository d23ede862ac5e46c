"""The checker's bounds: generated histories against a brute-force checker, large
50- and 100-client histories decided right, the memory and time limits giving ``unknown``
(never an exception), partitions raced so a cheap refutation wins."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.check import (
    CheckResult,
    Event,
    Verdict,
    check_operations,
    check_partition,
    default_model,
    explain,
    linearizability,
    operations_from_events,
    render_html,
)
from planaria.check.generate import VIOLATIONS, HistorySpec, generate
from planaria.check.history import event_line
from planaria.check.models import KvModel
from planaria.cli import main
from planaria.errors import UsageError

from ._bruteforce import brute_force_linearizable


def _check(spec: HistorySpec, **limits: Any) -> tuple[CheckResult, bool]:
    history = generate(spec)
    model = default_model("jsonl", spec.model)
    return check_operations(model, operations_from_events(history.events), **limits), (
        history.linearizable
    )


def _expected(linearizable: bool) -> Verdict:
    return Verdict.LINEARIZABLE if linearizable else Verdict.NOT_LINEARIZABLE


# --- small histories: the search agrees with brute force ------------------------------

small_specs = st.builds(
    HistorySpec,
    model=st.sampled_from(["kv", "cas-register"]),
    clients=st.integers(1, 3),
    keys=st.integers(1, 2),
    ops_per_client=st.integers(1, 2),
    concurrency=st.sampled_from([0.3, 0.7, 1.0]),
    violation=st.sampled_from([None, *VIOLATIONS]),
    info_rate=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 10_000),
)


@settings(max_examples=200, deadline=None)
@given(small_specs)
def test_generated_histories_agree_with_brute_force(spec: HistorySpec) -> None:
    history = generate(spec)
    ops = operations_from_events(history.events)
    model = default_model("jsonl", spec.model)
    verdict = check_operations(model, ops).verdict
    assert verdict is _expected(history.linearizable)
    assert verdict is _expected(brute_force_linearizable(model, ops))


# Arbitrary tiny histories (values from a tiny domain, so writes repeat values and reads
# often fit): most are not linearizable, and the search must agree on each. Each mix of
# operations gets its own reach test (Model.reach): appends of strings (the state only
# grows), reads and writes alone (it only moves by a write), with cas (none).
_F = {
    "kv": ["get", "put", "append"],
    "kv-no-append": ["get", "put", "delete"],
    "cas-register": ["read", "write", "cas"],
    "register": ["read", "write", "write"],
}
_MODEL = {
    "kv": "kv",
    "kv-no-append": "kv",
    "cas-register": "cas-register",
    "register": "cas-register",
}
raw_ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # f
        st.integers(0, 2),  # argument
        st.sampled_from([None, 0, 1, 2]),  # what a read returned
        st.integers(0, 12),  # call
        st.integers(1, 8),  # length
        st.sampled_from(["ok", "ok", "ok", "info", "fail"]),
        st.sampled_from(["a", "b"]),  # key
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_F)), raw_ops)
def test_arbitrary_histories_agree_with_brute_force(mix: str, rows: list) -> None:  # type: ignore[type-arg]
    model_name = _MODEL[mix]
    timed = []
    for process, (f_index, argument, read, call, length, status, key) in enumerate(rows):
        f = _F[mix][f_index]
        value: object = argument
        if f == "cas":
            value = [argument, (argument + 1) % 3]
        elif f == "append":
            value = str(argument)
        output = value
        if f in ("get", "read"):
            value, output = None, _kv_read(read) if mix == "kv" else read
        timed.append((call, 1, Event(process, "invoke", f, key, _frozen(value))))
        timed.append((call + length, 0, Event(process, status, f, key, _frozen(output))))
    timed.sort(key=lambda item: (item[0], item[1]))
    events = [replace(e, time=float(t), line=n) for n, (t, _, e) in enumerate(timed, start=1)]
    model = default_model("jsonl", model_name)
    ops = operations_from_events(events)
    expected = _expected(brute_force_linearizable(model, ops))
    assert check_operations(model, ops).verdict is expected
    assert check_operations(model, ops, explain=False, memory_mb=1).verdict is expected


def test_a_write_of_the_value_already_there_is_not_a_read() -> None:
    # Only a read may be forced first: write 1 keeps the state 1 here, but must go after
    # write 2 for the read of 1 to fit (forcing it first says "not linearizable").
    rows = [
        (0.0, "invoke", 0, "write", 1), (1.0, "ok", 0, "write", 1),
        (2.0, "invoke", 1, "write", 2), (2.0, "invoke", 2, "write", 1),
        (5.0, "ok", 1, "write", 2), (5.0, "ok", 2, "write", 1),
        (6.0, "invoke", 3, "read", None), (7.0, "ok", 3, "read", 1),
    ]  # fmt: skip
    events = [Event(p, t, f, None, v, time, n) for n, (time, t, p, f, v) in enumerate(rows)]  # type: ignore[arg-type]
    ops = operations_from_events(events)
    model = default_model("jsonl", "cas-register")
    assert brute_force_linearizable(model, ops)
    assert check_operations(model, ops).verdict is Verdict.LINEARIZABLE


class _NoReach(KvModel):
    def reach(self, ops: object) -> None:
        return None


@pytest.mark.parametrize("violation", [None, "stale-read"])
def test_the_reach_test_cuts_the_search(violation: str | None) -> None:
    # Gets, puts and appends of strings: a state a pending get's value does not extend is a
    # dead end (unless a pending put may restart it), found before the search walks on.
    spec = HistorySpec(clients=20, keys=2, ops_per_client=15, violation=violation, seed=1)
    ops = operations_from_events(generate(spec).events)
    cut, full = check_operations(KvModel(), ops), check_operations(_NoReach(), ops)
    assert cut.verdict is full.verdict is _expected(violation is None)
    explored = [sum(p.configurations for p in r.partitions) for r in (cut, full)]
    assert explored[0] * 2 < explored[1]


def test_past_its_budget_the_reach_test_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding the puts that may lead to a get's value costs a test per value put; past the
    # budget the search goes on without reach tests, as if the model had none.
    monkeypatch.setattr(linearizability, "REACH_TESTS_MIN", 0)
    monkeypatch.setattr(linearizability, "REACH_TESTS_PER_OP", 0)
    spec = HistorySpec(clients=20, keys=2, ops_per_client=15, violation="stale-read", seed=1)
    ops = operations_from_events(generate(spec).events)
    cut, full = check_operations(KvModel(), ops), check_operations(_NoReach(), ops)
    assert cut.verdict is full.verdict is Verdict.NOT_LINEARIZABLE
    assert [p.configurations for p in cut.partitions] == [p.configurations for p in full.partitions]


def _kv_read(read: int | None) -> str | None:
    return None if read is None else "".join(str(d) for d in range(read + 1))[-2:]


def _frozen(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


# --- large histories: right verdicts within the default limits ------------------------


@pytest.mark.parametrize("clients", [50, 100])
@pytest.mark.parametrize("violation", [None, *VIOLATIONS])
@pytest.mark.parametrize("model", ["kv", "cas-register"])
def test_large_histories_get_the_right_verdict(
    model: str, violation: str | None, clients: int
) -> None:
    spec = HistorySpec(
        model=model,
        clients=clients,
        keys=10,
        ops_per_client=20,
        concurrency=0.5,
        violation=violation,
        info_rate=0.02,
        seed=clients,
    )
    result, linearizable = _check(spec)
    assert result.verdict is _expected(linearizable)
    if violation is not None:
        failing = result.failing
        assert failing is not None and failing.key == "0"


# --- limits: unknown with a reason, never an exception --------------------------------

_HARD = HistorySpec(clients=100, keys=1, ops_per_client=8, concurrency=1.0, violation="lost-write")


def test_memory_limit_gives_unknown_with_the_reason() -> None:
    result, _ = _check(_HARD, memory_mb=2)
    assert result.verdict is Verdict.UNKNOWN
    undecided = result.undecided
    assert undecided is not None and undecided.reason is not None
    assert "ran out of memory" in undecided.reason and "2 MB" in undecided.reason
    line = explain(default_model("jsonl"), result)
    assert line.startswith('key "0": unknown') and "\n" not in line


@pytest.mark.parametrize("model", ["kv", "cas-register"])
def test_memory_limit_holds_for_the_real_allocation(model: str) -> None:
    # The estimate tracks what the search really allocates: at an 8 MB limit the peak is
    # close to 8 MB, neither far past it nor far below.
    history = generate(replace(_HARD, model=model))
    ops = operations_from_events(history.events)
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        result = check_partition(default_model("jsonl", model), "0", ops, memory_mb=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.verdict is Verdict.UNKNOWN
    assert 4 < (peak - baseline) / 2**20 < 12


def test_time_limit_gives_unknown_for_every_undecided_partition() -> None:
    ticks = iter(range(10**9))
    result, _ = _check(replace(_HARD, keys=3), clock=lambda: float(next(ticks)), timeout_s=5.0)
    assert result.verdict is Verdict.UNKNOWN
    assert all(p.verdict is not Verdict.NOT_LINEARIZABLE for p in result.partitions)
    assert any("ran out of time: the 5 s limit" in (p.reason or "") for p in result.partitions)


def test_a_cheap_refutation_wins_over_a_hopeless_partition() -> None:
    # Key "0" alone would exhaust any limit; key "x" is refuted in a few steps. Searched
    # side by side, "x" decides the history and "0" is dropped undecided.
    hopeless = generate(replace(_HARD, ops_per_client=30)).events
    small = generate(HistorySpec(clients=3, keys=1, ops_per_client=4, violation="stale-read"))
    renamed = [replace(e, key="x", process=f"s{e.process}") for e in small.events]
    events = sorted([*hopeless, *renamed], key=lambda e: e.time)
    events = [replace(e, line=n) for n, e in enumerate(events, start=1)]
    result = check_operations(default_model("jsonl"), operations_from_events(events))
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert [p.key for p in result.partitions] == ["x"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(UsageError, match="memory_mb"):
        _check(HistorySpec(clients=1), memory_mb=0)


# --- the CLI: exit 2 and one line on a limit; --generate ------------------------------


def _write(path: Path, spec: HistorySpec) -> str:
    path.write_text("".join(event_line(e) + "\n" for e in generate(spec).events))
    return str(path)


def test_cli_limit_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "hard.jsonl", _HARD)
    assert main(["check", "--memory-mb", "1", path]) == 2
    out, err = capsys.readouterr()
    assert out.strip().count("\n") == 0 and "Traceback" not in out + err
    assert out.startswith(f'{path}: key "0": unknown') and "ran out of memory" in out
    assert main(["check", "--memory-mb", "1", "--json", path]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["verdict"] == "unknown" and "1 MB" in payload["explanation"]
    assert main(["check", "--memory-mb", "-1", path]) == 2
    assert "--memory-mb must be positive" in capsys.readouterr().err


def test_cli_generates_what_it_then_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    args = ["--clients", "20", "--keys", "3", "--ops-per-client", "10"]
    assert main(["check", "--generate", *args, *files]) == 0
    assert "should be linearizable" in capsys.readouterr().out
    assert main(["check", *files]) == 0
    capsys.readouterr()
    assert main(["check", "--generate", "--violation", "double-write", *args, *files]) == 0
    assert main(["check", "--no-explain", *files]) == 1
    out = capsys.readouterr().out
    assert "not linearizable" in out and "values possible" not in out
    assert main(["check", "--generate", "--concurrency", "2", *files]) == 2
    assert "concurrency must be in (0, 1]" in capsys.readouterr().err


def test_the_html_timeline_is_bounded() -> None:
    history = generate(HistorySpec(clients=1, keys=1, ops_per_client=600, violation="stale-read"))
    model = default_model("jsonl")
    result = check_operations(model, operations_from_events(history.events))
    failing = result.failing
    assert failing is not None and len(failing.operations) > 500
    page = render_html("t", [("h.jsonl", model, result)])
    assert page.count('<rect class="op') == 400
    assert f"of {len(failing.operations)}" in page


def test_the_explanation_scans_a_bounded_number_of_configurations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three concurrent writes, then a read of a value written only later: the read was
    # tried in three states; scanning one configuration finds at most one.
    rows: list[tuple[int, str, str, int | None, float]]
    rows = [(p, "invoke", "write", p + 1, 0.0) for p in range(3)]
    rows += [(p, "ok", "write", p + 1, 10.0) for p in range(3)]
    rows += [(3, "invoke", "read", None, 11.0), (3, "ok", "read", 5, 12.0)]
    rows += [(4, "invoke", "write", 5, 13.0), (4, "ok", "write", 5, 14.0)]
    events = [Event(p, t, f, None, v, time, n) for n, (p, t, f, v, time) in enumerate(rows)]  # type: ignore[arg-type]
    ops = operations_from_events(events)
    model = default_model("jsonl", "cas-register")
    full = check_operations(model, ops).failing
    monkeypatch.setattr(linearizability, "EXPLAIN_CONFIGS_MAX", 1)
    bounded = check_operations(model, ops).failing
    assert full is not None and bounded is not None
    assert full.blocked_states == {1, 2, 3}
    assert len(bounded.blocked_states) <= 1
