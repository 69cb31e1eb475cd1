"""FTP transfer benchmark: Satchel's worker and web process vs curl and lftp, same run.

Run by hand: `.venv/bin/python bench/ftp_transfer.py [--size-mib 1024] [--files 1000]`
(quick check: `--size-mib 64 --files 100`). Needs curl and lftp (`apt-get install lftp`).
Uses its own embedded PostgreSQL and Redis under .data/bench, so your data is untouched;
the big files live in a temporary directory that is deleted at the end.

A pyftpdlib server (tests/peers/ftp.py) runs in a process of its own, so it never shares a
GIL with a client. It stands for a remote machine, so by default it is kept from taking
the clients' resources, and from lending them its own: it runs on CPU 0 while everything
else (Satchel, PostgreSQL, Redis, curl, lftp) shares the other CPUs (``--no-pin``: all
share all); its files live on tmpfs (``--server-home``), so its disk's writeback does not
land in a client's round; and it keeps the sizes of uploaded files, not their bytes
(``_SizeOnlyFile``; ``--server-keeps-bytes``). Measured without those, the same upload
took 0.6-1.4 s per GiB by the round, whoever the client. Satchel runs as `make run` does:
uvicorn (``launcher.web_command``) and a real Celery worker (``launcher.worker_command``).
Prints, from one run on this machine:
- --size-mib download and upload: a background transfer (POST /api/v1/ftp/transfers/, the
  worker does the FTP side) vs `curl` (goal: >= 0.9x curl's throughput), in rounds taken in
  turns (medians). The download is timed from the row being queued until it is done (226
  and size checked; its sha256, which follows, is timed too); the upload likewise, from
  queued to done, once the browser's POST is on disk: posted while the worker is stopped,
  paused, then resumed once the worker runs again and is warm.
  The download is compared with `curl -o file`: the worker's download is a file on disk
  (fetched later from the transfer), so curl does the same work; `curl -o /dev/null`,
  which stores nothing, is printed too.
- --files small files uploaded: our engine (two FtpSessions, 2-way parallel, like lftp,
  ``FtpSession.store`` as the file manager does), the browser upload of them as the page
  sends them (--per-post files per POST, three in flight, stored over two FTP sessions),
  and one background transfer per file (POST /api/v1/ftp/transfers/, --per-post files per
  POST, three in flight), vs `lftp mirror -R --parallel=2` (goal: >= 1.0x lftp). The
  background transfers are measured twice: queued while the worker is stopped, then
  drained by it (the site's runners: the figure compared with lftp, which also starts with
  every file at hand), and posted while the worker runs (end to end, the POSTs included).
- peak RSS of the web process during a --size-mib browser upload (multipart POST to
  /api/v1/ftp/sites/{id}/upload/, streamed by curl -F) (goal: < 150 MB at 1 GiB).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SATCHEL_DATA_DIR", str(REPO / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

USER, PASSWORD = "bench", "bench-password"
MIB = 1024 * 1024


class _SizeOnlyFile:
    """What the server writes an upload into when it keeps sizes, not bytes: each write
    extends a sparse file (``ftruncate``), so names and sizes are right for the clients'
    checks, while no page of memory is touched per byte. Why: the server stands for a
    remote machine, but here it shares this one's memory, and on this VM (a balloon with
    free page reporting) a freshly allocated page that the host had taken back costs a
    host fault on first touch: measured ~0.5 s more per GiB written, charged to whichever
    client ran after a large allocation (the upload right after its 1 GiB POST, say)."""

    def __init__(self, path: str, mode: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT
        if "r" in mode:
            flags = os.O_RDWR
        elif "w" in mode:
            flags |= os.O_TRUNC
        self.fd = os.open(path, flags, 0o644)
        self.name = path
        self.closed = False
        self.size = os.fstat(self.fd).st_size
        self.position = self.size if "a" in mode else 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def write(self, data: bytes) -> int:
        self.position += len(data)
        if self.position > self.size:
            os.ftruncate(self.fd, self.position)
            self.size = self.position
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def _ftp_server(
    home: str, port_out, stop, cpus: set[int] | None = None, sizes_only: bool = False
) -> None:
    """pyftpdlib in its own process (its own GIL), on ``cpus`` when given: serves ``home``
    for USER; with ``sizes_only``, uploads keep their sizes, not their bytes."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    sys.path.insert(0, str(REPO))
    import logging

    logging.disable(logging.CRITICAL)
    from pyftpdlib.filesystems import AbstractedFS

    from tests.peers.ftp import FTPServer

    class SizeOnlyFS(AbstractedFS):
        def open(self, filename: str, mode: str):
            if "w" in mode or "a" in mode or "+" in mode:
                return _SizeOnlyFile(filename, mode)
            return super().open(filename, mode)

    server = FTPServer(passive_port_count=200)
    if sizes_only:
        server.handler.abstracted_fs = SizeOnlyFS
    server.add_user(USER, PASSWORD, home=home)
    with server:
        port_out.value = server.port
        stop.wait()


