"""What a ``Router`` tells the process around it (health routes, metrics, reloads):
every replica with its deployment, and whether a request still holds one of them.
No sockets: a replica's pool opens nothing until a request goes out."""

from __future__ import annotations

import asyncio

from gateway.config import Deployment
from gateway.upstream.replicas import ReplicaSet
from gateway.upstream.routing import Router

A = Deployment(upstream=("http://a1:8000/v1", "http://a2:8000/v1/"), models=("m1",), eject_after=1)
B = Deployment(upstream="http://b:8000/v1", models=("m2",))


def router() -> Router:
    return Router([(dep, ReplicaSet(dep, None)) for dep in (A, B)])


def test_replicas_are_every_replica_of_every_deployment_in_config_order() -> None:
    r = router()
    listed = r.replicas()
    assert [(dep, one.base) for dep, one in listed] == [
        (A, "http://a1:8000/v1"),
        (A, "http://a2:8000/v1"),
        (B, "http://b:8000/v1"),
    ]
    assert all(dep is A for dep, _ in listed[:2]) and listed[2][0] is B
    # The very replicas requests go to, not copies.
    route = asyncio.run(r.resolve("m2"))
    assert listed[2][1] is route.replicas.replicas[0]


def test_replicas_show_each_ones_health_as_it_changes() -> None:
    r = router()
    assert [one.healthy for _, one in r.replicas()] == [True, True, True]
    assert r.replicas()[1][1].failed(now=10.0)  # ejected after its one failure
    assert [one.healthy for _, one in r.replicas()] == [True, False, True]
    assert r.ready()  # a1 still serves A
    r.replicas()[0][1].failed(now=10.0)
    assert not r.ready()


def test_in_use_while_any_replica_of_any_deployment_has_a_request() -> None:
    r = router()
    assert not r.in_use()
    for _, one in r.replicas():
        one.in_flight += 1
        assert r.in_use()
        one.in_flight -= 1
        assert not r.in_use()
