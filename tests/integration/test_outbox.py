"""The outbox against real aiosmtpd (STARTTLS + AUTH), real Dovecot and a real Celery worker."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from mailcore import outbox
from mailcore.models import Contact, OutgoingMessage
from tests import processes
from tests.peers.ports import HOST, free_port
from tests.peers.smtp import SMTPServer

State = OutgoingMessage.State


@pytest.fixture
def account(sending_account):
    return sending_account


@pytest.fixture(scope="module")
def plain_server():
    with SMTPServer(starttls=False) as server:
        yield server


@pytest.fixture
def no_undo(settings):
    settings.OUTBOX_UNDO_SECONDS = 0
    settings.OUTBOX_RETRY_DELAYS = [1]


@pytest.fixture
def smtp_peers(smtp):
    """For each message the peer accepts, the client end (host, port) of its connection."""
    handler = smtp._controller.handler
    handle_data = handler.handle_DATA
    peers: list[tuple[str, int]] = []

    async def recording(server, session, envelope):
        reply = await handle_data(server, session, envelope)
        if reply.startswith("250"):
            peers.append(session.peer)
        return reply

    # aiosmtpd looks its hooks up on the handler when a connection starts.
    handler.handle_DATA = recording
    yield peers
    del handler.handle_DATA


def create(account, **fields):
    values = {"to": ["bob@example.org"], "subject": "Hello", "text": "Hi Bob."}
    values.update(fields)
    return outbox.outbox_create(owner=account.owner, account=account, **values)


def make_due(message):
    OutgoingMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


def reload(message):
    return OutgoingMessage.objects.get(pk=message.pk)


# --------------------------------------------------------------------------- services


@pytest.mark.django_db
def test_one_hundred_recipients_in_one_transaction(account, smtp, no_undo):
    recipients = [f"r{n}@example.org" for n in range(100)]
    message = create(account, to=recipients[:50], cc=recipients[50:90], bcc=recipients[90:])
    assert outbox.outbox_send(message_id=message.pk) == State.SENT
    [captured] = smtp.wait_for_messages(1)
    assert sorted(captured.rcpt_tos) == sorted(recipients)
    assert b"r95@example.org" not in captured.data  # Bcc never in the headers
    message = reload(message)
    assert message.state == State.SENT and len(message.accepted) == 100 and message.sent_at
    assert Contact.objects.filter(owner=account.owner, collected=True).count() == 100


@pytest.mark.django_db
def test_some_recipients_refused_the_rest_delivered(account, smtp, no_undo):
    smtp.refuse_recipient("carol@example.org", 550, "5.1.1 No such user here")
    message = create(account, to=["bob@example.org", "carol@example.org"])
    assert outbox.outbox_send(message_id=message.pk) == State.SENT
    [captured] = smtp.wait_for_messages(1)
    assert list(captured.rcpt_tos) == ["bob@example.org"]
    message = reload(message)
    assert message.refused == [
        {"address": "carol@example.org", "code": 550, "reply": "5.1.1 No such user here"}
    ]


@pytest.mark.django_db
def test_451_twice_then_success_delivers_exactly_once(account, smtp, no_undo):
    smtp.fail_next("DATA", 451, "4.3.0 Try again later", times=2)
    message = create(account)
    assert outbox.outbox_send(message_id=message.pk) == State.RETRYING
    # Not due yet: a second run (a duplicate task) does nothing.
    assert outbox.outbox_send(message_id=message.pk) is None
    row = reload(message)
    assert row.attempts == 1 and "451 4.3.0 Try again later" in row.last_error
    assert row.next_attempt_at > timezone.now()
    make_due(message)
    assert outbox.outbox_send(message_id=message.pk) == State.RETRYING
    make_due(message)
    assert outbox.outbox_send(message_id=message.pk) == State.SENT
    make_due(message)
    assert outbox.outbox_send(message_id=message.pk) is None
    assert len(smtp.wait_for_messages(1)) == 1
    time.sleep(0.3)
    assert len(smtp.messages) == 1
    row = reload(message)
    assert row.state == State.SENT and row.attempts == 3 and row.last_error == ""


@pytest.mark.django_db
def test_transient_failures_give_up_after_the_limit(account, smtp, no_undo, settings):
    settings.OUTBOX_GIVE_UP_AFTER = 3600
    smtp.fail_next("MAIL", 421, "4.7.0 Busy", times=5)
    message = create(account)
    assert outbox.outbox_send(message_id=message.pk) == State.RETRYING
    OutgoingMessage.objects.filter(pk=message.pk).update(
        first_attempt_at=timezone.now() - timedelta(days=5), next_attempt_at=timezone.now()
    )
    assert outbox.outbox_send(message_id=message.pk) == State.FAILED
    row = reload(message)
    assert row.last_error.startswith("Gave up after 2 attempts") and "Busy" in row.last_error


@pytest.mark.django_db
def test_550_fails_at_once_with_the_servers_text(account, smtp, no_undo):
    smtp.fail_next("DATA", 550, "5.7.1 Message rejected as spam")
    message = create(account)
    assert outbox.outbox_send(message_id=message.pk) == State.FAILED
    row = reload(message)
    assert row.last_error == "550 5.7.1 Message rejected as spam"
    assert row.next_attempt_at is None and smtp.messages == []


@pytest.mark.django_db
def test_connection_cut_mid_data_is_retried_and_delivered_once(
    account, plain_server, fault_proxy_factory, no_undo
):
    plain_server.reset()
    proxy = fault_proxy_factory(HOST, plain_server.port)
    account.smtp_port, account.smtp_security = proxy.port, "none"
    account.smtp_username = account.smtp_password = account.smtp_tls_fingerprint = ""
    account.save()
    upload = outbox.upload_create(
        owner=account.owner, filename="big.bin", chunks=[os.urandom(400_000)]
    )
    message = create(account, uploads=[upload])
    proxy.cut_after(128_000, "up", once=True)
    assert outbox.outbox_send(message_id=message.pk) == State.RETRYING
    assert "Connection lost" in reload(message).last_error
    assert plain_server.messages == []
    make_due(message)
    assert outbox.outbox_send(message_id=message.pk) == State.SENT
    assert len(plain_server.wait_for_messages(1)) == 1
    time.sleep(0.3)
    assert len(plain_server.messages) == 1


@pytest.mark.django_db
def test_unknown_outcome_is_not_resent_and_is_resolved_from_sent(account, dovecot, no_undo):
    message = create(account)
    # As if the connection died after the final dot:
    OutgoingMessage.objects.filter(pk=message.pk).update(state=State.UNKNOWN)
    assert outbox.outbox_send(message_id=message.pk) is None
    assert outbox.outbox_resolve_unknown(message=reload(message)) == State.UNKNOWN
    dovecot.append(account.username, "Sent", bytes(reload(message).raw))
    assert outbox.outbox_resolve_unknown(message=reload(message)) == State.SENT
    assert reload(message).sent_copy_saved


@pytest.mark.django_db
def test_sent_copy_is_saved_once(account, smtp, dovecot, no_undo):
    message = create(account)
    assert outbox.outbox_send(message_id=message.pk) == State.SENT
    assert dovecot.message_count(account.username, "Sent") == 1
    # The service again, and the copy step again (even with its flag given back).
    make_due(message)
    assert outbox.outbox_send(message_id=message.pk) is None
    assert outbox.outbox_save_sent_copy(message_id=message.pk) is False
    OutgoingMessage.objects.filter(pk=message.pk).update(sent_copy_saved=False)
    assert outbox.outbox_save_sent_copy(message_id=message.pk) is True
    assert dovecot.message_count(account.username, "Sent") == 1
    assert len(smtp.messages) == 1


@pytest.mark.django_db
def test_scheduled_and_cancelled_never_reach_the_server(account, smtp, settings):
    settings.OUTBOX_UNDO_SECONDS = 10
    undo = create(account)
    later = create(account, send_at=timezone.now() + timedelta(hours=1))
    assert undo.state == State.SCHEDULED and later.state == State.SCHEDULED
    assert outbox.outbox_send(message_id=later.pk) is None
    assert outbox.outbox_cancel(message=undo).state == State.CANCELLED
    make_due(undo)
    assert outbox.outbox_send(message_id=undo.pk) is None
    assert outbox.outbox_dispatch_due() == 0
    time.sleep(0.3)
    assert smtp.messages == []
    assert reload(later).state == State.SCHEDULED


@pytest.mark.django_db
def test_cancel_once_the_body_is_handed_over_is_a_conflict(account, api_as, settings):
    settings.OUTBOX_UNDO_SECONDS = 10
    message = create(account)
    OutgoingMessage.objects.filter(pk=message.pk).update(state=State.SENDING, body_sent=True)
    response = api_as(account.owner).post(f"/api/v1/mail/outbox/{message.pk}/cancel/")
    assert response.status_code == 409
    assert "being sent" in response.json()["detail"]


@pytest.mark.django_db
def test_a_message_cancelled_while_waiting_its_turn_in_a_batch_is_not_sent(
    account, smtp, no_undo, monkeypatch
):
    messages = [create(account, subject=f"n{n}") for n in range(4)]
    record_start = outbox._record_start

    def cancel_the_third_while_the_first_goes_out(outcomes, *, token, handover):
        if handover == messages[0].pk:
            assert reload(messages[2]).state == State.SENDING  # claimed with the batch
            assert outbox.outbox_cancel(message=messages[2]).state == State.CANCELLED
        return record_start(outcomes, token=token, handover=handover)

    monkeypatch.setattr(outbox, "_record_start", cancel_the_third_while_the_first_goes_out)
    assert outbox.outbox_send(message_id=messages[0].pk) == State.SENT
    time.sleep(0.3)
    assert sorted(message_ids(smtp)) == sorted(messages[n].message_id for n in (0, 1, 3))
    assert reload(messages[2]).state == State.CANCELLED


# --------------------------------------------------------------------------- batches


def message_ids(server):
    return [message_from_bytes(m.data)["Message-ID"] for m in server.messages]


@pytest.mark.django_db
def test_a_batch_goes_over_one_connection_and_each_message_once(account, smtp, smtp_peers, no_undo):
    messages = [create(account, to=[f"r{n}@example.org"], subject=f"n{n}") for n in range(30)]
    assert outbox.outbox_send(message_id=messages[0].pk) == State.SENT
    # Each task enqueued for the others finds its row taken (sent) and does nothing.
    assert outbox.outbox_send(message_id=messages[7].pk) is None
    assert len(smtp.wait_for_messages(30)) == 30
    time.sleep(0.3)
    assert sorted(message_ids(smtp)) == sorted(m.message_id for m in messages)
    assert len(smtp_peers) == 30 and len(set(smtp_peers)) == 1
    rows = OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages])
    assert {(r.state, r.attempts, r.body_sent) for r in rows} == {(State.SENT, 1, True)}
    assert Contact.objects.filter(owner=account.owner, collected=True).count() == 30


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "text", "state"),
    [
        (450, "4.2.1 Mailbox busy, try later", State.RETRYING),
        (550, "5.1.1 No such user here", State.FAILED),
    ],
)
def test_a_refusal_in_the_middle_of_a_batch_touches_only_that_message(
    account, smtp, smtp_peers, no_undo, code, text, state
):
    smtp.refuse_recipient("carol@example.org", code, text)
    recipients = ["r0@example.org", "r1@example.org", "carol@example.org", "r3@example.org"]
    messages = [create(account, to=[address]) for address in recipients]
    carol = messages[2]
    outbox.outbox_send(message_id=messages[0].pk)
    assert len(smtp.wait_for_messages(3)) == 3
    assert len(set(smtp_peers)) == 1  # the same connection before and after the refusal
    row = reload(carol)
    assert row.state == state and f"{code} {text}" in row.last_error
    assert row.refused == [{"address": "carol@example.org", "code": code, "reply": text}]
    others = OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages]).exclude(pk=carol.pk)
    assert {(r.state, r.attempts) for r in others} == {(State.SENT, 1)}
    # Only a 4xx comes back, once due, and is then delivered once; the others never again.
    smtp.reset()
    make_due(carol)
    for message in messages:
        outbox.outbox_send(message_id=message.pk)
    time.sleep(0.3)
    if state == State.RETRYING:
        assert reload(carol).state == State.SENT and reload(carol).attempts == 2
        assert message_ids(smtp) == [carol.message_id]
    else:
        assert reload(carol).state == State.FAILED and smtp.messages == []


@pytest.mark.django_db
def test_a_run_asks_for_one_helper_and_hands_over_when_its_time_is_up(
    account, smtp, no_undo, monkeypatch
):
    monkeypatch.setattr(outbox, "_BATCH_SIZE", 2)
    messages = [create(account, subject=f"n{n}") for n in range(7)]
    kicks: list[int] = []
    monkeypatch.setattr(outbox, "_kick", lambda account_id, message_id: kicks.append(message_id))
    # Batches of 2, 2, 2, 1 over one run: one helper asked for, after the first full batch.
    assert outbox.outbox_send(message_id=messages[0].pk) == State.SENT
    assert kicks == [messages[1].pk]
    assert len(smtp.wait_for_messages(7)) == 7
    # Out of time after a batch: the rest goes to a new task, and nothing is lost.
    monkeypatch.setattr(outbox, "_DRAIN_SECONDS", 0.0)
    kicks.clear()
    later = [create(account, subject=f"later{n}") for n in range(3)]
    assert outbox.outbox_send(message_id=later[0].pk) == State.SENT
    assert kicks == [later[1].pk, later[1].pk]  # a helper, then the hand-over
    assert [reload(m).state for m in later] == [State.SENT, State.SENT, State.QUEUED]
    assert outbox.outbox_send(message_id=later[1].pk) is None  # the hand-over's task
    assert reload(later[2]).state == State.SENT
    time.sleep(0.3)
    assert len(smtp.messages) == 10


@pytest.mark.django_db
def test_cancelled_and_scheduled_messages_of_the_account_stay_out_of_the_batch(
    account, smtp, no_undo
):
    first, second = create(account, subject="one"), create(account, subject="two")
    cancelled = create(account, subject="cancelled")
    outbox.outbox_cancel(message=cancelled)
    later = create(account, subject="later", send_at=timezone.now() + timedelta(hours=1))
    failed = create(account, subject="failed")
    OutgoingMessage.objects.filter(pk=failed.pk).update(state=State.FAILED)
    assert outbox.outbox_send(message_id=second.pk) == State.SENT
    time.sleep(0.3)
    assert sorted(message_ids(smtp)) == sorted([first.message_id, second.message_id])
    assert reload(cancelled).state == State.CANCELLED
    assert reload(later).state == State.SCHEDULED and reload(later).attempts == 0
    assert reload(failed).state == State.FAILED
    # A task for a message that is not due (cancelled, scheduled) sends nothing.
    assert outbox.outbox_send(message_id=cancelled.pk) is None
    assert outbox.outbox_send(message_id=later.pk) is None
    assert len(smtp.messages) == 2


@pytest.mark.django_db
def test_an_unreachable_server_puts_the_whole_batch_back_to_retrying(account, no_undo):
    account.smtp_port = free_port()  # nothing listens there
    account.save()
    messages = [create(account, subject=f"n{n}") for n in range(3)]
    assert outbox.outbox_send(message_id=messages[0].pk) == State.RETRYING
    for message in messages:
        row = reload(message)
        assert row.state == State.RETRYING and row.attempts == 1
        assert "Connecting to the SMTP server" in row.last_error


@pytest.mark.django_db
def test_a_worker_that_outlived_its_lease_does_not_send_what_the_sweeper_took_back(
    account, smtp, smtp_peers, no_undo, monkeypatch
):
    first, second = create(account, subject="first"), create(account, subject="second")
    record_start = outbox._record_start
    swept: list[str] = []

    def lease_runs_out_before_the_second_dot(outcomes, *, token, handover):
        if handover == second.pk and not swept:  # as if this worker had stalled that long
            OutgoingMessage.objects.filter(pk=second.pk).update(
                lease_until=timezone.now() - timedelta(seconds=1)
            )
            assert outbox.outbox_sweep_stale() == 1
            swept.append(reload(second).state)
        return record_start(outcomes, token=token, handover=handover)

    monkeypatch.setattr(outbox, "_record_start", lease_runs_out_before_the_second_dot)
    # The old claim may not hand the second one over; the same run then claims it anew
    # (the sweeper queued it again) and sends it once.
    assert outbox.outbox_send(message_id=first.pk) == State.SENT
    assert swept == [State.QUEUED]
    row = reload(second)
    assert row.state == State.SENT and row.attempts == 2
    time.sleep(0.3)
    assert sorted(message_ids(smtp)) == sorted([first.message_id, second.message_id])
    assert smtp_peers[0] != smtp_peers[1]  # the first connection was dropped mid-DATA


@pytest.mark.django_db
def test_the_sweeper_trusts_no_mark_of_a_claim_older_than_postgresql(account, settings):
    settings.OUTBOX_UNDO_SECONDS = 3600
    old, recent = create(account, subject="old"), create(account, subject="recent")
    # A mark is committed without waiting for the disk: if PostgreSQL restarted since the
    # claim, a missing mark proves nothing, so the row may have been delivered.
    OutgoingMessage.objects.filter(pk__in=[old.pk, recent.pk]).update(
        state=State.SENDING,
        claim_token="dead-worker",
        body_sent=False,
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    OutgoingMessage.objects.filter(pk=old.pk).update(
        updated_at=timezone.now() - timedelta(days=365 * 30)
    )
    assert outbox.outbox_sweep_stale() == 2
    assert reload(old).state == State.UNKNOWN
    assert reload(recent).state == State.QUEUED


# --------------------------------------------------------------------------- a killed worker

# Runs the service in a process of its own and kills it (os._exit, as SIGKILL would: no
# cleanup, no exception handler) at one point of the attempt.
KILLER = """
import os, sys, time
import django

