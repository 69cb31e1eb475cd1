"""The mail REST API (shared/API.md, Mail) against the real Dovecot."""

import hashlib

import pytest

from mailcore.models import Mailbox
from mailcore.sync import account_sync
from tests.mailfactory import make_message, numbered_messages

pytestmark = pytest.mark.django_db


def _inbox(account) -> Mailbox:
    return account.mailboxes.get(role=Mailbox.Role.INBOX)


def _flags(dovecot, user: str, folder: str, uid: int) -> str:
    result = dovecot.doveadm(
        "-f", "tab", "fetch", "-u", user, "flags", "mailbox", folder, "uid", str(uid)
    )
    return result.stdout.splitlines()[-1]


def test_account_create_keeps_the_password_secret(alice, api_as, dovecot):
    response = api_as(alice).post(
        "/api/v1/mail/accounts/",
        {
            "name": "Home",
            "email_address": "alice@example.org",
            "incoming_host": dovecot.host,
            "incoming_port": dovecot.imap_port,
            "incoming_security": "none",
            "username": "alice",
            "password": "secret-alice",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body and "smtp_password" not in body
    assert body["smtp_username"] == "alice"  # defaults to the incoming login
    assert body["sync_state"] == "idle"
    account_id = body["id"]
    assert api_as(alice).post(f"/api/v1/mail/accounts/{account_id}/test/").json() == {
        "incoming": "ok",
        "smtp": "not configured",
    }


def test_wrong_password_is_502_with_the_servers_words(alice, api_as, imap_account):
    imap_account.password = "wrong"
    imap_account.save()
    response = api_as(alice).post(f"/api/v1/mail/accounts/{imap_account.pk}/test/")
    assert response.status_code == 502
    assert response.json()["code"] == "auth_failed"
    assert "Authentication failed" in response.json()["detail"]


def test_an_untrusted_certificate_offers_its_fingerprint(alice, api_as, imap_account, dovecot):
    imap_account.incoming_security, imap_account.incoming_port = "tls", dovecot.imaps_port
    imap_account.save()
    response = api_as(alice).post(f"/api/v1/mail/accounts/{imap_account.pk}/test/")
    assert response.status_code == 502
    assert response.json()["code"] == "untrusted_certificate"
    assert response.json()["fingerprint"] == dovecot.fingerprint
    patch = {"incoming_tls_fingerprint": dovecot.fingerprint}
    api_as(alice).patch(f"/api/v1/mail/accounts/{imap_account.pk}/", patch, format="json")
    assert api_as(alice).post(f"/api/v1/mail/accounts/{imap_account.pk}/test/").status_code == 200


def test_message_list_is_newest_first_with_a_cursor(
    alice, api_as, dovecot, mail_user, imap_account
):
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(30))
    account_sync(account=imap_account)
    inbox = _inbox(imap_account)
    client = api_as(alice)
    first = client.get(f"/api/v1/mail/messages/?mailbox={inbox.pk}&page_size=20").json()
    assert [m["subject"] for m in first["results"][:2]] == ["Message 29", "Message 28"]
    second = client.get(first["next"]).json()
    assert [m["subject"] for m in second["results"]] == [f"Message {n}" for n in range(9, -1, -1)]
    assert second["next"] is None
    row = first["results"][0]
    assert row["sender"] == {"name": "Carol Sender", "email": "carol@example.org"}
    assert row["to"] == [{"name": "", "email": "alice@example.org"}]
    assert row["seen"] is False and row["snippet"].startswith("Body number 29")


def test_full_text_search_matches_prefixes(alice, api_as, dovecot, mail_user, imap_account):
    dovecot.seed_messages(
        mail_user,
        "INBOX",
        [make_message(subject="Invoice 2026-11"), make_message(subject="Holiday photos")],
    )
    account_sync(account=imap_account)
    found = api_as(alice).get("/api/v1/mail/messages/?q=invo").json()["results"]
    assert [m["subject"] for m in found] == ["Invoice 2026-11"]
    assert api_as(alice).get("/api/v1/mail/messages/?q=nothing-like-it").json()["results"] == []


def test_reading_a_message_fetches_and_sanitizes_its_body(
    alice, api_as, dovecot, mail_user, imap_account
):
    data = bytes(range(256)) * 40
    raw = make_message(
        subject="Report",
        body="See attached.",
        attachment=("r€port.bin", data, "application/octet-stream"),
    )
    dovecot.seed_messages(mail_user, "INBOX", [raw])
    account_sync(account=imap_account)
    message = _inbox(imap_account).messages.get()
    client = api_as(alice)
    detail = client.get(f"/api/v1/mail/messages/{message.pk}/").json()
    assert detail["text"].strip() == "See attached."
    [attachment] = detail["attachments"]
    assert attachment["filename"] == "r€port.bin" and attachment["size"] == len(data)
    download = client.get(f"/api/v1/mail/attachments/{attachment['id']}/")
    assert download.status_code == 200
    assert hashlib.sha256(download.content).digest() == hashlib.sha256(data).digest()
    assert download["Content-Disposition"].startswith("attachment;")
    assert client.get(f"/api/v1/mail/messages/{message.pk}/raw/").content == raw


def test_html_is_sanitized_and_remote_images_wait(alice, api_as, dovecot, mail_user, imap_account):
    html = (
        b"From: a@example.org\r\nSubject: Promo\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p onclick="x()">Hi<script>alert(1)</script><img src="https://t.example/p.gif"></p>'
    )
    dovecot.seed_messages(mail_user, "INBOX", [html])
    account_sync(account=imap_account)
    message = _inbox(imap_account).messages.get()
    detail = api_as(alice).get(f"/api/v1/mail/messages/{message.pk}/").json()
    assert "script" not in detail["html"] and "onclick" not in detail["html"]
    assert ' src="https://t.example/p.gif"' not in detail["html"]
    assert 'data-remote-src="https://t.example/p.gif"' in detail["html"]
    assert detail["remote_images_blocked"] == 1
    shown = api_as(alice).get(f"/api/v1/mail/messages/{message.pk}/?images=1").json()
    assert ' src="https://t.example/p.gif"' in shown["html"]


def test_flags_move_and_delete_go_to_the_server(alice, api_as, dovecot, mail_user, imap_account):
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(3))
    account_sync(account=imap_account)
    inbox = _inbox(imap_account)
    first, second, third = inbox.messages.order_by("uid")
    client = api_as(alice)
    assert (
        client.patch(
            f"/api/v1/mail/messages/{first.pk}/", {"seen": True, "flagged": True}, format="json"
        ).status_code
        == 200
    )
    assert "\\Seen" in _flags(dovecot, mail_user, "INBOX", first.uid)
    assert "\\Flagged" in _flags(dovecot, mail_user, "INBOX", first.uid)
    inbox.refresh_from_db()
    assert inbox.unread == 2
    archive = imap_account.mailboxes.get(role="archive")
    assert (
        client.post(
            f"/api/v1/mail/messages/{second.pk}/move/", {"mailbox": archive.pk}, format="json"
        ).status_code
        == 204
    )
    assert dovecot.message_count(mail_user, "Archive") == 1
    assert client.delete(f"/api/v1/mail/messages/{third.pk}/").status_code == 204
    assert dovecot.message_count(mail_user, "Trash") == 1
    assert dovecot.message_count(mail_user, "INBOX") == 1
    trashed = imap_account.mailboxes.get(role="trash").messages.get()
    assert client.delete(f"/api/v1/mail/messages/{trashed.pk}/").status_code == 204
    assert dovecot.message_count(mail_user, "Trash") == 0


