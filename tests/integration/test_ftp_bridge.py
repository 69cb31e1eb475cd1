"""Mail and FTP together (mailcore/ftp_bridge.py) against real pyftpdlib, Dovecot and aiosmtpd:
files from an FTP site attached to a message, attachments saved to an FTP site."""

from __future__ import annotations

import hashlib
import os
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from django.conf import settings

from ftpcore.models import FtpSite
from mailcore import ftp_bridge, outbox
from mailcore.models import Mailbox, OutgoingMessage, Upload
from mailcore.sync import account_sync
from tests.mailfactory import make_message
from tests.peers.ports import HOST
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db

OUTBOX = "/api/v1/mail/outbox/"
FROM_FTP = "/api/v1/uploads/from-ftp/"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def own_data_dir(settings, tmp_path):
    """Uploads live under DATA_DIR/uploads/<user id>: user ids repeat from one test database
    to the next, so each test gets a DATA_DIR of its own to count the files it leaves."""
    settings.DATA_DIR = str(tmp_path)


@pytest.fixture
def account(imap_account, smtp, settings):
    """alice's account on a fresh Dovecot user, sending through the aiosmtpd peer at once."""
    settings.OUTBOX_UNDO_SECONDS = 0
    imap_account.smtp_host = HOST
    imap_account.smtp_port = smtp.port
    imap_account.smtp_security = "starttls"
    imap_account.smtp_username = "alice"
    imap_account.smtp_password = "secret-alice"
    imap_account.smtp_tls_fingerprint = smtp.fingerprint
    imap_account.save()
    return imap_account


@pytest.fixture
def site(alice, ftp) -> FtpSite:
    return FtpSite.objects.create(
        owner=alice,
        name="Home",
        host=ftp.host,
        port=ftp.port,
        username="alice",
        password="secret-alice",
    )


@pytest.fixture
def bob_site(bob, ftp) -> FtpSite:
    return FtpSite.objects.create(
        owner=bob, name="Bob's", host=ftp.host, port=ftp.port, username="bob", password="secret-bob"
    )


@pytest.fixture
def client(alice, api_as):
    return api_as(alice)


def _upload_files(owner) -> list[Path]:
    directory = Path(settings.DATA_DIR) / "uploads" / str(owner.pk)
    return sorted(directory.iterdir()) if directory.exists() else []


def _attachment_id(client, dovecot, mail_user, account, filename: str, data: bytes) -> int:
    raw = make_message(subject="Report", attachment=(filename, data, "application/octet-stream"))
    dovecot.seed_messages(mail_user, "INBOX", [raw])
    account_sync(account=account)
    message = account.mailboxes.get(role=Mailbox.Role.INBOX).messages.get()
    [attachment] = client.get(f"/api/v1/mail/messages/{message.pk}/").json()["attachments"]
    return attachment["id"]


def _save(client, attachment_id: int, site: FtpSite, path: str) -> Job:
    """Ask the API, then run the job's service as the worker would (the task is thin)."""
    response = client.post(
        f"/api/v1/mail/attachments/{attachment_id}/save-to-ftp/",
        {"site": site.pk, "path": path},
        format="json",
    )
    assert response.status_code == 202, response.json()
    job = response.json()["job"]
    assert job["kind"] == "attachment_save_to_ftp" and job["state"] == "queued"
    ftp_bridge.attachment_save_to_ftp(job_id=job["id"])
    return Job.objects.get(pk=job["id"])


# --------------------------------------------------------------------------- attach from FTP