django.setup()
from mailcore import outbox
from mailcore.protocols.smtp import SmtpSession

message_id, where = int(sys.argv[1]), sys.argv[2]
record_start = outbox._record_start


def record_then_die(outcomes, *, token, handover):
    if handover is not None and where == "before-mark":
        os._exit(17)
    answer = record_start(outcomes, token=token, handover=handover)

    def answer_then_die():
        written = answer()  # waited for right before the dot
        if handover is not None and where == "before-dot":
            os._exit(17)
        return written

    return answer_then_die


def reply_never_read(self):
    time.sleep(0.5)  # the dot is out; let the server take the message
    os._exit(17)


outbox._record_start = record_then_die
SmtpSession._final_reply = reply_never_read
outbox.outbox_send(message_id=message_id)
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("where", "swept_to", "delivered"),
    [
        # Killed before the hand-over mark was sent (it goes out as the mail transaction
        # begins): the server cannot have the message; queued again, then delivered once.
        ("before-mark", State.QUEUED, 0),
        # Killed with the mark committed, right before the final dot: nothing delivered,
        # but the row cannot know -> unknown, never resent.
        ("before-dot", State.UNKNOWN, 0),
        # Killed after the dot, before the reply: delivered -> unknown, never resent.
        ("after-dot", State.UNKNOWN, 1),
    ],
)
def test_a_worker_killed_mid_attempt_never_causes_a_second_delivery(
    account, smtp, dovecot, settings, tmp_path, where, swept_to, delivered
):
    settings.OUTBOX_UNDO_SECONDS = 3600  # no task: only the killed process sends
    message = create(account)
    make_due(message)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(message.pk), where],
        env=processes.test_environment(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == 17, killed.stderr.decode()[-2000:]
    time.sleep(0.5)
    row = reload(message)
    assert row.state == State.SENDING and row.body_sent == (where != "before-mark")
    assert len(smtp.messages) == delivered
    OutgoingMessage.objects.filter(pk=message.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert outbox.outbox_sweep_stale() == 1
    assert reload(message).state == swept_to
    if swept_to == State.UNKNOWN:
        # Not in Sent (the peer does not file it): it stays unknown, for the user.
        assert outbox.outbox_resolve_unknown(message=reload(message)) == State.UNKNOWN
        assert outbox.outbox_send(message_id=message.pk) is None
        assert outbox.outbox_dispatch_due() == 0
    else:
        assert outbox.outbox_send(message_id=message.pk) == State.SENT
        delivered += 1
    time.sleep(0.3)
    assert len(smtp.messages) == delivered <= 1


# --------------------------------------------------------------------------- the API


@pytest.mark.django_db
def test_ten_megabyte_attachment_and_non_ascii_round_trip(account, smtp, api_as, no_undo):
    client = api_as(account.owner)
    content = os.urandom(10 * 1024 * 1024)
    name = "Ünïcödé résumé — 日本.bin"
    upload_file = io.BytesIO(content)
    upload_file.name = name
    response = client.post("/api/v1/uploads/", {"file": upload_file}, format="multipart")
    assert response.status_code == 201, response.content
    upload = response.json()
    assert upload["filename"] == name and upload["size"] == len(content)
    identity = client.post(
        "/api/v1/mail/identities/",
        {
            "account": account.pk,
            "name": "Алиса Льюис",
            "email_address": "alice.alias@example.org",
            "signature": "Cheers, Алиса",
        },
        format="json",
    )
    assert identity.status_code == 201, identity.content
    response = client.post(
        "/api/v1/mail/outbox/",
        {
            "account": account.pk,
            "identity": identity.json()["id"],
            "to": ["Zoë Ångström <zoe@example.org>"],
            "subject": "Grüße aus Köln — 東京",
            "text": "Hallo Zoë!",
            "attachments": [upload["id"]],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == State.QUEUED and body["message_id"]
    assert outbox.outbox_send(message_id=body["id"]) == State.SENT
    [captured] = smtp.wait_for_messages(1)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    assert str(parsed["Subject"]) == "Grüße aus Köln — 東京"
    assert parsed["From"].addresses[0].display_name == "Алиса Льюис"
    assert parsed["From"].addresses[0].addr_spec == "alice.alias@example.org"
    assert parsed["Message-ID"].strip() == body["message_id"]
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == name
    assert hashlib.sha256(part.get_payload(decode=True)).digest() == (
        hashlib.sha256(content).digest()
    )
    assert "Cheers, Алиса" in parsed.get_body(("plain",)).get_content()


@pytest.mark.django_db
def test_header_injection_and_bad_addresses_are_400(account, api_as):
    client = api_as(account.owner)
    url = "/api/v1/mail/outbox/"
    injected = client.post(
        url,
        {"account": account.pk, "to": ["bob@example.org"], "subject": "Hi\r\nBcc: x@evil.org"},
        format="json",
    )
    assert injected.status_code == 400
    assert "line breaks" in injected.json()["detail"]
    bad = client.post(
        url, {"account": account.pk, "to": ["bob@", "ok@example.org", "x y@z.org"]}, format="json"
    )
    assert bad.status_code == 400
    assert set(bad.json()["errors"]["addresses"]) == {"bob@", "x y@z.org"}
    assert OutgoingMessage.objects.count() == 0


@pytest.mark.django_db
def test_group_name_as_recipient_expands(account, smtp, api_as, no_undo):
    client = api_as(account.owner)
    assert (
        client.post(
            "/api/v1/mail/groups/", {"name": "Inner", "members": ["c@example.org", "Outer"]},
            format="json",
        ).status_code
        == 201
    )  # fmt: skip
    client.post(
        "/api/v1/mail/groups/", {"name": "Outer", "members": ["a@example.org", "Inner"]},
        format="json",
    )  # fmt: skip
    response = client.post(
        "/api/v1/mail/outbox/", {"account": account.pk, "to": ["Outer"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert [a["email"] for a in response.json()["to"]] == ["a@example.org", "c@example.org"]


@pytest.mark.django_db
def test_bob_gets_404_everywhere(account, bob, api_as, settings):
    settings.OUTBOX_UNDO_SECONDS = 10
    alice_client, bob_client = api_as(account.owner), api_as(bob)
    message = create(account)
    identity = alice_client.post(
        "/api/v1/mail/identities/",
        {"account": account.pk, "email_address": "a2@example.org"},
        format="json",
    ).json()
    contact = alice_client.post(
        "/api/v1/mail/contacts/", {"name": "C", "email_address": "c@example.org"}, format="json"
    ).json()
    group = alice_client.post(
        "/api/v1/mail/groups/", {"name": "G", "members": []}, format="json"
    ).json()
    upload_file = io.BytesIO(b"hello")
    upload_file.name = "a.txt"
    upload = alice_client.post("/api/v1/uploads/", {"file": upload_file}, format="multipart")
    upload = upload.json()
    for url in [
        f"/api/v1/mail/outbox/{message.pk}/",
        f"/api/v1/mail/identities/{identity['id']}/",
        f"/api/v1/mail/contacts/{contact['id']}/",
        f"/api/v1/mail/groups/{group['id']}/",
        f"/api/v1/uploads/{upload['id']}/",
    ]:
        assert bob_client.get(url).status_code == 404, url
    assert bob_client.post(f"/api/v1/mail/outbox/{message.pk}/cancel/").status_code == 404
    assert bob_client.get("/api/v1/mail/outbox/").json()["results"] == []
    # bob cannot send from alice's account, nor with her uploads or identities.
    for payload in [
        {"account": account.pk, "to": ["x@example.org"]},
    ]:
        assert bob_client.post("/api/v1/mail/outbox/", payload, format="json").status_code == 404
    bob_account = type(account).objects.create(
        owner=bob, name="B", email_address="bob@example.org", incoming_host="h",
        username="b", password="p",
    )  # fmt: skip
    for extra in [{"attachments": [upload["id"]]}, {"identity": identity["id"]}]:
        response = bob_client.post(
            "/api/v1/mail/outbox/",
            {"account": bob_account.pk, "to": ["x@example.org"], **extra},
            format="json",
        )
        assert response.status_code in (400, 404), extra
    assert (
        bob_client.post(
            "/api/v1/mail/identities/", {"account": account.pk, "email_address": "z@example.org"},
            format="json",
        ).status_code
        in (400, 404)
    )  # fmt: skip


# --------------------------------------------------------------------------- the real worker


def wait_state(message, state, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = reload(message)
        if row.state == state:
            return row
        time.sleep(0.1)
    raise AssertionError(f"still {reload(message).state}, wanted {state}")


@pytest.mark.django_db(transaction=True)
def test_worker_sends_a_queued_message(account, smtp, dovecot, api_as, celery_worker, no_undo):
    response = api_as(account.owner).post(
        "/api/v1/mail/outbox/",
        {"account": account.pk, "to": ["bob@example.org"], "subject": "Via worker"},
        format="json",
    )
    assert response.status_code == 201
    row = wait_state(OutgoingMessage(pk=response.json()["id"]), State.SENT)
    assert len(smtp.wait_for_messages(1)) == 1
    # The flag is taken before the APPEND, so wait for the copy itself.
    deadline = time.monotonic() + 10
    while dovecot.message_count(account.username, "Sent") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dovecot.message_count(account.username, "Sent") == 1
    assert reload(row).sent_copy_saved and reload(row).sent_copy_error == ""


@pytest.mark.django_db(transaction=True)
def test_sweeper_requeues_a_row_stuck_in_sending(account, smtp, celery_worker, settings):
    settings.OUTBOX_UNDO_SECONDS = 3600  # nothing is enqueued at create time
    message = create(account)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=State.SENDING,
        attempts=1,
        claim_token="dead-worker",
        lease_until=timezone.now() + timedelta(minutes=5),
    )
    assert outbox.outbox_sweep_stale() == 0  # the lease still runs
    OutgoingMessage.objects.filter(pk=message.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert outbox.outbox_sweep_stale() == 1
    row = wait_state(message, State.SENT)
    assert row.attempts == 2
    assert len(smtp.wait_for_messages(1)) == 1
    time.sleep(0.5)
    assert len(smtp.messages) == 1
    assert outbox.outbox_sweep_stale() == 0


@pytest.mark.django_db(transaction=True)
def test_worker_sends_a_burst_once_each_with_one_sent_copy_each(
    account, smtp, dovecot, celery_worker, no_undo
):
    messages = [create(account, to=[f"r{n}@example.org"], subject=f"n{n}") for n in range(40)]
    for message in messages:
        wait_state(message, State.SENT)
    deadline = time.monotonic() + 20
    while dovecot.message_count(account.username, "Sent") < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert sorted(message_ids(smtp)) == sorted(m.message_id for m in messages)
    assert dovecot.message_count(account.username, "Sent") == 40
    rows = OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages])
    assert {(r.attempts, r.sent_copy_saved, r.sent_copy_error) for r in rows} == {(1, True, "")}
