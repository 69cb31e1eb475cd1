"""Shared fixtures: users alice and bob, API clients, and Satchel's own processes.

Test-only keys are set here, before pytest-django loads the settings, so the suite runs the
same way against the embedded servers and against DATABASE_URL / REDIS_URL (CI).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("SATCHEL_ENCRYPTION_KEY", "x2pQKz1m7o0pC8y7oQq9W5cSg0zV1wqJ6mK3eUuQf3Y=")

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.processes import AppProcesses

pytest_plugins = ["tests.peers.fixtures", "tests.mailfactory"]


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """What the app keeps on disk (a transfer's local file...) goes to a folder of this run:
    the test database numbers its rows from 1 again each run, so .data/ would hold files of
    an earlier run's rows under the same ids."""
    from django.conf import settings

    settings.DATA_DIR = tmp_path_factory.mktemp("data")


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", "secret-alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "secret-bob")


@pytest.fixture
def api_as(db):
    """api_as(user) -> an APIClient authenticated with the user's token."""

    def make(user) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture(scope="session")
def app_processes(django_db_setup, django_db_blocker, tmp_path_factory):
    """Satchel's real web server and Celery worker, on the test database."""
    processes = AppProcesses(tmp_path_factory.mktemp("satchel-data"))
    yield processes
    processes.stop()


@pytest.fixture(scope="session")
def live_server_url(app_processes) -> str:
    return app_processes.web_url()


@pytest.fixture(scope="session")
def celery_worker(app_processes):
    return app_processes.worker()


@pytest.fixture(scope="session")
def idle_supervisor(app_processes):
    return app_processes.idle()


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_deadlocks():
    """A transactional test ends with a flush (TRUNCATE of every table). The real worker may
    still be finishing a task it started for that test (a draft's push, a Sent copy) on the
    same rows; PostgreSQL then breaks the deadlock by aborting one side, sometimes the
    flush, whose transaction rolls back whole: so it is simply tried again."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self, **options):
        for attempt in range(5):
            try:
                return original(self, **options)
            except CommandError as exc:
                if attempt == 4 or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """A test database per pytest process, so two runs on one machine never collide."""
    from django.conf import settings

    settings.DATABASES["default"]["TEST"]["NAME"] = f"test_satchel_{os.getpid()}"
