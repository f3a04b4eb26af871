"""The cluster's database as Patroni reports it: where its REST API is, and what
`cluster status` shows of it (kept apart from the switchover so a status reads it without
importing the operations' machinery)."""
from __future__ import annotations

from typing import Any

from pvc.coordinator.patroni import Member, Patroni
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.core.models import Node


def patroni_for(config: Config, nodes: list[Node]) -> Patroni | None:
    """Patroni's REST API on the coordinators (None when the cluster has no database)."""
    db = config.cluster.database
    if not db.enabled:
        return None
    coordinators = set(config.cluster.coordinators)
    urls = [f"http://{n.cluster_address}:{db.patroni_port}" for n in nodes
            if n.name in coordinators and n.cluster_address]
    return Patroni(urls, auth=config.patroni_auth()) if urls else None


def database_status(config: Config, nodes: list[Node], primary: str) -> dict[str, Any]:
    """The database's leader and members as Patroni reports them ({} without a database),
    and under "problems" what makes the cluster degraded: the leader is not the primary, the
    primary's member is down (the leader stays where it is meanwhile), a member is down, or
    Patroni does not answer."""
    patroni = patroni_for(config, nodes)
    if patroni is None:
        return {}
    try:
        view = patroni.cluster()
    except PvcError as e:
        return {"leader": "", "members": [], "error": str(e), "problems": [f"database: {e}"]}
    problems = []
    mine = view.member(primary)
    if mine is None or not mine.healthy:
        problems.append(f"database: the primary's member ({primary or 'none'}) is "
                        f"{mine.state if mine else 'missing'}; the leader stays "
                        f"{view.leader or 'nobody'}")
    elif view.leader != primary:
        problems.append(f"database: the leader is {view.leader or 'nobody'}, not the primary "
                        f"{primary} (it follows at the primary's next keepalive)")
    expected = [n.name for n in nodes if n.name in config.cluster.coordinators]
    problems += [f"database: member {name} is {_member_state(view.member(name))}"
                 for name in expected if name != primary and not _healthy(view.member(name))]
    return {**view.to_json(), "problems": problems}


def _healthy(member: Member | None) -> bool:
    return member is not None and member.healthy


def _member_state(member: Member | None) -> str:
    return member.state if member is not None else "missing"
