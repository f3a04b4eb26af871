"""The doors around pvc, checked from outside as a stranger would try them: does ZooKeeper
refuse a session that has not logged in, does it keep its revealing four-letter words to
itself, does Patroni's REST API refuse an unauthenticated write. `pvc cluster secure` closes
what pvc itself can close (its znodes' ACLs) and says what an operator must set for the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

from pvc.coordinator.database import patroni_for
from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError
from pvc.core.zookeeper import answers_four_letter_word, refuses_anonymous_sessions

REVEALING_WORDS = ("envi", "conf", "dump", "wchc")


@dataclass(frozen=True)
class Door:
    name: str
    closed: bool
    remedy: str          # what to set when it is open

    def to_json(self) -> dict[str, object]:
        return {"door": self.name, "closed": self.closed, "remedy": "" if self.closed
                else self.remedy}


def audit(cluster: Cluster) -> list[Door]:
    zk = cluster.config.cluster.zookeeper
    doors = [Door("ZooKeeper refuses sessions without a login",
                  refuses_anonymous_sessions(zk.hosts, zk.timeout),
                  "on every ZooKeeper server: a JAAS Server section with pvc's and Patroni's "
                  "users (-Djava.security.auth.login.config), authProvider.1=org.apache."
                  "zookeeper.server.auth.SASLAuthenticationProvider, enforce.auth.enabled=true, "
                  "enforce.auth.schemes=sasl (README, Security)")]
    for host_port in zk.hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        answered = [w for w in REVEALING_WORDS if answers_four_letter_word(host, int(port), w)]
        doors.append(Door(f"ZooKeeper {host_port} keeps {', '.join(REVEALING_WORDS)} to itself",
                          not answered, f"it answers {', '.join(answered)}: set "
                          "4lw.commands.whitelist=ruok,srvr,mntr"))
    patroni = patroni_for(cluster.config, cluster.nodes())
    if patroni is not None:
        try:
            closed = patroni.refuses_anonymous_writes()
        except PvcError:
            closed = False
        doors.append(Door("Patroni's REST API refuses unauthenticated writes", closed,
                          "set restapi.authentication in every member's patroni.yml and "
                          "cluster.database.rest_auth_file for pvc (README, Security)"))
    return doors
