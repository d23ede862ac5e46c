"""The compiled-modules guard: compiled code runs only while it matches its sources."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from planaria import _native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the hot modules' layout: a source file and a fake extension for each."""
    root = tmp_path / "planaria"
    for module in _native.HOT_MODULES:
        source = _native.source_path(module, root)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"NAME = {module!r}\n")
        source.with_name(source.stem + SUFFIX).write_bytes(b"")
    return root


@pytest.fixture
def guard_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(_native.PURE_ENV, raising=False)
    meta_path, status = list(sys.meta_path), dict(_native._status)
    # This process's own finder (when it runs the sources) is not the one under test.
    sys.meta_path[:] = [f for f in meta_path if not isinstance(f, _native._SourceFirst)]
    yield
    sys.meta_path[:] = meta_path
    _native._status.update(status)


def source_first_finders() -> list[_native._SourceFirst]:
    return [f for f in sys.meta_path if isinstance(f, _native._SourceFirst)]


def test_matching_manifest_runs_compiled(package: Path, guard_state: None) -> None:
    (package / _native.MANIFEST_NAME).write_text(json.dumps(_native.manifest_for(package)))
    assert _native.install_guard(package)
    assert _native.compiled()
    assert source_first_finders() == []


def test_a_changed_source_runs_every_hot_module_from_source(
    package: Path, guard_state: None
) -> None:
    (package / _native.MANIFEST_NAME).write_text(json.dumps(_native.manifest_for(package)))
    # Any file counts, not only the hot ones: compiled code may inline what it imports.
    (package / "errors.py").write_text("# edited\n")
    with pytest.warns(RuntimeWarning, match="sources changed"):
        assert not _native.install_guard(package)
    (finder,) = source_first_finders()
    for module in _native.HOT_MODULES:
        spec = finder.find_spec(module, None)
        assert spec is not None and spec.origin == str(_native.source_path(module, package))
    assert finder.find_spec("planaria.client", None) is None


def test_a_missing_or_torn_manifest_is_never_trusted(package: Path, guard_state: None) -> None:
    with pytest.warns(RuntimeWarning, match="no readable"):
        assert not _native.install_guard(package)
    (package / _native.MANIFEST_NAME).write_text('{"digest": ')
    with pytest.warns(RuntimeWarning, match="no readable"):
        assert not _native.install_guard(package)
    manifest = {**_native.manifest_for(package), "cache_tag": "cpython-00"}
    (package / _native.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match="sources changed"):
        assert not _native.install_guard(package)


def test_pure_python_on_request_without_a_warning(
    package: Path, guard_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (package / _native.MANIFEST_NAME).write_text(json.dumps(_native.manifest_for(package)))
    monkeypatch.setenv(_native.PURE_ENV, "1")
    assert not _native.install_guard(package)  # pytest's -W error would turn a warning fatal
    assert len(source_first_finders()) == 1


def test_no_extensions_no_finder(tmp_path: Path, guard_state: None) -> None:
    assert not _native.install_guard(tmp_path)
    assert source_first_finders() == []


def test_this_process_runs_what_the_guard_decided() -> None:
    """Every hot module is an extension exactly when the guard said compiled."""
    for module in _native.HOT_MODULES:
        origin = importlib.import_module(module).__file__
        assert origin is not None
        assert origin.endswith(SUFFIX) == _native.compiled(), (module, origin)


def test_no_hot_coroutine_waits_inside_an_except_or_finally_block() -> None:
    """Compiled, a coroutine that suspends inside an exception handler left that exception
    set as the thread's current one after its task moved on (seen once in a full test run:
    later, unrelated errors got it as ``__context__``). So the hot modules wait outside."""
    offenders = []
    for module in _native.HOT_MODULES:
        path = _native.source_path(module)
        for node in ast.walk(ast.parse(path.read_text())):
            blocks = []
            if isinstance(node, ast.ExceptHandler):
                blocks.append(node.body)
            elif isinstance(node, ast.Try | ast.TryStar):
                blocks.append(node.finalbody)
            for block in blocks:
                for inner in (sub for stmt in block for sub in ast.walk(stmt)):
                    if isinstance(inner, ast.Await | ast.AsyncWith | ast.AsyncFor):
                        offenders.append(f"{path.name}:{inner.lineno}")
    assert offenders == []
