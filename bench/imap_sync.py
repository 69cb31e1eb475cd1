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
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SATCHEL_DATA_DIR", str(REPO / ".data" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

COMMON = [
    "invoice", "meeting", "project", "report", "budget", "travel", "lunch", "update",
    "review", "contract", "draft", "holiday", "schedule", "release", "server", "backup",
    "customer", "order", "payment", "shipping", "question",
]  # fmt: skip
NAMES = ["Ada Lovelace", "Grace Hopper", "Jürgen Groß", "Zoë Quinn", "李雷", "Søren Kierkegaard"]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "be",
    "da",
    "fe",
    "gi",
    "hu",
    "ja",
    "ke",
    "li",
    "mo",
    "nu",
    "pa",
    "re",
]


def vocabulary(size: int = 5000) -> list[str]:
    """Real mail has a large vocabulary with Zipf-like word frequencies: a few very common
    words, a long tail of rare ones. Pseudo-words after the common ones make up the tail."""
    rng = random.Random(1)
    words = list(COMMON)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = vocabulary()
_WEIGHTS = list(itertools.accumulate(1 / rank**1.07 for rank in range(1, len(WORDS) + 1)))


def corpus(count: int, seed: int = 7) -> list[bytes]:
    """Varied messages averaging ~7 KiB (74 MiB / 10,000 in the DESIGN baseline)."""
    rng = random.Random(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)

    def words(k: int) -> str:
        return " ".join(rng.choices(WORDS, cum_weights=_WEIGHTS, k=k))

    messages = []
    for n in range(count):
        message = EmailMessage()
        name = rng.choice(NAMES)
        message["From"] = f"{name} <{name.split()[0].lower()}{n % 50}@example.org>"
        message["To"] = "bench@example.org"
        message["Subject"] = words(rng.randint(2, 7)).capitalize()
        message["Date"] = format_datetime(start + timedelta(minutes=37 * n))
        message["Message-ID"] = make_msgid(domain="bench.example.org")
        paragraphs = [words(rng.randint(40, 160)) for _ in range(6)]
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


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("SATCHEL_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {["Authorization"] = "Token " .. os.getenv("SATCHEL_TOKEN")})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f\\n", summary.requests,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
"""


def wrk(port: int, token: str, paths: list[str], *, connections: int, seconds: int = 10) -> str:
    """Latency percentiles from wrk (a C load tool, so the client costs little CPU)."""
    work = Path(tempfile.mkdtemp(prefix="wrk-"))
    try:
        (work / "paths").write_text("\n".join(paths) + "\n")
        (work / "script.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "SATCHEL_PATHS": str(work / "paths"), "SATCHEL_TOKEN": token}
        threads = str(min(connections, 2))
        result = subprocess.run(
            ["wrk", "-t", threads, "-c", str(connections), "-d", f"{seconds}s",
             "-s", str(work / "script.lua"), f"http://127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        shutil.rmtree(work)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    count, errors, p50, p95, p99 = line.split()[1:]
    return (
        f"{int(count) / seconds:6.0f} req/s   p50 {float(p50):6.1f} ms   "
        f"p95 {float(p95):6.1f} ms   p99 {float(p99):6.1f} ms   non-2xx {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=0, help="messages for the API benchmark")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the big folder cached by an earlier run"
    )
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
    big_owner, _ = get_user_model().objects.get_or_create(username="bench-big")
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
            big = MailAccount.objects.filter(owner=big_owner, name="big").first()
            if not (args.reuse and big):
                MailAccount.objects.filter(owner=big_owner).delete()
                big_user = "bigbench"
                dovecot.add_user(big_user, password)
                print(f"\nseeding {args.big} messages for the API benchmark…", flush=True)
                dovecot.seed_messages(big_user, "INBOX", corpus(args.big, seed=11))
                big = services.account_create(
                    owner=big_owner, name="big", email_address="big@example.org",
                    incoming_host=dovecot.host, incoming_port=dovecot.imap_port,
                    incoming_security="none", username=big_user, password=password,
                )  # fmt: skip
                synced = timed(lambda: account_sync(account=big))
                print(f"  synced in {synced:.1f} s")
            inbox = big.mailboxes.get(role="inbox")
            token, _ = Token.objects.get_or_create(user=big_owner)
            port = _free_port()
            command = launcher.web_command("127.0.0.1", port, 2)
            web = launcher.start(command, launcher.child_environment(settings))
            try:
                _wait(port)
                lists = [f"/api/v1/mail/messages/?mailbox={inbox.pk}&page_size=50"]
                page = json.loads(_get(port, token.key, lists[0]))
                for _ in range(50):  # walk deep into the folder with the cursor
                    if not page["next"]:
                        break
                    lists.append("/" + page["next"].split("://", 1)[1].split("/", 1)[1])
                    page = json.loads(_get(port, token.key, lists[-1]))
                rng = random.Random(3)
                typical = (
                    [  # words people search for: not the handful in every message
                        " ".join(rng.sample(WORDS[30:], k=rng.randint(1, 2))) for _ in range(500)
                    ]
                    + [name.split()[-1] for name in NAMES]
                )
                common = [rng.choice(COMMON[:5]) for _ in range(100)]

                def searches(words: list[str]) -> list[str]:
                    return [f"/api/v1/mail/messages/?q={quote(q)}&page_size=50" for q in words]

                wrk(port, token.key, lists, connections=2, seconds=3)  # warm up
                print(f"\nHTTP against uvicorn (2 processes), {args.big} messages in one folder:")
                for label, paths in [
                    ("message list (50 per page, 50 pages deep)", lists),
                    ("full-text search, typical words", searches(typical)),
                    ("full-text search, words in most messages", searches(common)),
                ]:
                    print(f"  {label}:")
                    for connections in (1, 4):
                        result = wrk(port, token.key, paths, connections=connections)
                        print(f"    {connections} connection(s): {result}")
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
