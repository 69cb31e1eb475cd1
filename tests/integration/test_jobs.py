import time
from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.jobs.models import Job
from webapp.jobs.services import job_cancel, job_claim, job_create, jobs_sweep_stale


@pytest.mark.django_db
def test_another_users_job_is_404(alice, bob, api_as):
    job = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    assert api_as(alice).get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    assert api_as(bob).get(f"/api/v1/jobs/{job.pk}/").status_code == 404
    assert api_as(bob).post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 404
    assert api_as(bob).get("/api/v1/jobs/").json()["results"] == []


@pytest.mark.django_db
def test_cancelling_a_queued_job_stops_it_before_it_runs(alice, api_as):
    job = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    response = api_as(alice).post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert job_claim(job_id=job.pk) is None


@pytest.mark.django_db
def test_a_job_is_claimed_once(alice):
    job = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    assert job_claim(job_id=job.pk).state == Job.State.RUNNING
    assert job_claim(job_id=job.pk) is None


@pytest.mark.django_db
def test_cancelling_a_running_job_asks_it_to_stop(alice):
    job = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    job_claim(job_id=job.pk)
    assert job_cancel(job=job).cancel_requested is True


@pytest.mark.django_db
def test_the_sweeper_fails_jobs_whose_worker_went_silent(alice, settings):
    settings.JOB_LEASE_SECONDS = 60
    silent = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    alive = job_create(owner=alice, kind=Job.Kind.CONNECTIVITY_CHECK)
    job_claim(job_id=silent.pk)
    job_claim(job_id=alive.pk)
    Job.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert jobs_sweep_stale() == 1
    silent.refresh_from_db()
    alive.refresh_from_db()
    assert silent.state == Job.State.FAILED
    assert silent.error == "The worker running this job stopped responding."
    assert alive.state == Job.State.RUNNING


@pytest.mark.django_db(transaction=True)
def test_connectivity_check_runs_on_a_real_worker(alice, api_as, celery_worker):
    response = api_as(alice).post("/api/v1/jobs/connectivity-check/")
    assert response.status_code == 202
    job_id = response.json()["job"]["id"]
    assert response.json()["job"]["state"] == "queued"
    job = _wait_until_finished(job_id)
    assert job.state == Job.State.DONE, job.error
    assert (job.done, job.total, job.unit) == (5, 5, "checks")
    names = [check["name"] for check in job.result["checks"]]
    assert names == ["Database", "Message broker", "Live events", "Workers", "Disk space"]
    assert all(check["ok"] for check in job.result["checks"])
    workers = job.result["checks"][3]["detail"]
    assert "queues: default, ftp, mail" in workers


def _wait_until_finished(job_id: int, timeout: float = 30) -> Job:
    deadline = timezone.now() + timedelta(seconds=timeout)
    while timezone.now() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.state in Job.FINISHED_STATES:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {Job.objects.get(pk=job_id).state}")
