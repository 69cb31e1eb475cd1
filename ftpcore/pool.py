"""A small pool of logged-in FTP sessions for browsing, per user, site and site settings.

The web process answers each request in a thread; logging in on every click costs one to
four round trips (more with TLS), so the sessions a request used are kept for the next one:

- keyed by ``(user id, site id, fingerprint of the connection settings)``, so an edited
  site (new password, host, TLS pin...) never gets an old session; at most ``max_idle``
  idle sessions per key (more may be checked out at once; the extras are closed on return);
- a session idle for more than ``noop_after`` seconds gets a NOOP before reuse; one that
  fails it is closed and the next idle one (or a new one) is used;
- sessions idle for more than ``max_age`` seconds are closed, lazily on checkout and by a
  reaper thread that wakes every ``reap_every`` seconds while the pool holds sessions;
- a server that limits connections (421 at the greeting) while some of the key's sessions
  are out gets one of them when it comes back (waiting up to ``slot_wait`` seconds), as
  FileZilla queues work on such servers rather than failing it;
- a session is returned only when the work finished, or ended in a clean 4xx/5xx refusal
  (``FtpCommandError``: the command completed and the connection is in step); anything
  else (network errors, an interrupted transfer, a cancelled stream, a bug) closes it.

``run`` / ``acquire`` also retry the work once on a new session when a *reused* one turns
out to be dead: a server that dropped the idle connection never saw the command.

Thread-safe: one lock guards the idle lists; a checked-out session belongs to one thread.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ftpcore.protocols import ftp

T = TypeVar("T")
Key = tuple[int, int, str]

_KEY_SECRET = os.urandom(16)  # settings fingerprints mean nothing outside this process


def settings_fingerprint(config: ftp.FtpConfig) -> str:
    """A keyed hash of everything the connection depends on (the password included, never
    kept in clear in the key)."""
    parts = [
        config.host,
        str(config.port),
        str(config.security),
        config.username,
        config.password,
        str(config.passive),
        config.encoding,
        config.tls_fingerprint,
        config.ca_file or "",
        str(config.timeout),
    ]
    text = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hmac.new(_KEY_SECRET, text, hashlib.sha256).hexdigest()[:32]


@dataclass
class _Idle:
    session: ftp.FtpSession
    since: float


@dataclass
class PoolStats:
    """Counters for tests and diagnostics."""

    created: int = 0
    reused: int = 0
    noops: int = 0
    discarded: int = 0
    reaped: int = 0
    retried: int = 0
    waited: int = 0


class SessionPool:
    def __init__(
        self,
        *,
        max_idle: int = 2,
        noop_after: float = 15.0,
        max_age: float = 60.0,
        reap_every: float = 15.0,
        slot_wait: float = 30.0,
        connect: Callable[[ftp.FtpConfig], ftp.FtpSession] = ftp.FtpSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_idle = max_idle
        self.slot_wait = slot_wait
        self.noop_after = noop_after
        self.max_age = max_age
        self.reap_every = reap_every
        self._connect = connect
        self._clock = clock
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._idle: dict[Key, list[_Idle]] = {}
        self._out: dict[Key, int] = {}  # sessions checked out, per key
        self._reaper: threading.Thread | None = None
        self.stats = PoolStats()

    # -- checkout / checkin

    def checkout(self, key: Key, config: ftp.FtpConfig) -> tuple[ftp.FtpSession, bool]:
        """A live session for ``key``: (session, reused). Logs in when none is idle."""
        while True:
            expired: list[ftp.FtpSession] = []
            entry: _Idle | None = None
            with self._lock:
                now = self._clock()
                idle = self._idle.get(key, [])
                while idle:
                    candidate = idle.pop()  # the most recently used first
                    if now - candidate.since > self.max_age or not candidate.session.alive:
                        expired.append(candidate.session)
                        continue
                    entry = candidate
                    break
                if not idle:
                    self._idle.pop(key, None)
            self._close_all(expired)
            if entry is None:
                break
            if self._clock() - entry.since > self.noop_after:
                try:
                    self._count("noops")
                    entry.session.noop()
                except ftp.FtpError:
                    self._discard(entry.session)
                    continue  # dead: the next idle one, or a new one
            self._count("reused")
            self._take(key)
            return entry.session, True
        return self._new(key, config), False

    def _new(self, key: Key, config: ftp.FtpConfig) -> ftp.FtpSession:
        """Log in; a server that limits connections (421 at the greeting) while some of
        this key's sessions are out gets one of those when it comes back."""
        deadline = self._clock() + self.slot_wait
        while True:
            try:
                session = self._connect(config)
            except ftp.FtpConnectionError as exc:
                if exc.code != 421:
                    raise
                with self._lock:
                    out = self._out.get(key, 0)
                    left = deadline - self._clock()
                    if not out or left <= 0:
                        raise
                    self._count("waited", locked=True)
                    self._returned.wait_for(
                        lambda out=out: self._out.get(key, 0) < out or bool(self._idle.get(key)),
                        left,
                    )
                    idle = self._idle.get(key)
                    entry = idle.pop() if idle else None
                    if entry is not None:
                        self._out[key] = self._out.get(key, 0) + 1
                if entry is not None:
                    return entry.session  # fresh from its work: no NOOP needed
                continue  # one was closed: its slot on the server is free
            self._count("created")
            self._take(key)
            return session

    def _take(self, key: Key) -> None:
        with self._lock:
            self._out[key] = self._out.get(key, 0) + 1

    def _give_back(self, key: Key) -> None:
        """Under the lock: one session of ``key`` is no longer out."""
        left = self._out.get(key, 0) - 1
        if left > 0:
            self._out[key] = left
        else:
            self._out.pop(key, None)
        self._returned.notify_all()

    def checkin(self, key: Key, session: ftp.FtpSession) -> None:
        """Keep a session that finished its work cleanly (or close it: dead, or too many)."""
        if not session.alive:
            self.release(key, session, clean=False)
            return
        extra: ftp.FtpSession | None = None
        with self._lock:
            idle = self._idle.setdefault(key, [])
            idle.append(_Idle(session, self._clock()))
            if len(idle) > self.max_idle:
                extra = idle.pop(0).session  # the one idle the longest
            self._give_back(key)
            self._start_reaper()
        if extra is not None:
            self._discard(extra)

    def release(self, key: Key, session: ftp.FtpSession, *, clean: bool) -> None:
        """Give back a checked-out session: kept when ``clean``, closed otherwise."""
        if clean:
            self.checkin(key, session)
            return
        self._discard(session)
        with self._lock:
            self._give_back(key)

    def acquire(
        self, key: Key, config: ftp.FtpConfig, start: Callable[[ftp.FtpSession], T]
    ) -> tuple[T, ftp.FtpSession]:
        """``start(session)`` on a pooled session that stays checked out for the caller
        (who must ``release`` it). When a *reused* session turns out dead
        (FtpConnectionError: a server that dropped the idle connection), the key's other
        idle sessions are closed too and ``start`` runs once more on a new session."""
        session, reused = self.checkout(key, config)
        try:
            return start(session), session
        except ftp.FtpConnectionError:
            self.release(key, session, clean=False)
            if not reused:
                raise
        except BaseException as exc:
            self.release(key, session, clean=isinstance(exc, ftp.FtpCommandError))
            raise
        self._count("retried")
        self._drop_key(key)
        session = self._new(key, config)
        try:
            return start(session), session
        except BaseException as exc:
            self.release(key, session, clean=isinstance(exc, ftp.FtpCommandError))
            raise

    def run(self, key: Key, config: ftp.FtpConfig, work: Callable[[ftp.FtpSession], T]) -> T:
        """``work(session)`` on a pooled session (see ``acquire``), returned afterwards."""
        result, session = self.acquire(key, config, work)
        self.checkin(key, session)
        return result

    # -- forgetting and reaping

    def _drop_key(self, key: Key) -> None:
        with self._lock:
            sessions = [e.session for e in self._idle.pop(key, [])]
        self._close_all(sessions)

    def forget(self, user_id: int, site_id: int) -> None:
        """Close every idle session of a site (edited or deleted)."""
        with self._lock:
            keys = [k for k in self._idle if k[0] == user_id and k[1] == site_id]
            sessions = [e.session for k in keys for e in self._idle.pop(k)]
        self._close_all(sessions)

    def reap(self) -> int:
        """Close sessions idle longer than ``max_age``; returns how many."""
        expired: list[ftp.FtpSession] = []
        with self._lock:
            now = self._clock()
            for key in list(self._idle):
                keep = [e for e in self._idle[key] if now - e.since <= self.max_age]
                expired += [e.session for e in self._idle[key] if now - e.since > self.max_age]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
        self._close_all(expired)
        self._count("reaped", len(expired))
        return len(expired)

    def clear(self) -> None:
        with self._lock:
            sessions = [e.session for entries in self._idle.values() for e in entries]
            self._idle.clear()
        self._close_all(sessions)

    def idle_count(self, key: Key | None = None) -> int:
        with self._lock:
            if key is not None:
                return len(self._idle.get(key, []))
            return sum(len(entries) for entries in self._idle.values())

    def _start_reaper(self) -> None:
        """Under the lock: one daemon thread, alive while there are idle sessions."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(target=self._reap_loop, name="ftp-pool-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        while True:
            time.sleep(self.reap_every)
            self.reap()
            with self._lock:
                if not self._idle:
                    self._reaper = None
                    return

    def _count(self, name: str, n: int = 1, *, locked: bool = False) -> None:
        if locked:
            setattr(self.stats, name, getattr(self.stats, name) + n)
            return
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _discard(self, session: ftp.FtpSession) -> None:
        self._count("discarded")
        session.close()

    @staticmethod
    def _close_all(sessions: list[ftp.FtpSession]) -> None:
        for session in sessions:
            session.close()  # QUIT; never raises


class Slots:
    """At most ``limit`` holders per key at once, in this process; a further one waits for
    a slot. The file manager stores uploads to a site over at most two connections (as
    FileZilla runs two transfers per site) while the page keeps a third request in flight,
    so that one's body arrives and is parsed while the other two are being stored."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[object, int] = {}
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, key: object) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._held.get(key, 0) < self.limit)
            self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]
                self._changed.notify_all()


class Lease:
    """A pooled session checked out for a stream (a download, a zip): returned to the pool
    when the stream ended well, closed otherwise; ``end`` acts once."""

    def __init__(self, pool: SessionPool, key: Key, session: ftp.FtpSession) -> None:
        self.pool = pool
        self.key = key
        self.session = session
        self._done = False

    def end(self, *, clean: bool) -> None:
        if not self._done:
            self._done = True
            self.pool.release(self.key, self.session, clean=clean)


# The web process's pool for browsing (listings, small operations, streamed downloads).
browse_pool = SessionPool()
# The file manager's uploads being stored at once per (user, site), in this process.
upload_slots = Slots(2)