def test_message_with_ftp_attachments_arrives_byte_identical(client, account, site, ftp, smtp):
    home = ftp.homes["alice"]
    (home / "docs").mkdir()
    report = os.urandom(700_000) + b"\r\n\x00\xff" * 1000
    (home / "docs" / "Q3 report.pdf").write_bytes(report)
    (home / "notes.txt").write_bytes(b"line one\nline two\n")

    response = client.post(
        OUTBOX,
        {
            "account": account.pk,
            "to": ["bob@example.org"],
            "subject": "Files from the server",
            "text": "Both attached.",
            "ftp_attachments": [
                {"site": site.pk, "path": "/docs/Q3 report.pdf"},
                {"site": site.pk, "path": "notes.txt"},  # relative to the initial path
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert Upload.objects.count() == 0 and _upload_files(account.owner) == []  # no leftovers
    assert outbox.outbox_send(message_id=response.json()["id"]) == OutgoingMessage.State.SENT

    [captured] = smtp.wait_for_messages(1)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    parts = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert sorted(parts) == ["Q3 report.pdf", "notes.txt"]
    assert sha256(parts["Q3 report.pdf"].get_content()) == sha256(report)
    assert parts["Q3 report.pdf"].get_content_type() == "application/pdf"
    assert parts["notes.txt"].get_content_type() == "text/plain"
    assert parts["notes.txt"].get_payload(decode=True) == b"line one\nline two\n"


def test_upload_from_ftp_has_the_upload_shape_and_its_bytes(client, site, ftp):
    data = os.urandom(300_000)
    (ftp.homes["alice"] / "photo.jpg").write_bytes(data)
    response = client.post(FROM_FTP, {"site": site.pk, "path": "/photo.jpg"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {"id", "filename", "size", "content_type"}
    assert body["filename"] == "photo.jpg" and body["size"] == len(data)
    assert body["content_type"] == "image/jpeg"
    upload = Upload.objects.get(pk=body["id"])
    assert sha256(Path(upload.path).read_bytes()) == sha256(data)


def test_missing_ftp_file_is_502_with_the_servers_550(client, account, site, smtp):
    response = client.post(FROM_FTP, {"site": site.pk, "path": "/nope.bin"}, format="json")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "ftp_550" and body["detail"].startswith("550 ")
    assert "nope.bin" in body["detail"] or "No such file" in body["detail"]

    sent = client.post(
        OUTBOX,
        {
            "account": account.pk,
            "to": ["bob@example.org"],
            "ftp_attachments": [{"site": site.pk, "path": "/nope.bin"}],
        },
        format="json",
    )
    assert sent.status_code == 502 and sent.json()["code"] == "ftp_550"
    assert OutgoingMessage.objects.count() == 0 and Upload.objects.count() == 0


def test_a_folder_or_a_bad_path_is_400(client, site, ftp):
    (ftp.homes["alice"] / "folder").mkdir()
    folder = client.post(FROM_FTP, {"site": site.pk, "path": "/folder"}, format="json")
    assert folder.status_code == 400
    assert folder.json()["detail"] == "/folder is a folder: pick a file to attach."
    bad = client.post(FROM_FTP, {"site": site.pk, "path": "/a\r\nDELE b"}, format="json")
    assert bad.status_code == 400 and "line breaks" in bad.json()["detail"]


def test_a_file_over_the_limit_is_refused_and_nothing_is_kept(client, account, site, ftp, settings):
    settings.UPLOAD_MAX_BYTES = 100_000
    (ftp.homes["alice"] / "big.iso").write_bytes(os.urandom(250_000))
    (ftp.homes["alice"] / "small.txt").write_bytes(b"fits")
    response = client.post(FROM_FTP, {"site": site.pk, "path": "/big.iso"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "big.iso is 0.2 MiB; files attached from FTP can be at most 0.1 MiB (UPLOAD_MAX_BYTES)."
    )
    # In a message, one file too big refuses the message and keeps none of the others.
    sent = client.post(
        OUTBOX,
        {
            "account": account.pk,
            "to": ["bob@example.org"],
            "ftp_attachments": [
                {"site": site.pk, "path": "/small.txt"},
                {"site": site.pk, "path": "/big.iso"},
            ],
        },
        format="json",
    )
    assert sent.status_code == 400 and "UPLOAD_MAX_BYTES" in sent.json()["detail"]
    assert Upload.objects.count() == 0 and _upload_files(account.owner) == []


def test_a_file_over_the_limit_is_cut_off_when_the_size_is_unknown(
    alice, site, ftp, settings, monkeypatch
):
    """A server without SIZE: the stream itself is stopped once past the limit."""
    settings.UPLOAD_MAX_BYTES = 100_000
    (ftp.homes["alice"] / "stream.bin").write_bytes(os.urandom(3_000_000))
    without_size = {k: v for k, v in ftp.handler.proto_cmds.items() if k != "SIZE"}
    monkeypatch.setattr(ftp.handler, "proto_cmds", without_size)
    with pytest.raises(ftp_bridge.FileTooLarge, match=r"stream\.bin is over the limit"):
        ftp_bridge.upload_create_from_ftp(owner=alice, site=site, path="/stream.bin")
    assert Upload.objects.count() == 0 and _upload_files(alice) == []


# --------------------------------------------------------------------------- save to FTP


def test_attachment_saved_to_ftp_lands_byte_identical(
    client, dovecot, mail_user, imap_account, site, ftp
):
    data = os.urandom(500_000)
    attachment_id = _attachment_id(client, dovecot, mail_user, imap_account, "scan €.bin", data)
    (ftp.homes["alice"] / "inbox").mkdir()
    job = _save(client, attachment_id, site, "/inbox/scan €.bin")
    assert job.state == "done", job.error
    stored = ftp.homes["alice"] / "inbox" / "scan €.bin"
    assert sha256(stored.read_bytes()) == sha256(data)
    assert job.result["path"] == "/inbox/scan €.bin" and job.result["sha256"] == sha256(data)
    assert job.done == job.total == len(data)
    assert [p.name for p in (ftp.homes["alice"] / "inbox").iterdir()] == ["scan €.bin"]


def test_a_name_clash_keeps_both_files(client, dovecot, mail_user, imap_account, site, ftp):
    data = os.urandom(10_000)
    attachment_id = _attachment_id(client, dovecot, mail_user, imap_account, "report.pdf", data)
    home = ftp.homes["alice"]
    (home / "report.pdf").write_bytes(b"the original")
    (home / "Report (1).PDF").write_bytes(b"another one, other case")

    job = _save(client, attachment_id, site, "/report.pdf")
    assert job.state == "done" and job.result["path"] == "/report (2).pdf"
    assert job.result["requested"] == "/report.pdf"
    assert (home / "report.pdf").read_bytes() == b"the original"
    assert (home / "report (2).pdf").read_bytes() == data
    # A folder as the path (with or without "/"): the attachment's own name inside it.
    (home / "saved").mkdir()
    assert _save(client, attachment_id, site, "/saved").result["path"] == "/saved/report.pdf"
    again = _save(client, attachment_id, site, "/saved/")
    assert again.result["path"] == "/saved/report (1).pdf"
    assert sorted(p.name for p in (home / "saved").iterdir()) == ["report (1).pdf", "report.pdf"]


def test_save_into_a_missing_folder_fails_with_the_servers_words(
    client, dovecot, mail_user, imap_account, site, ftp
):
    attachment_id = _attachment_id(client, dovecot, mail_user, imap_account, "a.bin", b"abc")
    job = _save(client, attachment_id, site, "/no/such/folder/a.bin")
    assert job.state == "failed"
    assert job.error.startswith("FTP server: 550 ")
    assert list(ftp.homes["alice"].iterdir()) == []


# --------------------------------------------------------------------------- ownership


def test_another_users_site_or_attachment_is_404(
    client, bob, api_as, dovecot, mail_user, imap_account, site, bob_site, ftp
):
    (ftp.homes["bob"] / "secret.txt").write_bytes(b"bob's")
    (ftp.homes["alice"] / "mine.txt").write_bytes(b"alice's")
    attachment_id = _attachment_id(client, dovecot, mail_user, imap_account, "a.bin", b"abc")
    to_bob = {"site": bob_site.pk, "path": "/secret.txt"}

    assert client.post(FROM_FTP, to_bob, format="json").status_code == 404
    message = {"account": imap_account.pk, "to": ["x@example.org"], "ftp_attachments": [to_bob]}
    assert client.post(OUTBOX, message, format="json").status_code == 404
    save = f"/api/v1/mail/attachments/{attachment_id}/save-to-ftp/"
    assert client.post(save, to_bob, format="json").status_code == 404

    bob_client = api_as(bob)
    own_site = {"site": bob_site.pk, "path": "/"}
    assert bob_client.post(save, own_site, format="json").status_code == 404
    alices = {"site": site.pk, "path": "/mine.txt"}
    assert bob_client.post(FROM_FTP, alices, format="json").status_code == 404
    assert Job.objects.count() == 0 and Upload.objects.count() == 0
    assert sorted(p.name for p in ftp.homes["bob"].iterdir()) == ["secret.txt"]
