"""The embedded servers `make run` uses when DATABASE_URL / REDIS_URL are unset."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg

from webapp.config import parse_database_url

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from webapp import embedded
print(embedded.{function}(Path(sys.argv[1])), flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(function: str, data_dir: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD.format(function=function), str(data_dir), str(seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def _redis_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "redis" / "redis.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def test_redis_is_shared_and_the_last_process_out_stops_it(tmp_path):
    long_lived = _hold("redis_url", tmp_path, 30)
    url = long_lived.stdout.readline().strip()
    short_lived = _hold("redis_url", tmp_path, 0)
    assert short_lived.stdout.readline().strip() == url
    assert short_lived.wait(30) == 0
    pid = _redis_pid(tmp_path)
    assert pid and psutil.pid_exists(pid), "the first process still needs the server"
    long_lived.send_signal(signal.SIGINT)  # like Ctrl-C: atexit handlers run
    long_lived.wait(30)
    _wait_gone(pid)


def test_postgres_starts_with_a_satchel_database_and_stops_at_exit(tmp_path):
    holder = _hold("postgres_url", tmp_path, 30)
    url = holder.stdout.readline().strip()
    config = parse_database_url(url)
    assert config["NAME"] == "satchel"
    with psycopg.connect(host=config["HOST"], user="postgres", dbname="satchel") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pid = int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0])
    holder.send_signal(signal.SIGINT)
    holder.wait(30)
    _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.1)
