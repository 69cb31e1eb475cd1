"""Live events from a worker: sent by one thread per process over a lasting event loop.

``event_publish`` from sync code builds an event loop and Redis connections per event
(~3 ms), which a worker finishing hundreds of small items (outgoing messages, transfers)
would wait for. ``event_enqueue`` hands the event, after commit, to this process's sender
thread instead, which sends over one loop while the worker goes on. Events with the same
``key`` that are still waiting collapse into the latest. What waits for one user goes in
one message of the channel layer (``satchel.events``: one group lookup and one write in
Redis instead of one per event, and one place in each browser's channel instead of one
per event); the consumer passes them on one by one, as if sent apart. Live events are a
courtesy — the rows are the truth — so a Redis hiccup may lose some.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import Hashable, Iterable
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from webapp.events.publish import user_group


class EventSender(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="event-sender", daemon=True)
        self.pending: dict[Hashable, tuple[int, dict[str, Any]]] = {}
        self.changed = threading.Condition()
        self.sending = False
        self.unkeyed = itertools.count()
        self.start()

    def put(self, user_id: int, event: dict[str, Any], key: Hashable | None = None) -> None:
        self.put_many([(user_id, event, key)])

    def put_many(self, items: Iterable[tuple[int, dict[str, Any], Hashable | None]]) -> None:
        with self.changed:
            for user_id, event, key in items:
                key = ("unkeyed", next(self.unkeyed)) if key is None else key
                self.pending.pop(key, None)  # re-inserted last: in the order of the latest
                self.pending[key] = (user_id, event)
            self.changed.notify_all()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (a bounded time) until everything put so far was sent."""
        with self.changed:
            self.changed.wait_for(lambda: not self.pending and not self.sending, timeout)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            with self.changed:
                self.sending = False
                self.changed.notify_all()
                self.changed.wait_for(lambda: bool(self.pending))
                batch = list(self.pending.values())
                self.pending.clear()
                self.sending = True
            loop.run_until_complete(self._send(batch))

    @staticmethod
    async def _send(batch: list[tuple[int, dict[str, Any]]]) -> None:
        layer = get_channel_layer()
        by_user: dict[int, list[dict[str, Any]]] = {}
        for user_id, event in batch:
            by_user.setdefault(user_id, []).append(event)
        for user_id, events in by_user.items():
            for start in range(0, len(events), EVENTS_PER_MESSAGE):
                chunk = events[start : start + EVENTS_PER_MESSAGE]
                if len(chunk) == 1:
                    message = {"type": "satchel.event", "event": chunk[0]}
                else:
                    message = {"type": "satchel.events", "events": chunk}
                with contextlib.suppress(Exception):
                    await layer.group_send(user_group(user_id), message)


# At most this many events of one user in one message of the channel layer.
EVENTS_PER_MESSAGE = 200

_senders: dict[int, EventSender] = {}
_senders_lock = threading.Lock()


def event_sender() -> EventSender:
    """This process's sender (a forked worker does not inherit its parent's thread)."""
    with _senders_lock:
        sender = _senders.get(os.getpid())
        if sender is None or not sender.is_alive():
            sender = _senders[os.getpid()] = EventSender()
        return sender


def event_enqueue(*, user_id: int, event: dict[str, Any], key: Hashable | None = None) -> None:
    """Send ``event`` to the user's group from the sender thread, once the current
    transaction commits (as ``event_publish`` does)."""
    transaction.on_commit(lambda: event_sender().put(user_id, event, key))


def event_enqueue_many(items: list[tuple[int, dict[str, Any], Hashable | None]]) -> None:
    """``event_enqueue`` for each (user id, event, key), handed over at once."""
    if items:
        transaction.on_commit(lambda: event_sender().put_many(items))
