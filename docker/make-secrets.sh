#!/bin/bash
# The secrets docker-compose.yml hands to its containers (the sandbox's: redis.password,
# zookeeper.auth, flower.password; and the database's), made once, 0600. Run before `docker-compose up`.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p -m 0700 secrets
umask 077
new() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
[ -s secrets/redis.password ] || new > secrets/redis.password
[ -s secrets/zookeeper.auth ] || echo "pvc:$(new)" > secrets/zookeeper.auth
[ -s secrets/flower.password ] || new > secrets/flower.password
[ -s secrets/database.password ] || new > secrets/database.password
echo "secrets in $(pwd)/secrets"
