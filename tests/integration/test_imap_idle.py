"""The IMAP IDLE supervisor (mailcore.protocols.idle) against a real Dovecot, no mocks.

Every test runs its own event loop (``asyncio.run``) with one supervisor; blocking doveadm
calls go through ``asyncio.to_thread`` so the supervisor keeps reading while they run.
Figures (push latency, reconnect time, setup time and Python heap per connection) are
printed: run with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import psutil
import pytest

from mailcore.protocols.idle import IdleAccount, IdleSupervisor, shard
from tests.peers.dovecot import DovecotServer
from tests.peers.faultproxy import FaultProxy
from tests.peers.fixtures import USERS

ALICE, BOB = "alice", "bob"
ProxyFactory = Callable[[str, int], FaultProxy]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def message(subject: str) -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@example.org>\r\n\r\nHello.\r\n"
    ).encode()


def account(
    dovecot: DovecotServer, key: int, user: str, password: str | None = None, **kw: Any
) -> IdleAccount:
    options: dict[str, Any] = {"host": dovecot.host, "port": dovecot.imap_port, "security": "none"}
    options.update(kw)
    secret = USERS.get(user, "") if password is None else password
    return IdleAccount(key=key, username=user, password=secret, **options)


class Recorder:
    """on_change target: remembers (key, reason, monotonic time) of every call."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, float]] = []

    def __call__(self, key: int, reason: str) -> None:
        self.events.append((key, reason, time.monotonic()))

    def of(self, key: int) -> list[str]:
        return [reason for k, reason, _ in self.events if k == key]

    def clear(self) -> None:
        self.events.clear()

    async def wait_for(self, key: int, reason: str, timeout: float = 5.0) -> float:
        """Wait for on_change(key, reason); return the monotonic time it was called."""
        deadline = time.monotonic() + timeout
        while True:
            for k, r, at in self.events:
                if (k, r) == (key, reason):
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"no ({key}, {reason!r}) in {timeout} s; got {self.events}")
            await asyncio.sleep(0.01)


async def wait_status(sup: IdleSupervisor, key: int, prefix: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = sup.status().get(key)
        if status is not None and status.startswith(prefix):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"account {key} is {status!r}, not {prefix!r}, after {timeout} s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def supervising(
    accounts: list[IdleAccount], on_change: Any = None, **options: Any
) -> AsyncIterator[tuple[IdleSupervisor, Recorder]]:
    recorder = Recorder()
    sup = IdleSupervisor(on_change or recorder, **options)
    runner = asyncio.create_task(sup.run_forever())
    await sup.set_accounts(accounts)
    try:
        yield sup, recorder
    finally:
        await sup.stop()
        await asyncio.wait_for(runner, 10)


async def doveadm(dovecot: DovecotServer, *args: str) -> str:
    return (await asyncio.to_thread(dovecot.doveadm, *args)).stdout


async def doveadm_input(dovecot: DovecotServer, raw: bytes, *args: str) -> None:
    await asyncio.to_thread(dovecot.doveadm, *args, input=raw)


async def append(dovecot: DovecotServer, user: str, raw: bytes, folder: str = "INBOX") -> None:
    await asyncio.to_thread(dovecot.append, user, folder, raw)


async def connected_users(dovecot: DovecotServer) -> dict[str, int]:
    """``doveadm who``: user -> number of open IMAP connections."""
    users = {}
    for line in (await doveadm(dovecot, "who")).splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "imap":
            users[fields[0]] = int(fields[1])
    return users


# --- push ----------------------------------------------------------------------------------


