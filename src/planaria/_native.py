"""Compiled hot modules (mypyc), and the guard that never runs them older than their source.

A node spends most of its CPU in the CPython interpreter loop, spread over the replica core,
the storage writes, the peer bus and the RESP front door. ``make install`` (or ``pip install
.``) compiles the modules on that path with mypyc, from the same typed sources, into C
extensions next to them; a manifest records a digest of every source file under
``planaria/`` (compiled code may inline what it imports) and the interpreter it was built for.

At ``import planaria`` this module checks the manifest before any hot module is imported.
When the sources changed since (an edit without ``make install``), the manifest is missing,
or ``PLANARIA_PURE_PYTHON=1`` is set, a finder loads the hot modules from their ``.py``
sources instead: compiled code is all or nothing, and never stale. The sources are the
specification; the extensions are only faster (mypyc also checks annotated types at run
time, so a wrong type raises ``TypeError`` at the call instead of deeper inside). One rule
for compiled coroutines: never ``await`` inside an ``except`` or ``finally`` block (wait after
it): compiled, a coroutine suspended in a handler once left its exception set as the thread's
current one, to be chained onto later, unrelated errors (tests/test_native.py checks).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "HOT_MODULES",
    "MANIFEST_NAME",
    "compiled",
    "install_guard",
    "manifest_for",
    "source_digest",
]

# The modules a write crosses, in a node (see docs/BENCHMARKS.md for what compiling them gave).
HOT_MODULES = (
    "planaria.core.codec",
    "planaria.core.expiry",
    "planaria.core.keyspace",
    "planaria.core.strings",
    "planaria.storage.persist",
    "planaria.core.pipeline",
    "planaria.core.replica",
    "planaria.core.slots",
    "planaria.storage.committer",
    "planaria.storage.format",
    "planaria.storage.journal",
    "planaria.storage.log",
    "planaria.node._partition",
    "planaria.node._transport",
    "planaria.net.commands",
    "planaria.net.frame",
    "planaria.net.server",
    "planaria.node._node",
    "planaria.node._effects",
    "planaria.node._requests",
)
MANIFEST_NAME = "_native.json"
PURE_ENV = "PLANARIA_PURE_PYTHON"

_PACKAGE_DIR = Path(__file__).resolve().parent
_status = {"compiled": False}  # decided once, by install_guard


def compiled() -> bool:
    """Whether this process runs the compiled hot modules."""
    return _status["compiled"]


def source_path(module: str, package_dir: Path = _PACKAGE_DIR) -> Path:
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_digest(package_dir: Path = _PACKAGE_DIR) -> str:
    """sha256 over every ``.py`` file of the package (path and content), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def manifest_for(package_dir: Path = _PACKAGE_DIR) -> dict[str, str]:
    """What a build records next to the extensions it made."""
    return {"digest": source_digest(package_dir), "cache_tag": str(sys.implementation.cache_tag)}


def _has_extensions(package_dir: Path) -> bool:
    return any(
        source_path(module, package_dir).with_suffix(suffix).exists()
        for module in HOT_MODULES
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _why_stale(package_dir: Path) -> str | None:
    """None when the compiled modules match the sources; else why they must not be used."""
    try:
        manifest = json.loads((package_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST_NAME}"
    if manifest != manifest_for(package_dir):
        return "the sources changed since they were compiled (make install compiles them)"
    return None


class _SourceFirst:
    """A meta path finder that loads the hot modules from their ``.py`` files."""

    def __init__(self, package_dir: Path) -> None:
        self._package_dir = package_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(
            fullname, source_path(fullname, self._package_dir)
        )


def install_guard(package_dir: Path = _PACKAGE_DIR) -> bool:
    """Decide, before any hot module is imported, whether they run compiled; True if so."""
    if not _has_extensions(package_dir):
        return False
    if os.environ.get(PURE_ENV) != "1":
        why = _why_stale(package_dir)
        if why is None:
            _status["compiled"] = True
            return True
        warnings.warn(
            f"planaria runs its Python sources, not the compiled modules: {why}",
            RuntimeWarning,
            stacklevel=2,
        )
    sys.meta_path.insert(0, _SourceFirst(package_dir))
    return False
