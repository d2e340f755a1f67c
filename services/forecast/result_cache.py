"""Cache of computed forecasts: the serialized answer for one material x site series.

A forecast is a pure function of the series' history, the external-factor points it read, the model version
and the request's options, so it is cached under exactly those and never invalidated explicitly:

    fc:<material>|<site>@<history generation>:<digest>

where the history generation is the token of ``history`` (renewed for every series a committed batch touched,
on every replica, through the shared cache port) and the digest covers the ``extgen`` token (renewed by every
batch carrying external observations), the model name, version and sidecar sha256, the resolved horizon, the
series reference as asked and the settings that shape a forecast. New data, new external points or a new
model version all give new keys; stale entries age out by TTL or LRU. The per-series generation is used
rather than the global data watermark because the watermark moves with every batch, which would make every
cached forecast stale when one series changed.

What is stored is the answer as computed, with its own provenance: ``generated_at`` is when the forecast was
computed and the data watermark the one its history reflected (common.v1.Provenance says so). The caller marks
an answer served from here with ``from_cache``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from services.forecast.history import SeriesKey, await_all
from services.ports.cache import Cache

__all__ = ["CachedForecast", "ForecastCache", "ResultKey"]

_FORMAT = "1"
"""Bumped when the stored payload or the key's meaning changes, so old entries are simply never read."""


@dataclass(frozen=True, slots=True)
class ResultKey:
    """Everything a material x site forecast depends on besides the data behind the two generations."""

    series: SeriesKey
    spec: tuple[object, ...]  # the series reference as asked (echoed back in the answer)
    horizon: int
    model: tuple[str, str, str]  # name, version, sidecar sha256; ("", "", "") without a model
    history_generation: str
    external_generation: str

    def text(self, settings_digest: str) -> str:
        digest = hashlib.sha256(
            repr(
                (_FORMAT, settings_digest, self.external_generation, self.model, self.horizon, self.spec)
            ).encode()
        ).hexdigest()[:32]
        return f"fc:{self.series[0]}|{self.series[1]}@{self.history_generation}:{digest}"


@dataclass(frozen=True, slots=True)
class CachedForecast:
    payload: bytes
    from_cache: bool


class ForecastCache:
    """Computed forecasts in the cache port. ``settings_digest`` identifies the settings that shape an
    answer (fallback method, minimum history, feature spec), so replicas configured differently never
    serve each other's answers."""

    def __init__(self, cache: Cache, *, ttl_seconds: float, settings_digest: str):
        self._cache = cache
        self._ttl = ttl_seconds
        self._settings = settings_digest

    async def get_many(self, keys: Sequence[ResultKey]) -> list[bytes | None]:
        return await await_all([self._cache.get(key.text(self._settings)) for key in keys])

    async def put_many(self, items: Sequence[tuple[ResultKey, bytes]]) -> None:
        await await_all([self._cache.set(key.text(self._settings), blob, self._ttl) for key, blob in items])
