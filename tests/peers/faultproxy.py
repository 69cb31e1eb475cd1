"""A TCP proxy on loopback that can cut or stall connections after N bytes.

"up" is client -> server, "down" is server -> client. Rules apply to
connections accepted after they were set: to every one, or with ``once=True``
to the next one only. Each connection is two plain threads pumping bytes, so
many short connections in a row (FTP data channels) are fine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from .ports import HOST

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class _Rule:
    action: Literal["cut", "stall"]
    nbytes: int
    direction: Direction
    seconds: float = 0.0


class FaultProxy:
    """Listens on ``host:port`` from construction on and forwards to the target."""

    def __init__(self, target_host: str, target_port: int, host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)  # so the accept loop notices stop()
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rules: list[tuple[_Rule, bool]] = []  # (rule, once)
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._accepter.start()

    def cut_after(self, nbytes: int, direction: Direction = "down", once: bool = False) -> None:
        """Close both sides once ``nbytes`` have been forwarded in ``direction``."""
        self._add(_Rule("cut", nbytes, direction), once)

    def stall_after(
        self, nbytes: int, seconds: float, direction: Direction = "down", once: bool = False
    ) -> None:
        """Hold the stream for ``seconds`` once ``nbytes`` went through in ``direction``."""
        self._add(_Rule("stall", nbytes, direction, seconds), once)

    def reset(self) -> None:
        """Drop all rules (counters and live connections are kept)."""
        with self._lock:
            self._rules.clear()

    def close_connections(self) -> None:
        """Sever every connection that is open right now, as if the network died."""
        with self._lock:
            live = list(self._live)
        for sock in live:
            _shutdown(sock)

    def stop(self) -> None:
        self._stopping.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        self.close_connections()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _add(self, rule: _Rule, once: bool) -> None:
        if rule.nbytes < 0 or rule.direction not in ("up", "down"):
            raise ValueError("nbytes must be >= 0 and direction 'up' or 'down'")
        with self._lock:
            self._rules.append((rule, once))

    def _take_rules(self) -> list[_Rule]:
        with self._lock:
            rules = [rule for rule, _ in self._rules]
            self._rules = [(rule, once) for rule, once in self._rules if not once]
        return rules

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
            rules = self._take_rules()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            _Connection(self, client, upstream, rules).start()

    def _count(self, direction: Direction, nbytes: int) -> None:
        with self._lock:
            if direction == "up":
                self.bytes_up += nbytes
            else:
                self.bytes_down += nbytes


class _Connection:
    def __init__(
        self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket, rules: list[_Rule]
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.rules = rules
        self._open_pumps = 2
        self._lock = threading.Lock()

    def start(self) -> None:
        with self.proxy._lock:
            self.proxy._live.update((self.client, self.upstream))
            for src, dst, direction in (
                (self.client, self.upstream, "up"),
                (self.upstream, self.client, "down"),
            ):
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, direction), daemon=True
                )
                self.proxy._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        pending = sorted(
            (rule for rule in self.rules if rule.direction == direction), key=lambda r: r.nbytes
        )
        forwarded = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    _shutdown(dst, socket.SHUT_WR)  # pass the half-close on
                    break
                while data:
                    room = pending[0].nbytes - forwarded if pending else len(data)
                    chunk, data = data[:room], data[room:]
                    if chunk:
                        dst.sendall(chunk)
                        forwarded += len(chunk)
                        self.proxy._count(direction, len(chunk))
                    if pending and forwarded >= pending[0].nbytes:
                        rule = pending.pop(0)
                        if rule.action == "cut":
                            _shutdown(self.client)
                            _shutdown(self.upstream)
                            return
                        self.proxy._stopping.wait(rule.seconds)
        except OSError:
            _shutdown(self.client)
            _shutdown(self.upstream)
        finally:
            self._pump_done(threading.current_thread())

    def _pump_done(self, thread: threading.Thread) -> None:
        with self._lock:
            self._open_pumps -= 1
            last = self._open_pumps == 0
        with self.proxy._lock:
            self.proxy._threads.remove(thread)
            if last:
                self.proxy._live.difference_update((self.client, self.upstream))
        if last:
            self.client.close()
            self.upstream.close()


def _shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    with contextlib.suppress(OSError):  # already closed or not connected
        sock.shutdown(how)
