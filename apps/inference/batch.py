"""Batch scoring: a CSV of cases scored in the background, chunk by chunk, each scored row
recorded as a decision (a leaf of the transparency log) exactly once.

What holds, whatever crashes:

- **Accepted means queued.** The job is created, and its task is sent when the transaction
  commits; if sending fails (broker down) the job is marked failed and the caller gets 503,
  never "accepted then lost".
- **Whole chunks only.** A chunk's decisions, its rows and the job's progress commit in one
  transaction, so a crash leaves complete chunks and nothing of the one in flight.
- **No row twice.** A run skips the rows already recorded; ``(job, row_number)`` is unique, so
  even two racing runs cannot record a row twice (nor its decision: it rolls back with the row).
- **Resumable.** One run works a job at a time: it holds a lease (``lease_owner``) and renews
  ``heartbeat_at`` at every chunk. A worker killed with SIGKILL loses its message on the
  file-system broker even with ``acks_late``, so ``batch_resume_stalled`` (Celery beat) sends
  the job again once its heartbeat is older than ``BATCH_STALL_S``; the new run claims the
  lease and continues after the last committed chunk. A run that lost its lease stops at its
  next chunk, writing nothing.

Settings (all optional): ``BATCH_CHUNK_ROWS`` (200), ``BATCH_MAX_BYTES`` (20 MiB),
``BATCH_MAX_ROWS`` (100 000), ``BATCH_MAX_ACTIVE_JOBS`` per user or key (3), ``BATCH_STALL_S``
(60), ``BATCH_MAX_ATTEMPTS`` (10), ``BATCH_QUEUE`` (the default queue), ``BATCH_PUSH_INTERVAL_S``
(1.0, the least time between two live progress updates of a job).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.utils import timezone

from apps.inference import policy, records, routing, services
from apps.inference.backends import get_backend
from apps.inference.models import BatchJob, BatchRow, BatchRowStatus, BatchStatus, Decision
from apps.registry import encoding
from apps.registry import selectors as registry_selectors
from apps.registry.artifacts import ArtifactMissing, ArtifactStore, ArtifactTampered
from apps.registry.models import ModelFamily, ModelVersion
from apps.registry.permissions import FamilyAction
from gatehouse import live
from gatehouse.errors import (
    ApplicationError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from gatehouse.models import ApiKey
from gatehouse.pseudonyms import pseudonymise

logger = logging.getLogger(__name__)

ACTIVE = (BatchStatus.QUEUED, BatchStatus.RUNNING)
OUTPUT_COLUMNS = ("decision_id", "label", "error")
SCORE_PREFIX = "score_"
MAX_ROW_ERRORS_SHOWN = 20
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


class QueueUnavailable(ServiceUnavailable):
    code = "queue_unavailable"
    default_detail = (
        "The batch queue is unavailable; the job was not accepted. Nothing will be scored: "
        "submit it again later."
    )


# --- Reading the CSV ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedCsv:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (1-based data row number, values)


def _parse_csv(data: bytes) -> ParsedCsv:
    """Header and data rows (blank lines skipped); 422 naming ``file`` when unreadable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed.for_field("file", "must be a UTF-8 encoded CSV file") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = [(n, values) for n, values in enumerate((r for r in reader if r), start=1)]
    except csv.Error as exc:
        raise ValidationFailed.for_field(
            "file", f"is not a valid CSV file (line {reader.line_num}: {exc})"
        ) from exc
    return ParsedCsv(header, rows)


def _check_header(header: Sequence[str], signature: Mapping[str, Any], subject_column: str) -> None:
    """Every model input present; other columns only features or the subject column."""
    if not header or not any(header):
        raise ValidationFailed.for_field("file", "has no header row", code="header")
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            errors.append({"field": "file", "message": f"column '{name}' appears twice"})
        seen.add(name)
    features = {f["name"] for f in signature["features"]}
    for name in [f["name"] for f in encoding.model_inputs(signature)]:
        if name not in seen:
            errors.append({"field": "file", "message": f"column '{name}' is missing"})
    for name in header:
        if name not in features and name != subject_column:
            errors.append(
                {"field": "file", "message": f"column '{name}' is not a feature of this model"}
            )
    if subject_column and subject_column not in seen:
        errors.append(
            {"field": "subject_column", "message": f"column '{subject_column}' is not in the file"}
        )
    if errors:
        messages = "; ".join(e["message"] for e in errors[:10])
        raise ValidationFailed(
            f"The CSV header does not fit the model: {messages}.",
            errors=[{**e, "type": "header"} for e in errors[:100]],
        )


