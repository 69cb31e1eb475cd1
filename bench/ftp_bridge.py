"""Mail and FTP together (mailcore/ftp_bridge.py) vs curl, same run, loopback.

Run by hand: `.venv/bin/python bench/ftp_bridge.py [--size-mib 24] [--rounds 3]`.
Creates a throwaway database (test_satchel_bench_bridge_<pid>) on DATABASE_URL (or the
embedded PostgreSQL) and drops it at the end. pyftpdlib runs in a process of its own.
Prints, median of --rounds:
- attach from FTP: ``upload_create_from_ftp`` (RETR streamed into an Upload file, with the
  size cap) vs `curl -o file` of the same file (goal: >= 0.9x curl);
- save to FTP: the job's store step (STOR to a hidden name, list, RNTO; progress written to
  the job row) vs `curl -T` (goal: >= 0.9x curl), and the engine's bare STOR for reference.
  The IMAP fetch is not part of it.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("SATCHEL_DATA_DIR", str(REPO / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

from ftp_transfer import MIB, PASSWORD, USER, _random_file, _start_ftp_server, _timed  # noqa: E402


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=24, help="file size (the cap is 25)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB

    work, home, port, stop, server = _start_ftp_server("satchel-bench-bridge-")

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test.utils import setup_databases, teardown_databases

    settings.DATABASES["default"]["TEST"]["NAME"] = f"test_satchel_bench_bridge_{os.getpid()}"
    databases = setup_databases(verbosity=0, interactive=False)
    try:
        from ftpcore.models import FtpSite
        from ftpcore.protocols import ftp
        from ftpcore.services import ftp_config
        from mailcore import ftp_bridge
        from webapp.jobs.models import Job
        from webapp.jobs.services import job_create

        settings.UPLOAD_MAX_BYTES = size + 1
        owner = get_user_model().objects.create_user("bench-bridge")
        while not port.value:
            time.sleep(0.05)
        site = FtpSite.objects.create(
            owner=owner, name="bench", host="127.0.0.1", port=port.value,
            username=USER, password=PASSWORD,
        )  # fmt: skip
        url = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port.value}"
        source = work / "source.bin"
        _random_file(source, size)
        os.link(source, home / "big.bin")
        data = source.read_bytes()
        mib = size / MIB
        print(f"{mib:.0f} MiB over loopback FTP, median of {args.rounds} rounds")

        curl_down, ours_down = [], []
        for _ in range(args.rounds):
            target = work / "curl-down.bin"
            curl_down.append(_timed(["curl", "-s", "-S", "-o", str(target), f"{url}/big.bin"]))
            target.unlink()
            start = time.perf_counter()
            upload = ftp_bridge.upload_create_from_ftp(owner=owner, site=site, path="/big.bin")
            ours_down.append(time.perf_counter() - start)
            assert upload.size == size
            ftp_bridge.upload_discard(upload=upload)
        c, o = _median(curl_down), _median(ours_down)
        print(f"  attach from FTP  curl -o file: {mib / c:7.1f} MiB/s ({c:.2f} s)")
        print(f"                   Satchel:      {mib / o:7.1f} MiB/s ({o:.2f} s)"
              f"   ratio {c / o:.2f}x curl (goal >= 0.90x)")  # fmt: skip

        curl_up, ours_up, engine_up = [], [], []
        config = ftp_config(site)
        for n in range(args.rounds):
            curl_up.append(_timed(["curl", "-s", "-S", "-T", str(source), f"{url}/up-{n}.bin"]))
            start = time.perf_counter()
            with ftp.FtpSession(config) as session:
                session.upload(f"/engine-{n}.bin", io.BytesIO(data), size=size, temporary=False)
            engine_up.append(time.perf_counter() - start)
            job = job_create(owner=owner, kind=Job.Kind.ATTACHMENT_SAVE_TO_FTP, unit="bytes")
            start = time.perf_counter()
            final = ftp_bridge._store(job, site, f"/saved-{n}.bin", "saved.bin", data)
            ours_up.append(time.perf_counter() - start)
            assert (home / final.lstrip("/")).stat().st_size == size
        c, o = _median(curl_up), _median(ours_up)
        e = _median(engine_up)
        print(f"  save to FTP      curl -T:      {mib / c:7.1f} MiB/s ({c:.2f} s)")
        print(f"                   engine STOR:  {mib / e:7.1f} MiB/s ({e:.2f} s, one session, "
              f"no job)")  # fmt: skip
        print(f"                   Satchel:      {mib / o:7.1f} MiB/s ({o:.2f} s)"
              f"   ratio {c / o:.2f}x curl (goal >= 0.90x)")  # fmt: skip
    finally:
        teardown_databases(databases, verbosity=0)
        stop.set()
        server.join(timeout=10)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
