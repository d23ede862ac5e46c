"""zk:// and etcd:// URLs: parsed into endpoints and a namespace, bad ones refused saying why."""

from __future__ import annotations

import pytest

from planaria.coord.etcd import EtcdCoordinator, smallest_etcd_ttl_ms
from planaria.coord.url import CoordinatorUrl, connect, parse_url
from planaria.coord.zookeeper import ZooKeeperCoordinator, smallest_zookeeper_ttl_ms
from planaria.errors import UsageError


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "zk://h1:2181,h2:2182,h3/planaria",
            CoordinatorUrl("zk", "", 0, (("h1", 2181), ("h2", 2182), ("h3", 2181)), "/planaria"),
        ),
        ("zk://h1", CoordinatorUrl("zk", "", 0, (("h1", 2181),), "/planaria")),
        ("zk://h1:1/a/b/", CoordinatorUrl("zk", "", 0, (("h1", 1),), "/a/b")),
        (
            "etcd://10.0.0.1:2379,[::1]:2380/prod",
            CoordinatorUrl("etcd", "", 0, (("10.0.0.1", 2379), ("::1", 2380)), "/prod"),
        ),
        ("ETCD://e1/", CoordinatorUrl("etcd", "", 0, (("e1", 2379),), "/planaria")),
    ],
)
def test_ensemble_urls_parse(url: str, parsed: CoordinatorUrl) -> None:
    assert parse_url(url) == parsed
    assert parse_url(str(parsed)) == parsed  # str() gives a URL that parses back


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("zk://", "empty host"),
        ("zk://h1:2181,", "empty host"),
        ("zk://h1:x", "bad port"),
        ("zk://h1:0", "bad port"),
        ("zk://h1:2181/a//b", "bad chroot"),
        ("zk://h1:2181/a/../b", "bad chroot"),
        ("etcd://h1:2379?x=1", "no query"),
        ("etcd://user@h1:2379", "no query, fragment or user"),
        ("etcd://:2379", "no host"),
        ("etcd://h1:70000", "bad port"),
    ],
)
def test_bad_ensemble_urls_say_why(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_url(url)


def test_connect_builds_the_backend_without_connecting() -> None:
    # Nothing listens on port 1: building a client must not try.
    zk = connect("zk://127.0.0.1:1,127.0.0.1:2/c")
    etcd = connect("etcd://127.0.0.1:1/c", request_timeout_s=0.5)
    assert isinstance(zk, ZooKeeperCoordinator) and isinstance(etcd, EtcdCoordinator)
    with pytest.raises(UsageError):
        connect("etcd://127.0.0.1:1", request_timeout_s=0)


def test_smallest_ttls() -> None:
    assert smallest_zookeeper_ttl_ms(50) == 100
    assert smallest_zookeeper_ttl_ms() == 4000  # tickTime 2000 (ZooKeeper's default)
    assert smallest_etcd_ttl_ms(500) == 1000  # 750 ms rounded up to a second
    assert smallest_etcd_ttl_ms(1000) == 2000  # etcd's default election timeout
    assert smallest_etcd_ttl_ms(100) == 1000
