#!/bin/bash
# The Docker engine and the base image of the compose cluster, as root on Debian 12:
#   scripts/docker.sh engine      a dockerd on pvc's own socket (started unless one answers
#                                 there); prints the DOCKER_HOST to use
#   scripts/docker.sh stop        stops that dockerd if this script started it (by its PID)
#   scripts/docker.sh base        the base image pvc-base:12 from Debian's packages
#                                 (debootstrap + docker import; nothing from an image
#                                 registry), made once and kept by name
#   scripts/docker.sh prepare     all of the above, the secrets (docker/make-secrets.sh) and
#                                 the image (docker-compose build): `up` can start at once
#   scripts/docker.sh wheels      pvc and its Python dependencies as wheels in docker/wheels,
#                                 built here with the host's pip (its index and trust), so the
#                                 image installs them without reaching PyPI
# The engine runs without systemd, on its own data root, so it never meets another Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=/run/pvc-docker
DATA=/var/lib/pvc-docker
export DOCKER_HOST=unix://$RUN/docker.sock
BASE=pvc-base:12

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

engine() {
    if answers; then echo "$DOCKER_HOST"; return; fi
    mkdir -p -m 0700 $RUN $DATA
    setsid dockerd --host "$DOCKER_HOST" --data-root $DATA --exec-root $RUN \
        --pidfile $RUN/dockerd.pid > $RUN/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        if answers; then echo "$DOCKER_HOST"; return; fi
        sleep 0.5    # the daemon has no readiness notice without systemd: poll its socket
    done
    tail -20 $RUN/dockerd.log >&2
    echo "docker.sh: dockerd did not answer within 30 s (log: $RUN/dockerd.log)" >&2
    exit 1
}

stop() {
    [ -f $RUN/dockerd.pid ] || return 0
    pid=$(cat $RUN/dockerd.pid)
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
}

base() {
    if docker image inspect $BASE >/dev/null 2>&1; then return; fi
    root=$(mktemp -d /var/tmp/pvc-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    # the host's package cache serves the .debs it has (the same release), the mirror the rest
    debootstrap --variant=minbase --cache-dir=/var/cache/apt/archives bookworm "$root" \
        http://deb.debian.org/debian > "$RUN/debootstrap.log" 2>&1 \
        || { tail -20 "$RUN/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - $BASE > /dev/null
}

wheels() {
    stamp=docker/wheels/.pyproject
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat $stamp 2>/dev/null)" = "$want" ]; then return; fi
    rm -rf docker/wheels
    mkdir -p docker/wheels
    .venv/bin/pip install -q wheel > $RUN/wheels.log 2>&1   # for sdists built the old way
    .venv/bin/pip wheel -q -w docker/wheels . setuptools wheel >> $RUN/wheels.log 2>&1 \
        || { tail -20 $RUN/wheels.log >&2; exit 1; }
    rm -f docker/wheels/pvc-*.whl     # pvc itself is installed from its source
    echo "$want" > $stamp
}

case "${1:-}" in
    engine) engine ;;
    stop) stop ;;
    base) engine > /dev/null; base; echo $BASE ;;
    wheels) mkdir -p $RUN; wheels ;;
    prepare)
        engine > /dev/null; base; wheels; docker/make-secrets.sh > /dev/null
        docker-compose build --force-rm -q 2>&1 | grep -v -i 'deprecated\|buildx\|buildkit' || true
        docker image inspect pvc:dev > /dev/null ;;
    *) echo "usage: $0 engine|stop|base|wheels|prepare" >&2; exit 2 ;;
esac
