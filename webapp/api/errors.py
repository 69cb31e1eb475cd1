"""Every API error has the shape {"detail": "...", "code": "..."} (shared/API.md).

Validation errors keep the per-field messages under "errors" and sum them up in "detail".
A remote server's refusal is 502 with the server's own words; anything unexpected is a
plain 500 with no stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class RemoteRefusal(exceptions.APIException):
    """A mail or FTP server said no; `detail` is the server's reply text."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "remote_error"

    def __init__(self, detail: str, code: str = "remote_error", **extra: Any) -> None:
        super().__init__(detail, code)
        self.extra = extra


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            label = "" if key in ("non_field_errors", "detail") else f"{key}: "
            lines += _flatten(value, prefix + label)
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def _first_code(codes: Any) -> str:
    if isinstance(codes, dict):
        codes = next(iter(codes.values()), "invalid")
    if isinstance(codes, list):
        codes = codes[0] if codes else "invalid"
    return codes if isinstance(codes, str) else _first_code(codes)


def exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    elif isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        exc = exceptions.ValidationError(
            {"detail": f"Too many files in one request (at most {limit}); send fewer at a time."}
        )
    elif isinstance(exc, SuspiciousOperation):  # too big a body, a bad host name…
        exc = exceptions.ValidationError({"detail": "The request was refused as malformed."})
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(
            {"detail": "Something went wrong on our side.", "code": "server_error"},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    body: dict[str, Any] = {
        "detail": "; ".join(_flatten(exc.detail)),
        "code": _first_code(exc.get_codes()),
    }
    if isinstance(exc, exceptions.ValidationError):
        body["errors"] = exc.detail
    if isinstance(exc, RemoteRefusal):
        body.update(exc.extra)
    response.data = body
    return response
