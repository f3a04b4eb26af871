# pvc's node image: Debian 12 set up by the project's own script (libvirtd + QEMU, ZooKeeper
# and Redis clients, PostgreSQL 15 for Patroni, the venv with pvc, the demo guest image).
# One image for every role of docker-compose.yml: node (libvirtd, pvc daemon, worker, tailer,
# and Patroni on coordinators, under supervisord) and flower.
FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY . /opt/pvc/src
WORKDIR /opt/pvc/src
RUN apt-get update -q && scripts/setup.sh && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/opt/pvc/src/docker/entrypoint.sh"]
CMD ["node"]