def test_new_mail_is_pushed_within_5s_and_only_to_its_account(dovecot: DovecotServer) -> None:
    async def main() -> None:
        accounts = [account(dovecot, 1, ALICE), account(dovecot, 2, BOB)]
        async with supervising(accounts) as (sup, events):
            await wait_status(sup, 1, "idling")
            await wait_status(sup, 2, "idling")
            assert sup.status() == {1: "idling", 2: "idling"}

            raw = message("for alice")
            sent = time.monotonic()
            await doveadm_input(dovecot, raw, "save", "-u", ALICE, "-m", "INBOX")
            saved = time.monotonic()
            latency = await events.wait_for(1, "exists") - sent
            print(
                f"\npush latency: on_change {latency * 1000:.0f} ms after `doveadm save` started "
                f"(which took {(saved - sent) * 1000:.0f} ms; includes 300 ms coalescing)"
            )
            assert latency < 5.0
            await asyncio.sleep(0.5)
            assert events.of(2) == []
            assert events.of(1) == ["exists"]  # EXISTS + RECENT: one call

            events.clear()
            await append(dovecot, BOB, message("for bob"))
            await events.wait_for(2, "exists")
            await asyncio.sleep(0.5)
            assert events.of(1) == []

            # A burst: five messages in a row are coalesced into few calls, not five.
            events.clear()
            for i in range(5):
                await append(dovecot, BOB, message(f"burst {i}"))
            await events.wait_for(2, "exists")
            await asyncio.sleep(0.5)
            assert 1 <= len(events.of(2)) < 5

    run(main())


def test_expunge_and_flag_changes_by_another_client(dovecot: DovecotServer) -> None:
    subject = f"flag-me-{uuid.uuid4()}"
    dovecot.append(ALICE, "INBOX", message(subject))
    calls: list[tuple[int, str]] = []

    async def main() -> None:
        recorder = Recorder()

        async def on_change(key: int, reason: str) -> None:  # async callbacks work too
            await asyncio.sleep(0)
            calls.append((key, reason))
            recorder(key, reason)

        async with supervising([account(dovecot, 1, ALICE)], on_change) as (sup, _):
            await wait_status(sup, 1, "idling")
            query = ("mailbox", "INBOX", "subject", subject)
            await doveadm(dovecot, "flags", "add", "-u", ALICE, "\\Flagged", *query)
            await recorder.wait_for(1, "flags")
            await doveadm(dovecot, "expunge", "-u", ALICE, *query)
            await recorder.wait_for(1, "expunge")
            await asyncio.sleep(0.5)
            assert calls == [(1, "flags"), (1, "expunge")]

    run(main())


# --- failures ------------------------------------------------------------------------------


def test_reconnects_after_the_connection_is_cut(
    dovecot: DovecotServer, fault_proxy_factory: ProxyFactory
) -> None:
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)

    async def main() -> None:
        accounts = [account(dovecot, 1, ALICE, host=proxy.host, port=proxy.port)]
        async with supervising(accounts) as (sup, events):
            await wait_status(sup, 1, "idling")
            assert proxy.connections == 1
            proxy.close_connections()
            status = await wait_status(sup, 1, "backoff: ", timeout=2)
            assert "closed" in status or "lost" in status, status
            cut = time.monotonic()
            reconnected = await events.wait_for(1, "reconnected", timeout=5) - cut
            print(f"\nreconnected {reconnected:.2f} s after the cut")
            assert sup.status()[1] == "idling"
            assert proxy.connections == 2
            await append(dovecot, ALICE, message("after the cut"))
            await events.wait_for(1, "exists")

    run(main())


def test_server_bye_reconnects(dovecot: DovecotServer) -> None:
    dave = "idle-dave"
    dovecot.add_user(dave, "secret-dave")

    async def main() -> None:
        accounts = [account(dovecot, 1, dave, password="secret-dave")]
        async with supervising(accounts) as (sup, events):
            await wait_status(sup, 1, "idling")
            await doveadm(dovecot, "kick", dave)  # Dovecot says BYE, then hangs up
            status = await wait_status(sup, 1, "backoff: ", timeout=3)
            assert "BYE" in status or "closed" in status, status
            await events.wait_for(1, "reconnected")
            assert sup.status()[1] == "idling"

    run(main())


def test_idle_is_renewed(dovecot: DovecotServer, fault_proxy_factory: ProxyFactory) -> None:
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)

    async def main() -> None:
        accounts = [account(dovecot, 1, ALICE, host=proxy.host, port=proxy.port)]
        async with supervising(accounts, renew_seconds=0.3) as (sup, events):
            await wait_status(sup, 1, "idling")
            sent = proxy.bytes_up
            await asyncio.sleep(1.5)
            # Each renewal is "DONE\r\n" + "<tag> IDLE\r\n" on the same connection.
            assert proxy.bytes_up - sent >= 3 * len(b"DONE\r\nA1 IDLE\r\n")
            assert proxy.connections == 1
            await append(dovecot, ALICE, message("after renewals"))
            await events.wait_for(1, "exists")
            assert "reconnected" not in events.of(1)

    run(main())