def _coerce(feature: Mapping[str, Any], text: str) -> Any:
    """A CSV cell as the signature's type; what cannot be converted stays text (check_row then
    names the field), and an empty cell is absent (None)."""
    text = text.strip()
    if text == "":
        return None
    kind = feature["type"]
    if kind == "category":
        return text
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    if kind == "int" and math.isfinite(number) and number == int(number):
        return int(number)
    return number


def _problems_text(problems: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{name}: {message}" for name, message in problems)


# --- Submitting ---------------------------------------------------------------------------------


def _check_active_jobs(user: Any, key: ApiKey | None) -> None:
    limit = int(_setting("BATCH_MAX_ACTIVE_JOBS", 3))
    active = BatchJob.objects.filter(status__in=ACTIVE)
    active = active.filter(api_key=key) if key is not None else active.filter(created_by=user)
    if active.count() >= limit:
        raise RateLimited(
            f"At most {limit} batch jobs may be queued or running at once; wait for one to finish.",
            retry_after=30,
        )


def _read_limited(file: IO[bytes], max_bytes: int) -> bytes:
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"file: larger than the limit of {max_bytes} bytes.",
            errors=[{"field": "file", "message": "too large", "type": "too_large"}],
        )
    return data


def batch_submit(
    *,
    family: ModelFamily,
    user: Any,
    key: ApiKey | None,
    file: IO[bytes],
    filename: str = "",
    purpose: str = "",
    subject_column: str = "",
    request_id: str = "",
) -> BatchJob:
    """Accept a CSV for scoring with ``family`` (predict access already checked by the caller).

    Refused before anything is stored: a header that does not fit the serving version (422),
    a file or row count over the limits (413), too many active jobs (429), a suspended family
    or no production version (503). Accepted: the CSV is stored, the job created and, after
    commit, queued; if queueing fails the job is marked failed and ``QueueUnavailable`` (503)
    is raised.
    """
    purpose, subject_column = purpose.strip(), subject_column.strip()
    if len(purpose) > 64:
        raise ValidationFailed.for_field("purpose", "at most 64 characters")
    if len(subject_column) > 200:
        raise ValidationFailed.for_field("subject_column", "at most 200 characters")
    config = routing.routing_for(family)
    routing.ensure_serving(family, config)
    version = registry_selectors.production_version(family=family)
    if version is None:
        raise ServiceUnavailable(
            f"'{family.slug}' has no version in production.",
            code="no_production_version",
            retry_after=60,
        )
    if family.consent_purpose and not subject_column:
        raise ValidationFailed.for_field(
            "subject_column",
            f"is required: '{family.slug}' needs consent for '{family.consent_purpose}', so "
            "each row needs its subject reference.",
            code="required",
        )
    _check_active_jobs(user, key)
    data = _read_limited(file, int(_setting("BATCH_MAX_BYTES", 20 * 1024 * 1024)))
    parsed = _parse_csv(data)
    _check_header(parsed.header, version.signature, subject_column)
    if not parsed.rows:
        raise ValidationFailed.for_field("file", "has no data rows")
    max_rows = int(_setting("BATCH_MAX_ROWS", 100_000))
    if len(parsed.rows) > max_rows:
        raise PayloadTooLarge(
            f"file: at most {max_rows} rows per batch, got {len(parsed.rows)}.",
            errors=[{"field": "file", "message": f"at most {max_rows}", "type": "too_many_rows"}],
        )
    stored = ArtifactStore().put_bytes(data, max_bytes=len(data), field="file")
    with transaction.atomic():
        job = BatchJob.objects.create(
            family=family,
            created_by=user,
            api_key=key,
            input_name=(filename or "")[-200:],
            input_sha256=stored.sha256,
            input_bytes=stored.size,
            subject_column=subject_column,
            purpose=purpose,
            request_id=request_id[:64],
            chunk_rows=max(1, int(_setting("BATCH_CHUNK_ROWS", 200))),
            total_rows=len(parsed.rows),
        )
        job_id = job.pk
        transaction.on_commit(lambda: _enqueue_new(job_id))
    logger.info(
        "batch job %s submitted: family=%s rows=%d user=%s",
        job.pk,
        family.slug,
        job.total_rows,
        user.pk,
    )
    return job


