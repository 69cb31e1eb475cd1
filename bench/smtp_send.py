"""SMTP send benchmark: the outbox + a real Celery worker vs a plain smtplib loop.

Run by hand: `.venv/bin/python bench/smtp_send.py [--messages 1000]`.
Uses its own embedded PostgreSQL and Redis under .data/bench unless DATABASE_URL / REDIS_URL
are set (then it adds a user "bench-smtp" there).

One run, one local aiosmtpd sink (tests/peers/smtp.py, AUTH without TLS) in a process of
its own (so it does not share a GIL with either client):
- Satchel: ``outbox_create`` stores N small messages scheduled for later (so nothing is
  sent yet; the time this takes — validating, building the MIME bytes, inserting — is
  printed apart, as the loop below gets its bytes ready-made). Then, as when their time
  comes, they are made due and the beat's dispatcher (``outbox_dispatch_due``) enqueues,
  and a real worker (``launcher.worker_command``, the command `make run` starts) sends
  them. Timed from making them due until the sink holds all N.
- smtplib: the same N messages (the rows' final bytes) over ONE persistent connection.
- smtplib, one connection per message (connect, EHLO, AUTH, send, QUIT): what a sender
  that opens a session per message would pay, for comparison.
Satchel and the persistent loop take turns, ``--rounds`` times (the load other programs put
on the machine changes by the second); prints each round and the medians, messages/s for
each and the ratio (goal: Satchel >= 0.7x the persistent loop).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import smtplib
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SATCHEL_DATA_DIR", str(REPO / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ["OUTBOX_UNDO_SECONDS"] = "0"  # send at once (settings reads it from the env)

USER, PASSWORD = "bench", "bench-password"


def _sink(port_out, count, peers, stop) -> None:
    """The SMTP sink, in its own process: counts every accepted message into ``count``
    and the client connections they came over into ``peers``."""
    sys.path.insert(0, str(REPO))
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    from tests.peers.smtp import SMTPServer

    server = SMTPServer(
        users={USER: PASSWORD}, starttls=False, auth_require_tls=False, require_auth=True
    )
    capture = server._capture
    handler = server._controller.handler
    handle_data = handler.handle_DATA
    seen: set = set()

    def counted(message) -> None:
        capture(message)
        with count.get_lock():
            count.value += 1

    async def handle_DATA(smtp, session, envelope):
        seen.add(session.peer)
        peers.value = len(seen)
        return await handle_data(smtp, session, envelope)

    server._capture = counted
    handler.handle_DATA = handle_DATA
    with server:
        port_out.value = server.port
        stop.wait()


def _wait_count(count, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while count.value < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sink has {count.value} of {target} messages")
        time.sleep(0.002)
    return time.perf_counter()


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] + " load"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.messages

    spawn = multiprocessing.get_context("spawn")
    port, count, peers = spawn.Value("i", 0), spawn.Value("i", 0), spawn.Value("i", 0)
    stop = spawn.Event()
    sink = spawn.Process(target=_sink, args=(port, count, peers, stop), daemon=True)
    sink.start()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db.models import Count, Max, Min
    from django.utils import timezone

    from mailcore import outbox, services
    from mailcore.models import MailAccount, OutgoingMessage
    from webapp import launcher

    assert settings.OUTBOX_UNDO_SECONDS == 0, "OUTBOX_UNDO_SECONDS is not read from the env"
    call_command("migrate", verbosity=0)
    owner, _ = get_user_model().objects.get_or_create(username="bench-smtp")
    MailAccount.objects.filter(owner=owner).delete()
    while not port.value:
        time.sleep(0.05)
    # POP3: the Sent-folder APPEND after each send is skipped (no IMAP server here), so
    # this measures the outbox + SMTP path only.
    account = services.account_create(
        owner=owner, name="bench", email_address="bench@example.org",
        incoming_protocol="pop3", incoming_host="127.0.0.1", incoming_port=1,
        incoming_security="none", username=USER, password=PASSWORD,
        smtp_host="127.0.0.1", smtp_port=port.value, smtp_security="none",
    )  # fmt: skip

    def create(i: int, send_at=None):
        return outbox.outbox_create(
            owner=owner, account=account, to=[f"rcpt{i % 20}@example.net"],
            subject=f"Bench message {i}", text=f"Hello number {i}.\n" + "lorem ipsum " * 20,
            send_at=send_at,
        )  # fmt: skip

    env = launcher.child_environment(settings)
    env["OUTBOX_UNDO_SECONDS"] = "0"
    concurrency = settings.WORKER_CONCURRENCY
    Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)
    log = open(Path(settings.DATA_DIR) / "bench-smtp-worker.log", "wb")  # noqa: SIM115
    # launcher.start's command and environment; only its output goes to a log file.
    worker = subprocess.Popen(
        launcher.worker_command(concurrency=concurrency), env=env, start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Warm up: the worker is up and every pool process has sent one message.
        before = count.value
        for i in range(concurrency * 2):
            create(-1 - i)
        _wait_count(count, before + concurrency * 2, 120)
        time.sleep(1)

        def satchel(rows) -> tuple[float, int, dict, float]:
            """Make the rows due as their time would, dispatch as beat would, and time
            until the sink holds them all."""
            before, peers_before = count.value, peers.value
            start = time.perf_counter()
            OutgoingMessage.objects.filter(pk__in=[r.pk for r in rows]).update(
                next_attempt_at=timezone.now()
            )
            outbox.outbox_dispatch_due()
            took = _wait_count(count, before + n, args.timeout) - start
            connections = peers.value - peers_before
            time.sleep(0.5)  # let the last rows record "sent"
            ours = OutgoingMessage.objects.filter(pk__in=[r.pk for r in rows])
            states = dict(ours.values_list("state").annotate(c=Count("id")))
            span = ours.aggregate(first=Min("first_attempt_at"), last=Max("sent_at"))
            return took, connections, states, (span["last"] - span["first"]).total_seconds()

        def persistent_loop(raws) -> float:
            before = count.value
            start = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", port.value, timeout=30) as smtp:
                smtp.login(USER, PASSWORD)
                for mail_from, recipients, raw in raws:
                    smtp.sendmail(mail_from, recipients, raw)
            return _wait_count(count, before + n, args.timeout) - start

        # The machine's load from elsewhere changes by the second, so the two are
        # measured in turns, round after round, and compared round by round.
        results = []
        creating = 0.0
        for number in range(1, args.rounds + 1):
            later = timezone.now() + timedelta(hours=1)
            start = time.perf_counter()
            rows = [create(i, send_at=later) for i in range(n)]
            creating += time.perf_counter() - start
            raws = [(r.mail_from, list(r.recipients), bytes(r.raw)) for r in rows]
            load = _load()
            ours, connections, states, drain = satchel(rows)
            loop = persistent_loop(raws)
            results.append((ours, drain, loop))
            print(
                f"round {number}: Satchel {n / ours:6.1f} msg/s ({connections} SMTP "
                f"connection(s), {states}), worker alone {n / drain:6.1f} msg/s; smtplib "
                f"loop {n / loop:6.1f} msg/s; ratio {loop / ours:.2f}x   [{load}]"
            )
    finally:
        launcher.stop(worker)
        log.close()

    # Plain smtplib, a new connection (EHLO + AUTH + QUIT) per message.
    before = count.value
    start = time.perf_counter()
    for mail_from, recipients, raw in raws:
        with smtplib.SMTP("127.0.0.1", port.value, timeout=30) as smtp:
            smtp.login(USER, PASSWORD)
            smtp.sendmail(mail_from, recipients, raw)
    per_connection = _wait_count(count, before + n, args.timeout) - start
    stop.set()
    sink.join(10)

    ours, drain, loop = (statistics.median(column) for column in zip(*results, strict=True))
    ratio = statistics.median(loop_s / ours_s for ours_s, _, loop_s in results)
    size = sum(len(raw) for _, _, raw in raws) / n
    print(
        f"\n{n} messages (~{size:.0f} bytes each) into a local aiosmtpd sink; medians of "
        f"{len(results)} rounds:"
    )
    print(
        f"  Satchel outbox + worker (concurrency {concurrency}): {ours:7.2f} s "
        f"{n / ours:7.1f} msg/s"
    )
    print(
        f"  Satchel worker alone (first claim -> last sent_at): {drain:7.2f} s "
        f"{n / drain:7.1f} msg/s = {drain * 1000 * concurrency / n:.1f} ms of a worker "
        f"process per message"
    )
    print(f"  smtplib, one persistent connection:     {loop:7.2f} s {n / loop:7.1f} msg/s")
    print(
        f"  smtplib, one connection per message:    {per_connection:7.2f} s "
        f"{n / per_connection:7.1f} msg/s   (once, after the rounds)"
    )
    print(f"  ratio Satchel / persistent loop, median of the rounds': {ratio:.2f}x (goal >= 0.70x)")
    print(
        f"  (outbox_create, before each round: {creating * 1000 / n / len(results):.1f} ms per "
        "message to validate, build the MIME bytes and store it — not in the comparison)"
    )


if __name__ == "__main__":
    main()
