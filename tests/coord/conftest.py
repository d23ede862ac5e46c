"""Session-scoped real ensembles for the ZooKeeper and etcd backends (tests/coord/_servers.py).

Started on first use, stopped after the session (every server process group is killed).
A missing binary skips their tests, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._servers import Ensemble, EnsembleMissing, etcd_ensemble, zookeeper_ensemble


def _missing(exc: EnsembleMissing) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {exc}")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    root: Path = tmp_path_factory.mktemp("zookeeper")
    try:
        with zookeeper_ensemble(root) as ensemble:
            yield ensemble
    except EnsembleMissing as exc:
        _missing(exc)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    root: Path = tmp_path_factory.mktemp("etcd")
    try:
        with etcd_ensemble(root) as ensemble:
            yield ensemble
    except EnsembleMissing as exc:
        _missing(exc)