def test_folders_are_created_renamed_and_deleted_on_the_server(
    alice, api_as, dovecot, mail_user, imap_account
):
    account_sync(account=imap_account)
    client = api_as(alice)
    made = client.post(
        "/api/v1/mail/mailboxes/", {"account": imap_account.pk, "name": "Clients"}, format="json"
    ).json()
    child = client.post(
        "/api/v1/mail/mailboxes/",
        {"account": imap_account.pk, "name": "Acme", "parent": made["id"]},
        format="json",
    ).json()
    assert child["path"] == "Clients/Acme"
    renamed = client.patch(
        f"/api/v1/mail/mailboxes/{made['id']}/", {"name": "Kunden"}, format="json"
    )
    assert renamed.json()["path"] == "Kunden"
    assert Mailbox.objects.get(pk=child["id"]).path == "Kunden/Acme"
    listed = dovecot.doveadm("mailbox", "list", "-u", mail_user).stdout.split()
    assert "Kunden/Acme" in listed and "Clients" not in listed
    assert client.delete(f"/api/v1/mail/mailboxes/{child['id']}/").status_code == 204
    assert "Kunden/Acme" not in dovecot.doveadm("mailbox", "list", "-u", mail_user).stdout.split()
    refused = client.post(
        "/api/v1/mail/mailboxes/", {"account": imap_account.pk, "name": "a\r\nb"}, format="json"
    )
    assert refused.status_code == 400


