"""No secret value is committed in the deployment files: only references, placeholders and generators."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNED = [REPO_ROOT / "docker-compose.yml", REPO_ROOT / "docs" / "operations.md"]
OWNED_TREES = [REPO_ROOT / "k8s", REPO_ROOT / "deploy"]
# The hashed requirements are package digests, not secrets; migrations belong to the schema.
EXCLUDED = {
    REPO_ROOT / "deploy" / "tools" / "requirements.txt",
    REPO_ROOT / "deploy" / "tools" / "kubectl.txt",
}

# user:password@ in a URL, unless the password is a placeholder: <...>, ${...}, $NAME or ***.
CREDENTIALS_IN_URL = re.compile(r"://[\w.-]+:(?!<|\$|\*\*\*)[^@\s/]+@")
SECRET_MANIFEST = re.compile(r"^kind:\s*Secret\s*$", re.MULTILINE)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
LITERAL_PASSWORD = re.compile(
    r"(?i)(password|passwd|secret|token)\s*[:=]\s*['\"]?(?!<|\$|/)[A-Za-z0-9+/_-]{12,}"
)
HASH_FIELD = re.compile(r'"password_hash"\s*:\s*"')


def owned_files() -> list[Path]:
    files = [p for p in OWNED if p.exists()]
    for tree in OWNED_TREES:
        files.extend(p for p in tree.rglob("*") if p.is_file() and p not in EXCLUDED)
    return [p for p in files if "__pycache__" not in p.parts]


def test_no_secret_values_in_deployment_files() -> None:
    findings = []
    for path in owned_files():
        text = path.read_text(errors="replace")
        for name, pattern in (
            ("credentials in a URL", CREDENTIALS_IN_URL),
            ("Secret manifest", SECRET_MANIFEST),
            ("private key", PRIVATE_KEY),
            ("literal password", LITERAL_PASSWORD),
            ("password hash", HASH_FIELD),
        ):
            for match in pattern.finditer(text):
                findings.append(f"{path.relative_to(REPO_ROOT)}: {name}: {match.group(0)[:60]}")
    assert findings == []


def test_the_detector_finds_what_it_looks_for() -> None:
    assert CREDENTIALS_IN_URL.search("postgresql://nova:s3cr3t@db:5432/nova")
    assert not CREDENTIALS_IN_URL.search("postgresql://nova:<password>@db:5432/nova")
    assert not CREDENTIALS_IN_URL.search("amqp://nova:${mq_password}@rabbitmq:5672/nova")
    assert LITERAL_PASSWORD.search("POSTGRES_PASSWORD: hunter2hunter2hunter2")
    assert not LITERAL_PASSWORD.search("POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password")
    assert SECRET_MANIFEST.search("apiVersion: v1\nkind: Secret\n")
    assert HASH_FIELD.search('{"name": "nova", "password_hash": "YeQsboH0Z336"}')
    assert PRIVATE_KEY.search("-----BEGIN RSA PRIVATE KEY-----")


def test_generated_secrets_stay_out_of_git() -> None:
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "/.nova/" in ignored, "deploy/dev-secrets.sh writes into .nova/secrets"
    assert ".venv-*/" in ignored, "the checkers' venv is .venv-deploy"