def _send(job_id: uuid.UUID | str, *, stall_s: float | None = None) -> None:
    from apps.inference.tasks import batch_run as batch_run_task

    options: dict[str, Any] = {}
    if queue := str(_setting("BATCH_QUEUE", "") or ""):
        options["queue"] = queue
    # No result is kept (the job row is the result): with Redis down, queueing then fails after
    # the broker's short publish retries instead of waiting ~20 s on the result backend's.
    batch_run_task.apply_async(
        args=(str(job_id),), kwargs={"stall_s": stall_s}, ignore_result=True, **options
    )


def _enqueue_new(job_id: uuid.UUID) -> None:
    """Queue a new job (after commit); on failure the job is failed visibly and 503 raised."""
    try:
        _send(job_id)
    except Exception as exc:
        logger.exception("batch job %s could not be queued", job_id)
        BatchJob.objects.filter(pk=job_id, status=BatchStatus.QUEUED).update(
            status=BatchStatus.FAILED,
            error="Not accepted: the batch queue was unavailable. Nothing was scored.",
            finished_at=timezone.now(),
        )
        raise QueueUnavailable(retry_after=30) from exc


# --- Reading jobs -------------------------------------------------------------------------------


def batch_job_get(*, user: Any, key: ApiKey | None, job_id: uuid.UUID | str) -> BatchJob:
    """A job of the caller: created by them (with a key: by that key). 404 otherwise."""
    jobs = BatchJob.objects.select_related("family").filter(pk=job_id)
    if key is not None:
        job = jobs.filter(api_key=key).first()
    else:
        job = jobs.filter(created_by_id=getattr(user, "pk", None)).first()
    if job is None:
        raise NotFound("No such batch job.")
    return job


def batch_job_list(
    *, user: Any, family: ModelFamily | None = None, limit: int = 20
) -> QuerySet[BatchJob]:
    jobs = BatchJob.objects.select_related("family").filter(created_by_id=user.pk)
    if family is not None:
        jobs = jobs.filter(family=family)
    return jobs.order_by("-created_at")[:limit]


def batch_row_errors(*, job: BatchJob, limit: int = MAX_ROW_ERRORS_SHOWN) -> list[dict[str, Any]]:
    return [
        {"row": n, "error": error}
        for n, error in BatchRow.objects.filter(job=job, status=BatchRowStatus.ERROR)
        .order_by("row_number")
        .values_list("row_number", "error")[:limit]
    ]


def batch_result(*, job: BatchJob) -> bytes:
    """The result CSV of a done job (409 before)."""
    if job.status != BatchStatus.DONE or not job.result_sha256:
        raise Conflict(
            f"The batch job is {job.status}; its result is available once it is done.",
            code="not_done",
        )
    return ArtifactStore().read_verified(job.result_sha256)


# --- Running ------------------------------------------------------------------------------------


class _LeaseLost(Exception):
    """Another run took the job over (this one was thought stalled): stop, write nothing."""


class _Stop(Exception):
    """The job cannot go on (suspended, no production version, access ended, input refused)."""


@dataclass
class _Scored:
    number: int
    row: dict[str, Any]
    pseudonym: str
    choice: routing.Choice
    policy_ref: str = ""
    probabilities: list[float] = field(default_factory=list)


def _claim(job_id: uuid.UUID | str, run_id: str, stall_s: float) -> bool:
    """Take the job's lease: queued, released, its heartbeat older than ``stall_s``, or held
    by this same delivery before (a message redelivered because its worker was lost)."""
    now = timezone.now()
    claimable = (
        Q(status=BatchStatus.QUEUED)
        | Q(lease_owner="")
        | Q(lease_owner=run_id)
        | Q(heartbeat_at__lt=now - timedelta(seconds=stall_s))
    )
    with transaction.atomic():
        claimed = (
            BatchJob.objects.filter(pk=job_id, status__in=ACTIVE)
            .filter(claimable)
            .update(
                status=BatchStatus.RUNNING,
                lease_owner=run_id,
                heartbeat_at=now,
                attempts=F("attempts") + 1,
                started_at=Coalesce(F("started_at"), Value(now)),
            )
        )
    return claimed == 1


