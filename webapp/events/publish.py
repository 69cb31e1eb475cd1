"""The one way server code pushes a live event to a user's open browsers and scripts."""

from __future__ import annotations

from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def event_publish(*, user_id: int, event: dict[str, Any]) -> None:
    """Send `event` to the user's group once the current transaction commits.

    Publishing after commit means a browser never hears of a row it cannot read yet, and a
    rolled-back change is never announced.
    """
    message = {"type": "satchel.event", "event": event}
    transaction.on_commit(partial(_group_send, user_id, message))


def _group_send(user_id: int, message: dict[str, Any]) -> None:
    async_to_sync(get_channel_layer().group_send)(user_group(user_id), message)


def event_publish_many(*, user_id: int, events: list[dict[str, Any]]) -> None:
    """``event_publish`` for several events, sent in one message of the channel layer once
    the current transaction commits (the consumer passes them on one by one)."""
    if events:
        message = {"type": "satchel.events", "events": events}
        transaction.on_commit(partial(_group_send, user_id, message))
