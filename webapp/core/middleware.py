"""A strict Content-Security-Policy for Satchel's own pages.

Our pages load scripts and styles only from our origin (no inline scripts anywhere), so a
script that slips into a page through some bug still cannot run. Views that set their own
policy (the sandboxed mail body frame) keep it; the Swagger UI, which needs inline scripts,
is left out.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)
EXEMPT_PREFIXES = ("/api/v1/docs/",)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        html = response.get("Content-Type", "").startswith("text/html")
        exempt = request.path.startswith(EXEMPT_PREFIXES)
        if html and not exempt and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = POLICY
        return response