def _stall_s(stall_s: float | None) -> float:
    return float(_setting("BATCH_STALL_S", 60) if stall_s is None else stall_s)


def run_id_of(task_id: str) -> str:
    """The lease owner of a Celery delivery: the same for a redelivered message."""
    return hashlib.sha256(task_id.encode()).hexdigest()[:32]


def batch_run(
    job_id: uuid.UUID | str, *, stall_s: float | None = None, run_id: str = ""
) -> BatchJob | None:
    """Score a job's remaining rows; None when another run holds it (or it is finished).

    ``run_id`` names the run (the task passes ``run_id_of(task id)``, so that a message
    redelivered after its worker was lost takes the job back at once); a fresh one by default.

    Failures the job cannot recover from (suspension, no production version, access ended,
    refused input) fail it, keeping the rows done so far. Anything else (backend unavailable,
    database errors) releases the lease and propagates: the sweeper resumes the job later.
    """
    run_id = run_id or uuid.uuid4().hex
    if not _claim(job_id, run_id, _stall_s(stall_s)):
        logger.info("batch job %s: not claimed (finished, or another run holds it)", job_id)
        return None
    job = BatchJob.objects.select_related("family", "created_by", "api_key").get(pk=job_id)
    runner = _Runner(job, run_id)
    try:
        runner.run()
    except _LeaseLost:
        logger.warning("batch job %s: lease lost, another run goes on with it", job.pk)
        return None
    except _Stop as stop:
        runner.fail(str(stop))
    except BaseException as exc:
        reason = exc.detail if isinstance(exc, ApplicationError) else type(exc).__name__
        runner.release(f"Interrupted ({reason.rstrip('.')}); it will be resumed.")
        raise
    job.refresh_from_db()
    return job