def test_another_users_mail_is_404_everywhere(alice, bob, api_as, dovecot, mail_user, imap_account):
    dovecot.seed_messages(
        mail_user, "INBOX", [make_message(attachment=("a.txt", b"hello", "text/plain"))]
    )
    account_sync(account=imap_account)
    message = _inbox(imap_account).messages.get()
    alice_client = api_as(alice)
    attachment_id = alice_client.get(f"/api/v1/mail/messages/{message.pk}/").json()["attachments"][
        0
    ]["id"]
    bob_client = api_as(bob)
    inbox = _inbox(imap_account)
    for path in [
        f"/api/v1/mail/accounts/{imap_account.pk}/",
        f"/api/v1/mail/mailboxes/{inbox.pk}/",
        f"/api/v1/mail/messages/{message.pk}/",
        f"/api/v1/mail/messages/{message.pk}/raw/",
        f"/api/v1/mail/attachments/{attachment_id}/",
    ]:
        assert bob_client.get(path).status_code == 404, path
    assert bob_client.post(f"/api/v1/mail/accounts/{imap_account.pk}/sync/").status_code == 404
    assert (
        bob_client.patch(
            f"/api/v1/mail/messages/{message.pk}/", {"seen": True}, format="json"
        ).status_code
        == 404
    )
    assert bob_client.delete(f"/api/v1/mail/messages/{message.pk}/").status_code == 404
    bulk = bob_client.post(
        "/api/v1/mail/messages/bulk/", {"ids": [message.pk], "action": "read"}, format="json"
    )
    assert bulk.status_code == 400
    assert bob_client.get(f"/api/v1/mail/messages/?mailbox={inbox.pk}").json()["results"] == []
    assert bob_client.get("/api/v1/mail/messages/?q=hello").json()["results"] == []


def test_server_search_finds_bodies_we_never_fetched(
    alice, api_as, dovecot, mail_user, imap_account
):
    dovecot.seed_messages(
        mail_user,
        "INBOX",
        [
            make_message(subject="Notes", body="Filler. " * 100 + "The word is quokka."),
            make_message(),
        ],
    )
    account_sync(account=imap_account)
    inbox = _inbox(imap_account)
    client = api_as(alice)
    local = client.get(f"/api/v1/mail/messages/?mailbox={inbox.pk}&q=quokka").json()
    assert local["results"] == []  # beyond the snippet, in a body we never fetched
    merged = client.get(f"/api/v1/mail/messages/?mailbox={inbox.pk}&q=quokka&server=1").json()
    assert [m["subject"] for m in merged["results"]] == ["Notes"]


def test_pop3_accounts_are_refused_clearly_for_now(alice, api_as):
    response = api_as(alice).post(
        "/api/v1/mail/accounts/",
        {
            "name": "Old",
            "email_address": "alice@example.org",
            "incoming_protocol": "pop3",
            "incoming_host": "127.0.0.1",
            "incoming_port": 110,
            "incoming_security": "none",
            "username": "alice",
            "password": "secret-alice",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["errors"]["incoming_protocol"] == [
        "POP3 accounts are not supported yet; use IMAP for now."
    ]


def test_account_test_logs_in_to_smtp_too(alice, api_as, imap_account, smtp_server):
    imap_account.smtp_host, imap_account.smtp_port = smtp_server.host, smtp_server.port
    imap_account.smtp_security = "starttls"
    imap_account.smtp_tls_fingerprint = smtp_server.fingerprint
    imap_account.smtp_username, imap_account.smtp_password = "alice", "secret-alice"
    imap_account.save()
    url = f"/api/v1/mail/accounts/{imap_account.pk}/test/"
    assert api_as(alice).post(url).json() == {"incoming": "ok", "smtp": "ok"}
    imap_account.smtp_password = "wrong"
    imap_account.save()
    refused = api_as(alice).post(url)
    assert refused.status_code == 502
    assert refused.json()["code"] == "auth_failed"
    assert refused.json()["server"] == "smtp"
    assert refused.json()["detail"].startswith("SMTP: ")
