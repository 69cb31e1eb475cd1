"""Thin Celery tasks: take an id, claim the row, call one service."""

from celery import shared_task

from webapp.jobs import checks, services


@shared_task
def job_connectivity_check(job_id: int) -> None:
    job = services.job_claim(job_id=job_id)
    if job is not None:
        checks.connectivity_check_run(job=job)


@shared_task
def jobs_sweep_stale() -> int:
    return services.jobs_sweep_stale()
