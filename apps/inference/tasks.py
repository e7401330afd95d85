"""Background work of the inference app: batch scoring and its recovery sweeper."""

from __future__ import annotations

from celery import Task, shared_task

from apps.inference import batch, services


@shared_task(name="inference.batch_run", bind=True, acks_late=True, reject_on_worker_lost=True)
def batch_run(self: Task, job_id: str, stall_s: float | None = None) -> str:
    """Score the remaining rows of a batch job (a no-op if another run holds it)."""
    run_id = batch.run_id_of(self.request.id) if self.request.id else ""
    job = batch.batch_run(job_id, stall_s=stall_s, run_id=run_id)
    return job.status if job is not None else "skipped"


@shared_task(name="inference.batch_resume_stalled")
def batch_resume_stalled(stall_s: float | None = None) -> int:
    """Send again the batch jobs whose worker stopped (periodic, Celery beat)."""
    return batch.batch_resume_stalled(stall_s=stall_s)


@shared_task(name="inference.purge_idempotent_replies")
def purge_idempotent_replies() -> int:
    """Forget stored replies older than IDEMPOTENCY_TTL_HOURS (a later retry predicts anew)."""
    return services.idempotent_replies_purge()
