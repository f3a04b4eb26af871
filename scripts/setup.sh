#!/bin/bash
# Set up everything pvc needs on Debian 12, as root: the Debian packages that are missing,
# the project's virtualenv (.venv, built from /usr/bin/python3 so the postgres user can run it
# too), the project installed into it, `pvc` on PATH and the sandbox's tiny guest image.
# Safe to run again: it only does what is not done yet.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# What a node runs (and the compose cluster's image holds): $PVC_SETUP_ROLE=node stops there.
NODE_PACKAGES=(
    zookeeper libslf4j-java liblog4j1.2-java default-jre-headless
    redis-server postgresql-15
    libvirt-dev pkg-config libvirt-daemon-system qemu-system-x86
    cpio curl procps iproute2 util-linux iputils-arping iputils-ping
    dnsmasq-base udhcpc pdns-server pdns-backend-pgsql bind9-dnsutils
    openipmi ipmitool qemu-utils python3-rados python3-rbd
    python3-venv python3-dev gcc
)
# What the sandbox and the tests add: Ceph, Prometheus, the browser of Flower's test, and the
# Docker engine and base-image tools of the compose tier.
SANDBOX_PACKAGES=(
    ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra
    chromium prometheus
    docker.io docker-compose debootstrap
)
ROLE=${PVC_SETUP_ROLE:-all}
PACKAGES=("${NODE_PACKAGES[@]}")
EXTRAS='.[test]'
if [ "$ROLE" != node ]; then
    PACKAGES+=("${SANDBOX_PACKAGES[@]}")
else
    EXTRAS='.'
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (it installs Debian packages and starts hypervisors)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "${PVC_SETUP_STAGE:-}" = packages ] && exit 0   # an image's first layer: packages only

# The venv is rebuilt only when pyproject.toml changed since it was built.
stamp=.venv/.pvc-installed
# compat: the checkout on sys.path through a plain .pth; setuptools' default editable finder
# costs every `pvc` command 6 ms of start-up
want="$(sha256sum pyproject.toml | cut -d' ' -f1) editable=compat"
if [ ! -x .venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
    echo "setup: building .venv"
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
    if ! .venv/bin/pip install -q --disable-pip-version-check -e "$EXTRAS" \
            --config-settings editable_mode=compat > .venv/pip.log 2>&1; then
        tail -20 .venv/pip.log >&2
        echo "setup: pip install failed (full log: .venv/pip.log)" >&2
        exit 1
    fi
    echo "$want" > $stamp
fi

# Ceph's Python bindings exist only as Debian packages (not on PyPI): the venv reaches them
# through a directory holding just those two modules, so pip never sees Debian's others.
bindings=.venv/ceph-bindings
mkdir -p $bindings
for m in rados rbd; do
    ln -sf /usr/lib/python3/dist-packages/$m.cpython-311-x86_64-linux-gnu.so $bindings/
done
echo "$ROOT/$bindings" > .venv/lib/python3.11/site-packages/ceph-bindings.pth

ln -sf "$ROOT/.venv/bin/pvc" /usr/local/bin/pvc
.venv/bin/python -m pvc.sandbox.guest build
