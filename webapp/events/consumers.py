from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.events.publish import user_group


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """Streams the connected user's own events; the auth middleware has vetted the user."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if content == {"type": "ping"}:
            await self.send_json({"type": "pong"})

    async def satchel_event(self, message: dict) -> None:
        await self.send_json(message["event"])

    async def satchel_events(self, message: dict) -> None:
        """Several events in one message (a worker's batch, webapp.events.sender): passed
        on one by one, as if they had been sent apart."""
        for event in message["events"]:
            await self.send_json(event)
