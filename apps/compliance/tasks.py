"""Background work of compliance: explanations, erasure, deadlines, scheduled bias reports."""

from __future__ import annotations

from celery import shared_task

from apps.compliance import bias, erasure, services


@shared_task(name="compliance.explain_decisions", acks_late=True)
def explain_decisions(decision_ids: list[str]) -> int:
    """Compute the pending explanations of these decisions (idempotent)."""
    return services.explanations_compute(decision_ids)


@shared_task(name="compliance.resume_explanations")
def resume_explanations() -> int:
    """Re-send explanations left pending (computing them is idempotent), 200 per task."""
    ids = services.explanations_stalled()
    for start in range(0, len(ids), 200):
        explain_decisions.delay(ids[start : start + 200])
    return len(ids)


@shared_task(
    name="compliance.execute_erasure",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def execute_erasure(self: object, request_id: str) -> str:
    """Run an approved erasure; re-runnable at any point (see apps.compliance.erasure)."""
    try:
        return erasure.erasure_execute(request_id=request_id).status
    except erasure.ErasureDeferred as exc:
        raise self.retry(exc=exc, countdown=30) from exc  # type: ignore[attr-defined]


@shared_task(name="compliance.resume_erasures")
def resume_erasures() -> int:
    """Re-send approved erasures that no worker finished (a killed worker loses its message
    on the file-system broker)."""
    return erasure.erasures_resume()


@shared_task(name="compliance.erasure_deadlines")
def erasure_deadlines() -> int:
    return erasure.deadlines_check()


@shared_task(name="compliance.scheduled_bias_reports")
def scheduled_bias_reports() -> int:
    return len(bias.reports_scheduled())


@shared_task(name="compliance.retention_purge")
def retention_purge() -> dict[str, int]:
    return services.retention_purge()
