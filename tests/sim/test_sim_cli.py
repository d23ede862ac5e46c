"""``planaria sim``: exit codes, the summary line, failing seeds with replay and trace, JSON."""

from __future__ import annotations

import json

import pytest

from planaria.cli import main


def test_passing_seeds_exit_0_with_a_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seeds", "3", "--ops", "40", "--faults", "crash,loss"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("sim: 3 seeds, ")
    assert "0 violations" in out[0]
    assert "faults injected" in out[0]


def test_a_caught_bug_exits_1_with_the_replay_command_and_a_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["sim", "--seed", "0", "--ops", "150", "--bug", "ack-before-replicate"])
    out = capsys.readouterr().out
    assert code == 1
    assert "seed 0 FAILED ack-not-replicated" in out
    assert "replay: planaria sim --seed 0 " in out and "--bug ack-before-replicate" in out
    assert "trace (last events before the violation):" in out
    assert "1 violations" in out.splitlines()[-1]


def test_json_prints_failures_and_a_summary_object(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--seeds", "2", "--ops", "100", "--bug", "ack-before-replicate", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [line["seed"] for line in lines[:-1]] == [0, 1]
    assert all(line["check"] == "ack-not-replicated" and line["trace"] for line in lines[:-1])
    summary = lines[-1]["summary"]
    assert summary["seeds"] == 2 and summary["violations"] == 2
    assert summary["failed_seeds"] == [0, 1]


def test_history_checks_keys_and_lanes_are_in_the_replay_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["sim", "--seed", "2", "--ops", "40", "--keys", "6", "--lanes", "2"]
    assert main([*args, "--checks", "history", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["command"].endswith("--ops 40 --keys 6 --lanes 2 --checks history")


def test_jobs_give_the_same_results_as_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sim", "--seeds", "4", "--ops", "40", "--json"]
    main(args)
    one = json.loads(capsys.readouterr().out)["summary"]
    main([*args, "--jobs", "2"])
    two = json.loads(capsys.readouterr().out)["summary"]
    del one["elapsed_s"], two["elapsed_s"]
    assert one == two


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "meteor"], "unknown fault"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--nodes", "2"], "cannot hold 3 replicas"),
        (["--lanes", "0"], "lanes and write_window must be >= 1"),
        (["--keys", "0"], "keys must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", *args]) == 2
    assert message in capsys.readouterr().err
