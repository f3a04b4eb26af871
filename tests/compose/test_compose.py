"""docker-compose.yml run for real: the cluster comes up healthy, a demo guest runs, live
migrates between node containers and is flushed off one, a node container that stops hands
its VMs over and takes them back when it starts, and `down -v` leaves nothing (the fixture)."""
from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from tests.compose.conftest import FLOWER_PORT, Compose, wait

pytestmark = pytest.mark.compose


def test_the_cluster_is_healthy_through_the_compose_network(compose: Compose) -> None:
    # asked from the flower container: a client on the compose network, not a node
    status = compose.json("cluster", "status", service="flower")
    assert status["healthy"], status["reasons"]
    assert status["nodes"]["daemon_state"] == {"run": 3}
    assert status["primary"] in ("hv1", "hv2", "hv3")
    assert sorted(status["zookeeper_members"].values()) == ["follower", "follower", "leader"]
    assert status["database"]["leader"] and len(status["database"]["members"]) == 3
    assert status["dns"]["zones"] == ["sandbox.pvc"]
    assert len(status["broker"]["replicas"]) == 2


def test_flower_answers_only_with_its_password(compose: Compose) -> None:
    url = f"http://127.0.0.1:{FLOWER_PORT}/api/workers"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    password = open("docker/secrets/flower.password").read().strip()
    token = base64.b64encode(f"pvc:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    assert urllib.request.urlopen(request, timeout=30).status == 200


def test_a_guest_live_migrates_between_node_containers_and_is_flushed_off(
        compose: Compose) -> None:
    vms = {v["name"]: v for v in compose.json("vm", "list")}
    assert {v["observed"] for v in vms.values()} == {"running"}
    home = vms["demo1"]["running_on"][0]
    assert compose.where("demo1") == [f"node{home[2:]}"]
    wait("demo1's console", lambda: "tick" in compose.pvc("vm", "log", "demo1").stdout)
    target = next(n for n in ("hv1", "hv2", "hv3") if n != home)
    out = compose.pvc("vm", "migrate", "demo1", "--target", target, "--wait").stdout
    assert f"demo1: {home} → {target} (live" in out
    assert compose.where("demo1") == [f"node{target[2:]}"]      # once, on the target
    compose.pvc("node", "flush", target, "--wait")
    after = compose.json("vm", "info", "demo1")
    assert after["observed"] == "running" and after["running_on"] != [target]
    assert compose.where("demo1") == [f"node{after['running_on'][0][2:]}"]
    compose.pvc("node", "unflush", target, "--wait")


def test_a_node_container_that_stops_hands_its_vms_over(compose: Compose) -> None:
    vms = {v["name"]: v for v in compose.json("vm", "list")}
    victim = vms["demo2"]["running_on"][0]
    service = f"node{victim[2:]}"
    compose("stop", service, timeout=180)      # `pvc system shutdown` runs first (a flush)
    asked = "node1" if service != "node1" else "node2"
    moved = wait("demo2 running on another node", lambda: (
        v := compose.json("vm", "info", "demo2", service=asked))["observed"] == "running"
        and v["running_on"] != [victim] and v, 120)
    assert moved["last_node"] == victim
    assert compose.where("demo2") == [f"node{moved['running_on'][0][2:]}"]
    compose("start", service, timeout=180)     # `pvc system boot`: the node takes it back
    wait("demo2 back on its node", lambda: compose.json(
        "vm", "info", "demo2", service=asked)["running_on"] == [victim], 180)
    assert compose.where("demo2") == [service]
    wait("the cluster healthy again", lambda: compose.status().get("healthy"), 180)
