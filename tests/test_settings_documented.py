"""docs/operations.md names every environment variable a process reads, and no variable that neither a
process nor the deployment files read.

Variables of ``ServiceSettings`` itself are documented once in their generic form ``NOVA_<S>_NAME``; the
variables a service adds are documented by their full name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.analytics.settings import AnalyticsSettings
from services.forecast.settings import ForecastSettings
from services.ingestion.settings import IngestionSettings
from services.kit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
SERVICES = (IngestionSettings, AnalyticsSettings, ForecastSettings, GatewaySettings)
# Variables of the deployment itself (compose interpolation, the development scripts), not of a process.
DEPLOYMENT = {
    name
    for path in [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").glob("*.sh"))]
    for name in re.findall(r"\$\{(NOVA_[A-Z0-9_]+)", path.read_text())
}


def _variable(settings: type[BaseSettings], field: str) -> str:
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


def _documented(settings: type[BaseSettings], field: str) -> bool:
    variable = _variable(settings, field)
    if variable in OPERATIONS:
        return True
    if field in ServiceSettings.model_fields and not isinstance(
        ServiceSettings.model_fields[field].validation_alias, str
    ):
        return f"NOVA_<S>_{field.upper()}" in OPERATIONS
    # "NOVA_DATABASE_URL` / `_FILE": the file variant is written after its variable.
    return variable.endswith("_FILE") and f"{variable.removesuffix('_FILE')}` / `_FILE" in OPERATIONS


@pytest.mark.parametrize("settings", SERVICES, ids=lambda s: s.__name__)
def test_every_variable_is_in_the_operations_guide(settings: type[BaseSettings]) -> None:
    missing = [_variable(settings, f) for f in settings.model_fields if not _documented(settings, f)]
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_the_operations_guide_names_no_variable_that_nothing_reads() -> None:
    read = {_variable(cls, f) for cls in SERVICES for f in cls.model_fields}
    generic = {f"NOVA_<S>_{f.upper()}" for f in ServiceSettings.model_fields}
    named = set(re.findall(r"NOVA_[A-Z0-9_<>]*[A-Z0-9>]", OPERATIONS)) - {"NOVA_<SERVICE>", "NOVA_TLS"}
    assert sorted(named - read - generic - DEPLOYMENT) == []
