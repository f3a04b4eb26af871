"""Patroni's REST API: the only module that talks to Patroni (never patronictl's text).

The DNS aggregator's PostgreSQL runs under Patroni, one member per coordinator, each member
named after its node. pvc's rule: the database leader follows the primary coordinator.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from pvc.core.errors import PvcError, Unavailable

HEALTHY_STATES = ("running", "streaming")


class PatroniError(PvcError):
    """Patroni refused or failed; the message carries Patroni's own words."""


@dataclass
class Member:
    name: str
    role: str            # leader / replica / sync_standby / standby_leader
    state: str           # running / streaming / stopped / starting / …
    lag: int | None = None
    api_url: str = ""

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_STATES

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "state": self.state, "lag": self.lag}


@dataclass
class ClusterView:
    members: list[Member] = field(default_factory=list)

    @property
    def leader(self) -> str:
        return next((m.name for m in self.members if m.role == "leader"), "")

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {"leader": self.leader, "members": [m.to_json() for m in self.members]}


class Patroni:
    """Patroni's REST API, reached at any member that answers."""

    def __init__(self, urls: list[str], timeout: float = 5.0,
                 auth: tuple[str, str] | None = None) -> None:
        """auth: (user, password) of the REST API (restapi.authentication), sent with every
        request: Patroni refuses writes without it."""
        self.urls = urls
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def _request(self, path: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None, method: str = "") -> tuple[int, str]:
        """(status, body) from the first member that answers."""
        errors = []
        for url in self.urls:
            req = urllib.request.Request(
                url.rstrip("/") + path, method=method or ("POST" if body is not None else "GET"),
                data=json.dumps(body).encode() if body is not None else None,
                headers=self.headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                    return r.status, r.read().decode(errors="replace")
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode(errors="replace")
            except OSError as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
        raise Unavailable("no Patroni member answers (" + "; ".join(errors) + ")")

    def cluster(self) -> ClusterView:
        status, text = self._request("/cluster")
        if status != 200:
            raise PatroniError(f"Patroni GET /cluster: HTTP {status}: {_first_line(text)}")
        data = json.loads(text)
        return ClusterView([Member(m["name"], m.get("role", ""), m.get("state", ""),
                                   m.get("lag") if isinstance(m.get("lag"), int) else None,
                                   m.get("api_url", ""))
                            for m in data.get("members", [])])

    def switchover(self, candidate: str, attempts: int = 3, settle: float = 60.0,
                   progress: Callable[[str], None] = lambda _m: None,
                   wait_former: bool = True) -> str:
        """Make `candidate` the leader: check first (already leader: done), POST /switchover
        with leader and candidate, then wait until the candidate leads (and, wait_former,
        until the old leader streams again). Bounded retries; a clear error with Patroni's
        own message."""
        last = ""
        for attempt in range(1, attempts + 1):
            view = self.cluster()
            if view.leader == candidate:
                return f"{candidate} already leads the database"
            member = view.member(candidate)
            if member is None:
                raise PatroniError(f"{candidate} is not a member of the database cluster")
            if not member.healthy:
                last = f"{candidate}'s database member is {member.state}"
                raise PatroniError(last)
            old = view.leader
            progress(f"database: switching the leader from {old or 'none'} to {candidate}")
            status, text = self._request("/switchover", {"leader": old, "candidate": candidate},
                                         timeout=settle)
            if status == 401:
                raise PatroniError("Patroni refused pvc's credentials (HTTP 401): check "
                                   "cluster.database.rest_auth_file against Patroni's "
                                   "restapi.authentication")
            if status == 200:
                self._wait_settled(candidate, old if wait_former else "", settle)
                return f"database leader moved from {old} to {candidate}" + (
                    "" if wait_former else f" ({old} rejoins as a replica)")
            last = f"Patroni POST /switchover: HTTP {status}: {_first_line(text)}"
            progress(f"{last} (attempt {attempt} of {attempts})")
            time.sleep(min(2.0 * attempt, 5.0))   # Patroni needs a moment between attempts
        raise PatroniError(last)

    def answers(self) -> bool:
        """Whether every member in urls answers GET /patroni (its API serves, whatever its
        PostgreSQL does)."""
        try:
            return all(Patroni([url], self.timeout)._request("/patroni")[0] in (200, 503)
                       for url in self.urls)
        except Unavailable:
            return False

    def refuses_anonymous_writes(self) -> bool:
        """Whether the API refuses a write without credentials. The probe is a PATCH /config
        with an empty body: it changes nothing where it is accepted (an open API)."""
        anonymous = Patroni(self.urls, self.timeout)
        status, _text = anonymous._request("/config", {}, method="PATCH")
        return status == 401

    def _wait_settled(self, leader: str, old: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                view = self.cluster()
            except PvcError:
                view = ClusterView()
            former = view.member(old) if old else None
            mine = view.member(leader)
            if view.leader == leader and mine is not None and mine.healthy and \
                    (former is None or former.healthy):
                return
            time.sleep(0.25)   # Patroni settles in seconds; its REST API has no push
        raise PatroniError(f"the database did not settle with {leader} leading within "
                           f"{timeout:g}s")


def _first_line(text: str) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line[:200]
