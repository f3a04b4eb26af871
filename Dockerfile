# pvc's node image: Debian 12 (pvc-base:12, made by scripts/docker.sh base from Debian's
# packages: nothing is pulled from an image registry), set up by the project's own script for
# a node's role: libvirtd + QEMU, ZooKeeper, Redis, PostgreSQL 15 for Patroni, PowerDNS, the
# venv with pvc, the demo guest image. One image for every role of docker-compose.yml: node
# (under supervisord, as systemd runs a real node) and flower. Secrets come at run time.
FROM pvc-base:12
ENV DEBIAN_FRONTEND=noninteractive PVC_SETUP_ROLE=node
# no service starts while packages install (there is no init in a container)
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
COPY scripts/setup.sh pyproject.toml /opt/pvc/src/
COPY scripts /opt/pvc/src/scripts
WORKDIR /opt/pvc/src
# the packages first (their layer outlives a change of pvc's code)
RUN PVC_SETUP_STAGE=packages scripts/setup.sh && rm -rf /var/lib/apt/lists/*
# libvirt probes QEMU's capabilities before a node's first guest (tens of seconds under TCG):
# probed once here, cached in the image for every container (valid while the kernel and the
# binaries are the same)
RUN /usr/sbin/libvirtd -d && for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; \
        sleep 0.2; done && timeout 300 virsh -c qemu:///system domcapabilities --virttype qemu \
        > /dev/null; pkill libvirtd; ls /var/cache/libvirt/qemu/capabilities/
COPY . /opt/pvc/src
# the venv from the wheels built on the host (docker/wheels: scripts/docker.sh wheels), and the
# guest image (its kernel and busybox are downloaded: apt's lists again)
RUN apt-get update -q && PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/pvc/src/docker/wheels \
    scripts/setup.sh && rm -rf /var/lib/apt/lists/* /root/.cache docker/wheels
ENTRYPOINT ["/opt/pvc/src/docker/entrypoint.sh"]
CMD ["node"]
