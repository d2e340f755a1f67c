"""Who may call what on forecast-serving (domain API and Open Inference Protocol). Kept apart from the app
so that a caller that only needs the rules (the gateway) does not import onnxruntime."""

from __future__ import annotations

from inference import grpc_service_pb2 as oip_pb
from novacorrente.forecast.v1 import forecast_pb2

from services.kit.auth import ADMIN, READ, MethodPolicy

__all__ = ["OIP_SERVICE_NAME", "SERVICE_NAME", "policy"]

SERVICE_NAME = forecast_pb2.DESCRIPTOR.services_by_name["ForecastService"].full_name
OIP_SERVICE_NAME = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def policy() -> MethodPolicy:
    domain, oip = f"/{SERVICE_NAME}/", f"/{OIP_SERVICE_NAME}/"
    rules = {domain + name: READ for name in ("Forecast", "GetReorderPolicy", "ListModels")}
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"):
        rules[oip + name] = READ
    rules[oip + "RepositoryIndex"] = READ
    # Loading and unloading change what every caller gets: operators only.
    rules[oip + "RepositoryModelLoad"] = ADMIN
    rules[oip + "RepositoryModelUnload"] = ADMIN
    return MethodPolicy(rules)