class _Runner:
    def __init__(self, job: BatchJob, run_id: str) -> None:
        self.job = job
        self.run_id = run_id
        self.family = job.family
        self.user = job.created_by
        self.key = job.api_key
        self.last_push = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        try:
            data = ArtifactStore().read_verified(job.input_sha256)
        except (ArtifactMissing, ArtifactTampered) as exc:
            raise _Stop(f"The uploaded file was refused: {exc.detail}") from exc
        try:
            parsed = _parse_csv(data)
        except ValidationFailed as exc:
            raise _Stop(f"The uploaded file cannot be read: {exc.detail}") from exc
        done = set(BatchRow.objects.filter(job=job).values_list("row_number", flat=True))
        size = max(1, job.chunk_rows)
        started, chunks = time.monotonic(), 0
        for start in range(0, len(parsed.rows), size):
            pending = [r for r in parsed.rows[start : start + size] if r[0] not in done]
            if not pending:
                continue
            self._check_access()
            done.update(self._chunk(parsed.header, pending))
            chunks += 1
        self._finish(parsed)
        logger.info(
            "batch job %s done: %d rows, %d chunks in this run, %.1f s",
            job.pk,
            job.total_rows,
            chunks,
            time.monotonic() - started,
        )

    def fail(self, message: str) -> None:
        logger.warning("batch job %s failed: %s", self.job.pk, message)
        now = timezone.now()
        with transaction.atomic():
            updated = BatchJob.objects.filter(
                pk=self.job.pk, lease_owner=self.run_id, status=BatchStatus.RUNNING
            ).update(status=BatchStatus.FAILED, error=message, finished_at=now, lease_owner="")
            if updated:
                self.job.refresh_from_db()
                self._push(force=True)

    def release(self, message: str) -> None:
        """Give the lease up (the run is interrupted): the next run may claim at once."""
        try:
            BatchJob.objects.filter(pk=self.job.pk, lease_owner=self.run_id).update(
                lease_owner="", error=message
            )
        except Exception:
            logger.exception("batch job %s: lease could not be released", self.job.pk)

    # --- checks ----------------------------------------------------------------------------

    def _check_access(self) -> None:
        """The creator (and key) must still be allowed to predict with the family."""
        user = get_user_model().objects.filter(pk=self.user.pk).first()
        if user is None or not user.is_active:
            raise _Stop("Stopped: the account that submitted the job is no longer active.")
        if self.key is not None:
            key = ApiKey.objects.filter(pk=self.key.pk).first()
            if key is None or not key.is_usable(timezone.now()):
                raise _Stop("Stopped: the API key that submitted the job is no longer valid.")
        allowed = registry_selectors.family_list(
            user=user, action=FamilyAction.PREDICT, key=self.key
        )
        if not allowed.filter(pk=self.family.pk).exists():
            raise _Stop(f"Stopped: predicting with '{self.family.slug}' is no longer allowed.")

    # --- one chunk -------------------------------------------------------------------------

    def _row(self, cells: Mapping[str, str], version: ModelVersion) -> dict[str, Any]:
        """The row for ``version``: features typed, empty cells left out, and any column that
        is neither a feature nor the subject kept as text (``check_row`` then names it)."""
        features = {f["name"]: f for f in version.signature["features"]}
        row: dict[str, Any] = {}
        for name, text in cells.items():
            if name in features:
                value = _coerce(features[name], text)
                if value is not None:
                    row[name] = value
            elif name != self.job.subject_column:
                row[name] = text
        return row

    def _chunk(self, header: list[str], pending: list[tuple[int, list[str]]]) -> list[int]:
        """Score, record and commit one chunk; the row numbers now recorded."""
        job, family = self.job, self.family
        config = routing.routing_for(family)
        try:
            routing.ensure_serving(family, config)
        except routing.FamilySuspended as exc:
            raise _Stop(self._stopped(exc.detail)) from exc
        # Without a canary every row gets the same version: choose once, not once per row.
        shared = (
            None if config.canary_version_id and config.canary_percent else self._choose(config, "")
        )
        scored: list[_Scored] = []
        errors: dict[int, str] = {}
        for number, values in pending:
            if len(values) != len(header):
                errors[number] = (
                    f"row: has {len(values)} values, the header has {len(header)} columns"
                )
                continue
            cells = dict(zip(header, values, strict=True))
            subject = cells.get(job.subject_column, "").strip() if job.subject_column else ""
            if family.consent_purpose and not subject:
                errors[number] = (
                    f"{job.subject_column or 'subject'}: is required "
                    f"(consent for '{family.consent_purpose}')"
                )
                continue
            pseudonym = pseudonymise(subject) if subject else ""
            try:
                policy_ref = policy.run_checks(
                    policy.PredictContext(
                        family=family,
                        user=self.user,
                        subject_pseudonym=pseudonym,
                        purpose=job.purpose,
                        jurisdiction="",
                        n_rows=1,
                    )
                )
            except ApplicationError as exc:  # refused by a policy (e.g. no consent)
                errors[number] = exc.detail
                continue
            choice = shared or self._choose(config, pseudonym or f"{job.pk}:{number}")
            row = self._row(cells, choice.version)
            problems = encoding.check_row(choice.version.signature, row)
            if problems:
                errors[number] = _problems_text(problems)
                continue
            scored.append(_Scored(number, row, pseudonym, choice, policy_ref))
        latency_ms = self._predict(scored)
        return self._commit(pending, scored, errors, latency_ms, config)

    def _choose(self, config: Any, sticky_key: str) -> routing.Choice:
        """The serving version of a row (sticky by subject, as online); a suspended family
        or one without a production version stops the job."""
        try:
            return routing.choose(
                family=self.family, config=config, sticky_key=sticky_key, jurisdiction=""
            )
        except routing.FamilySuspended as exc:
            raise _Stop(self._stopped(exc.detail)) from exc
        except ServiceUnavailable as exc:
            if exc.error_code == "no_production_version":
                raise _Stop(self._stopped(exc.detail)) from exc
            raise

    def _stopped(self, reason: str) -> str:
        self.job.refresh_from_db(fields=["rows_done", "total_rows"])
        return (
            f"Stopped: {reason.rstrip('.')}. {self.job.rows_done} of {self.job.total_rows} "
            "rows were processed; their results are kept."
        )

    def _predict(self, scored: list[_Scored]) -> float:
        """One backend call per serving version (one, or two with a canary); ms taken."""
        started = time.perf_counter()
        by_version: dict[int, list[_Scored]] = {}
        for item in scored:
            by_version.setdefault(item.choice.version.pk, []).append(item)
        for items in by_version.values():
            try:
                probabilities = get_backend().predict(
                    items[0].choice.version, [i.row for i in items]
                )
            except (ArtifactMissing, ArtifactTampered) as exc:
                raise _Stop(self._stopped(f"the model was refused: {exc.detail}")) from exc
            for item, probs in zip(items, probabilities, strict=True):
                item.probabilities = probs
        return (time.perf_counter() - started) * 1000

    def _commit(
        self,
        pending: list[tuple[int, list[str]]],
        scored: list[_Scored],
        errors: dict[int, str],
        latency_ms: float,
        config: Any,
    ) -> list[int]:
        job = self.job
        numbers = [n for n, _ in pending]
        with transaction.atomic():
            # First statement: a write on the job row, so that chunks of one job commit one
            # after the other (row lock; SQLite's write lock), and only under our lease.
            held = BatchJob.objects.filter(
                pk=job.pk, lease_owner=self.run_id, status=BatchStatus.RUNNING
            ).update(heartbeat_at=timezone.now())
            if not held:
                raise _LeaseLost
            existing = set(
                BatchRow.objects.filter(job=job, row_number__in=numbers).values_list(
                    "row_number", flat=True
                )
            )
            rows: list[BatchRow] = []
            decisions = []
            recorded_rows = []
            for item in scored:
                if item.number in existing:
                    continue
                (decision,) = services.build_decisions(
                    family=self.family,
                    version=item.choice.version,
                    route=item.choice.route,
                    user=self.user,
                    key=self.key,
                    request=services.PredictRequest(
                        rows=[item.row],
                        purpose=job.purpose,
                        request_id=f"batch-{job.pk.hex}-{item.number}",
                    ),
                    probabilities=[item.probabilities],
                    latency_ms=latency_ms,
                    pseudonym=item.pseudonym,
                    policy_ref=item.policy_ref,
                )
                decisions.append(decision)
                recorded_rows.append(item.row)
                rows.append(
                    BatchRow(
                        job=job,
                        row_number=item.number,
                        status=BatchRowStatus.OK,
                        decision=decision,
                        label=decision.label,
                        scores=services.reply_scores(decision.scores, config),
                    )
                )
            for number, error in errors.items():
                if number not in existing:
                    rows.append(
                        BatchRow(
                            job=job, row_number=number, status=BatchRowStatus.ERROR, error=error
                        )
                    )
            rows.sort(key=lambda r: r.row_number)
            records.record(decisions)  # the whole chunk: one insert of decisions, one of leaves
            policy.run_recorded_hooks(decisions, recorded_rows)
            BatchRow.objects.bulk_create(rows)
            counts = BatchRow.objects.filter(job=job).aggregate(
                done=Count("id"), failed=Count("id", filter=Q(status=BatchRowStatus.ERROR))
            )
            job.rows_done, job.rows_failed = counts["done"], counts["failed"]
            job.error = ""
            BatchJob.objects.filter(pk=job.pk).update(
                rows_done=job.rows_done, rows_failed=job.rows_failed, error=""
            )
            self._push()
        return numbers

    # --- the end ---------------------------------------------------------------------------

    def _finish(self, parsed: ParsedCsv) -> None:
        job = self.job
        recorded = {
            n: (status, decision_id, label, scores, error)
            for n, status, decision_id, label, scores, error in BatchRow.objects.filter(
                job=job
            ).values_list("row_number", "status", "decision_id", "label", "scores", "error")
        }
        missing = [n for n, _ in parsed.rows if n not in recorded]
        if missing or len(recorded) != len(parsed.rows):
            raise _Stop(
                f"Stopped: {len(missing)} rows have no result (first: {missing[:5]}); "
                "the job's records are inconsistent."
            )
        # Score columns in the model's label order (JSON objects keep no order on PostgreSQL).
        signature = (
            Decision.objects.filter(pk__in=[r[1] for r in recorded.values() if r[1]])
            .values_list("version__signature", flat=True)
            .first()
        )
        labels: list[str] = list((signature or {}).get("output", {}).get("labels", []))
        for _, _, _, scores, _ in recorded.values():
            for label in scores or {}:
                if label not in labels:
                    labels.append(label)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [*parsed.header, "decision_id", "label", *(SCORE_PREFIX + x for x in labels), "error"]
        )
        for number, values in parsed.rows:
            _, decision_id, label, scores, error = recorded[number]
            writer.writerow(
                [
                    *values,
                    str(decision_id or ""),
                    label,
                    *(_score_text((scores or {}).get(x)) for x in labels),
                    error,
                ]
            )
        data = out.getvalue().encode()
        stored = ArtifactStore().put_bytes(data, max_bytes=len(data) + 1, field="result")
        with transaction.atomic():
            updated = BatchJob.objects.filter(
                pk=job.pk, lease_owner=self.run_id, status=BatchStatus.RUNNING
            ).update(
                status=BatchStatus.DONE,
                finished_at=timezone.now(),
                result_sha256=stored.sha256,
                heartbeat_at=timezone.now(),
                lease_owner="",
                error="",
            )
            if not updated:
                raise _LeaseLost
            job.refresh_from_db()
            self._push(force=True)

    # --- live progress ---------------------------------------------------------------------

    def _push(self, *, force: bool = False) -> None:
        """A progress card for the creator's open pages (after commit, at most every
        ``BATCH_PUSH_INTERVAL_S`` unless ``force``)."""
        now = time.monotonic()
        if not force and now - self.last_push < float(_setting("BATCH_PUSH_INTERVAL_S", 1.0)):
            return
        self.last_push = now
        try:
            html = render_job(self.job, oob=True)
        except Exception:
            logger.exception("batch job %s: progress card not rendered", self.job.pk)
            return
        live.push_html(self.job.created_by_id, html, event="batch")


