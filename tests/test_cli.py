from __future__ import annotations

import subprocess
import sys

import pytest

from planaria import __version__
from planaria.cli import main


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_demo_shows_every_primitive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--toolkit", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "replicas moved" in out
    assert "3 replicas in 3 zones: True" in out
    assert "give-ups" in out
    assert "closed -> open" in out
    assert "half_open -> closed" in out
    assert "suspected" in out


def test_usage_error_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    # Seven replicas cannot fit on the demo's six nodes.
    assert main(["demo", "--toolkit", "--replicas", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("planaria demo: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cluster_demo_refuses_more_replicas_than_nodes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Checked before any process starts: one line, exit 2.
    assert main(["demo", "--replicas", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("planaria demo: ")
    assert "Traceback" not in err


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "planaria.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    for command in ("demo", "check", "up", "down", "status"):
        assert command in done.stdout


def test_a_subcommand_builds_only_its_own_arguments() -> None:
    """A node's start must not import the simulator or the chaos harness: only the
    subcommand named is built (every one is, for the help or an unknown word)."""
    from planaria.cli._main import _SUBCOMMANDS, build_parser

    parser, runners = build_parser(["node", "--id", "n1"])
    assert list(runners) == ["node"]
    assert parser.parse_args(["node", "--id", "n1"]).command == "node"
    assert list(build_parser(["--version"])[1]) == list(_SUBCOMMANDS)
    assert list(build_parser(["no-such-command"])[1]) == list(_SUBCOMMANDS)
    assert list(build_parser()[1]) == list(_SUBCOMMANDS)


def test_node_refuses_a_switch_interval_that_is_not_positive(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    before = sys.getswitchinterval()
    args = ["node", "--id", "n1", "--listen", "127.0.0.1:1", "--data", str(tmp_path)]
    assert main([*args, "--gil-switch-interval-ms", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("planaria node: --gil-switch-interval-ms must be > 0")
    assert sys.getswitchinterval() == before  # checked before anything is changed


def test_node_refuses_a_bad_metrics_address(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    before = sys.getswitchinterval()
    args = ["node", "--id", "n1", "--listen", "127.0.0.1:1", "--data", str(tmp_path)]
    assert main([*args, "--metrics-listen", "localhost:http"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("planaria node: --metrics-listen"), err
    assert sys.getswitchinterval() == before  # refused before anything starts
