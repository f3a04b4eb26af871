#!/bin/bash
# A container of docker-compose.yml: writes its pvc configuration from the environment and
# the compose secrets (mounted at run time under /run/secrets), then runs its role:
#   node:   the node's programs under supervisord, in order (workers/container.py)
#   init:   the DNS database, the demo network and the demo guests, once the nodes serve
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
    session_timeout: 6.0
  redis:
    sentinels: "$(list 26379)"
    master_name: pvc
    password_file: /run/secrets/redis_password
  database:
    enabled: true
    scope: pvc
    rest_auth_file: /run/secrets/patroni_rest_auth
  dns:
    enabled: true
    password_file: /run/secrets/dns_password
  migration:
    timeout: 120.0
  operations:
    shutdown_timeout: 15.0               # a guest's clean shutdown (the stop budget keeps 2x)
  fencing:
    enabled: false                       # no BMC in a container: a node that stops is flushed
node:
  name: "${PVC_NODE_NAME}"
  libvirt_uri: "qemu:///system"
  migration_uri: "qemu+tcp://${PVC_NODE_ADDRESS}/system"
  migration_address: "${PVC_NODE_ADDRESS}"
  cluster_interface: eth0
  cluster_address: "${PVC_NODE_ADDRESS}"
  enable_networking: true
  domain_type: qemu
  keepalive_interval: 2.0
YAML

case "$ROLE" in
    node|health)
        exec "$VENV/bin/python" -m workers.container "$ROLE" ;;
    init)
        sed -i '/^node:/,$d' /etc/pvc/pvc.yaml    # a client's configuration
        exec "$VENV/bin/python" -m workers.container init ;;
    flower)
        sed -i '/^node:/,$d' /etc/pvc/pvc.yaml
        "$VENV/bin/python" - <<PY
from pvc.install.installer import flower_config
from pathlib import Path
password = Path("/run/secrets/flower_password").read_text().strip()
Path("/etc/pvc/flowerconfig.py").write_text(flower_config("0.0.0.0", 5555, "pvc", password))
PY
        export PVC_CONFIG=/etc/pvc/pvc.yaml
        exec "$VENV/bin/python" -m tasks.flower --conf=/etc/pvc/flowerconfig.py ;;
    *)
        echo "entrypoint: unknown role $ROLE (node, init, flower)" >&2; exit 2 ;;
esac
