"""Shadow traffic: a copy of a served request runs on the shadow version in a background
thread after the reply; its output is recorded (route "shadow") and never returned."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from django.db import close_old_connections, transaction

if TYPE_CHECKING:
    from apps.inference.services import PredictRequest

logger = logging.getLogger(__name__)
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gatehouse-shadow")


def submit(*, shadow_version_id: int, request: PredictRequest, pseudonym: str) -> Future[None]:
    return _pool.submit(_run, shadow_version_id, request, pseudonym)


def _run(shadow_version_id: int, request: PredictRequest, pseudonym: str) -> None:
    from apps.inference import policy, records
    from apps.inference.backends import get_backend
    from apps.inference.models import Route
    from apps.inference.services import build_decisions
    from apps.registry import encoding
    from apps.registry.models import ModelVersion

    close_old_connections()
    try:
        version = ModelVersion.objects.select_related("family").get(pk=shadow_version_id)
        if any(encoding.check_row(version.signature, row) for row in request.rows):
            logger.info("shadow %s skipped: the request does not fit its signature", version)
            return
        started = time.perf_counter()
        probabilities = get_backend().predict(version, request.rows)
        decisions = build_decisions(
            family=version.family,
            version=version,
            route=Route.SHADOW,
            user=None,
            key=None,
            request=request,
            probabilities=probabilities,
            latency_ms=(time.perf_counter() - started) * 1000,
            pseudonym=pseudonym,
        )
        with transaction.atomic():
            records.record(decisions)
            policy.run_recorded_hooks(decisions, request.rows)
    except Exception:
        logger.exception("shadow prediction on version %s failed", shadow_version_id)
    finally:
        close_old_connections()
