"""Runs tritonclient (gRPC) against a server and prints what it saw as one JSON line.

A separate process because tritonclient registers its own copy of the protocol's messages (package
``inference``) in protobuf's default pool, where this platform's generated ones already live.

Usage: python triton_probe.py ADDRESS TOKEN MODEL FEATURES.npy
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton


def main() -> None:
    address, token, model, path = sys.argv[1:5]
    headers = {"authorization": f"Bearer {token}"}
    client = triton.InferenceServerClient(url=address)
    features = np.load(path)
    index = client.get_model_repository_index(headers=headers, as_json=True)
    metadata = client.get_model_metadata(model, headers=headers, as_json=True)
    inputs = [triton.InferInput("features", list(features.shape), "FP32")]
    inputs[0].set_data_from_numpy(features)
    result = client.infer(model, inputs, headers=headers, outputs=[triton.InferRequestedOutput("quantiles")])
    out = {
        "live": client.is_server_live(headers=headers),
        "ready": client.is_server_ready(headers=headers),
        "model_ready": client.is_model_ready(model, headers=headers),
        "index": index,
        "metadata": metadata,
        "version": result.get_response().model_version,
        "quantiles": result.as_numpy("quantiles").tolist(),
    }
    try:
        bad = features.copy()
        bad[0, 0] = np.inf
        inputs[0].set_data_from_numpy(bad)
        client.infer(model, inputs, headers=headers)
        out["inf_error"] = None
    except triton.InferenceServerException as exc:
        out["inf_error"] = {"status": exc.status(), "message": exc.message()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