def test_wrong_password_is_auth_failed_and_never_logged(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # aioimaplib logs every line it sends at DEBUG
    wrong = 'wr"ong\\pass-1234'

    async def main() -> None:
        accounts = [account(dovecot, 1, ALICE, password=wrong), account(dovecot, 2, BOB)]
        async with supervising(accounts) as (sup, events):
            status = await wait_status(sup, 1, "auth failed: ")
            assert status == "auth failed: [AUTHENTICATIONFAILED] Authentication failed."
            await wait_status(sup, 2, "idling")
            await append(dovecot, BOB, message("bob is unaffected"))
            await events.wait_for(2, "exists")
            await asyncio.sleep(1.0)
            assert sup.status()[1] == status  # no retry before max_backoff
            assert events.of(1) == []

    run(main())
    assert "LOGIN" in caplog.text  # the LOGIN lines were logged ...
    for secret in (wrong, 'wr\\"ong', USERS[BOB]):
        assert secret not in caplog.text  # ... without the password


def test_set_accounts_starts_stops_and_restarts(dovecot: DovecotServer) -> None:
    carol = "idle-carol"
    dovecot.add_user(carol, "secret-carol")
    folder = f"idle-{uuid.uuid4().hex[:8]}"  # a folder of its own: other tests use alice too
    dovecot.create_folder(ALICE, folder)

    async def main() -> None:
        alice = account(dovecot, 11, ALICE)
        accounts = [account(dovecot, 10, carol, password="secret-carol"), alice]
        async with supervising(accounts) as (sup, events):
            await wait_status(sup, 10, "idling")
            await wait_status(sup, 11, "idling")
            assert (await connected_users(dovecot)).get(carol) == 1

            await sup.set_accounts([alice])  # carol removed: DONE + LOGOUT, connection closed
            assert sup.status() == {11: "idling"}
            for _ in range(100):
                if carol not in await connected_users(dovecot):
                    break
                await asyncio.sleep(0.05)
            assert carol not in await connected_users(dovecot)
            log = dovecot.log_path.read_text()
            assert re.search(rf"imap\({carol}\).*Logged out", log), log[-2000:]

            await sup.set_accounts([alice])  # unchanged: left alone
            assert sup.status() == {11: "idling"}

            moved = account(dovecot, 11, ALICE, folder=folder)  # changed: restarted
            await sup.set_accounts([moved])
            await wait_status(sup, 11, "idling")
            events.clear()
            await append(dovecot, ALICE, message("moved"), folder=folder)
            await events.wait_for(11, "exists")

    run(main())


# --- TLS -----------------------------------------------------------------------------------


def test_tls_starttls_and_fingerprint_pinning(dovecot: DovecotServer) -> None:
    ca = str(dovecot.cert_path)
    imaps = {"port": dovecot.imaps_port, "security": "tls"}
    wrong_pin = "00:" * 31 + "00"

    async def main() -> None:
        accounts = [
            account(dovecot, 1, ALICE, ca_file=ca, **imaps),
            account(dovecot, 2, ALICE, tls_fingerprint=dovecot.fingerprint, **imaps),
            account(dovecot, 3, ALICE, security="starttls", ca_file=ca),
            account(dovecot, 4, ALICE, security="starttls", tls_fingerprint=dovecot.fingerprint),
            account(dovecot, 5, ALICE, **imaps),  # nobody vouches for the self-signed cert
            account(dovecot, 6, ALICE, tls_fingerprint=wrong_pin, **imaps),
            account(dovecot, 7, ALICE, tls_fingerprint=wrong_pin, ca_file=ca, **imaps),
            account(dovecot, 8, ALICE, ca_file=ca, **{**imaps, "host": "localhost"}),
        ]
        async with supervising(accounts) as (sup, events):
            for key in (1, 2, 3, 4, 7, 8):  # 7: the pin is wrong but the CA vouches
                await wait_status(sup, key, "idling")
            for key in (5, 6):
                status = await wait_status(sup, key, "backoff: ")
                assert "certificate not trusted" in status, status
            assert "is not the pinned fingerprint" in sup.status()[6]
            await append(dovecot, ALICE, message("over TLS"))
            for key in (1, 2, 3, 4, 7, 8):
                await events.wait_for(key, "exists")

    run(main())


# --- no IDLE ---------------------------------------------------------------------------------


class NoIdleProxy:
    """Forwards to Dovecot but drops IDLE from every CAPABILITY: a server without IDLE."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def down() -> None:
            while line := await up_reader.readline():
                if b"CAPABILITY" in line.upper():
                    line = re.sub(rb" IDLE(?=[ \]\r])", b"", line)
                writer.write(line)
                await writer.drain()
            writer.close()

        async def up() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        await asyncio.gather(down(), up(), return_exceptions=True)


def test_server_without_idle_is_polled_with_noop(dovecot: DovecotServer) -> None:
    async def main() -> None:
        proxy = NoIdleProxy(dovecot.host, dovecot.imap_port)
        port = await proxy.start()
        try:
            accounts = [account(dovecot, 1, ALICE, port=port)]
            async with supervising(accounts, poll_seconds=0.3) as (sup, events):
                await wait_status(sup, 1, "polling")
                await asyncio.sleep(0.5)
                await append(dovecot, ALICE, message("polled"))
                await events.wait_for(1, "exists")
        finally:
            await proxy.stop()

    run(main())


# --- scale -----------------------------------------------------------------------------------

SCALE_USERS = 20
PER_USER = 10  # Dovecot refuses more than mail_max_userip_connections (100 here) per user+IP


def test_scale_200_idle_connections(dovecot: DovecotServer) -> None:
    users = [f"idle-scale-{i:02d}" for i in range(SCALE_USERS + 1)]
    for user in users:
        dovecot.add_user(user, f"pw-{user}")
    accounts = [
        account(dovecot, 1000 + u * PER_USER + c, user, password=f"pw-{user}")
        for u, user in enumerate(users)
        for c in range(PER_USER)
    ]
    first, extra = accounts[: SCALE_USERS * PER_USER], accounts[SCALE_USERS * PER_USER :]

    async def all_idling(sup: IdleSupervisor, started: float) -> float:
        while set(sup.status().values()) != {"idling"}:
            assert time.monotonic() < started + 45, sorted(set(sup.status().values()))
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def main() -> None:
        async with supervising([]) as (sup, events):
            started = time.monotonic()
            await sup.set_accounts(first)
            setup = await all_idling(sup, started)
            fds = psutil.Process().num_fds()
            print(f"\n{len(first)} IDLE connections: all idling after {setup:.2f} s, {fds} fds")
            assert fds >= len(first)

            # Python heap per connection: ten more, traced (tracemalloc slows setup down).
            gc.collect()
            tracemalloc.start()
            await sup.set_accounts(accounts)
            await all_idling(sup, time.monotonic())
            gc.collect()
            heap = tracemalloc.get_traced_memory()[0] / len(extra)
            tracemalloc.stop()
            print(f"Python heap per idling connection: {heap / 1024:.1f} KiB")
            assert heap < 64 * 1024

            # One user's mail wakes that user's ten connections and nobody else's. The first
            # user: Dovecot gives only the first 128 IDLE processes of its mail uid inotify
            # (fs.inotify.max_user_instances), later ones notice new mail every 30 s.
            sent = time.monotonic()
            await append(dovecot, users[0], message("scale"))
            keys = [a.key for a in accounts if a.username == users[0]]
            arrivals = [await events.wait_for(key, "exists") for key in keys]
            print(f"push to {len(keys)} connections: last after {max(arrivals) - sent:.2f} s")
            await asyncio.sleep(0.3)
            assert {k for k, _, _ in events.events} == set(keys)

            started = time.monotonic()
            await sup.stop()
            print(f"stop (DONE + LOGOUT on all): {time.monotonic() - started:.2f} s")
            assert sup.status() == {}

        for _ in range(100):
            if not any(u in users for u in await connected_users(dovecot)):
                break
            await asyncio.sleep(0.05)
        assert not any(u in users for u in await connected_users(dovecot))

    run(main())


def test_shard_splits_keys_by_modulo() -> None:
    keys = list(range(10))
    parts = [shard(keys, i, 3) for i in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError):
        shard(keys, 3, 3)
    with pytest.raises(ValueError):
        IdleAccount(1, "127.0.0.1", 143, "ssl", "u", "p")
