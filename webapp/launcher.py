"""`make run`: migrate, make the first admin, then run web, worker and beat until Ctrl-C.

`python -m webapp.launcher ROLE` runs one part only, as containers do (docker-compose.yml):
`migrate` (migrations and the first admin, then exit), `web`, `worker`, `beat` or `idle`.

The launcher resolves the configuration once (starting the embedded PostgreSQL and Redis
when DATABASE_URL / REDIS_URL are unset) and hands the effective values to its children,
which run in their own sessions so that Ctrl-C reaches only the launcher; it then stops
them in order (web, beat, worker, idle) and finally the embedded servers it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

STOP_TIMEOUT = 20


def web_command(host: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "webapp.asgi:application",
        "--host", host, "--port", str(port), "--lifespan", "off", "--no-server-header",
        "--workers", str(workers),
    ]  # fmt: skip


def worker_command(*, concurrency: int = 2, name: str = "satchel") -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "webapp.celery:app", "worker",
        "--queues", "default,mail,ftp", "--concurrency", str(concurrency),
        "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def beat_command() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "webapp.celery:app", "beat", "--loglevel", "INFO"]


def idle_command() -> list[str]:
    """The IMAP IDLE supervisor: pushes new mail by asking the worker to sync."""
    return [sys.executable, "-m", "django", "mail_idle"]


def child_environment(settings) -> dict[str, str]:
    """The effective configuration, so children neither start servers nor regenerate keys."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "SATCHEL_ENCRYPTION_KEY": ",".join(settings.ENCRYPTION_KEYS),
        "SATCHEL_DATA_DIR": str(settings.DATA_DIR),
        "DEBUG": "true" if settings.DEBUG else "false",
        "PYTHONUNBUFFERED": "1",
    }


def start(command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(env), start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prepare() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("ensure_admin")


def run_all(settings) -> int:
    prepare()
    env = child_environment(settings)
    processes = {
        "web": start(web_command(settings.HOST, settings.PORT, settings.WEB_CONCURRENCY), env),
        "beat": start(beat_command(), env),
        "worker": start(worker_command(concurrency=settings.WORKER_CONCURRENCY), env),
        "idle": start(idle_command(), env),
    }
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(
        f"\nSatchel is running on http://{settings.HOST}:{settings.PORT}/ "
        f"(admin: http://{settings.HOST}:{settings.PORT}/admin/). Press Ctrl-C to stop.\n",
        flush=True,
    )
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"satchel: {name} exited with code {process.returncode}", file=sys.stderr)
                stopping, exit_code = True, 1
        time.sleep(0.5)
    print("\nStopping Satchel…", flush=True)
    for process in processes.values():
        stop(process)
    return exit_code


def main(argv: list[str]) -> int:
    role = argv[0] if argv else "all"
    roles = {
        "web": lambda s: web_command(s.HOST, s.PORT, s.WEB_CONCURRENCY),
        "worker": lambda s: worker_command(concurrency=s.WORKER_CONCURRENCY),
        "beat": lambda s: beat_command(),
        "idle": lambda s: idle_command(),
    }
    if role not in {"all", "migrate", *roles}:
        print(f"usage: python -m webapp.launcher [all|migrate|{'|'.join(roles)}]", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    from webapp.config import ConfigError

    try:
        import django

        django.setup()
    except ConfigError as exc:
        print(f"satchel: configuration error: {exc}", file=sys.stderr)
        return 2
    from django.conf import settings

    if role == "migrate":
        prepare()
        return 0
    if role in roles:
        command = roles[role](settings)
        os.execve(command[0], command, child_environment(settings))  # noqa: S606 — fixed argv
    return run_all(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
