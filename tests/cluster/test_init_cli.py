"""`planaria init`: writing a new cluster's shape to its coordinator (deployments by hand)."""

from __future__ import annotations

import asyncio

import pytest

from planaria.cli import main
from planaria.coord.url import connect
from planaria.node import read_cluster_metadata


def test_init_writes_the_shape_once_and_refuses_another(capsys: pytest.CaptureFixture[str]) -> None:
    url = "memory://init-cli"
    args = ["init", "--coordinator", url, "--nodes", "n1, n2,n3", "--partitions", "8"]
    assert main(args) == 0
    assert "8 partitions, 3 replicas, min in-sync 2, nodes n1, n2, n3" in capsys.readouterr().out
    assert main(args) == 0  # the same shape again: a retried deployment script

    async def read() -> object:
        async with connect(url) as coordinator:
            return await read_cluster_metadata(coordinator)

    metadata = asyncio.run(read())
    assert metadata is not None and metadata.partitions == 8  # type: ignore[attr-defined]
    assert main([*args[:-1], "16"]) == 2  # the partition count never changes
    assert "planaria init:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nodes", "n1,n2", "--replicas", "3"], "need at least as many nodes"),
        (["--nodes", " , "], "at least one node id"),
        (["--nodes", "n1,n2,n3", "--min-insync", "4"], "--min-insync 4 > --replicas 3"),
    ],
)
def test_init_refuses_a_shape_that_cannot_work(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--coordinator", "memory://init-bad", *extra]) == 2
    assert message in capsys.readouterr().err


def test_init_gives_a_restored_clusters_first_configs_its_epoch() -> None:
    url = "memory://init-restored"
    args = ["init", "--coordinator", url, "--nodes", "n1,n2,n3", "--first-epoch", "7"]
    assert main(args) == 0

    async def read() -> object:
        async with connect(url) as coordinator:
            return await read_cluster_metadata(coordinator)

    metadata = asyncio.run(read())
    assert metadata is not None and metadata.first_epoch == 7  # type: ignore[attr-defined]
