"""Who may open /ws/events/: a logged-in browser from our own origin, or a script with a token.

A browser always sends Origin, and a cookie-authenticated socket opened from another site
would be cross-site WebSocket hijacking, so session users need an allowed Origin. Scripts
authenticate with `?token=` and may omit Origin; if they send one it must still be allowed.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from rest_framework.authtoken.models import Token


def origin_allowed(origin: str) -> bool:
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    host, _port = split_domain_port(urlsplit(origin).netloc)
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


@database_sync_to_async
def _user_for_token(key: str):
    token = Token.objects.select_related("user").filter(key=key, user__is_active=True).first()
    return token.user if token else AnonymousUser()


class _Guard:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1")
        token = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
        if token:
            scope = {**scope, "user": await _user_for_token(token)}
            allowed = not origin or origin_allowed(origin)
        else:
            allowed = bool(origin) and origin_allowed(origin)
        user = scope.get("user")
        if not allowed or user is None or not user.is_authenticated:
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)


def events_auth_middleware(inner):
    """Session (cookie) auth, then the token and Origin guard."""
    return AuthMiddlewareStack(_Guard(inner))
