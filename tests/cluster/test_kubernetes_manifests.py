"""deploy/kubernetes/: every manifest validates against the Kubernetes JSON schemas (offline,
from the kubernetes-validate package, strict: no unknown fields), and the pieces fit together:
the probes, anti-affinity, disruption budget, headless service and init Job agree with the
StatefulSet, and the node's arguments parse with ``planaria node``'s own parser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from planaria.cli import _node as _node_cli
from planaria.cli._cluster import add_init_arguments

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def _documents() -> dict[str, dict[str, Any]]:
    """Every resource, by kind (one of each kind here)."""
    resources: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in resources, f"two {document['kind']}s"
            resources[document["kind"]] = document
    return resources


RESOURCES = _documents()


@pytest.mark.parametrize("kind", sorted(RESOURCES))
def test_manifest_matches_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(RESOURCES[kind], KUBERNETES_VERSION, strict=True)


def test_a_bad_manifest_is_refused() -> None:
    broken = yaml.safe_load(yaml.safe_dump(RESOURCES["StatefulSet"]))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_the_pieces_fit_the_statefulset() -> None:
    statefulset = RESOURCES["StatefulSet"]
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # One node per host.
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    # The disruption budget and the headless service select these pods.
    budget = RESOURCES["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1
    service = RESOURCES["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["name"] == spec["serviceName"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["containers"]
    assert {"readinessProbe", "livenessProbe"} <= container.keys()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"resp": 7001, "bus": 7001 + 10_000}  # the node's bus convention
    # The init Job names exactly the StatefulSet's pods.
    job = RESOURCES["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][:2] == ["planaria", "init"]
    (nodes,) = [
        arg.removeprefix("--nodes=") for arg in job["command"] if arg.startswith("--nodes=")
    ]
    names = nodes.split(",")
    assert names == [f"{statefulset['metadata']['name']}-{i}" for i in range(spec["replicas"])]
    # ... and its arguments parse with `planaria init`'s own parser.
    parser = argparse.ArgumentParser()
    add_init_arguments(parser)
    parsed = parser.parse_args(job["command"][2:])
    assert parsed.replicas <= len(names)


def test_node_arguments_parse_with_the_node_cli() -> None:
    (container,) = RESOURCES["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["planaria", "node"]
    env = {"POD_NAME": "planaria-0", "POD_IP": "10.0.0.7"}
    env |= {e["name"]: e["value"] for e in container["env"] if "value" in e}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    parser = argparse.ArgumentParser()
    _node_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    assert (args.node_id, args.listen, args.data) == ("planaria-0", "10.0.0.7:7001", "/data")
    assert args.coordinator.startswith(("zk://", "etcd://"))
