"""The browsing session pool (ftpcore/pool.py) against a real pyftpdlib server that counts
logins and commands: reuse, edited sites, dead and idle sessions, the limit per key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync

from ftpcore import services
from ftpcore.models import FtpSite
from ftpcore.pool import SessionPool, Slots, browse_pool
from ftpcore.protocols import ftp
from tests.peers.certs import CertBundle
from tests.peers.fixtures import USERS
from tests.peers.ftp import FTPServer

pytestmark = pytest.mark.django_db

SITES = "/api/v1/ftp/sites/"


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def add(self, kind: str, value: str) -> None:
        with self.lock:
            self.events.append((kind, value))

    def count(self, kind: str, value: str | None = None) -> int:
        with self.lock:
            return sum(1 for k, v in self.events if k == kind and value in (None, v))

    def reset(self) -> None:
        with self.lock:
            self.events.clear()


def _counting_server(peer_cert: CertBundle, counter: Counter, **attrs) -> FTPServer:
    server = FTPServer(cert=peer_cert)

    class Counting(server.handler):
        def on_login(self, username):
            counter.add("login", username)

        def pre_process_command(self, line, cmd, arg):
            counter.add("cmd", cmd)
            return super().pre_process_command(line, cmd, arg)

    for name, value in attrs.items():
        setattr(Counting, name, value)
    server.handler = Counting
    for name, password in USERS.items():
        server.add_user(name, password)
    return server.start()


@pytest.fixture(scope="module")
def counter() -> Counter:
    return Counter()


@pytest.fixture(scope="module")
def counting_server(peer_cert: CertBundle, counter: Counter) -> Iterator[FTPServer]:
    server = _counting_server(peer_cert, counter)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dropping_server(peer_cert: CertBundle, counter: Counter) -> Iterator[FTPServer]:
    """Drops a control connection idle for one second (421, then closes it)."""
    server = _counting_server(peer_cert, counter, timeout=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited_server(peer_cert: CertBundle, counter: Counter) -> Iterator[FTPServer]:
    """Allows two connections per address; the third is told 421 and closed."""
    server = _counting_server(peer_cert, counter)
    server._server.max_cons_per_ip = 2  # a pyftpdlib server setting (not the handler's)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh(counter: Counter) -> Iterator[None]:
    browse_pool.clear()
    counter.reset()
    yield
    browse_pool.clear()


def _site(owner, server: FTPServer, **fields) -> FtpSite:
    values = {
        "name": "Counted",
        "host": server.host,
        "port": server.port,
        "username": "alice",
        "password": USERS["alice"],
    }
    return services.site_create(owner=owner, **{**values, **fields})


async def _read(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def _config(server: FTPServer) -> ftp.FtpConfig:
    return ftp.FtpConfig(
        host=server.host, port=server.port, username="alice", password=USERS["alice"]
    )


def test_ten_listings_log_in_once(alice, api_as, counting_server, counter):
    (counting_server.homes["alice"] / "docs").mkdir(exist_ok=True)
    site = _site(alice, counting_server)
    client = api_as(alice)
    for i in range(10):
        response = client.get(f"{SITES}{site.pk}/list/", {"path": "/" if i % 2 else "/docs"})
        assert response.status_code == 200, response.json()
    assert counter.count("login", "alice") == 1
    assert counter.count("cmd", "MLSD") == 10
    # mkdir, rename, chmod, delete and a download reuse it too.
    url = f"{SITES}{site.pk}"
    assert client.post(f"{url}/mkdir/", {"path": "/new"}, format="json").status_code == 201
    renamed = client.post(f"{url}/rename/", {"from": "/new", "to": "/newer"}, format="json")
    assert renamed.status_code == 200
    (counting_server.homes["alice"] / "f.txt").write_bytes(b"pooled")
    chmod = client.post(f"{url}/chmod/", {"path": "/f.txt", "mode": "600"}, format="json")
    assert chmod.status_code == 200
    download = client.get(f"{url}/download/", {"path": "/f.txt"})
    assert download.status_code == 200
    assert async_to_sync(_read)(download) == b"pooled"
    assert client.post(f"{url}/delete/", {"path": "/newer"}, format="json").status_code == 204
    assert counter.count("login", "alice") == 1
    assert browse_pool.idle_count(services.pool_key(site)) == 1


def test_a_refusal_keeps_the_session_but_a_broken_download_does_not(
    alice, api_as, counting_server, counter
):
    site = _site(alice, counting_server)
    client = api_as(alice)
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    missing = client.get(f"{SITES}{site.pk}/download/", {"path": "/nope"})
    assert missing.status_code == 502 and missing.json()["reply_code"] == 550
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    assert counter.count("login", "alice") == 1  # a clean 550 left the session in step

    (counting_server.homes["alice"] / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    download = services.file_download_open(site=site, path="/big.bin")
    assert len(next(download.chunks)) > 0
    download.chunks.close()  # the browser went away: the transfer is aborted
    assert browse_pool.idle_count(services.pool_key(site)) == 0
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    assert counter.count("login", "alice") == 2


def test_an_edited_site_is_not_served_by_an_old_session(alice, api_as, counting_server, counter):
    site = _site(alice, counting_server)
    client = api_as(alice)
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    patched = client.patch(f"{SITES}{site.pk}/", {"password": "wrong"}, format="json")
    assert patched.status_code == 200
    refused = client.get(f"{SITES}{site.pk}/list/")
    assert refused.status_code == 502 and refused.json()["code"] == "auth_failed"

    # Another web process would not have heard of the edit: the settings key tells apart.
    client.patch(f"{SITES}{site.pk}/", {"password": USERS["alice"]}, format="json")
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    FtpSite.objects.filter(pk=site.pk).update(password="wrong-again")  # behind its back
    site.refresh_from_db()
    assert browse_pool.idle_count(services.pool_key(site)) == 0
    with pytest.raises(ftp.FtpAuthError):
        services.file_list(site=site)


def test_a_server_that_dropped_the_idle_session_is_handled(alice, api_as, dropping_server, counter):
    (dropping_server.homes["alice"] / "kept.txt").write_bytes(b"k")
    site = _site(alice, dropping_server)
    client = api_as(alice)
    assert client.get(f"{SITES}{site.pk}/list/").status_code == 200
    time.sleep(1.6)  # the server says 421 and closes; the pooled session does not know yet
    for _ in range(2):
        response = client.get(f"{SITES}{site.pk}/list/")
        assert response.status_code == 200, response.json()
        assert [e["name"] for e in response.json()["entries"]] == ["kept.txt"]
    assert browse_pool.stats.retried == 1
    assert counter.count("login", "alice") == 2
    # A mutation after the drop works too (the command never reached a live server).
    time.sleep(1.6)
    made = client.post(f"{SITES}{site.pk}/mkdir/", {"path": "/d"}, format="json")
    assert made.status_code == 201, made.json()
    assert (dropping_server.homes["alice"] / "d").is_dir()


def test_noop_after_idle_and_close_after_max_age(counting_server, counter):
    pool = SessionPool(noop_after=0.2, max_age=0.6, reap_every=0.1)
    key = (1, 1, "k")
    config = _config(counting_server)
    assert pool.run(key, config, lambda s: s.pwd()) == "/"
    assert pool.run(key, config, lambda s: s.pwd()) == "/"
    assert counter.count("cmd", "NOOP") == 0
    time.sleep(0.3)
    pool.run(key, config, lambda s: s.list("/"))
    assert counter.count("cmd", "NOOP") == 1
    assert counter.count("login") == 1
    time.sleep(1.0)  # the reaper closes it (QUIT)
    assert pool.idle_count() == 0
    assert counter.count("cmd", "QUIT") == 1
    assert pool.stats.reaped == 1
    pool.run(key, config, lambda s: s.list("/"))
    assert counter.count("login") == 2
    pool.clear()


def test_at_most_two_idle_per_key_and_keys_apart(counting_server, counter):
    pool = SessionPool()
    config = _config(counting_server)
    held = [pool.checkout((1, 1, "k"), config)[0] for _ in range(3)]
    for session in held:
        pool.checkin((1, 1, "k"), session)
    assert pool.idle_count((1, 1, "k")) == 2
    assert counter.count("cmd", "QUIT") == 1
    other, reused = pool.checkout((2, 1, "k"), config)  # another user: never shared
    assert not reused
    pool.checkin((2, 1, "k"), other)
    assert counter.count("login") == 4
    pool.forget(1, 1)
    assert pool.idle_count((1, 1, "k")) == 0 and pool.idle_count((2, 1, "k")) == 1
    pool.clear()


def test_threads_share_the_pool_without_sharing_a_session(counting_server, counter):
    pool = SessionPool()
    config = _config(counting_server)
    key = (1, 1, "k")
    in_use: set[int] = set()
    clash = threading.Event()
    lock = threading.Lock()

    def work(session: ftp.FtpSession) -> None:
        with lock:
            if id(session) in in_use:
                clash.set()
            in_use.add(id(session))
        session.list("/")
        with lock:
            in_use.discard(id(session))

    def browse() -> None:
        for _ in range(10):
            pool.run(key, config, work)

    threads = [threading.Thread(target=browse) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not clash.is_set()
    assert counter.count("cmd", "MLSD") == 40
    assert counter.count("login") <= 4 + 40 // 10  # far fewer than 40 logins
    assert pool.idle_count(key) == 2
    pool.clear()


def test_a_session_broken_mid_command_is_not_returned(counting_server, counter):
    pool = SessionPool()
    config = _config(counting_server)
    key = (1, 1, "k")

    def boom(session: ftp.FtpSession) -> None:
        session.list("/")
        raise RuntimeError("a bug half-way")

    with pytest.raises(RuntimeError):
        pool.run(key, config, boom)
    assert pool.idle_count(key) == 0
    with pytest.raises(ftp.FtpCommandError):
        pool.run(key, config, lambda s: s.list("/missing"))
    assert pool.idle_count(key) == 1  # a clean refusal: the session is in step
    pool.clear()


def test_a_zip_closed_half_way_closes_its_session(alice, counting_server, counter):
    folder = counting_server.homes["alice"] / "album"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        (folder / f"track {i}.bin").write_bytes(bytes([i]) * (2 * 1024 * 1024))
    site = _site(alice, counting_server)
    download = services.file_download_open(site=site, path="/album")
    assert download.is_zip and download.name == "album.zip"
    received = 0
    while received < 3 * 1024 * 1024:  # into the second file
        received += len(next(download.chunks))
    download.chunks.close()  # the browser went away
    assert browse_pool.idle_count(services.pool_key(site)) == 0
    assert counter.count("cmd", "RETR") == 1 + 2  # "is it a file?", then two tracks
    whole = services.file_download_open(site=site, path="/album")
    assert len(b"".join(whole.chunks)) > 6 * 1024 * 1024
    assert browse_pool.idle_count(services.pool_key(site)) == 1  # complete: kept
    assert counter.count("login") == 2


def test_a_connection_limit_waits_for_a_session_to_come_back(limited_server, counter):
    pool = SessionPool(slot_wait=10)
    key = (1, 1, "k")
    config = _config(limited_server)
    first, _ = pool.checkout(key, config)
    second, _ = pool.checkout(key, config)
    listed: list[list[ftp.Entry]] = []
    third = threading.Thread(
        target=lambda: listed.append(pool.run(key, config, lambda s: s.list("/")))
    )
    third.start()
    deadline = time.monotonic() + 10
    while pool.stats.waited == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.stats.waited == 1 and third.is_alive()  # refused with 421, now waiting
    pool.checkin(key, first)
    third.join(timeout=10)
    assert listed == [[]]
    assert counter.count("login") == 2  # the third request used the returned session
    # Another key has none of its own out to wait for: the server's refusal comes at once.
    with pytest.raises(ftp.FtpConnectionError) as refused:
        pool.checkout((2, 1, "k"), config)
    assert refused.value.code == 421
    assert pool.stats.waited == 1
    pool.release(key, second, clean=False)
    pool.clear()


def test_upload_slots_let_two_in_per_key_and_the_third_wait():
    slots = Slots(2)
    inside: list[str] = []
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def upload(key: tuple[int, int], name: str) -> None:
        nonlocal most
        with slots.hold(key):
            with lock:
                inside.append(name)
                most = max(most, sum(1 for n in inside if n.startswith("alice")))
            release.wait(5)
            with lock:
                inside.remove(name)

    threads = [threading.Thread(target=upload, args=((1, 1), f"alice-{i}")) for i in range(3)]
    threads.append(threading.Thread(target=upload, args=((2, 1), "bob")))  # another key
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(inside) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert sorted(n.split("-")[0] for n in inside) == ["alice", "alice", "bob"]
    release.set()
    for thread in threads:
        thread.join(5)
    assert most == 2 and not inside
