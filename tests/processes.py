"""Run Satchel's own processes (uvicorn, Celery worker) against the test database.

They are the same commands `make run` starts (webapp.launcher), with the environment
pointing at the database pytest-django created. Tests that use them must commit their data:
mark them `django_db(transaction=True)`.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from webapp import launcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """settings.DATABASE_URL, but naming the test database pytest-django created."""
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


def test_environment(data_dir: Path) -> dict[str, str]:
    env = launcher.child_environment(settings)
    env.update(DATABASE_URL=test_database_url(), SATCHEL_DATA_DIR=str(data_dir))
    env.update(MAIL_IDLE_REFRESH_SECONDS="1")
    return env


class AppProcesses:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self._web: tuple[subprocess.Popen, str] | None = None
        self._worker: subprocess.Popen | None = None
        self._idle: subprocess.Popen | None = None

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 — lives as long as the process
        return subprocess.Popen(
            command,
            env=test_environment(self.data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def web_url(self) -> str:
        if self._web is None:
            port = free_port()
            process = self._start("web", launcher.web_command("127.0.0.1", port))
            url = f"http://127.0.0.1:{port}"
            _wait_for_http(f"{url}/healthz", process, lambda: self.log("web"))
            self._web = (process, url)
        return self._web[1]

    def worker(self) -> subprocess.Popen:
        if self._worker is None:
            self._worker = self._start("worker", launcher.worker_command(name="test"))
            deadline = time.monotonic() + 30
            while " ready." not in self.log("worker"):
                if self._worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Celery worker did not start:\n{self.log('worker')}")
                time.sleep(0.1)
        return self._worker

    def idle(self) -> subprocess.Popen:
        """The IMAP IDLE supervisor (`manage.py mail_idle`), reloading accounts every second."""
        if self._idle is None:
            self._idle = self._start("idle", launcher.idle_command())
        return self._idle

    def stop(self) -> None:
        processes = [self._idle, self._worker, self._web[0] if self._web else None]
        for process in filter(None, processes):
            launcher.stop(process)


def _wait_for_http(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 — loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer:\n{log()}")
        time.sleep(0.1)
