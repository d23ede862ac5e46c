"""Optional dependencies (pyproject.toml's extras): the toolkit, the client, the simulator
and the checker work without them, and what needs one names the extra that brings it.

Each test runs a fresh interpreter in which a meta path finder refuses the optional
packages, as if ``pip install planaria`` had left them out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONAL = ("uvloop", "kazoo", "matplotlib", "redis")

WITHOUT_EXTRAS = f"""
import sys

class RefuseOptional:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, RefuseOptional())
"""


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_finder_refuses_what_it_should() -> None:
    # The test below would pass vacuously if the optional packages still imported.
    done = run_without_extras("import uvloop")
    assert done.returncode != 0
    assert "No module named 'uvloop'" in done.stderr


def test_toolkit_client_simulator_and_checker_need_no_extra() -> None:
    done = run_without_extras(
        "import planaria\n"
        "assert planaria.Client and planaria.AsyncClient\n"
        "import planaria.hashing, planaria.retry, planaria.breaker, planaria.detect\n"
        "import planaria.sim.run, planaria.check, planaria.cli\n"
        "from planaria.sim.run import SimConfig, run_seed\n"
        "assert run_seed(SimConfig(seed=1, ops=10)).passed\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("statement", "extra"),
    [
        ("import planaria._loop", "server"),
        ("import planaria.coord.zookeeper", "zookeeper"),
        ("import planaria.chaos._redis", "chaos"),
        (
            "from pathlib import Path\n"
            "from planaria.chaos.plots import plot_run\n"
            "plot_run([], [], Path('.'), 'x')",
            "chaos",
        ),
    ],
)
def test_a_missing_extra_is_named(statement: str, extra: str) -> None:
    done = run_without_extras(
        "from planaria.errors import MissingExtra\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in statement.splitlines())
        + "except MissingExtra as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no MissingExtra')\n"
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install 'planaria[{extra}]'" in done.stdout
