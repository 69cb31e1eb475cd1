"""The files REST API (shared/API.md, Files) against a real pyftpdlib server: no mocks."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile

from ftpcore.models import FtpSite
from ftpcore.pool import browse_pool
from tests.peers.ftp import FTPServer

pytestmark = pytest.mark.django_db

SITES = "/api/v1/ftp/sites/"


def _site(owner, server, **fields) -> FtpSite:
    values = {
        "name": "Home",
        "host": server.host,
        "port": server.port,
        "username": "alice",
        "password": "secret-alice",
    }
    values.update(fields)
    return FtpSite.objects.create(owner=owner, **values)


def _body(response) -> bytes:
    """A streamed answer's bytes (the download views stream asynchronously, as under ASGI)."""

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    assert response.is_async
    return async_to_sync(collect)()


@pytest.fixture(autouse=True)
def empty_pool():
    yield
    browse_pool.clear()


@pytest.fixture
def site(alice, ftp) -> FtpSite:
    return _site(alice, ftp)


@pytest.fixture
def client(alice, api_as):
    return api_as(alice)


# Sites ------------------------------------------------------------------------------------


def test_site_crud_never_returns_the_password(alice, api_as, ftp):
    client = api_as(alice)
    created = client.post(
        SITES,
        {
            "name": "Backup",
            "host": ftp.host,
            "port": ftp.port,
            "username": "alice",
            "password": "secret-alice",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert "password" not in body
    assert body["security"] == "none"
    assert body["passive"] is True
    assert body["initial_path"] == "/"
    assert body["encoding"] == "utf-8"
    site_id = body["id"]
    assert FtpSite.objects.get(pk=site_id).password == "secret-alice"  # stored (encrypted)

    rows = client.get(SITES).json()["results"]
    assert [row["id"] for row in rows] == [site_id]
    assert all("password" not in row for row in rows)

    patched = client.patch(f"{SITES}{site_id}/", {"name": "Renamed", "port": 2121}, format="json")
    assert patched.status_code == 200
    assert patched.json()["name"] == "Renamed" and "password" not in patched.json()
    site = FtpSite.objects.get(pk=site_id)
    assert site.port == 2121 and site.password == "secret-alice"  # untouched by the PATCH

    bad = client.patch(f"{SITES}{site_id}/", {"tls_fingerprint": "nope"}, format="json")
    assert bad.status_code == 400
    assert client.delete(f"{SITES}{site_id}/").status_code == 204
    assert not FtpSite.objects.filter(pk=site_id).exists()


def test_password_is_encrypted_at_rest(site):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM ftpcore_ftpsite WHERE id = %s", [site.pk])
        (stored,) = cursor.fetchone()
    assert "secret-alice" not in stored


def test_test_connection_ok(site, client):
    response = client.post(f"{SITES}{site.pk}/test/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["ok"] is True
    assert body["welcome"]
    assert "MLST" in " ".join(body["features"])


def test_bad_login_is_auth_failed_with_the_servers_words(alice, client, ftp):
    site = _site(alice, ftp, password="wrong")
    response = client.post(f"{SITES}{site.pk}/test/")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "auth_failed"
    assert body["reply_code"] == 530
    assert body["detail"].startswith("530 ")
    assert "wrong" not in body["detail"]
    assert len(body["detail"]) > 4  # the server's own words follow the code
    assert body["explanation"]


def test_untrusted_certificate_then_trusted_by_fingerprint(alice, client, ftps):
    site = _site(alice, ftps, security="explicit_tls")
    response = client.post(f"{SITES}{site.pk}/test/")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "untrusted_certificate"
    assert body["fingerprint"] == ftps.fingerprint

    patched = client.patch(
        f"{SITES}{site.pk}/", {"tls_fingerprint": body["fingerprint"]}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert client.post(f"{SITES}{site.pk}/test/").json()["ok"] is True
    (ftps.homes["alice"] / "secret.txt").write_bytes(b"over TLS")
    download = client.get(f"{SITES}{site.pk}/download/", {"path": "/secret.txt"})
    assert download.status_code == 200
    assert _body(download) == b"over TLS"


# Listing ----------------------------------------------------------------------------------


def test_list_dirs_first_by_name_without_partial_uploads(site, client, ftp):
    home = ftp.homes["alice"]
    (home / "docs").mkdir()
    (home / "Zeta").mkdir()
    (home / "apple.txt").write_bytes(b"a" * 5)
    (home / "Banana.txt").write_bytes(b"b")
    (home / ".half.bin.part-satchel").write_bytes(b"partial")
    (home / "docs" / "inner.txt").write_bytes(b"inner")

    response = client.get(f"{SITES}{site.pk}/list/", {"path": "/"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["path"] == "/"
    names = [entry["name"] for entry in body["entries"]]
    assert names == ["docs", "Zeta", "apple.txt", "Banana.txt"]
    apple = body["entries"][2]
    assert apple["type"] == "file" and apple["size"] == 5
    assert apple["modified"]
    assert set(apple) == {"name", "type", "size", "modified", "permissions", "target"}
    assert body["entries"][0]["type"] == "dir"

    inner = client.get(f"{SITES}{site.pk}/list/", {"path": "/docs"}).json()
    assert inner["path"] == "/docs"
    assert [entry["name"] for entry in inner["entries"]] == ["inner.txt"]


def test_list_defaults_to_the_initial_path(alice, client, ftp):
    (ftp.homes["alice"] / "pub").mkdir()
    (ftp.homes["alice"] / "pub" / "readme").write_bytes(b"x")
    site = _site(alice, ftp, initial_path="/pub")
    body = client.get(f"{SITES}{site.pk}/list/").json()
    assert body["path"] == "/pub"
    assert [entry["name"] for entry in body["entries"]] == ["readme"]


# Transfers --------------------------------------------------------------------------------


def test_upload_two_files_then_download_one_byte_identical(site, client, ftp):
    big = os.urandom(3 * 1024 * 1024 + 17)  # above Django's in-memory limit: a temp file
    small = b"hello, ftp\n"
    (ftp.homes["alice"] / "in").mkdir()
    response = client.post(
        f"{SITES}{site.pk}/upload/?path=/in",
        {
            "file": [
                SimpleUploadedFile("big.bin", big, "application/octet-stream"),
                SimpleUploadedFile("small.txt", small, "text/plain"),
            ]
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    entries = {entry["name"]: entry for entry in response.json()}
    assert set(entries) == {"big.bin", "small.txt"}
    assert entries["big.bin"]["size"] == len(big)
    assert (ftp.homes["alice"] / "in" / "big.bin").read_bytes() == big
    assert (ftp.homes["alice"] / "in" / "small.txt").read_bytes() == small
    assert not [p.name for p in (ftp.homes["alice"] / "in").iterdir() if "part" in p.name]

    download = client.get(f"{SITES}{site.pk}/download/", {"path": "/in/big.bin"})
    assert download.status_code == 200
    assert download.streaming
    assert download["Content-Length"] == str(len(big))
    assert download["Content-Disposition"].startswith('attachment; filename="big.bin"')
    assert hashlib.sha256(_body(download)).hexdigest() == hashlib.sha256(big).hexdigest()


def test_upload_to_a_server_without_mlst_answers_entries_from_its_listing(alice, client):
    with FTPServer(mlsd=False) as server:
        server.add_user("alice", "secret-alice")
        site = _site(alice, server)
        files = [SimpleUploadedFile(f"f{i}.txt", b"x" * i) for i in range(1, 4)]
        response = client.post(
            f"{SITES}{site.pk}/upload/?path=/", {"file": files}, format="multipart"
        )
        assert response.status_code == 201, response.json()
        assert [(e["name"], e["size"]) for e in response.json()] == [
            ("f1.txt", 1),
            ("f2.txt", 2),
            ("f3.txt", 3),
        ]
        assert (server.homes["alice"] / "f3.txt").read_bytes() == b"xxx"


def test_unicode_and_spaces_round_trip(site, client, ftp):
    name = "naïve café.txt"
    payload = "crème brûlée\n".encode()
    response = client.post(
        f"{SITES}{site.pk}/upload/?path=/",
        {"file": SimpleUploadedFile(name, payload)},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert [entry["name"] for entry in response.json()] == [name]
    assert (ftp.homes["alice"] / name).read_bytes() == payload

    listed = client.get(f"{SITES}{site.pk}/list/", {"path": "/"}).json()
    assert [entry["name"] for entry in listed["entries"]] == [name]

    download = client.get(f"{SITES}{site.pk}/download/", {"path": f"/{name}"})
    assert download.status_code == 200
    assert _body(download) == payload
    disposition = download["Content-Disposition"]
    assert disposition.startswith('attachment; filename="naive cafe.txt"')
    assert "filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt" in disposition


def _tree(root) -> dict[str, bytes]:
    """A folder with nested folders, unicode and space-laden names, an empty folder."""
    files = {
        "readme.txt": b"top level\n",
        "sub dir/naïve café.txt": "crème brûlée\n".encode(),
        "sub dir/deeper/日本語 ファイル.bin": os.urandom(300_000),
        "sub dir/deeper/big.bin": os.urandom(3 * 1024 * 1024 + 5),
        "zero.bin": b"",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty folder").mkdir()
    (root / ".half.bin.part-satchel").write_bytes(b"an upload in progress")
    return files


def test_download_a_folder_as_a_zip_byte_for_byte(site, client, ftp):
    files = _tree(ftp.homes["alice"] / "Project X")
    response = client.get(f"{SITES}{site.pk}/download/", {"path": "/Project X"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "Content-Length" not in response
    assert response["Content-Disposition"].startswith('attachment; filename="Project X.zip"')
    archive = zipfile.ZipFile(io.BytesIO(_body(response)))
    assert archive.testzip() is None  # every CRC checks
    names = archive.namelist()
    assert sorted(n for n in names if not n.endswith("/")) == sorted(
        f"Project X/{name}" for name in files
    )
    assert {"Project X/", "Project X/empty folder/", "Project X/sub dir/deeper/"} <= set(names)
    for name, data in files.items():
        assert archive.read(f"Project X/{name}") == data, name
    info = archive.getinfo("Project X/sub dir/naïve café.txt")
    assert info.flag_bits & 0x800  # the name is marked UTF-8
    assert info.flag_bits & 0x08  # streamed: sizes in a data descriptor


def test_the_root_folder_zips_under_the_site_name(site, client, ftp):
    (ftp.homes["alice"] / "a.txt").write_bytes(b"a")
    response = client.get(f"{SITES}{site.pk}/download/", {"path": "/"})
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(_body(response)))
    assert archive.read("Home/a.txt") == b"a"


def test_a_file_the_server_refuses_is_left_out_and_named(site, client, ftp):
    root = ftp.homes["alice"] / "mixed"
    (root / "listed only").mkdir(parents=True)
    (root / "ok.txt").write_bytes(b"fine")
    (root / "listed only" / "secret.txt").write_bytes(b"no")
    ftp.authorizer.override_perm("alice", str(root / "listed only"), "el")  # no RETR
    try:
        response = client.get(f"{SITES}{site.pk}/download/", {"path": "/mixed"})
        archive = zipfile.ZipFile(io.BytesIO(_body(response)))
    finally:
        ftp.authorizer.user_table["alice"]["operms"].clear()
    assert archive.read("mixed/ok.txt") == b"fine"
    assert "mixed/listed only/secret.txt" not in archive.namelist()
    errors = archive.read("mixed/SATCHEL-ERRORS.txt").decode()
    assert "/mixed/listed only/secret.txt: 550" in errors


def test_missing_file_is_502_with_reply_code_and_explanation(site, client):
    response = client.get(f"{SITES}{site.pk}/download/", {"path": "/nope.txt"})
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "ftp_550"
    assert body["reply_code"] == 550
    assert body["detail"].startswith("550 ")
    assert body["explanation"]
    assert body["explanation"] != body["detail"]

    listing = client.get(f"{SITES}{site.pk}/list/", {"path": "/missing-dir"})
    assert listing.status_code == 502
    assert listing.json()["code"] == f"ftp_{listing.json()['reply_code']}"  # pyftpdlib: 501


# Operations -------------------------------------------------------------------------------


def test_mkdir_rename_into_a_subfolder_and_recursive_delete(site, client, ftp):
    home = ftp.homes["alice"]
    url = f"{SITES}{site.pk}"
    assert client.post(f"{url}/mkdir/", {"path": "/projects"}, format="json").status_code == 201
    assert (home / "projects").is_dir()
    again = client.post(f"{url}/mkdir/", {"path": "/projects"}, format="json")
    assert again.status_code == 502 and again.json()["reply_code"] == 550

    (home / "notes.txt").write_bytes(b"notes")
    moved = client.post(
        f"{url}/rename/", {"from": "/notes.txt", "to": "/projects/notes.txt"}, format="json"
    )
    assert moved.status_code == 200, moved.json()
    assert moved.json() == {"from": "/notes.txt", "to": "/projects/notes.txt"}
    assert not (home / "notes.txt").exists()
    assert (home / "projects" / "notes.txt").read_bytes() == b"notes"

    (home / "projects" / "deep" / "deeper").mkdir(parents=True)
    (home / "projects" / "deep" / "deeper" / "f").write_bytes(b"f")
    refused = client.post(f"{url}/delete/", {"path": "/projects"}, format="json")
    assert refused.status_code == 502  # not empty, not recursive
    assert (home / "projects").is_dir()

    deleted = client.post(f"{url}/delete/", {"path": "/projects", "recursive": True}, format="json")
    assert deleted.status_code == 204
    assert not (home / "projects").exists()


def test_delete_a_file_and_an_empty_directory(site, client, ftp):
    home = ftp.homes["alice"]
    (home / "empty").mkdir()
    (home / "file.txt").write_bytes(b"x")
    url = f"{SITES}{site.pk}/delete/"
    assert client.post(url, {"path": "/file.txt"}, format="json").status_code == 204
    assert client.post(url, {"path": "/empty"}, format="json").status_code == 204
    assert list(home.iterdir()) == []
    missing = client.post(url, {"path": "/file.txt"}, format="json")
    assert missing.status_code == 502 and missing.json()["code"] == "ftp_550"
    root = client.post(url, {"path": "/", "recursive": True}, format="json")
    assert root.status_code == 400


def test_chmod_with_an_octal_string_or_a_number(site, client, ftp):
    target = ftp.homes["alice"] / "script.sh"
    target.write_bytes(b"#!/bin/sh\n")
    url = f"{SITES}{site.pk}/chmod/"
    response = client.post(url, {"path": "/script.sh", "mode": "755"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"path": "/script.sh", "mode": "755"}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    response = client.post(url, {"path": "/script.sh", "mode": 0o640}, format="json")
    assert response.status_code == 200
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    bad = client.post(url, {"path": "/script.sh", "mode": "rwx"}, format="json")
    assert bad.status_code == 400


@pytest.mark.parametrize("path", ["/a\r\nDELE b", "/a\nb", "/a\rb"])
def test_cr_lf_in_a_path_is_400(site, client, ftp, path):
    (ftp.homes["alice"] / "b").write_bytes(b"keep me")
    url = f"{SITES}{site.pk}"
    assert client.get(f"{url}/list/", {"path": path}).status_code == 400
    assert client.get(f"{url}/download/", {"path": path}).status_code == 400
    assert client.post(f"{url}/mkdir/", {"path": path}, format="json").status_code == 400
    assert client.post(f"{url}/delete/", {"path": path}, format="json").status_code == 400
    renamed = client.post(f"{url}/rename/", {"from": "/b", "to": path}, format="json")
    assert renamed.status_code == 400
    assert (ftp.homes["alice"] / "b").read_bytes() == b"keep me"


# Isolation --------------------------------------------------------------------------------


def test_bob_gets_404_on_alices_site_everywhere(site, bob, api_as, ftp):
    (ftp.homes["alice"] / "private.txt").write_bytes(b"alice only")
    client = api_as(bob)
    url = f"{SITES}{site.pk}"
    calls = [
        client.get(f"{url}/"),
        client.patch(f"{url}/", {"name": "mine"}, format="json"),
        client.put(f"{url}/", {"name": "mine", "host": "x", "username": "bob"}, format="json"),
        client.delete(f"{url}/"),
        client.post(f"{url}/test/"),
        client.get(f"{url}/list/", {"path": "/"}),
        client.get(f"{url}/download/", {"path": "/private.txt"}),
        client.post(
            f"{url}/upload/?path=/", {"file": SimpleUploadedFile("x", b"x")}, format="multipart"
        ),
        client.post(f"{url}/mkdir/", {"path": "/bob"}, format="json"),
        client.post(f"{url}/rename/", {"from": "/private.txt", "to": "/x"}, format="json"),
        client.post(f"{url}/delete/", {"path": "/private.txt"}, format="json"),
        client.post(f"{url}/chmod/", {"path": "/private.txt", "mode": "777"}, format="json"),
    ]
    assert [response.status_code for response in calls] == [404] * len(calls)
    assert client.get(SITES).json()["results"] == []
    assert sorted(p.name for p in ftp.homes["alice"].iterdir()) == ["private.txt"]
    site.refresh_from_db()
    assert site.name == "Home"


def test_an_undecodable_name_is_shown_not_a_500():
    # pyftpdlib itself sends "?" for such names, so the engine's surrogate-escaped form is
    # fed to the field directly: JSON cannot encode a lone surrogate.
    from ftpcore.serializers import EntrySerializer

    entry = {"name": "caf\udce9.txt", "type": "file", "size": 1, "modified": None}
    entry |= {"permissions": None, "target": None}
    assert EntrySerializer(entry).data["name"] == "caf\ufffd.txt"
