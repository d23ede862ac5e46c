"""The blocking client is generated from the asyncio one (scripts/unasync.py), and the
committed copy is checked against what the script generates (``make lint`` runs
``scripts/unasync.py --check``; this test runs the same comparison)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "unasync.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


unasync = load_script()


def test_the_committed_blocking_client_is_what_the_script_generates() -> None:
    assert unasync.stale_diff() == []


def test_a_hand_edit_of_the_generated_client_fails_the_check(tmp_path: Path) -> None:
    edited = tmp_path / "sync_client.py"
    text = unasync.TARGET.read_text()
    edited.write_text(text.replace("deadline_s - core.clock()", "deadline_s - core.clock() + 1"))
    diff = unasync.stale_diff(unasync.SOURCE, edited)
    assert any(line.startswith("-") and "+ 1" in line for line in diff)


def test_the_check_exits_nonzero_when_the_file_is_stale(tmp_path: Path) -> None:
    # The script as make lint runs it, on a copy of the tree's two files.
    copy = tmp_path / "scripts" / "unasync.py"
    client = tmp_path / "src" / "planaria" / "client"
    copy.parent.mkdir(parents=True)
    client.mkdir(parents=True)
    shutil.copy(SCRIPT, copy)
    shutil.copy(unasync.SOURCE, client / "_async_client.py")
    (client / "_sync_client.py").write_text(unasync.TARGET.read_text() + "# a hand edit\n")
    check = [sys.executable, str(copy), "--check"]
    stale = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert "-# a hand edit" in stale.stderr and "is not what" in stale.stderr
    subprocess.run([sys.executable, str(copy)], capture_output=True, timeout=60, check=True)
    fixed = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (("await self._run(call)", "await asyncio.shield(self._run(call))"), "asyncio left"),
        (("An asyncio planaria client, for one event loop", "An asyncio client"), "PHRASES"),
    ],
)
def test_a_source_the_script_cannot_map_is_refused(edit: tuple[str, str], complaint: str) -> None:
    source = unasync.SOURCE.read_text()
    assert edit[0] in source
    with pytest.raises(unasync.UnasyncError, match=complaint):
        unasync.unasync(source.replace(edit[0], edit[1], 1))
