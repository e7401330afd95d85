"""TorchServe handler for Gatehouse model archives (built by ``apps.registry.packaging``).

It runs inside a TorchServe Python worker, not in the platform: it imports neither Django nor
``apps.``. The archive ships ``encoding.py``, ``architectures.py`` and ``gatehouse_model.json``
next to it; the first two are loaded from the model directory by file path, so an unrelated
module of the same name on ``sys.path`` cannot shadow them.

Request body: ``{"rows": [{feature: value, ...}, ...]}``. Response, per request:
``{"probabilities": [[...], ...], "labels": [...]}``. TorchServe may hand over several requests
at once: their rows go through one forward pass. An invalid request fails alone (HTTP 400).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from types import ModuleType
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

logger = logging.getLogger(__name__)

MANIFEST_NAME = "gatehouse_model.json"
FORMAT_VERSION = 1
STATE_DICT = "torch_state_dict"
TORCHSCRIPT = "torchscript"
# Response header telling the client how many requests shared the forward pass.
BATCH_SIZE_HEADER = "X-Gatehouse-Batch-Size"
MAX_PROBLEMS = 20


def _load_module(model_dir: str, name: str) -> ModuleType:
    """Import ``<model_dir>/<name>.py`` under a private module name."""
    path = os.path.join(model_dir, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"gatehouse_archive_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error(code: str, message: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The body of a failed request, shaped like the platform's API errors."""
    return {"detail": message, "code": code, "errors": errors or []}


class GatehouseHandler(BaseHandler):
    """Encodes rows as the signature says, runs one batched forward pass, returns softmax."""

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, MANIFEST_NAME), encoding="utf-8") as f:
            spec = json.load(f)
        if spec.get("format") != FORMAT_VERSION:
            raise RuntimeError(f"unsupported {MANIFEST_NAME} format: {spec.get('format')!r}")

        self.encoding = _load_module(model_dir, "encoding")
        self.signature: dict[str, Any] = spec["signature"]
        self.labels: list[str] = list(self.signature["output"]["labels"])

        weights_path = os.path.join(model_dir, spec["weights_file"])
        with open(weights_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != spec["weights_sha256"]:
            raise RuntimeError("the weights do not match the SHA-256 recorded in the archive")

        # One intra-op thread per worker: scale with workers, not threads (no oversubscription).
        torch.set_num_threads(1)
        # TorchServe assigns each worker a GPU (number_of_gpu > 0) through gpu_id.
        gpu_id = context.system_properties.get("gpu_id")
        self.device = (
            torch.device(f"cuda:{gpu_id}")
            if gpu_id is not None and torch.cuda.is_available()
            else torch.device("cpu")
        )
        framework = spec["framework"]
        model: torch.nn.Module
        if framework == TORCHSCRIPT:
            model = torch.jit.load(weights_path, map_location="cpu")
        elif framework == STATE_DICT:
            architectures = _load_module(model_dir, "architectures")
            model = architectures.build(spec["architecture"], spec["architecture_kwargs"])
            state = torch.load(weights_path, weights_only=True, map_location="cpu")
            model.load_state_dict(state)
        else:
            raise RuntimeError(f"unsupported framework {framework!r}")
        model.eval()
        self.model = model.to(self.device)
        self.manifest = context.manifest
        self.context = context
        self.initialized = True
        logger.info(
            "gatehouse model %s v%s loaded (%s)", spec["model_name"], spec["version"], framework
        )

    def _rows(self, request: Any) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
        """The rows of one request, or the error body explaining why it is refused."""
        body = request.get("body") if isinstance(request, dict) else None
        if body is None and isinstance(request, dict):
            body = request.get("data")
        # A dict when the client sent application/json; str for text/*; bytes otherwise.
        if isinstance(body, (bytes, bytearray, str)):
            try:
                body = json.loads(body)
            except ValueError:  # UnicodeDecodeError is a ValueError
                return None, _error("invalid_json", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
            return None, _error("invalid_request", 'The body must be {"rows": [{...}, ...]}.')
        rows = body["rows"]
        if not rows:
            return None, _error("invalid_request", "rows is empty.")
        problems: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append({"row": index, "field": None, "message": "must be an object"})
                continue
            for field, message in self.encoding.check_row(self.signature, row):
                problems.append({"row": index, "field": field, "message": message})
        if problems:
            return None, _error("invalid_rows", "Some rows are invalid.", problems[:MAX_PROBLEMS])
        return rows, None

    def handle(self, data: list[Any], context: Any) -> list[dict[str, Any]]:
        self.context = context
        results: list[dict[str, Any] | None] = [None] * len(data)
        spans: list[tuple[int, int, int]] = []  # (request index, first row, end row)
        all_rows: list[dict[str, Any]] = []
        for idx, request in enumerate(data):
            rows, error = self._rows(request)
            context.set_response_content_type(idx, "application/json")
            context.set_response_header(idx, BATCH_SIZE_HEADER, str(len(data)))
            if rows is None:
                # Fails this request only; the others of the batch keep their 200.
                context.set_response_status(400, "Bad Request", idx)
                results[idx] = error
                continue
            spans.append((idx, len(all_rows), len(all_rows) + len(rows)))
            all_rows.extend(rows)

        if all_rows:
            x = torch.from_numpy(self.encoding.encode(self.signature, all_rows)).to(self.device)
            with torch.inference_mode():
                probabilities = torch.softmax(self.model(x).float(), dim=1).cpu()
            if probabilities.shape != (len(all_rows), len(self.labels)):
                raise RuntimeError(
                    f"model output {tuple(probabilities.shape)} does not match "
                    f"{len(all_rows)} rows x {len(self.labels)} labels"
                )
            best = probabilities.argmax(dim=1).tolist()
            values = probabilities.tolist()
            for idx, start, end in spans:
                results[idx] = {
                    "probabilities": values[start:end],
                    "labels": [self.labels[i] for i in best[start:end]],
                }
        return [r if r is not None else _error("internal", "No result.") for r in results]