def _score_text(value: Any) -> str:
    return "" if value is None else f"{float(value):.6g}"


def render_job(job: BatchJob, *, oob: bool = False) -> str:
    """The job's card (progress bar, counts, download link); ``oob`` for live updates."""
    return render_to_string("inference/batch_job.html", {"job": job, "oob": oob})


# --- Recovery -----------------------------------------------------------------------------------


def batch_resume_stalled(*, stall_s: float | None = None) -> int:
    """Send again the active jobs whose heartbeat is older than ``stall_s`` (a killed worker's
    message is lost on the file-system broker); a job that used up ``BATCH_MAX_ATTEMPTS`` is
    failed instead. Returns how many jobs were sent."""
    stall = _stall_s(stall_s)
    max_attempts = int(_setting("BATCH_MAX_ATTEMPTS", 10))
    now = timezone.now()
    cutoff = now - timedelta(seconds=stall)
    stalled = BatchJob.objects.filter(
        status__in=ACTIVE, heartbeat_at__lt=cutoff, enqueued_at__lt=cutoff
    )
    sent = 0
    for job in stalled:
        if job.attempts >= max_attempts:
            failed = BatchJob.objects.filter(
                pk=job.pk, status__in=ACTIVE, heartbeat_at__lt=cutoff
            ).update(
                status=BatchStatus.FAILED,
                finished_at=now,
                lease_owner="",
                error=f"Stopped after {job.attempts} interrupted attempts"
                + (f" (last: {job.error})" if job.error else "")
                + f". {job.rows_done} of {job.total_rows} rows were processed.",
            )
            if failed:
                job.refresh_from_db()
                live.push_html(job.created_by_id, render_job(job, oob=True), event="batch")
            continue
        # Claim the re-send itself, so that two sweepers do not both send.
        if not BatchJob.objects.filter(pk=job.pk, enqueued_at=job.enqueued_at).update(
            enqueued_at=now
        ):
            continue
        try:
            _send(job.pk, stall_s=stall)
        except Exception:
            logger.exception("batch job %s could not be re-sent; next sweep tries again", job.pk)
            BatchJob.objects.filter(pk=job.pk).update(enqueued_at=job.enqueued_at)
            continue
        logger.warning(
            "batch job %s resumed: heartbeat %s old, attempt %d",
            job.pk,
            now - job.heartbeat_at,
            job.attempts + 1,
        )
        sent += 1
    return sent
