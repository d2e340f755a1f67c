#!/usr/bin/env bash
# Development secrets for docker compose and the dev Kubernetes overlay. Idempotent: an existing file is
# never overwritten, so re-running keeps the passwords a running stack already uses.
#
#   deploy/dev-secrets.sh            writes $NOVA_SECRETS_DIR (default .nova/secrets, git-ignored)
#   deploy/dev-secrets.sh k8s-dev    also prints the dev overlay's Secrets as YAML, for
#                                    `deploy/dev-secrets.sh k8s-dev | kubectl apply -n nova -f -`
#
# The files are world-readable (0644) inside a 0700 directory: compose bind-mounts them as they are, and
# the containers' users (10001, 999) are not the developer's. Production secrets never come from here.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secrets_dir="${NOVA_SECRETS_DIR:-$repo_root/.nova/secrets}"
mode="${1:-compose}"

mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"

# write_once NAME CONTENT: create the file unless it exists.
write_once() {
    local path="$secrets_dir/$1"
    if [[ ! -s "$path" ]]; then
        (umask 022 && printf '%s' "$2" > "$path.tmp" && mv "$path.tmp" "$path")
    fi
}

random_token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32), end="")'; }

# The development JWT key may already exist from the project set-up (.nova/dev-jwt-secret): reuse it.
if [[ ! -s "$secrets_dir/jwt_secret" && -s "$repo_root/.nova/dev-jwt-secret" ]]; then
    write_once jwt_secret "$(cat "$repo_root/.nova/dev-jwt-secret")"
fi
write_once jwt_secret "$(random_token)"
write_once postgres_password "$(random_token)"
write_once rabbitmq_password "$(random_token)"

pg_password="$(cat "$secrets_dir/postgres_password")"
mq_password="$(cat "$secrets_dir/rabbitmq_password")"

# Compose service names are the hosts; the dev overlay's Services are nova-postgres, nova-rabbitmq, ...
write_once database_url "postgresql://nova:${pg_password}@postgres:5432/nova"
write_once broker_url "amqp://nova:${mq_password}@rabbitmq:5672/nova"
write_once k8s-database-url "postgresql://nova:${pg_password}@nova-postgres:5432/nova"
write_once k8s-broker-url "amqp://nova:${mq_password}@nova-rabbitmq:5672/nova"
write_once k8s-cache-url "redis://nova-redis:6379/0"

# RabbitMQ imports this beside deploy/rabbitmq/definitions.json (20-users.json sorts after 10-topology.json):
# the application user with a salted SHA-256 hash, the format RabbitMQ's definitions use.
users_json="$(MQ_PASSWORD="$mq_password" python3 - <<'PY'
import base64, hashlib, json, os

password = os.environ["MQ_PASSWORD"].encode()
salt = os.urandom(4)
password_hash = base64.b64encode(salt + hashlib.sha256(salt + password).digest()).decode()
print(json.dumps({
    "users": [{"name": "nova", "password_hash": password_hash,
               "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]}],
    "permissions": [{"user": "nova", "vhost": "nova", "configure": ".*", "write": ".*", "read": ".*"}],
}, indent=2))
PY
)"
write_once rabbitmq_users.json "$users_json"

case "$mode" in
    compose)
        echo "development secrets in $secrets_dir" >&2
        ;;
    k8s-dev)
        # --dry-run=client renders the Secret objects without contacting a cluster.
        kubectl create secret generic nova-backing --dry-run=client -o yaml \
            --from-file=database-url="$secrets_dir/k8s-database-url" \
            --from-file=broker-url="$secrets_dir/k8s-broker-url" \
            --from-file=cache-url="$secrets_dir/k8s-cache-url"
        echo "---"
        kubectl create secret generic nova-jwt --dry-run=client -o yaml \
            --from-file=jwt-secret="$secrets_dir/jwt_secret"
        echo "---"
        kubectl create secret generic nova-postgres --dry-run=client -o yaml \
            --from-file=password="$secrets_dir/postgres_password"
        echo "---"
        kubectl create secret generic nova-rabbitmq --dry-run=client -o yaml \
            --from-file=users.json="$secrets_dir/rabbitmq_users.json"
        ;;
    *)
        echo "usage: $0 [compose|k8s-dev]" >&2
        exit 2
        ;;
esac
