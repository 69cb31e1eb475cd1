"""Background FTP transfers: the API, the real Celery worker and real pyftpdlib servers
(one cutting a data connection at 60%, one receiving slowly), the claim's per-site limit,
and the per-site runner draining a batch over at most that many logins."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections, transaction
from pyftpdlib.handlers import ThrottledDTPHandler
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from ftpcore import transfers
from ftpcore.models import FtpSite, Transfer
from tests.peers.certs import CertBundle
from tests.peers.fixtures import USERS, ftp_peer
from tests.peers.ftp import Cut, CuttingDTP, FTPServer

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024
FINISHED = {"done", "failed", "cancelled", "paused"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, not compressible
    return (block * (size // len(block) + 1))[:size]


def make_site(owner, server: FTPServer, name: str = "test") -> FtpSite:
    return FtpSite.objects.create(
        owner=owner,
        name=name,
        host=server.host,
        port=server.port,
        username="alice",
        password=USERS["alice"],
    )


def wait_finished(transfer_id: int, timeout: float = 60) -> Transfer:
    """The row once finished — a done one with its sha256, which a big download gets a
    moment after it is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = Transfer.objects.get(pk=transfer_id)
        if row.state in FINISHED and (row.state != "done" or row.sha256):
            return row
        time.sleep(0.1)
    raise AssertionError(f"transfer {transfer_id} still {row.state} after {timeout}s")


# --------------------------------------------------------------------------- cutting server


@pytest.fixture(scope="module")
def cutting_server(peer_cert: CertBundle) -> Iterator[FTPServer]:
    def customize(server: FTPServer) -> None:
        server.handler.dtp_handler = CuttingDTP
        server.handler.use_sendfile = False  # every byte goes through CuttingDTP.send

    yield from ftp_peer(peer_cert, customize)


@pytest.fixture
def cutting(cutting_server: FTPServer) -> Iterator[FTPServer]:
    cutting_server.clear_homes()
    yield cutting_server
    Cut.download = None
    Cut.upload = None


@pytest.fixture(scope="module")
def slow_server(peer_cert: CertBundle) -> Iterator[FTPServer]:
    """Sends at 512 KiB/s, so a 3 MiB download runs long enough to be paused."""

    def customize(server: FTPServer) -> None:
        server.handler.dtp_handler = type(
            "SlowDTP", (ThrottledDTPHandler,), {"write_limit": 512 * 1024}
        )
        server.handler.use_sendfile = False  # sendfile would bypass the throttle

    yield from ftp_peer(peer_cert, customize)


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch):
    """logins(server) -> the list of user names that log in to that server from now on."""

    def attach(server: FTPServer) -> list[str]:
        seen: list[str] = []
        original = server.handler.on_login

        def on_login(self, username: str) -> None:
            seen.append(username)
            return original(self, username)

        monkeypatch.setattr(server.handler, "on_login", on_login)
        return seen

    return attach


def queue_batch(api, site: FtpSite, files: dict[str, bytes], tmp_path, downloads=()) -> list[int]:
    """Upload transfers of ``files`` (and downloads of ``downloads``) created in one
    transaction, so the worker finds them all queued at once: [ids in creation order]."""
    ids = []
    with transaction.atomic():  # tasks are enqueued when this commits
        for name, data in files.items():
            source = tmp_path / name
            source.write_bytes(data)
            with open(source, "rb") as file:
                created = api.post(
                    "/api/v1/ftp/transfers/",
                    {"kind": "upload", "site": site.pk, "path": "/in/", "file": file},
                    format="multipart",
                )
            assert created.status_code == 201, created.content
            ids.append(created.json()["id"])
        for path in downloads:
            created = api.post(
                "/api/v1/ftp/transfers/",
                {"kind": "download", "site": site.pk, "path": path},
                format="json",
            )
            assert created.status_code == 201, created.content
            ids.append(created.json()["id"])
    return ids


