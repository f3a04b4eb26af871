#!/bin/bash
# The secrets docker-compose.yml hands to its containers at run time (never into an image):
# the sandbox's (redis.password, zookeeper.auth, flower.password), Patroni's ZooKeeper login
# and REST API login, the database's. Made once, 0600. (Each ZooKeeper member writes its JAAS
# file of both logins itself, from these.)
# PowerDNS's database role's too. Also writes ../.env naming this directory: without it `docker-compose config` fails loudly.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p -m 0700 secrets
umask 077
new() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
[ -s secrets/redis.password ] || new > secrets/redis.password
[ -s secrets/zookeeper.auth ] || echo "pvc:$(new)" > secrets/zookeeper.auth
[ -s secrets/patroni-zookeeper.auth ] || echo "patroni:$(new)" > secrets/patroni-zookeeper.auth
[ -s secrets/patroni-rest.auth ] || echo "patroni:$(new)" > secrets/patroni-rest.auth
[ -s secrets/flower.password ] || new > secrets/flower.password
[ -s secrets/database.password ] || new > secrets/database.password
[ -s secrets/dns.password ] || new > secrets/dns.password
echo "PVC_SECRETS=./docker/secrets" > ../.env
echo "secrets in $(pwd)/secrets"
