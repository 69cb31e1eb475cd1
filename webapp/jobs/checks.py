"""The connectivity check: proves every moving part of a Satchel install answers.

It runs on a worker and walks the same path every later job walks (PostgreSQL, the Redis
broker, the channel layer that carries live events, the Celery workers and their queues, the
data directory), reporting progress after each step.
"""

from __future__ import annotations

import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from webapp.celery import app as celery_app
from webapp.jobs.models import Job
from webapp.jobs.services import JobCancelled, job_fail, job_finish, job_report_progress

ROUND_TRIPS = 20


def _median_ms(call: Callable[[], Any]) -> float:
    timings = []
    for _ in range(ROUND_TRIPS):
        start = time.perf_counter()
        call()
        timings.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(timings), 3)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
        latency = _median_ms(lambda: cursor.execute("SELECT 1"))
    return f"PostgreSQL {version}, {latency} ms per round trip"


def _check_redis() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        version = client.info("server")["redis_version"]
        latency = _median_ms(client.ping)
    finally:
        client.close()
    return f"Redis {version}, {latency} ms per PING"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    marker = uuid.uuid4().hex
    start = time.perf_counter()
    async_to_sync(layer.send)(channel, {"type": "check", "marker": marker})
    message = async_to_sync(layer.receive)(channel)
    elapsed = round((time.perf_counter() - start) * 1000, 3)
    if message.get("marker") != marker:
        raise RuntimeError("the channel layer returned another message than the one sent")
    return f"live events round trip in {elapsed} ms"


def _check_workers() -> str:
    replies = celery_app.control.inspect(timeout=1).active_queues() or {}
    if not replies:
        raise RuntimeError("no Celery worker answered")
    queues = sorted({q["name"] for worker in replies.values() for q in worker})
    return f"{len(replies)} worker(s) answering, queues: {', '.join(queues)}"


def _check_data_dir() -> str:
    usage = shutil.disk_usage(settings.DATA_DIR if settings.DATA_DIR.exists() else "/")
    free_gib = usage.free / 2**30
    if free_gib < 1:
        raise RuntimeError(f"only {free_gib:.2f} GiB free")
    return f"{free_gib:.1f} GiB free"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("Database", _check_database),
    ("Message broker", _check_redis),
    ("Live events", _check_channel_layer),
    ("Workers", _check_workers),
    ("Disk space", _check_data_dir),
]


def connectivity_check_run(*, job: Job) -> None:
    results: list[dict[str, Any]] = []
    job_report_progress(job=job, done=0, total=len(CHECKS))
    try:
        for index, (name, check) in enumerate(CHECKS, start=1):
            start = time.perf_counter()
            try:
                results.append({"name": name, "ok": True, "detail": check()})
            except Exception as exc:  # a failed check is a finding, not a crash
                results.append(
                    {"name": name, "ok": False, "detail": str(exc) or type(exc).__name__}
                )
            results[-1]["ms"] = round((time.perf_counter() - start) * 1000, 1)
            job_report_progress(job=job, done=index)
    except JobCancelled:
        return
    failed = [r["name"] for r in results if not r["ok"]]
    if failed:
        job_fail(job=job, error=f"Failed: {', '.join(failed)}", result={"checks": results})
    else:
        job_finish(job=job, result={"checks": results})