def wait_until(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s")


# --------------------------------------------------------------------------- through the worker


def test_download_is_done_with_the_sources_sha256(celery_worker, ftp, alice, api_as):
    data = payload(5 * MB + 7, seed=1)  # > HASH_INLINE_MAX: hashed once marked done
    (ftp.homes["alice"] / "big file.bin").write_bytes(data)
    site = make_site(alice, ftp)
    api = api_as(alice)
    created = api.post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/big file.bin"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["state"] == "queued" and body["path"] == "/big file.bin"
    row = wait_finished(body["id"])
    assert row.state == "done", row.last_error
    assert row.sha256 == sha(data)
    assert row.bytes_done == row.bytes_total == len(data)
    assert row.attempts == 1 and row.finished_at is not None

    shown = api.get(f"/api/v1/ftp/transfers/{row.pk}/").json()
    assert shown["state"] == "done" and shown["sha256"] == sha(data)
    assert [t["id"] for t in api.get("/api/v1/ftp/transfers/").json()["results"]] == [row.pk]
    response = api.get(f"/api/v1/ftp/transfers/{row.pk}/file/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    assert "big%20file.bin" in response["Content-Disposition"]
    assert sha(b"".join(response.streaming_content)) == sha(data)


def test_upload_is_done_with_the_file_on_the_server(celery_worker, ftp, alice, api_as, tmp_path):
    # Over Django's 2.5 MB kept in memory: spooled to a temporary file, linked into place.
    data = payload(3 * MB + 3, seed=2)
    source = tmp_path / "report.bin"
    source.write_bytes(data)
    (ftp.homes["alice"] / "in").mkdir()
    site = make_site(alice, ftp)
    api = api_as(alice)
    with open(source, "rb") as file:
        created = api.post(
            "/api/v1/ftp/transfers/",
            {"kind": "upload", "site": site.pk, "path": "/in/", "file": file},
            format="multipart",
        )
    assert created.status_code == 201, created.content
    assert created.json()["path"] == "/in/report.bin"
    assert created.json()["sha256"] == sha(data)  # taken as the file arrived
    row = wait_finished(created.json()["id"])
    assert row.state == "done", row.last_error
    stored = ftp.homes["alice"] / "in" / "report.bin"
    assert sha(stored.read_bytes()) == sha(data) == row.sha256
    assert [p.name for p in (ftp.homes["alice"] / "in").iterdir()] == ["report.bin"]
    # A finished upload has no file to fetch.
    assert api.get(f"/api/v1/ftp/transfers/{row.pk}/file/").status_code == 404


def test_upload_needs_a_file(ftp, alice, api_as):
    site = make_site(alice, ftp)
    refused = api_as(alice).post(
        "/api/v1/ftp/transfers/", {"kind": "upload", "site": site.pk, "path": "/x"}, format="json"
    )
    assert refused.status_code == 400
    assert Transfer.objects.count() == 0


def test_several_files_in_one_post_are_queued_as_uploads_into_the_folder(
    celery_worker, ftp, alice, api_as, tmp_path
):
    home = ftp.homes["alice"]
    (home / "in").mkdir()
    files = {f"n{n:02d}.txt": payload(100 + 37 * n, seed=800 + n) for n in range(30)}
    files["big.bin"] = payload(2 * MB, seed=830)  # not small: the temporary name, alone
    sources = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sources.append(open(tmp_path / name, "rb"))  # noqa: SIM115 — closed below
    site = make_site(alice, ftp)
    try:
        created = api_as(alice).post(
            "/api/v1/ftp/transfers/",
            {"kind": "upload", "site": site.pk, "path": "/in", "file": sources},
            format="multipart",
        )
    finally:
        for source in sources:
            source.close()

    assert created.status_code == 201, created.content
    listed = created.json()
    assert [t["path"] for t in listed] == [f"/in/{name}" for name in files]
    assert {t["state"] for t in listed} == {"queued"}
    assert [t["sha256"] for t in listed] == [sha(data) for data in files.values()]
    for transfer in listed:
        row = wait_finished(transfer["id"])
        assert row.state == "done", row.last_error
    for name, data in files.items():
        assert (home / "in" / name).read_bytes() == data


def test_several_files_in_one_post_are_all_refused_for_one_bad_name(ftp, alice, api_as, tmp_path):
    site = make_site(alice, ftp)
    good, reserved = tmp_path / "good.txt", tmp_path / "x.part-satchel"
    for source in (good, reserved):
        source.write_bytes(b"data")
    with open(good, "rb") as one, open(reserved, "rb") as two:
        refused = api_as(alice).post(
            "/api/v1/ftp/transfers/",
            {"kind": "upload", "site": site.pk, "path": "/", "file": [one, two]},
            format="multipart",
        )
    assert refused.status_code == 400
    assert "reserved" in refused.json()["detail"]
    assert Transfer.objects.count() == 0


def test_copy_between_two_folders_of_one_site(celery_worker, ftp, alice, api_as):
    data = payload(5 * MB + 1, seed=3)
    home = ftp.homes["alice"]
    (home / "a").mkdir()
    (home / "b").mkdir()
    (home / "a" / "f.bin").write_bytes(data)
    site = make_site(alice, ftp)
    created = api_as(alice).post(
        "/api/v1/ftp/transfers/",
        {"kind": "copy", "site": site.pk, "path": "/a/f.bin", "target_path": "/b/"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["target_path"] == "/b/f.bin"
    assert created.json()["target_site"] == site.pk
    row = wait_finished(created.json()["id"])
    assert row.state == "done", row.last_error
    assert sha((home / "b" / "f.bin").read_bytes()) == sha(data) == row.sha256
    assert sha((home / "a" / "f.bin").read_bytes()) == sha(data)
    assert sorted(p.name for p in (home / "b").iterdir()) == ["f.bin"]


def test_download_cut_at_60_percent_is_resumed_and_identical(celery_worker, cutting, alice, api_as):
    data = payload(4 * MB + 9, seed=4)
    (cutting.homes["alice"] / "f.bin").write_bytes(data)
    Cut.download = (len(data) * 6 // 10, False)
    site = make_site(alice, cutting)
    created = api_as(alice).post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/f.bin"},
        format="json",
    )
    row = wait_finished(created.json()["id"])
    assert Cut.download is None  # the cut happened
    assert row.state == "done", row.last_error
    assert row.attempts >= 2
    assert row.sha256 == sha(data)
    assert row.bytes_done == len(data)


def test_upload_cut_at_60_percent_is_resumed_and_identical(
    celery_worker, cutting, alice, api_as, tmp_path
):
    data = payload(4 * MB + 5, seed=9)
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    Cut.upload = len(data) * 6 // 10
    site = make_site(alice, cutting)
    with open(source, "rb") as file:
        created = api_as(alice).post(
            "/api/v1/ftp/transfers/",
            {"kind": "upload", "site": site.pk, "path": "/up.bin", "file": file},
            format="multipart",
        )
    row = wait_finished(created.json()["id"])
    assert Cut.upload is None  # the cut happened
    assert row.state == "done", row.last_error
    assert row.attempts >= 2
    stored = cutting.homes["alice"] / "up.bin"
    assert sha(stored.read_bytes()) == sha(data) == row.sha256
    assert [p.name for p in cutting.homes["alice"].iterdir()] == ["up.bin"]


@pytest.mark.parametrize("cut", ["download", "upload"])
def test_copy_between_two_sites_cut_at_60_percent_is_resumed(
    celery_worker, cutting, ftp, alice, api_as, cut
):
    # 9 MiB + 1: the resume point is past a hash checkpoint, so the hash is rewound.
    data = payload(9 * MB + 1, seed=10)
    (ftp.homes["alice"] / "src.bin").write_bytes(data)
    source, target = make_site(alice, ftp, "a"), make_site(alice, cutting, "b")
    if cut == "download":  # the source is the cutting server this time
        (cutting.homes["alice"] / "src.bin").write_bytes(data)
        source, target = target, source
        Cut.download = (len(data) * 6 // 10, False)
    else:
        Cut.upload = len(data) * 6 // 10
    created = api_as(alice).post(
        "/api/v1/ftp/transfers/",
        {
            "kind": "copy",
            "site": source.pk,
            "path": "/src.bin",
            "target_site": target.pk,
            "target_path": "/copied.bin",
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    row = wait_finished(created.json()["id"])
    assert Cut.download is None and Cut.upload is None
    assert row.state == "done", row.last_error
    assert row.attempts >= 2
    home = (ftp if cut == "download" else cutting).homes["alice"]
    assert sha((home / "copied.bin").read_bytes()) == sha(data) == row.sha256


def test_missing_file_fails_with_550_and_retry_after_fixing_it_is_done(
    celery_worker, ftp, alice, api_as
):
    site = make_site(alice, ftp)
    api = api_as(alice)
    created = api.post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/missing.txt"},
        format="json",
    )
    row = wait_finished(created.json()["id"])
    assert row.state == "failed"
    assert "550" in row.last_error
    assert "—" in row.last_error  # the server's words, then the plain explanation
    assert row.attempts == 1  # a refusal is not retried
    shown = api.get(f"/api/v1/ftp/transfers/{row.pk}/").json()
    assert "550" in shown["last_error"]

    data = payload(MB, seed=5)
    (ftp.homes["alice"] / "missing.txt").write_bytes(data)
    retried = api.post(f"/api/v1/ftp/transfers/{row.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    row = wait_finished(row.pk)
    assert row.state == "done", row.last_error
    assert row.sha256 == sha(data) and row.last_error == ""


def test_cancelled_while_queued_never_runs(celery_worker, ftp, alice, api_as):
    data = payload(MB, seed=6)
    (ftp.homes["alice"] / "f.bin").write_bytes(data)
    site = make_site(alice, ftp)
    api = api_as(alice)
    from django.db import transaction

    with transaction.atomic():  # the task is enqueued only when this commits
        created = api.post(
            "/api/v1/ftp/transfers/",
            {"kind": "download", "site": site.pk, "path": "/f.bin"},
            format="json",
        )
        transfer_id = created.json()["id"]
        cancelled = api.post(f"/api/v1/ftp/transfers/{transfer_id}/cancel/")
        assert cancelled.json()["state"] == "cancelled"
    # A later transfer going through proves the worker has seen the cancelled one's task.
    later = api.post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/f.bin"},
        format="json",
    )
    assert wait_finished(later.json()["id"]).state == "done"
    time.sleep(0.5)
    row = Transfer.objects.get(pk=transfer_id)
    assert row.state == "cancelled"
    assert row.attempts == 0 and row.started_at is None and row.bytes_done == 0
    # Cancelling again or pausing a cancelled transfer changes nothing.
    assert api.post(f"/api/v1/ftp/transfers/{transfer_id}/pause/").json()["state"] == "cancelled"


def test_pause_then_resume_completes(celery_worker, ftp, alice, api_as):
    data = payload(MB, seed=7)
    (ftp.homes["alice"] / "f.bin").write_bytes(data)
    site = make_site(alice, ftp)
    api = api_as(alice)
    from django.db import transaction

    with transaction.atomic():
        transfer_id = api.post(
            "/api/v1/ftp/transfers/",
            {"kind": "download", "site": site.pk, "path": "/f.bin"},
            format="json",
        ).json()["id"]
        assert api.post(f"/api/v1/ftp/transfers/{transfer_id}/pause/").json()["state"] == "paused"
    time.sleep(1)
    assert Transfer.objects.get(pk=transfer_id).state == "paused"
    assert api.post(f"/api/v1/ftp/transfers/{transfer_id}/resume/").json()["state"] == "queued"
    row = wait_finished(transfer_id)
    assert row.state == "done" and row.sha256 == sha(data)


def test_an_upload_queued_without_its_hash_is_hashed_by_the_worker(ftp, alice):
    """Uploads queued before hashes were taken on arrival still end with one."""
    data = payload(5 * MB + 1, seed=9)
    site = make_site(alice, ftp)
    row = Transfer.objects.create(
        owner=alice, kind="upload", site=site, path="/old.bin", name="old.bin"
    )
    local = transfers.transfer_dir(owner_id=alice.pk, transfer_id=row.pk) / "upload"
    local.parent.mkdir(parents=True)
    local.write_bytes(data)
    Transfer.objects.filter(pk=row.pk).update(local_path=str(local), bytes_total=len(data))
    transfers.transfer_run(transfer_id=row.pk)  # as the worker's task does, in this process
    row.refresh_from_db()
    assert row.state == "done", row.last_error
    assert row.sha256 == sha(data) == sha((ftp.homes["alice"] / "old.bin").read_bytes())


def test_another_users_transfer_is_404(ftp, alice, bob, api_as):
    site = make_site(alice, ftp)
    row = Transfer.objects.create(owner=alice, kind="download", site=site, path="/f.bin")
    bob_api = api_as(bob)
    assert bob_api.get(f"/api/v1/ftp/transfers/{row.pk}/").status_code == 404
    for action in ("cancel", "retry", "pause", "resume"):
        assert bob_api.post(f"/api/v1/ftp/transfers/{row.pk}/{action}/").status_code == 404
    assert bob_api.get(f"/api/v1/ftp/transfers/{row.pk}/file/").status_code == 404
    assert bob_api.get("/api/v1/ftp/transfers/").json()["results"] == []
    # Nor can bob start a transfer on alice's site.
    refused = bob_api.post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/f.bin"},
        format="json",
    )
    assert refused.status_code == 400
    assert Transfer.objects.get(pk=row.pk).state == "queued"


def test_crlf_in_path_is_400(ftp, alice, api_as):
    site = make_site(alice, ftp)
    refused = api_as(alice).post(
        "/api/v1/ftp/transfers/",
        {"kind": "download", "site": site.pk, "path": "/f\r\nDELE x"},
        format="json",
    )
    assert refused.status_code == 400


# --------------------------------------------------------------------------- the site's runner


def test_a_queued_batch_is_drained_over_at_most_the_limits_logins(
    celery_worker, ftp, alice, api_as, tmp_path, logins
):
    home = ftp.homes["alice"]
    (home / "in").mkdir()
    files = {f"f{n:02d}.bin": payload(1000 + 4099 * n, seed=100 + n) for n in range(40)}
    remote = {f"/d{n}.bin": payload(300_000 + n, seed=200 + n) for n in range(3)}
    for path, data in remote.items():
        (home / path.lstrip("/")).write_bytes(data)
    site = make_site(alice, ftp)
    seen = logins(ftp)
    ids = queue_batch(api_as(alice), site, files, tmp_path, downloads=remote)

    rows = [wait_finished(transfer_id) for transfer_id in ids]
    assert [row.state for row in rows] == ["done"] * len(ids), [r.last_error for r in rows]
    assert 1 <= len(seen) <= transfers.per_site_limit()  # not one login per transfer
    for name, data in files.items():
        assert sha((home / "in" / name).read_bytes()) == sha(data)
    assert sorted(p.name for p in (home / "in").iterdir()) == sorted(files)
    for row, data in zip(rows, [*files.values(), *remote.values()], strict=True):
        assert row.sha256 == sha(data) and row.bytes_done == len(data) and row.attempts == 1
    for row in rows[-len(remote) :]:
        assert transfers.transfer_file_path(transfer=row).read_bytes() == remote[row.path]


def test_pause_and_cancel_in_the_middle_of_a_drained_batch(
    celery_worker, slow_server, alice, api_as, tmp_path, logins
):
    slow_server.clear_homes()
    home = slow_server.homes["alice"]
    small = {f"/s{n}.bin": payload(5000 + n, seed=300 + n) for n in range(6)}
    big = {"/paused.bin": payload(3 * MB, seed=400), "/cancelled.bin": payload(3 * MB, seed=401)}
    remote = {**dict(list(small.items())[:3]), **big, **dict(list(small.items())[3:])}
    for path, data in remote.items():
        (home / path.lstrip("/")).write_bytes(data)
    site = make_site(alice, slow_server)
    seen = logins(slow_server)
    api = api_as(alice)
    ids = dict(zip(remote, queue_batch(api, site, {}, tmp_path, downloads=remote), strict=True))

    def under_way(path: str) -> bool:
        row = Transfer.objects.get(pk=ids[path])
        return row.state == "running" and row.bytes_done > 0

    wait_until(lambda: under_way("/paused.bin"))
    paused = api.post(f"/api/v1/ftp/transfers/{ids['/paused.bin']}/pause/")
    assert paused.json()["state"] == "paused"
    wait_until(lambda: under_way("/cancelled.bin"))
    cancelled = api.post(f"/api/v1/ftp/transfers/{ids['/cancelled.bin']}/cancel/")
    assert cancelled.json()["state"] == "cancelled"

    for path, data in small.items():  # the runners went on with the rest of the batch
        row = wait_finished(ids[path])
        assert row.state == "done", row.last_error
        assert transfers.transfer_file_path(transfer=row).read_bytes() == data
    row = Transfer.objects.get(pk=ids["/paused.bin"])
    assert row.state == "paused" and 0 < row.bytes_done < 3 * MB
    # The partial file is kept to resume from (it may be whole if the pause came within the
    # last progress tick: the resume then only checks it).
    assert row.bytes_done <= Path(row.local_path).stat().st_size <= 3 * MB
    row = wait_until(lambda: Transfer.objects.get(pk=ids["/cancelled.bin"]))
    assert row.state == "cancelled"
    wait_until(lambda: not Path(row.local_path).exists())  # a cancel leaves nothing behind
    assert len(seen) <= transfers.per_site_limit()

    resumed = api.post(f"/api/v1/ftp/transfers/{ids['/paused.bin']}/resume/")
    assert resumed.json()["state"] == "queued"
    row = wait_finished(ids["/paused.bin"])
    assert row.state == "done", row.last_error
    assert row.attempts >= 2 and row.sha256 == sha(big["/paused.bin"])
    assert transfers.transfer_file_path(transfer=row).read_bytes() == big["/paused.bin"]


def test_a_cut_upload_in_a_batch_resumes_and_the_runner_goes_on(
    celery_worker, cutting, alice, api_as, tmp_path, logins
):
    home = cutting.homes["alice"]
    (home / "in").mkdir()
    files = {f"a{n}.bin": payload(20_000 + n, seed=500 + n) for n in range(4)}
    files["cut.bin"] = payload(MB + 3, seed=510)
    files |= {f"b{n}.bin": payload(30_000 + n, seed=520 + n) for n in range(4)}
    Cut.upload = 600_000  # only cut.bin gets that far
    site = make_site(alice, cutting)
    seen = logins(cutting)
    ids = dict(zip(files, queue_batch(api_as(alice), site, files, tmp_path), strict=True))

    rows = {name: wait_finished(transfer_id) for name, transfer_id in ids.items()}
    assert Cut.upload is None  # the cut happened
    for name, data in files.items():
        assert rows[name].state == "done", rows[name].last_error
        assert sha((home / "in" / name).read_bytes()) == sha(data) == rows[name].sha256
    assert rows["cut.bin"].attempts >= 2
    assert sorted(p.name for p in (home / "in").iterdir()) == sorted(files)
    assert len(seen) <= transfers.per_site_limit()  # the control connection survived the cut


def test_small_new_uploads_are_stored_in_batches_straight_to_their_names(
    celery_worker, ftp, alice, api_as, tmp_path, recorder
):
    home = ftp.homes["alice"]
    (home / "in").mkdir()
    files = {f"s{n:02d} é.txt": payload(500 + 97 * n, seed=600 + n) for n in range(60)}
    site = make_site(alice, ftp)
    lines = recorder(ftp)
    ids = queue_batch(api_as(alice), site, files, tmp_path)

    rows = [wait_finished(transfer_id) for transfer_id in ids]
    assert [row.state for row in rows] == ["done"] * len(ids), [r.last_error for r in rows]
    for row, (name, data) in zip(rows, files.items(), strict=True):
        assert (home / "in" / name).read_bytes() == data
        assert row.sha256 == sha(data) and row.bytes_done == len(data) and row.attempts == 1
        assert not Path(row.local_path).exists()  # the kept upload is gone once done
    assert sorted(p.name for p in (home / "in").iterdir()) == sorted(files)
    seen = [line.split(" ")[0] for line in lines]
    assert seen.count("STOR") == len(files)
    assert "RNFR" not in seen and "APPE" not in seen  # no temporary names
    # Most sizes were checked by a listing of the folder, not a command per file.
    assert seen.count("MLSD") >= 1 and seen.count("MLST") < len(files) // 2


def test_a_refused_file_in_a_batch_fails_alone_with_the_servers_words(
    celery_worker, ftp, alice, api_as, tmp_path
):
    home = ftp.homes["alice"]
    (home / "in" / "taken.bin").mkdir(parents=True)  # a STOR onto a folder is refused
    files = {f"f{n:02d}.bin": payload(2000 + n, seed=700 + n) for n in range(10)}
    files["taken.bin"] = b"not a folder"
    files |= {f"g{n:02d}.bin": payload(3000 + n, seed=720 + n) for n in range(10)}
    site = make_site(alice, ftp)
    ids = dict(zip(files, queue_batch(api_as(alice), site, files, tmp_path), strict=True))

    rows = {name: wait_finished(transfer_id) for name, transfer_id in ids.items()}
    refused = rows.pop("taken.bin")
    assert refused.state == "failed" and refused.last_error.startswith("550")
    assert (home / "in" / "taken.bin").is_dir()
    for name, row in rows.items():
        assert row.state == "done", row.last_error
        assert (home / "in" / name).read_bytes() == files[name]


def test_a_runner_claims_a_run_of_small_new_uploads_together(ftp, alice, settings, monkeypatch):
    settings.FTP_TRANSFERS_PER_SITE = 1
    monkeypatch.setattr(transfers, "BATCH_MAX", 3)
    site = make_site(alice, ftp)

    def upload(path: str, size: int = 10, attempts: int = 0) -> Transfer:
        return Transfer.objects.create(
            owner=alice, kind="upload", site=site, path=path, bytes_total=size,
            attempts=attempts, sha256="0" * 64,
        )  # fmt: skip

    first = upload("/first")
    small = [upload(f"/s{n}") for n in range(4)]  # more than BATCH_MAX in a row
    big = upload("/big", size=transfers.ftp.DIRECT_STORE_MAX + 1)
    tried = upload("/tried", attempts=1)  # a retry: runs alone, with its run lock
    last = [upload(f"/t{n}") for n in range(2)]
    running, _ = transfers.transfer_claim(transfer_id=first.pk)

    def step(rows: list[Transfer]) -> list[Transfer]:
        return transfers._claim_next(site_id=site.pk, finished=[(r, "done", {}) for r in rows])

    taken = step([running])
    assert [r.pk for r in taken] == [r.pk for r in small[:3]]
    assert {r.state for r in taken} == {"running"} and {r.claim for r in taken} == {1}
    # A row paused meanwhile is not finished by the batch; the others are.
    Transfer.objects.filter(pk=taken[1].pk).update(state="paused")
    following = step(taken)
    assert [r.pk for r in following] == [small[3].pk]  # the run stops at the big upload
    assert [Transfer.objects.get(pk=r.pk).state for r in taken] == ["done", "paused", "done"]
    assert [r.state for r in taken] == ["done", "running", "done"]  # as the runner saw them
    following = step(following)
    assert [r.pk for r in following] == [big.pk]
    following = step(following)
    assert [r.pk for r in following] == [tried.pk]
    following = step(following)
    assert [r.pk for r in following] == [r.pk for r in last]
    assert step(following) == []
    assert Transfer.objects.filter(site=site, state="done").count() == 8


# --------------------------------------------------------------------------- the claim itself


def test_per_site_limit_one_never_runs_two_at_once(ftp, alice, settings):
    settings.FTP_TRANSFERS_PER_SITE = 1
    site = make_site(alice, ftp)
    other = make_site(alice, ftp, name="other")
    first, second = (
        Transfer.objects.create(owner=alice, kind="download", site=site, path=f"/{n}")
        for n in ("a", "b")
    )
    elsewhere = Transfer.objects.create(owner=alice, kind="download", site=other, path="/c")

    claimed, busy = transfers.transfer_claim(transfer_id=first.pk)
    assert claimed is not None and claimed.state == "running" and not busy
    assert transfers.transfer_claim(transfer_id=second.pk) == (None, True)
    assert Transfer.objects.get(pk=second.pk).state == "queued"
    # Another site has its own slots; a copy into the busy site waits too.
    assert transfers.transfer_claim(transfer_id=elsewhere.pk)[0] is not None
    Transfer.objects.filter(pk=elsewhere.pk).update(state="done")
    copy = Transfer.objects.create(
        owner=alice, kind="copy", site=other, path="/c", target_site=site, target_path="/d"
    )
    assert transfers.transfer_claim(transfer_id=copy.pk) == (None, True)
    # A claim never takes a row twice.
    assert transfers.transfer_claim(transfer_id=first.pk) == (None, False)

    Transfer.objects.filter(pk=first.pk).update(state="done")
    assert transfers.transfer_claim(transfer_id=second.pk)[0] is not None


def test_a_runner_passes_its_slot_straight_to_the_sites_next_transfer(ftp, alice, settings):
    settings.FTP_TRANSFERS_PER_SITE = 1
    site = make_site(alice, ftp)
    other = make_site(alice, ftp, name="other")
    first, second = (
        Transfer.objects.create(owner=alice, kind="upload", site=site, path=f"/{n}") for n in "ab"
    )
    elsewhere = Transfer.objects.create(owner=alice, kind="download", site=other, path="/c")
    running, _ = transfers.transfer_claim(transfer_id=first.pk)

    [following] = transfers._claim_next(
        site_id=site.pk, finished=[(running, "done", {"sha256": "0" * 64})]
    )
    assert following.pk == second.pk and following.state == "running"
    assert following.attempts == 1 and following.claim == 1
    assert Transfer.objects.get(pk=first.pk).state == "done"
    assert Transfer.objects.get(pk=elsewhere.pk).state == "queued"  # not this site's

    # The hand-over takes downloads and uploads only: a queued copy waits...
    copy = Transfer.objects.create(
        owner=alice, kind="copy", site=other, path="/c", target_site=site, target_path="/d"
    )
    third = Transfer.objects.create(owner=alice, kind="upload", site=site, path="/e")
    [taken] = transfers._claim_next(site_id=site.pk, finished=[(following, "done", {})])
    assert taken.pk == third.pk
    # ...until a runner claims without handing over (its transfer was paused): next in line,
    # the copy could run, so the runner gives the slot back for the copy's task to take.
    Transfer.objects.filter(pk=third.pk).update(state="paused")
    fourth = Transfer.objects.create(owner=alice, kind="upload", site=site, path="/f")
    assert transfers._claim_next(site_id=site.pk, finished=[]) == []
    assert transfers.transfer_claim(transfer_id=copy.pk)[0] is not None
    # The site is full again: nothing more is claimed.
    assert transfers._claim_next(site_id=site.pk, finished=[]) == []
    assert Transfer.objects.get(pk=fourth.pk).state == "queued"


def test_concurrent_claims_respect_the_limit(ftp, alice, settings):
    settings.FTP_TRANSFERS_PER_SITE = 1
    site = make_site(alice, ftp)
    rows = [
        Transfer.objects.create(owner=alice, kind="download", site=site, path=f"/{n}")
        for n in range(4)
    ]
    barrier = threading.Barrier(len(rows))
    results: list[bool] = []

    def claim(transfer_id: int) -> None:
        try:
            barrier.wait()
            results.append(transfers.transfer_claim(transfer_id=transfer_id)[0] is not None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(row.pk,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    assert Transfer.objects.filter(state="running").count() == 1


def test_sweeper_queues_a_transfer_whose_worker_died(ftp, alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    site = make_site(alice, ftp)
    row = Transfer.objects.create(owner=alice, kind="download", site=site, path="/f")
    claimed, _ = transfers.transfer_claim(transfer_id=row.pk)
    old = timezone.now() - timedelta(seconds=transfers.lease_seconds() + 5)
    Transfer.objects.filter(pk=row.pk).update(heartbeat_at=old)
    # Two live transfers fill the site (the worker's limit is 2), so a worker picking up
    # what the sweeper enqueues finds it busy and leaves the row to this test.
    fresh, other = (
        Transfer.objects.create(owner=alice, kind="download", site=site, path=f"/{n}") for n in "gh"
    )
    for live in (fresh, other):
        transfers.transfer_claim(transfer_id=live.pk)
    settings.FTP_TRANSFERS_PER_SITE = 3
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert transfers.transfers_sweep_stale() == 1
    assert Transfer.objects.get(pk=row.pk).state == "queued"
    assert Transfer.objects.get(pk=fresh.pk).state == "running"
    # The old worker, should it still be alive, is fenced off by the new claim.
    again, _ = transfers.transfer_claim(transfer_id=row.pk)
    assert again.claim == claimed.claim + 1
    with pytest.raises(transfers.TransferStopped):
        transfers._Ticker(claimed).write(bytes_done=1)


# --------------------------------------------------------------------------- live events


def test_progress_reaches_the_owners_websocket(live_server_url, celery_worker, ftp, alice, api_as):
    data = payload(8 * MB, seed=8)
    (ftp.homes["alice"] / "f.bin").write_bytes(data)
    site = make_site(alice, ftp)
    token = Token.objects.create(user=alice).key
    api = api_as(alice)
    url = live_server_url.replace("http://", "ws://") + f"/ws/events/?token={token}"

    def start() -> int:
        try:
            return api.post(
                "/api/v1/ftp/transfers/",
                {"kind": "download", "site": site.pk, "path": "/f.bin"},
                format="json",
            ).json()["id"]
        finally:
            connections.close_all()

    async def scenario() -> list[dict]:
        async with connect(url) as socket:
            transfer_id = await asyncio.to_thread(start)
            events: list[dict] = []
            while not events or events[-1]["transfer"]["state"] not in FINISHED:
                event = json.loads(await asyncio.wait_for(socket.recv(), 30))
                ours = event.get("type") == "transfer.progress"
                if ours and event["transfer"]["id"] == transfer_id:
                    events.append(event)
            return events

    events = asyncio.run(scenario())
    states = [e["transfer"]["state"] for e in events]
    assert states[0] == "queued" and states[-1] == "done"
    assert "running" in states
    last = events[-1]["transfer"]
    assert last["bytes_done"] == last["bytes_total"] == len(data)
    assert {"id", "state", "bytes_done", "bytes_total", "speed", "eta"} <= set(last)
    done = [e["transfer"]["bytes_done"] for e in events]
    assert done == sorted(done)
