"""Chunked, resumable uploads (ftpcore/chunked.py) through the API, against real pyftpdlib
servers, one of them cutting a data connection half-way through a chunk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from ftpcore import chunked
from ftpcore.models import FtpSite, UploadSession
from ftpcore.pool import browse_pool
from ftpcore.protocols.ftp import partial_path
from tests.peers.certs import CertBundle
from tests.peers.fixtures import USERS, ftp_peer
from tests.peers.ftp import Cut, CuttingDTP, FTPServer

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
CHUNK = 8 * MiB
SITES = "/api/v1/ftp/sites/"


@pytest.fixture(scope="module")
def cutting_server(peer_cert: CertBundle) -> Iterator[FTPServer]:
    def customize(server: FTPServer) -> None:
        server.handler.dtp_handler = CuttingDTP

    yield from ftp_peer(peer_cert, customize)


@pytest.fixture
def cutting(cutting_server: FTPServer) -> Iterator[FTPServer]:
    cutting_server.clear_homes()
    yield cutting_server
    Cut.upload = None


@pytest.fixture(autouse=True)
def empty_pool():
    yield
    browse_pool.clear()


def _site(owner, server: FTPServer) -> FtpSite:
    return FtpSite.objects.create(
        owner=owner,
        name="Big files",
        host=server.host,
        port=server.port,
        username="alice",
        password=USERS["alice"],
    )


def _put(client, url: str, offset: int, data: bytes):
    return client.put(f"{url}?offset={offset}", data, content_type="application/octet-stream")


def _payload(size: int) -> bytes:
    block = hashlib.sha256(b"chunked").digest() * 4096  # 128 KiB, incompressible enough
    return (block * (size // len(block) + 1))[:size]


def test_forty_mib_in_chunks_with_a_cut_and_a_reposted_chunk(alice, api_as, cutting):
    data = _payload(40 * MiB + 123)
    site = _site(alice, cutting)
    client = api_as(alice)
    (cutting.homes["alice"] / "in").mkdir()
    started = client.post(
        f"{SITES}{site.pk}/uploads/",
        {"path": "/in", "name": "big video.bin", "size": len(data)},
        format="json",
    )
    assert started.status_code == 201, started.json()
    body = started.json()
    assert body["path"] == "/in/big video.bin" and body["offset"] == 0
    url = f"{SITES}{site.pk}/uploads/{body['id']}/"
    part = cutting.homes["alice"] / "in" / partial_path("big video.bin")

    first = _put(client, url, 0, data[:CHUNK])
    assert first.status_code == 200, first.json()
    assert first.json()["offset"] == CHUNK and first.json()["state"] == "open"
    assert part.stat().st_size == CHUNK

    # The same chunk again (the browser did not see the answer): refused, with where to go on.
    again = _put(client, url, 0, data[:CHUNK])
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"The upload continues at byte {CHUNK}.",
        "code": "offset_mismatch",
        "offset": CHUNK,
    }
    wrong = _put(client, url, CHUNK + 1, data[CHUNK + 1 : 2 * CHUNK])
    assert wrong.status_code == 409 and wrong.json()["offset"] == CHUNK

    # The data connection dies 3 MiB into the second chunk: the server keeps what arrived.
    Cut.upload = 3 * MiB
    cut = _put(client, url, CHUNK, data[CHUNK : 2 * CHUNK])
    assert cut.status_code == 502, cut.json()
    assert cut.json()["reply_code"] == 426
    status = client.get(url).json()
    assert status["offset"] == CHUNK + 3 * MiB == part.stat().st_size
    assert status["state"] == "open"

    offset = status["offset"]
    while offset < len(data):
        chunk = data[offset : offset + CHUNK]
        response = _put(client, url, offset, chunk)
        assert response.status_code == 200, response.json()
        offset = response.json()["offset"]
    assert response.json()["state"] == "done"
    final = cutting.homes["alice"] / "in" / "big video.bin"
    assert hashlib.sha256(final.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not part.exists()
    listed = client.get(f"{SITES}{site.pk}/list/", {"path": "/in"}).json()["entries"]
    assert [(e["name"], e["size"]) for e in listed] == [("big video.bin", len(data))]
    late = _put(client, url, len(data), b"")
    assert late.status_code == 409 and late.json()["code"] == "upload_finished"


def test_the_servers_temporary_file_is_the_truth(alice, api_as, ftp):
    """The temporary file lost bytes behind our back: the chunk is refused with the offset
    the server holds, and the upload goes on from there."""
    data = _payload(3 * MiB)
    site = _site(alice, ftp)
    client = api_as(alice)
    upload = client.post(
        f"{SITES}{site.pk}/uploads/", {"name": "f.bin", "size": len(data)}, format="json"
    ).json()
    url = f"{SITES}{site.pk}/uploads/{upload['id']}/"
    assert _put(client, url, 0, data[:MiB]).status_code == 200
    part = ftp.homes["alice"] / partial_path("f.bin")
    with open(part, "r+b") as file:
        file.truncate(1000)
    refused = _put(client, url, MiB, data[MiB : 2 * MiB])
    assert refused.status_code == 409 and refused.json()["offset"] == 1000
    assert _put(client, url, 1000, data[1000:]).json()["state"] == "done"
    assert (ftp.homes["alice"] / "f.bin").read_bytes() == data


def test_an_empty_file_a_replaced_file_and_bad_chunks(alice, api_as, ftp):
    site = _site(alice, ftp)
    client = api_as(alice)
    (ftp.homes["alice"] / "old.txt").write_bytes(b"the old contents")
    start = client.post(
        f"{SITES}{site.pk}/uploads/", {"name": "old.txt", "size": 3}, format="json"
    ).json()
    url = f"{SITES}{site.pk}/uploads/{start['id']}/"
    too_long = _put(client, url, 0, b"abcd")
    assert too_long.status_code == 400
    assert client.put(url, b"abc", content_type="application/octet-stream").status_code == 400
    assert _put(client, url, 0, b"new").json()["state"] == "done"
    assert (ftp.homes["alice"] / "old.txt").read_bytes() == b"new"

    empty = client.post(
        f"{SITES}{site.pk}/uploads/", {"name": "empty", "size": 0}, format="json"
    ).json()
    done = _put(client, f"{SITES}{site.pk}/uploads/{empty['id']}/", 0, b"")
    assert done.json()["state"] == "done"
    assert (ftp.homes["alice"] / "empty").read_bytes() == b""

    for name in ("", "..", "x.part-satchel"):
        bad = client.post(f"{SITES}{site.pk}/uploads/", {"name": name, "size": 1}, format="json")
        assert bad.status_code == 400, name


def test_a_chunk_being_written_blocks_a_second_one(alice, api_as, ftp):
    from datetime import timedelta

    from django.utils import timezone

    site = _site(alice, ftp)
    client = api_as(alice)
    start = client.post(f"{SITES}{site.pk}/uploads/", {"name": "f", "size": 4}, format="json")
    upload_id = start.json()["id"]
    url = f"{SITES}{site.pk}/uploads/{upload_id}/"
    UploadSession.objects.filter(pk=upload_id).update(
        lease_until=timezone.now() + timedelta(minutes=5)
    )
    busy = _put(client, url, 0, b"data")
    assert busy.status_code == 409 and busy.json()["code"] == "chunk_busy"
    UploadSession.objects.filter(pk=upload_id).update(
        lease_until=timezone.now() - timedelta(seconds=1)  # that request died: expired
    )
    assert _put(client, url, 0, b"data").json()["state"] == "done"


def test_cancel_deletes_the_temporary_file(alice, api_as, ftp):
    site = _site(alice, ftp)
    client = api_as(alice)
    start = client.post(f"{SITES}{site.pk}/uploads/", {"name": "c.bin", "size": 10}, format="json")
    url = f"{SITES}{site.pk}/uploads/{start.json()['id']}/"
    assert _put(client, url, 0, b"12345").status_code == 200
    assert (ftp.homes["alice"] / partial_path("c.bin")).exists()
    open_ones = client.get(f"{SITES}{site.pk}/uploads/").json()
    assert [u["id"] for u in open_ones] == [start.json()["id"]]
    cancelled = client.delete(url)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert list(ftp.homes["alice"].iterdir()) == []
    assert _put(client, url, 5, b"67890").json()["code"] == "upload_finished"
    assert client.get(f"{SITES}{site.pk}/uploads/").json() == []


def test_another_users_upload_is_404(alice, bob, api_as, ftp):
    site = _site(alice, ftp)
    start = api_as(alice).post(
        f"{SITES}{site.pk}/uploads/", {"name": "mine", "size": 4}, format="json"
    )
    url = f"{SITES}{site.pk}/uploads/{start.json()['id']}/"
    client = api_as(bob)
    bobs_site = FtpSite.objects.create(owner=bob, name="b", host=ftp.host, port=ftp.port)
    other_url = f"{SITES}{bobs_site.pk}/uploads/{start.json()['id']}/"
    calls = [
        client.get(url),
        _put(client, url, 0, b"evil"),
        client.delete(url),
        client.get(other_url),  # his own site, her upload
        _put(client, other_url, 0, b"evil"),
        client.delete(other_url),
        client.get(f"{SITES}{site.pk}/uploads/"),
        client.post(f"{SITES}{site.pk}/uploads/", {"name": "x", "size": 1}, format="json"),
    ]
    assert [c.status_code for c in calls] == [404] * len(calls)
    assert UploadSession.objects.get(pk=start.json()["id"]).state == "open"
    assert list(ftp.homes["alice"].iterdir()) == []


def test_a_newer_upload_of_the_same_file_wins(alice, api_as, ftp):
    site = _site(alice, ftp)
    client = api_as(alice)

    def start() -> str:
        body = {"name": "same.bin", "size": 6}
        upload = client.post(f"{SITES}{site.pk}/uploads/", body, format="json").json()
        return f"{SITES}{site.pk}/uploads/{upload['id']}/"

    older = start()
    assert _put(client, older, 0, b"old").status_code == 200
    newer = start()  # another tab, the same file
    assert client.get(older).json()["state"] == "cancelled"
    refused = _put(client, older, 3, b"OLD")
    assert refused.status_code == 409 and refused.json()["code"] == "upload_finished"
    assert _put(client, newer, 0, b"new").json()["offset"] == 3
    assert _put(client, newer, 3, b"NEW").json()["state"] == "done"
    assert (ftp.homes["alice"] / "same.bin").read_bytes() == b"newNEW"


def test_an_upload_left_for_a_day_is_cancelled_and_its_temporary_file_deleted(
    alice, api_as, cutting
):
    site = _site(alice, cutting)
    client = api_as(alice)
    body = client.post(
        f"{SITES}{site.pk}/uploads/", {"path": "/", "name": "left.bin", "size": 3 * MiB},
        format="json",
    ).json()  # fmt: skip
    url = f"{SITES}{site.pk}/uploads/{body['id']}/"
    assert _put(client, url, 0, _payload(MiB)).status_code == 200
    part = cutting.homes["alice"] / partial_path("left.bin")
    assert part.stat().st_size == MiB
    fresh = client.post(
        f"{SITES}{site.pk}/uploads/", {"path": "/", "name": "fresh.bin", "size": MiB},
        format="json",
    ).json()  # fmt: skip

    assert chunked.upload_sessions_expire() == 0  # nothing is a day old yet
    UploadSession.objects.filter(pk=body["id"]).update(
        updated_at=timezone.now() - timedelta(days=1, minutes=1)
    )
    assert chunked.upload_sessions_expire() == 1
    assert client.get(url).json()["state"] == "cancelled"
    assert not part.exists()
    assert UploadSession.objects.get(pk=fresh["id"]).state == UploadSession.State.OPEN