def _start_ftp_server(
    prefix: str,
    server_home: str | None = None,
    cpus: set[int] | None = None,
    sizes_only: bool = False,
):
    """A temporary work folder, and ``_ftp_server`` started on a ``home`` (a temporary
    folder under ``server_home`` when given, else in the work folder): (work, home, port,
    stop, process) — ``port.value`` is set once it listens, ``stop.set()`` ends it; the
    caller removes both folders."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if server_home:
        home = Path(tempfile.mkdtemp(prefix=f"{prefix}home-", dir=server_home))
    else:
        home = work / "home"
        home.mkdir()
    spawn = multiprocessing.get_context("spawn")
    port, stop = spawn.Value("i", 0), spawn.Event()
    server = spawn.Process(
        target=_ftp_server, args=(str(home), port, stop, cpus, sizes_only), daemon=True
    )
    server.start()
    return work, home, port, stop, server


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _in_lanes(work, parts: list) -> float:
    """``work(part)`` for each part in threads of its own, at once; the seconds it took."""
    threads = [threading.Thread(target=work, args=(part,)) for part in parts]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        block = os.urandom(MIB)
        n = 0
        while left > 0:
            # A fresh first 16 bytes per MiB: no two blocks alike, without urandom's cost.
            piece = n.to_bytes(16, "big") + block[16 : min(MIB, left)]
            out.write(piece)
            left -= len(piece)
            n += 1


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Authorization": f"Token {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:500]!r}")
        return json.loads(payload) if payload else {}

    def curl_form(self, path: str, fields: list[str]) -> tuple[float, dict | list]:
        """A multipart POST streamed from disk by curl; (seconds, JSON reply)."""
        command = [
            "curl", "-s", "-S", "--fail-with-body", "-H", f"Authorization: Token {self.token}",
            "-H", "Expect:",
        ]  # fmt: skip
        for field in fields:
            command += ["-F", field]
        command.append(f"http://127.0.0.1:{self.port}{path}")
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True)
        if result.returncode:
            reply = result.stdout[:300]
            raise RuntimeError(f"POST {path}: curl exit {result.returncode}: {reply!r}")
        return time.perf_counter() - start, json.loads(result.stdout)

    def post_files(
        self, path: str, files: list[tuple[str, bytes]], fields: dict[str, str] | None = None
    ) -> bytes:
        """A multipart POST of in-memory files (built first, as a browser's FormData is),
        after the form ``fields``; the reply's body."""
        boundary = "satchel-bench-boundary-7d1f"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            .encode()
            for name, value in (fields or {}).items()
        ]  # fmt: skip
        parts += [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
            for name, data in files
        ]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {
            "Authorization": f"Token {self.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {payload[:500]!r}")
        return payload


def _wait_done(ids: list[int], timeout: float = 3600) -> float:
    """Poll the database (one small query every 20 ms: polling the API instead would cost
    the web process and PostgreSQL CPU that the transfer competes for, and so would an ORM
    query naming a thousand ids) until every transfer is done; returns the time it
    happened."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE state <> 'done'),"
                " min(id) FILTER (WHERE state IN ('failed', 'cancelled'))"
                " FROM ftpcore_transfer WHERE id = ANY(%s)",
                [ids],
            )
            waiting, stopped = cursor.fetchone()
            if not waiting:
                return time.perf_counter()
            if stopped is not None:
                cursor.execute(
                    "SELECT state, last_error FROM ftpcore_transfer WHERE id = %s", [stopped]
                )
                state, error = cursor.fetchone()
                raise RuntimeError(f"transfer {stopped} {state}: {error}")
            if time.monotonic() > deadline:
                raise TimeoutError("transfers not done in time")
            time.sleep(0.02)


def _wait_hashed(transfer_id: int, timeout: float = 600) -> float:
    """When the transfer's sha256 is there (a big download's follows its "done")."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT sha256 FROM ftpcore_transfer WHERE id = %s", [transfer_id])
            if cursor.fetchone()[0]:
                return time.perf_counter()
            time.sleep(0.02)
    raise TimeoutError("no sha256 in time")


