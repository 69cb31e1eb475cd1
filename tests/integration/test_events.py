"""/ws/events/ against the real ASGI server, channel layer (Redis) and Celery worker."""

import asyncio
import json

import pytest
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.django_db(transaction=True)


def _ws_url(live_server_url: str, token: str | None = None) -> str:
    url = live_server_url.replace("http://", "ws://") + "/ws/events/"
    return f"{url}?token={token}" if token else url


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def _refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5, **kwargs):
            pass
    return refused.value.response.status_code


def test_websocket_without_auth_is_refused(live_server_url):
    origin = {"origin": live_server_url}
    assert asyncio.run(_refused(_ws_url(live_server_url), **origin)) == 403
    assert asyncio.run(_refused(_ws_url(live_server_url, "not-a-token"), **origin)) == 403


def test_session_socket_needs_our_own_origin(live_server_url, alice):
    cookie = {"additional_headers": {"Cookie": _session_cookie(alice)}}
    url = _ws_url(live_server_url)
    assert asyncio.run(_refused(url, origin="https://evil.example", **cookie)) == 403
    assert asyncio.run(_refused(url, **cookie)) == 403  # a cookie with no Origin at all

    async def ping() -> dict:
        async with connect(url, origin=live_server_url, **cookie) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(socket.recv(), 5))

    assert asyncio.run(ping()) == {"type": "pong"}


def test_each_user_hears_only_their_own_jobs(live_server_url, celery_worker, alice, bob, api_as):
    alice_token = Token.objects.create(user=alice).key
    bob_token = Token.objects.create(user=bob).key
    alice_api = api_as(alice)

    def start_job() -> int:
        try:
            return alice_api.post("/api/v1/jobs/connectivity-check/").json()["job"]["id"]
        finally:
            connections.close_all()  # this runs in a worker thread with its own connection

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with (
            connect(_ws_url(live_server_url, alice_token)) as alice_socket,
            connect(_ws_url(live_server_url, bob_token)) as bob_socket,
        ):
            job_id = await asyncio.to_thread(start_job)
            alice_events = []
            while not alice_events or alice_events[-1]["job"]["state"] not in {"done", "failed"}:
                event = json.loads(await asyncio.wait_for(alice_socket.recv(), 30))
                if event["job"]["id"] == job_id:
                    alice_events.append(event)
            bob_events = []
            try:
                while True:
                    bob_events.append(json.loads(await asyncio.wait_for(bob_socket.recv(), 0.5)))
            except TimeoutError:
                pass
            return alice_events, bob_events

    alice_events, bob_events = asyncio.run(scenario())
    assert bob_events == []
    assert {event["type"] for event in alice_events} == {"job.progress"}
    states = [event["job"]["state"] for event in alice_events]
    assert states[0] == "queued" and states[-1] == "done"
    progress = [
        event["job"]["done"] for event in alice_events if event["job"]["state"] == "running"
    ]
    assert progress == sorted(progress) and progress[-1] == 5
    assert len(alice_events[-1]["job"]["result"]["checks"]) == 5


def test_a_workers_batch_reaches_the_browser_as_separate_events_in_order(
    live_server_url, alice, bob
):
    from webapp.events.sender import EVENTS_PER_MESSAGE, event_enqueue_many, event_sender

    alice_token = Token.objects.create(user=alice).key
    bob_token = Token.objects.create(user=bob).key
    count = EVENTS_PER_MESSAGE + 5  # more than one message of the channel layer
    batch = [(alice.pk, {"type": "test.event", "n": n}, ("test", n)) for n in range(count)]
    batch.insert(3, (bob.pk, {"type": "test.event", "n": "bob"}, ("test", "bob")))
    # Waiting events with the same key collapse into the latest.
    batch.append((alice.pk, {"type": "test.event", "n": "last"}, ("test", 0)))

    def send() -> None:
        try:
            event_enqueue_many(batch)  # in autocommit: handed over at once
            event_sender().flush()
        finally:
            connections.close_all()  # this runs in a worker thread with its own connection

    async def receive_all(socket, until) -> list[dict]:
        events = []
        while not events or events[-1]["n"] != until:
            events.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
        return events

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with (
            connect(_ws_url(live_server_url, alice_token)) as alice_socket,
            connect(_ws_url(live_server_url, bob_token)) as bob_socket,
        ):
            # The consumers have joined their groups once they answer a ping.
            for socket in (alice_socket, bob_socket):
                await socket.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(socket.recv(), 5)) == {"type": "pong"}
            await asyncio.to_thread(send)
            return await receive_all(alice_socket, "last"), await receive_all(bob_socket, "bob")

    alice_events, bob_events = asyncio.run(scenario())
    assert [event["n"] for event in alice_events] == [*range(1, count), "last"]
    assert bob_events == [{"type": "test.event", "n": "bob"}]


def test_an_idle_socket_outlives_the_channel_layers_blocking_read(live_server_url, alice):
    """The channel layer waits for messages with a 5-second blocking pop on Redis; a client
    read timeout of 5 seconds (redis-py 8's default) crashed every idle consumer, and the
    browser reconnected, missing what came meanwhile."""
    token = Token.objects.create(user=alice).key

    async def ping_after_idling() -> dict:
        async with connect(_ws_url(live_server_url, token)) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(socket.recv(), 5)) == {"type": "pong"}
            await asyncio.sleep(7)  # longer than one blocking pop and its client timeout
            await socket.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(socket.recv(), 5))

    assert asyncio.run(ping_after_idling()) == {"type": "pong"}
