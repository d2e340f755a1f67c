#!/usr/bin/env bash
# Starts the local PostgreSQL, Redis and RabbitMQ used by the integration tests, each only if it
# is not already answering, with the same commands the machine itself uses. Idempotent.
set -euo pipefail

up_pg() { pg_isready -q -h 127.0.0.1 -p 5432; }
up_redis() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
up_rabbit() { rabbitmqctl -q status >/dev/null 2>&1; }

wait_for() { # name check-function seconds
  local name=$1 check=$2 limit=$3 i
  for ((i = 0; i < limit; i++)); do
    if $check; then return 0; fi
    sleep 1
  done
  echo "ensure-services: $name did not come up within ${limit}s" >&2
  return 1
}

if ! up_pg; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for PostgreSQL up_pg 60
fi
if ! up_redis; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis up_redis 30
fi
if ! up_rabbit; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached || true
  sleep 2
fi
rabbitmqctl -q await_startup --timeout 120 >/dev/null
echo "ensure-services: PostgreSQL, Redis and RabbitMQ are up"
