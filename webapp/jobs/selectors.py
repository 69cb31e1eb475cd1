from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from webapp.jobs.models import Job


def job_list(*, user) -> QuerySet[Job]:
    return Job.objects.filter(owner=user)


def job_get(*, user, job_id: int) -> Job:
    """The user's job, or 404 — another user's job is indistinguishable from none."""
    return get_object_or_404(job_list(user=user), pk=job_id)
