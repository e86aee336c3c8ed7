#!/usr/bin/env bash
# Make sure a Redis server answers on $REDIS_HOST:$REDIS_PORT (default 127.0.0.1:6379).
# Uses one that is already running; otherwise installs Debian's redis-server if missing (needs
# root, as on our test machines) and starts it on loopback only, without persistence.
set -euo pipefail
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

ping() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null && ping; then
  echo "redis: already answering on $host:$port"; exit 0
fi
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "redis: redis-server is not installed and this is not root; install it (apt-get install redis-server) or set REDIS_URL" >&2
    exit 1
  fi
  echo "redis: installing Debian's redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq redis-server >/dev/null
fi
redis-server --bind "$host" --port "$port" --daemonize yes --save "" --appendonly no \
  --dir /tmp --logfile /tmp/raygent-redis-"$port".log
for _ in $(seq 50); do ping && { echo "redis: started on $host:$port"; exit 0; }; sleep 0.1; done
echo "redis: did not answer on $host:$port; see /tmp/raygent-redis-$port.log" >&2
exit 1
