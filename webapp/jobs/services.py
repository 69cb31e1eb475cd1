"""Writes to Job rows. Every change is published to the owner as `job.progress` after commit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.events.publish import event_publish
from webapp.jobs.models import Job

STALE_ERROR = "The worker running this job stopped responding."


class JobCancelled(Exception):
    """Raised inside a running job when its owner asked to stop it."""


def job_event(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "done": job.done,
        "total": job.total,
        "unit": job.unit,
        "error": job.error,
        "result": job.result,
    }


def _publish(job: Job) -> None:
    event_publish(user_id=job.owner_id, event={"type": "job.progress", "job": job_event(job)})


def job_create(*, owner, kind: str, total: int | None = None, unit: str = "") -> Job:
    job = Job.objects.create(owner=owner, kind=kind, total=total, unit=unit)
    _publish(job)
    return job


def job_start_connectivity_check(*, owner) -> Job:
    from webapp.jobs.tasks import job_connectivity_check

    with transaction.atomic():
        job = job_create(owner=owner, kind=Job.Kind.CONNECTIVITY_CHECK, unit="checks")
        transaction.on_commit(lambda: job_connectivity_check.delay(job.pk))
    return job


def job_claim(*, job_id: int) -> Job | None:
    """Move a queued job to running; None if another worker got it or it was cancelled."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return None
    job = Job.objects.get(pk=job_id)
    _publish(job)
    return job


def job_report_progress(*, job: Job, done: int, total: int | None = None) -> None:
    """Record progress and heartbeat; raises JobCancelled when the owner asked to stop."""
    job.done = done
    if total is not None:
        job.total = total
    job.heartbeat_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        done=job.done, total=job.total, heartbeat_at=job.heartbeat_at
    )
    if Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
        _finish(job, Job.State.CANCELLED, error="Cancelled by you.")
        raise JobCancelled
    _publish(job)


def job_finish(*, job: Job, result: dict[str, Any]) -> None:
    job.result = result
    _finish(job, Job.State.DONE)


def job_fail(*, job: Job, error: str, result: dict[str, Any] | None = None) -> None:
    if result is not None:
        job.result = result
    _finish(job, Job.State.FAILED, error=error)


def _finish(job: Job, state: str, *, error: str = "") -> None:
    """Finish an unfinished job; a job already finished (swept, cancelled) or deleted stays so."""
    job.state = state
    job.error = error
    job.finished_at = timezone.now()
    finished = Job.objects.filter(pk=job.pk).exclude(state__in=Job.FINISHED_STATES)
    if finished.update(state=state, error=error, result=job.result, finished_at=job.finished_at):
        _publish(job)


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next progress report."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.state == Job.State.QUEUED:
            _finish(job, Job.State.CANCELLED, error="Cancelled by you.")
        elif job.state == Job.State.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


def jobs_sweep_stale() -> int:
    """Fail running jobs whose worker stopped reporting (killed, machine lost)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_LEASE_SECONDS)
    stale = Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=cutoff)
    count = 0
    for job_id in stale.values_list("pk", flat=True):
        # Conditional: a job that reported in the meantime is not swept.
        swept = stale.filter(pk=job_id).update(
            state=Job.State.FAILED, error=STALE_ERROR, finished_at=now
        )
        if swept:
            _publish(Job.objects.get(pk=job_id))
            count += 1
    return count