def _worker_seconds(transfer_id: int) -> float:
    from ftpcore.models import Transfer

    row = Transfer.objects.get(pk=transfer_id)
    return (row.finished_at - row.started_at).total_seconds()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the web server did not start")


class RssSampler(threading.Thread):
    """Peak RSS of a process tree (the web process and any children), every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopping = threading.Event()

    def rss(self) -> int:
        total = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(Exception):  # a child that just exited
                total += process.memory_info().rss
        return total

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024, help="big file size")
    parser.add_argument("--files", type=int, default=1000, help="small files")
    parser.add_argument("--file-kib", type=int, default=4, help="small file size")
    parser.add_argument("--per-post", type=int, default=100, help="files per browser POST")
    parser.add_argument("--rounds", type=int, default=3, help="rounds taken in turns")
    parser.add_argument("--skip", default="", help="comma list of: big,small,rss")
    parser.add_argument(
        "--server-home",
        default="/dev/shm" if os.path.isdir("/dev/shm") else "",
        help="where the FTP server's files live (tmpfs by default; '' = the work folder)",
    )
    parser.add_argument(
        "--server-keeps-bytes",
        action="store_true",
        help="the server writes uploads' bytes (default: sizes only, see _SizeOnlyFile)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the FTP server share the CPUs (default: it gets CPU 0, everything else the rest)",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    size = args.size_mib * MIB

    server_cpus = None
    cpus = os.sched_getaffinity(0)
    if not args.no_pin and len(cpus) >= 2:
        # The server stands for a remote machine: a core of its own, as it would have;
        # Satchel (web, worker, PostgreSQL, Redis: started below, so they inherit this) and
        # curl / lftp share the others.
        server_cpus = {min(cpus)}
        os.sched_setaffinity(0, cpus - server_cpus)
    work, home, port, stop, server = _start_ftp_server(
        "satchel-bench-ftp-", args.server_home, server_cpus, sizes_only=not args.server_keeps_bytes
    )

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from ftpcore import services
    from ftpcore.models import FtpSite
    from ftpcore.protocols import ftp
    from ftpcore.transfers import transfer_dir
    from webapp import launcher

    call_command("migrate", verbosity=0)
    owner, _ = get_user_model().objects.get_or_create(username="bench-ftp")
    FtpSite.objects.filter(owner=owner).delete()
    token, _ = Token.objects.get_or_create(user=owner)
    while not port.value:
        time.sleep(0.05)
    site = services.site_create(
        owner=owner, name="bench", host="127.0.0.1", port=port.value, security="none",
        username=USER, password=PASSWORD,
    )  # fmt: skip
    url = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port.value}"

    env = launcher.child_environment(settings)
    logs = Path(settings.DATA_DIR)
    logs.mkdir(parents=True, exist_ok=True)
    web_port = _free_port()
    children: dict[str, subprocess.Popen] = {}

    def launch(name: str) -> None:
        """launcher's commands and environment (as `make run`); output goes to log files."""
        command = {
            "web": launcher.web_command("127.0.0.1", web_port, 1),
            "worker": launcher.worker_command(concurrency=settings.WORKER_CONCURRENCY),
        }[name]
        log = open(logs / f"bench-ftp-{name}.log", "ab")  # noqa: SIM115
        children[name] = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )

    launch("web")
    launch("worker")
    web = children["web"]
    report: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    try:
        _wait_http(web_port)
        api = Api(web_port, token.key)
        (home / "warm.txt").write_bytes(b"warm\n")

        def warm_worker() -> None:
            """A tiny download through the worker: it is started and has served one."""
            row = api.call("POST", "/api/v1/ftp/transfers/",
                           {"kind": "download", "site": site.pk, "path": "/warm.txt"})  # fmt: skip
            _wait_done([row["id"]], timeout=120)

        warm_worker()
        say(f"load at start: {_load()}")

        if "big" not in skip:
            source = work / "source.bin"
            _random_file(source, size)
            shutil.copyfile(source, home / "big.bin")
            mib = size / MIB
            say(f"\n{mib:.0f} MiB over loopback FTP (pyftpdlib in its own process):")

            disk = work / "curl-down.bin"

            def curl_to_file() -> float:
                os.sync()  # each run that writes 1 GiB starts with no dirty pages of the last
                seconds = _timed(["curl", "-s", "-S", "-o", str(disk), f"{url}/big.bin"])
                disk.unlink()
                return seconds

            def ours_download() -> tuple[float, float]:
                os.sync()
                start = time.perf_counter()
                body = {"kind": "download", "site": site.pk, "path": "/big.bin"}
                row = api.call("POST", "/api/v1/ftp/transfers/", body)
                seconds = _wait_done([row["id"]]) - start
                hashed = _wait_hashed(row["id"]) - start
                shutil.rmtree(transfer_dir(owner_id=owner.pk, transfer_id=row["id"]), True)
                return seconds, _worker_seconds(row["id"]), hashed

            rounds = []
            for _ in range(args.rounds):  # in turns: the disk's pace changes by the second
                null = _timed(["curl", "-s", "-S", "-o", "/dev/null", f"{url}/big.bin"])
                rounds.append((curl_to_file(), *ours_download(), null))
            curl_file_s, ours_down, worker_down, hashed_down, curl_null_s = (
                statistics.median(c) for c in zip(*rounds, strict=True)
            )
            say(
                f"  download, medians of {args.rounds} rounds in turns (s: "
                f"{', '.join(f'{r[0]:.2f}/{r[1]:.2f}' for r in rounds)} curl/Satchel):"
            )
            say(f"            curl -o file:      {mib / curl_file_s:7.1f} MiB/s")
            say(f"            Satchel transfer:  {mib / ours_down:7.1f} MiB/s  ({ours_down:.2f} s "
                f"queued->done: 226 and size checked)   ratio {curl_file_s / ours_down:.2f}x "
                f"curl -o file (goal >= 0.90x: both write the file)")  # fmt: skip
            say(f"            (its sha256 followed at {hashed_down:.2f} s = "
                f"{mib / hashed_down:.1f} MiB/s, {curl_file_s / hashed_down:.2f}x; the worker's "
                f"own time, claim -> done: {worker_down:.2f} s)")  # fmt: skip
            say(
                f"            curl -o /dev/null: {mib / curl_null_s:7.1f} MiB/s: Satchel "
                f"{curl_null_s / ours_down:.2f}x (curl stores nothing, hashes nothing)"
            )

            def curl_upload() -> float:
                os.sync()
                seconds = _timed(["curl", "-s", "-S", "-T", str(source), f"{url}/curl-up.bin"])
                (home / "curl-up.bin").unlink()
                return seconds

            def ours_upload() -> tuple[float, float, float]:
                """The browser's POST while the worker is stopped, paused (as a user may);
                then, with the worker started again and warm and the file on disk (as curl's
                source is: with the FTP server on the same disk, writing it back would compete
                with the server's writes, which a remote server does not), resumed and timed
                from queued to done, as the download is. (POST, queued->done, claim->done.)"""
                launcher.stop(children["worker"])
                post, row = api.curl_form(
                    "/api/v1/ftp/transfers/",
                    ["kind=upload", f"site={site.pk}", "path=/ours-up.bin", f"file=@{source}"],
                )
                api.call("POST", f"/api/v1/ftp/transfers/{row['id']}/pause/", {})
                launch("worker")
                warm_worker()
                time.sleep(float(os.environ.get("BENCH_SETTLE", "0")))
                os.sync()
                start = time.perf_counter()
                api.call("POST", f"/api/v1/ftp/transfers/{row['id']}/resume/", {})
                seconds = _wait_done([row["id"]]) - start
                (home / "ours-up.bin").unlink()
                shutil.rmtree(transfer_dir(owner_id=owner.pk, transfer_id=row["id"]), True)
                return post, seconds, _worker_seconds(row["id"])

            rounds = [(curl_upload(), *ours_upload()) for _ in range(args.rounds)]
            curl_up, post, ours_up, worker_up = (
                statistics.median(c) for c in zip(*rounds, strict=True)
            )
            say(
                f"  upload, medians of {args.rounds} rounds in turns (s: "
                f"{', '.join(f'{r[0]:.2f}/{r[2]:.2f}' for r in rounds)} curl/Satchel):"
            )
            say(f"            curl -T:           {mib / curl_up:7.1f} MiB/s")
            say(f"            Satchel transfer:  {mib / ours_up:7.1f} MiB/s  ({ours_up:.2f} s"
                f" queued->done)   ratio {curl_up / ours_up:.2f}x curl (goal >= 0.90x)"
            )  # fmt: skip
            say(f"            (the worker's own time, claim -> done: {worker_up:.2f} s)")
            say(f"            (before that, the browser->Satchel POST of the file took "
                f"{post:.2f} s = {mib / post:.1f} MiB/s)")  # fmt: skip
            say(f"  load: {_load()}")

        if "rss" not in skip:
            source = work / "source.bin"
            if not source.exists():
                _random_file(source, size)
            sampler = RssSampler(web.pid)
            base = sampler.rss()
            sampler.start()
            seconds, _ = api.curl_form(
                f"/api/v1/ftp/sites/{site.pk}/upload/?path=/", [f"file=@{source};filename=rss.bin"]
            )
            sampler.stopping.set()
            sampler.join()
            (home / "rss.bin").unlink()
            rate = size / MIB / seconds
            say(f"\nbrowser upload of {size / MIB:.0f} MiB (POST /api/v1/ftp/sites/{{id}}/upload/"
                f", uvicorn, 1 process): {seconds:.2f} s = {rate:.1f} MiB/s")  # fmt: skip
            say(f"  web process RSS: {base / MIB:.0f} MiB before, peak {sampler.peak / MIB:.0f} MiB"
                f" (goal < 150 MB = {150e6 / MIB:.0f} MiB)   load: {_load()}")  # fmt: skip
        (work / "source.bin").unlink(missing_ok=True)
        (home / "big.bin").unlink(missing_ok=True)

        if "small" not in skip:
            n = args.files
            local = work / "small"
            local.mkdir()
            for i in range(n):
                (local / f"file-{i:05d}.dat").write_bytes(os.urandom(args.file_kib * 1024))
            names = sorted(p.name for p in local.iterdir())
            say(
                f"\n{n} files of {args.file_kib} KiB uploaded, {args.rounds} rounds taken in turns:"
            )
            config = services.ftp_config(site)
            per = args.per_post
            contents = [(name, (local / name).read_bytes()) for name in names]
            batches = [contents[k : k + per] for k in range(0, n, per)]

            def lftp_round(folder: str) -> float:
                script = f"set ftp:ssl-allow no; mirror -R --parallel=2 {local} /{folder}; quit"
                seconds = _timed(["lftp", "-e", script, url])
                assert len(list((home / folder).iterdir())) == n
                return seconds

            def engine_round(folder: str) -> float:
                """Two FtpSessions, 2-way parallel like lftp, storing as the file manager does."""
                with ftp.FtpSession(config) as session:
                    session.mkdir(f"/{folder}")

                def part(chunk: list[str]) -> None:
                    with ftp.FtpSession(config) as session:
                        for name in chunk:
                            with open(local / name, "rb") as source_file:
                                size = os.fstat(source_file.fileno()).st_size
                                session.store(f"/{folder}/{name}", source_file, size=size)

                return _in_lanes(part, [names[k::2] for k in (0, 1)])

            def browser_round(folder: str) -> tuple[float, float, float]:
                """As the page sends a dropped folder (static/js/files.js): small files share
                a POST (BATCH_FILES), three POSTs in flight (CONCURRENCY), of which the server
                stores two at once (``upload_slots``: two FTP sessions, like lftp's). Also the
                CPU time the web process and the FTP server spent meanwhile."""
                (home / folder).mkdir()
                upload_path = f"/api/v1/ftp/sites/{site.pk}/upload/?path=/{folder}/"

                def lane(mine: list[list[tuple[str, bytes]]]) -> None:
                    for batch in mine:
                        api.post_files(upload_path, batch)

                web_cpu, ftp_cpu = _cpu_seconds(web.pid), _cpu_seconds(server.pid)
                seconds = _in_lanes(lane, [batches[k::3] for k in range(3)])
                web_cpu, ftp_cpu = (
                    _cpu_seconds(web.pid) - web_cpu,
                    _cpu_seconds(server.pid) - ftp_cpu,
                )
                assert len(list((home / folder).iterdir())) == n
                return seconds, web_cpu, ftp_cpu

            def post_all(folder: str) -> list[int]:
                """Background uploads as a script would send them: --per-post files per
                POST, three POSTs in flight (as the page sends its uploads)."""
                (home / folder).mkdir()
                fields = {"kind": "upload", "site": str(site.pk), "path": f"/{folder}/"}
                ids: list[int] = []

                def lane(mine: list[list[tuple[str, bytes]]]) -> None:
                    for batch in mine:
                        reply = api.post_files("/api/v1/ftp/transfers/", batch, fields)
                        ids.extend(row["id"] for row in json.loads(reply))

                _in_lanes(lane, [batches[k::3] for k in range(3)])
                return ids

            def background_round(folder: str) -> tuple[float, float, float, float]:
                """(drained, drained from the worker's launch, end to end, of which POSTs)."""
                from django.db.models import Max, Min

                from ftpcore.models import Transfer

                # Queued while no worker runs, then drained: the runners' own speed.
                launcher.stop(children["worker"])
                ids = post_all(f"{folder}-drained")
                launch("worker")
                booted = time.perf_counter()
                drained_end = _wait_done(ids)
                assert len(list((home / f"{folder}-drained").iterdir())) == n
                span = Transfer.objects.filter(pk__in=ids).aggregate(
                    first=Min("started_at"), last=Max("finished_at")
                )
                drained = (span["last"] - span["first"]).total_seconds()
                # Posted while the worker runs: end to end, the POSTs included.
                start_posting = time.perf_counter()
                ids = post_all(f"{folder}-posted")
                posted = time.perf_counter() - start_posting
                background = _wait_done(ids) - start_posting
                assert len(list((home / f"{folder}-posted").iterdir())) == n
                return drained, drained_end - booted, background, posted

            rounds = []
            for r in range(args.rounds):
                lftp_s = lftp_round(f"lftp-{r}")
                engine_s = engine_round(f"engine-{r}")
                browser_s, web_cpu, ftp_cpu = browser_round(f"browser-{r}")
                drained_s, launched_s, background_s, posted_s = background_round(f"bg-{r}")
                rounds.append((lftp_s, engine_s, browser_s, drained_s, launched_s, background_s,
                               posted_s))  # fmt: skip
                say(f"  round {r + 1}: lftp {lftp_s:.2f} s, engine {engine_s:.2f} s "
                    f"({lftp_s / engine_s:.2f}x), browser {browser_s:.2f} s "
                    f"({lftp_s / browser_s:.2f}x; CPU: web process {web_cpu:.2f} s, FTP server "
                    f"{ftp_cpu:.2f} s), queued drained {drained_s:.2f} s "
                    f"({lftp_s / drained_s:.2f}x), background {background_s:.2f} s "
                    f"({lftp_s / background_s:.2f}x)")  # fmt: skip
            lftp, engine, browser, drained, launched, background, posted = (
                statistics.median(c) for c in zip(*rounds, strict=True)
            )

            say(f"  medians:\n  lftp mirror -R --parallel=2:       {lftp:6.2f} s "
                f"{n / lftp:7.1f} files/s")  # fmt: skip
            say(f"  Satchel engine, 2 sessions:        {engine:6.2f} s {n / engine:7.1f} files/s"
                f"   ratio {lftp / engine:.2f}x lftp")  # fmt: skip
            say(f"  Satchel browser upload:            {browser:6.2f} s {n / browser:7.1f} "
                f"files/s   ratio {lftp / browser:.2f}x lftp (goal >= 1.0x; as the page sends "
                f"them: {per} files per POST, 3 in flight, 2 FTP sessions)")  # fmt: skip
            say(f"  Satchel queued transfers drained:  {drained:6.2f} s {n / drained:7.1f} files/s"
                f"   ratio {lftp / drained:.2f}x lftp (goal >= 1.0x; first start -> last "
                f"finish; {launched:.2f} s from the worker's launch)")  # fmt: skip
            say(f"  Satchel background transfers:      {background:6.2f} s "
                f"{n / background:7.1f} files/s   ratio {lftp / background:.2f}x lftp "
                f"(end to end: {per} files per POST, 3 in flight, {posted:.2f} s of POSTs)"
            )  # fmt: skip
            say(f"  load: {_load()}")
    finally:
        for child in children.values():
            launcher.stop(child)
        stop.set()
        server.join(15)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(Path(settings.DATA_DIR) / "transfers" / str(owner.pk), ignore_errors=True)
    print("\nsummary:\n" + "\n".join(report))


if __name__ == "__main__":
    main()
