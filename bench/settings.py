"""Settings of the benchmark's Gatehouse processes: the platform's own settings, unchanged,
plus the serving choices that ``gatehouse/settings.py`` does not read from the environment.

Everything governance-related (API-key auth, guardian permissions, routing, validation,
hash-chained decision records, middleware) stays exactly as configured there. Set by
``bench/run.py`` through the environment:

- ``INFERENCE_BACKEND``: ``torchserve`` (target b) or ``local`` (target c).
- ``BENCH_TS_METRICS_PORT``, ``BENCH_TS_GRPC_INFERENCE_PORT``, ``BENCH_TS_GRPC_MANAGEMENT_PORT``:
  free ports for the benchmark's own TorchServe (its inference and management URLs come from
  ``TORCHSERVE_INFERENCE_URL`` / ``TORCHSERVE_MANAGEMENT_URL``, read by the platform settings).
"""

from __future__ import annotations

import os

from gatehouse.settings import *  # noqa: F403
from gatehouse.settings import VAR_DIR

INFERENCE_BACKEND = os.environ.get("INFERENCE_BACKEND", "local")

# TorchServe as the issue asks: 2 workers, server-side batches of up to 8, 5 ms batch delay.
TORCHSERVE_WORKERS = 2
TORCHSERVE_BATCH_SIZE = 8
TORCHSERVE_MAX_BATCH_DELAY_MS = 5
# Token authorization stays on (DEBUG is off): the keys are read from the server's key file.
TORCHSERVE_KEY_FILE = str(VAR_DIR / "torchserve" / "key_file.json")
if os.environ.get("BENCH_TS_METRICS_PORT"):
    TORCHSERVE_METRICS_URL = f"http://127.0.0.1:{os.environ['BENCH_TS_METRICS_PORT']}"
if os.environ.get("BENCH_TS_GRPC_INFERENCE_PORT"):
    TORCHSERVE_GRPC_INFERENCE_PORT = int(os.environ["BENCH_TS_GRPC_INFERENCE_PORT"])
if os.environ.get("BENCH_TS_GRPC_MANAGEMENT_PORT"):
    TORCHSERVE_GRPC_MANAGEMENT_PORT = int(os.environ["BENCH_TS_GRPC_MANAGEMENT_PORT"])
