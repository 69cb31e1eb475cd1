"""IMAP sync benchmark: Satchel's sync vs mbsync, and the message API at 100,000 messages.

Run by hand: `.venv/bin/python bench/imap_sync.py [--messages 10000] [--big 100000]`.
Needs root (it starts a private Dovecot from tests/peers) and mbsync (`apt-get install isync`).
Uses its own embedded PostgreSQL and Redis under .data/bench, so your data is untouched.

Prints, from one run on this machine:
- wall time of mbsync pulling the folder into a Maildir, and of our initial sync into
  PostgreSQL, and their ratio (goal: ours <= 1.0x mbsync);
- a no-change incremental sync (goal: <= 0.3 s);
- with --big N messages in one folder: p50/p95 of the message-list API and of full-text
  search over HTTP against the real ASGI server (goals: p95 <= 50 ms and <= 300 ms).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SATCHEL_DATA_DIR", str(REPO / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

WORDS = [
    "invoice", "meeting", "project", "report", "budget", "travel", "lunch", "update", "review",
    "contract", "draft", "holiday", "schedule", "release", "server", "backup", "customer",
    "order", "payment", "shipping", "question",
]  # fmt: skip
NAMES = ["Ada Lovelace", "Grace Hopper", "Jürgen Groß", "Zoë Quinn", "李雷", "Søren Kierkegaard"]


def corpus(count: int, seed: int = 7) -> list[bytes]:
    """Varied messages averaging ~7 KiB (74 MiB / 10,000 in the DESIGN baseline)."""
    rng = random.Random(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    messages = []
    for n in range(count):
        message = EmailMessage()
        name = rng.choice(NAMES)
        message["From"] = f"{name} <{name.split()[0].lower()}{n % 50}@example.org>"
        message["To"] = "bench@example.org"
        message["Subject"] = " ".join(rng.choices(WORDS, k=rng.randint(2, 7))).capitalize()
        message["Date"] = format_datetime(start + timedelta(minutes=37 * n))
        message["Message-ID"] = make_msgid(domain="bench.example.org")
        paragraphs = [" ".join(rng.choices(WORDS, k=rng.randint(40, 160))) for _ in range(6)]
        message.set_content("\n\n".join(paragraphs))
        if n % 10 == 0:
            html = "".join(f"<p>{p}</p>" for p in paragraphs)
            message.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
        messages.append(bytes(message))
    return messages


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def mbsync_pull(dovecot, user: str, password: str, folder: str) -> float:
    work = Path(tempfile.mkdtemp(prefix="mbsync-"))
    (work / "maildir").mkdir()
    config = work / "mbsyncrc"
    config.write_text(
        f"IMAPAccount bench\nHost {dovecot.host}\nPort {dovecot.imap_port}\nUser {user}\n"
        f"Pass {password}\nSSLType None\nAuthMechs LOGIN\n\n"
        f"IMAPStore remote\nAccount bench\n\n"
        f"MaildirStore local\nPath {work}/maildir/\nInbox {work}/maildir/INBOX\n\n"
        f"Channel bench\nFar :remote:\nNear :local:\nPatterns {folder}\n"
        f"Create Near\nSync Pull\nSyncState *\n"
    )
    try:
        return timed(
            lambda: subprocess.run(
                ["mbsync", "-q", "-c", str(config), "-a"], check=True, capture_output=True
            )
        )
    finally:
        shutil.rmtree(work)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


def http_latencies(port: int, token: str, paths: list[str], workers: int = 4) -> list[float]:
    def fetch(path: str) -> float:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.perf_counter()
        connection.request("GET", path, headers={"Authorization": f"Token {token}"})
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        assert response.status == 200, body[:300]
        connection.close()
        return elapsed

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fetch, paths))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=0, help="messages for the API benchmark")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from mailcore import services
    from mailcore.models import MailAccount
    from mailcore.sync import account_sync
    from tests.peers.dovecot import DovecotServer
    from webapp import launcher

    call_command("migrate", verbosity=0)
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    MailAccount.objects.filter(owner=owner).delete()

    with DovecotServer() as dovecot:
        user, password = "bench", "bench-password"
        dovecot.add_user(user, password)
        print(f"seeding {args.messages} messages…", flush=True)
        seeded = timed(lambda: dovecot.seed_messages(user, "INBOX", corpus(args.messages)))
        print(f"  seeded in {seeded:.1f} s")
        account = services.account_create(
            owner=owner, name="bench", email_address="bench@example.org",
            incoming_host=dovecot.host, incoming_port=dovecot.imap_port,
            incoming_security="none", username=user, password=password,
        )  # fmt: skip
        ours = timed(lambda: account_sync(account=account))
        theirs = mbsync_pull(dovecot, user, password, "INBOX")
        again = timed(lambda: account_sync(account=account))
        print(f"\ninitial sync of {args.messages} messages (same run, loopback):")
        print(f"  mbsync -> Maildir:      {theirs:6.2f} s")
        print(f"  Satchel -> PostgreSQL:  {ours:6.2f} s   ratio {ours / theirs:.2f}x mbsync")
        print(f"  no-change incremental:  {again:6.3f} s")

        if args.big:
            big_user = "bigbench"
            dovecot.add_user(big_user, password)
            print(f"\nseeding {args.big} messages for the API benchmark…", flush=True)
            dovecot.seed_messages(big_user, "INBOX", corpus(args.big, seed=11))
            big = services.account_create(
                owner=owner, name="big", email_address="big@example.org",
                incoming_host=dovecot.host, incoming_port=dovecot.imap_port,
                incoming_security="none", username=big_user, password=password,
            )  # fmt: skip
            synced = timed(lambda: account_sync(account=big))
            print(f"  synced in {synced:.1f} s")
            inbox = big.mailboxes.get(role="inbox")
            token, _ = Token.objects.get_or_create(user=owner)
            port = _free_port()
            command = launcher.web_command("127.0.0.1", port, 2)
            web = launcher.start(command, launcher.child_environment(settings))
            try:
                _wait(port)
                lists = [f"/api/v1/mail/messages/?mailbox={inbox.pk}&page_size=50"]
                page = json.loads(_get(port, token.key, lists[0]))
                for _ in range(20):  # walk deep into the folder with the cursor
                    if not page["next"]:
                        break
                    path = page["next"].split("://", 1)[1].split("/", 1)[1]
                    lists.append("/" + path)
                    page = json.loads(_get(port, token.key, lists[-1]))
                list_paths = [random.choice(lists) for _ in range(args.requests)]
                queries = [
                    "+".join(random.sample(WORDS, k=random.randint(1, 2)))
                    for _ in range(args.requests)
                ]
                search_paths = [f"/api/v1/mail/messages/?q={q}&page_size=50" for q in queries]
                http_latencies(port, token.key, list_paths[:20])  # warm up
                p50, p95 = percentiles(http_latencies(port, token.key, list_paths))
                print(f"\nmessage list, {args.big} messages, {args.requests} requests, 4 clients:")
                print(f"  p50 {p50 * 1000:.1f} ms   p95 {p95 * 1000:.1f} ms")
                p50, p95 = percentiles(http_latencies(port, token.key, search_paths))
                print(f"full-text search, {args.requests} queries:")
                print(f"  p50 {p50 * 1000:.1f} ms   p95 {p95 * 1000:.1f} ms")
            finally:
                launcher.stop(web)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, token: str, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Authorization": f"Token {token}"})
    return connection.getresponse().read()


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _get(port, "", "/healthz")
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the web server did not start")


if __name__ == "__main__":
    main()
