#!/bin/bash
# A container of docker-compose.yml: writes its pvc configuration from the environment and
# the compose secrets, then runs its role.
#   node:   libvirtd, pvc-node, pvc-worker, pvc-tailer under supervisord, as systemd runs
#           them on a real node; on a coordinator also the control plane that dies with it:
#           a ZooKeeper member, a Redis (the first coordinator's the master at the start) and
#           a Sentinel, a Patroni member
#   flower: the read-only dashboard, basic auth
set -euo pipefail
ROLE=${1:-node}
VENV=/opt/pvc/src/.venv
mkdir -p -m 0700 /etc/pvc
umask 077
: "${PVC_NODE_NAME:=}" "${PVC_NODE_ADDRESS:=}" "${PVC_COORDINATORS:=hv1,hv2,hv3}"
: "${PVC_COORDINATOR_ADDRESSES:=10.201.0.1,10.201.0.2,10.201.0.3}"
list() { local out="" a; for a in ${PVC_COORDINATOR_ADDRESSES//,/ }; do out+="${out:+,}$a:$1"; done; echo "$out"; }

cat > /etc/pvc/pvc.yaml <<YAML
cluster:
  name: compose
  coordinators: [${PVC_COORDINATORS}]
  floating_ip: ${PVC_FLOATING_IP:-10.201.0.250/24}
  zookeeper:
    hosts: "$(list 2181)"
    auth_file: /run/secrets/zookeeper_auth
  redis:
    sentinels: "$(list 26379)"
    master_name: pvc
    password_file: /run/secrets/redis_password
  database:
    enabled: true
    scope: pvc
    rest_auth_file: /run/secrets/patroni_rest_auth
node:
  name: "${PVC_NODE_NAME}"
  libvirt_uri: "qemu:///system"
  migration_uri: "qemu+tcp://${PVC_NODE_ADDRESS}/system"
  migration_address: "${PVC_NODE_ADDRESS}"
  cluster_interface: eth0
  cluster_address: "${PVC_NODE_ADDRESS}"
  domain_type: qemu
YAML

if [ "$ROLE" = flower ]; then
    sed -i '/^node:/,$d' /etc/pvc/pvc.yaml
    "$VENV/bin/python" - <<PY
from pvc.install.installer import flower_config
from pathlib import Path
password = Path("/run/secrets/flower_password").read_text().strip()
Path("/etc/pvc/flowerconfig.py").write_text(flower_config("0.0.0.0", 5555, "pvc", password))
PY
    export PVC_CONFIG=/etc/pvc/pvc.yaml
    exec "$VENV/bin/python" -m tasks.flower --conf=/etc/pvc/flowerconfig.py
fi

# migrations between the node containers: libvirt over TCP on the cluster address only (a test
# cluster's private network; a real cluster uses qemu+ssh or TLS)
cat >> /etc/libvirt/libvirtd.conf <<CONF
listen_tls = 0
listen_tcp = 1
listen_addr = "${PVC_NODE_ADDRESS}"
auth_tcp = "none"
CONF

cat > /etc/pvc/supervisord.conf <<CONF
[supervisord]
nodaemon=true
logfile=/var/log/supervisord.log
[program:virtlogd]
command=/usr/sbin/virtlogd
priority=5
[program:libvirtd]
command=/usr/sbin/libvirtd --listen
priority=10
[program:pvc-node]
command=$VENV/bin/pvc-node --config /etc/pvc/pvc.yaml
priority=20
startretries=1000
[program:pvc-worker]
command=$VENV/bin/pvc-worker --config /etc/pvc/pvc.yaml
priority=30
startretries=1000
stopasgroup=true
[program:pvc-tailer]
command=$VENV/bin/pvc-tailer --config /etc/pvc/pvc.yaml
priority=30
startretries=1000
CONF

case ",$PVC_COORDINATORS," in *",$PVC_NODE_NAME,"*)
    "$VENV/bin/python" - <<PY
# The control plane on a coordinator, as the sandbox runs it in a coordinator's namespace:
# a ZooKeeper member, a Redis and a Sentinel, a Patroni member named after the node.
from pathlib import Path
from pvc.sandbox import services

def login(name):
    user, _, password = Path(f"/run/secrets/{name}").read_text().strip().partition(":")
    return user, password

me, members = "${PVC_NODE_ADDRESS}", "${PVC_COORDINATOR_ADDRESSES}".split(",")
redis_pw = Path("/run/secrets/redis_password").read_text().strip()
base = Path("/var/lib/pvc-control")
specs = [
    services.zookeeper_spec(base / "zookeeper", 2181, dict(
        login(n) for n in ("zookeeper_auth", "patroni_zookeeper_auth")), me, members),
    services.redis_spec(base / "redis", 6379, redis_pw, (me,),
                        "" if me == members[0] else members[0], guarded=True),
    services.sentinel_spec(base / "sentinel", 26379, me, members[0], 6379, redis_pw,
                           len(members) // 2 + 1, "sentinel"),
    services.patroni_spec(Path("/var/lib/pvc-patroni"), "${PVC_NODE_NAME}", me,
                          "10.201.0.0/24", ",".join(f"{a}:2181" for a in members), "pvc",
                          8008, 5432,
                          {w: Path("/run/secrets/database_password").read_text().strip()
                           for w in ("superuser", "replication", "rewind")},
                          login("patroni_zookeeper_auth"), login("patroni_rest_auth"))]
with open("/etc/pvc/supervisord.conf", "a") as conf:
    for priority, spec in zip((1, 2, 3, 15), specs):
        conf.write(f"[program:{spec.name}]\ncommand={' '.join(spec.command)}\n"
                   f"priority={priority}\n")
PY
;; esac
exec "$VENV/bin/supervisord" -c /etc/pvc/supervisord.conf
