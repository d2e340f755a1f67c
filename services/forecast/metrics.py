"""Prometheus instruments of forecast-serving, registered on the server's registry (never the global one).

The kit's interceptor already counts every RPC by method and status; these add what only this service knows:
the model version that answered, inference batch sizes, model load results and re-forecast throughput.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ForecastMetrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class ForecastMetrics:
    """Instruments of one forecast-serving process."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "nova_forecast_requests",
            "Calls answered, by API method, model and model version (fallback answers: version 'fallback').",
            ["method", "model", "version"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "nova_forecast_request_duration_seconds",
            "Time to answer a call, by API method, model and model version.",
            ["method", "model", "version"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.inference_rows = Histogram(
            "nova_forecast_inference_rows",
            "Rows per onnxruntime run, by model version and where it ran (inline, executor, batched).",
            ["model", "version", "mode"],
            registry=registry,
            buckets=_ROW_BUCKETS,
        )
        self.inference_latency = Histogram(
            "nova_forecast_inference_duration_seconds",
            "onnxruntime run time including any executor wait, by model version and mode.",
            ["model", "version", "mode"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.model_loads = Counter(
            "nova_forecast_model_loads",
            "Model version load attempts by result (loaded, refused) and refusal kind.",
            ["model", "result", "kind"],
            registry=registry,
        )
        self.serving_version = Gauge(
            "nova_forecast_serving_version",
            "1 for the model version currently answering requests.",
            ["model", "version"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "nova_forecast_fallbacks",
            "Series answered by the intermittent-demand fallback, by reason kind.",
            ["reason"],
            registry=registry,
        )
        self.reforecast_series = Counter(
            "nova_forecast_reforecast_series",
            "Series re-forecast after committed batches.",
            registry=registry,
        )
        self.history_cache = Counter(
            "nova_forecast_history_cache",
            "History look-ups by outcome (hit, miss).",
            ["outcome"],
            registry=registry,
        )
        self.result_cache = Counter(
            "nova_forecast_result_cache",
            "Look-ups of computed material x site forecasts by outcome (hit, miss).",
            ["outcome"],
            registry=registry,
        )
        # Bound once: resolving label values costs more than the increment on the hot path.
        self.result_cache_hit = self.result_cache.labels("hit")
        self.result_cache_miss = self.result_cache.labels("miss")
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request_instruments(self, method: str, model: str, version: str) -> tuple[Any, Any]:
        """(requests counter, latency histogram) children for these labels, bound once per label set."""
        key = (method, model, version)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method, model, version),
                self.request_latency.labels(method, model, version),
            )
        return children
