"""REST API for mail (shared/API.md, Mail). Views are thin: selectors read, services write."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from urllib.parse import quote

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from mailcore import selectors, services
from mailcore.models import Attachment, Message
from mailcore.protocols import imap, smtp
from mailcore.serializers import (
    AttachmentSerializer,
    MailAccountSerializer,
    MailboxRenameSerializer,
    MailboxSerializer,
    MessageBulkSerializer,
    MessageDetailSerializer,
    MessageFlagsSerializer,
    MessageListSerializer,
    MessageMoveSerializer,
)
from webapp.api.errors import RemoteRefusal
from webapp.api.pagination import CursorPagination
from webapp.jobs.api import JobEnvelope, JobSerializer

# Types a browser could run on our origin: always served as a plain download.
DANGEROUS_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
)


def remote_refusal(exc: imap.ImapError | smtp.SmtpError) -> RemoteRefusal:
    """A mail server's refusal as a 502; SMTP's say so ("SMTP: …"), IMAP's are the default."""
    if isinstance(exc, smtp.SmtpError):
        detail, server = f"SMTP: {exc.reply}", {"server": "smtp"}
    else:
        detail, server = exc.reply, {"server": "incoming"}
    if isinstance(exc, imap.ImapCertificateError | smtp.SmtpCertificateError):
        return RemoteRefusal(detail, "untrusted_certificate", fingerprint=exc.fingerprint, **server)
    if isinstance(exc, imap.ImapAuthError | smtp.SmtpAuthError):
        return RemoteRefusal(detail, "auth_failed", **server)
    if isinstance(exc, imap.ImapConnectionError):
        return RemoteRefusal(detail, "unreachable", **server)
    return RemoteRefusal(detail, "remote_error", **server)


class MailErrorsMixin:
    """The server's refusal becomes 502 with its words; a bad name or path becomes 400."""

    def handle_exception(self, exc):
        if isinstance(exc, imap.ImapError | smtp.SmtpError):
            exc = remote_refusal(exc)
        elif isinstance(exc, ValueError):
            exc = ValidationError({"detail": str(exc)})
        return super().handle_exception(exc)


class MailAccountViewSet(MailErrorsMixin, viewsets.ModelViewSet):
    serializer_class = MailAccountSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        return selectors.account_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.account_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        services.account_update(account=serializer.instance, **serializer.validated_data)

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "AccountCheck",
            {"incoming": serializers.CharField(), "smtp": serializers.CharField()},
        ),
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        return Response(services.account_check(account=self.get_object()))

    @extend_schema(request=None, responses={202: JobEnvelope})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        job = services.account_sync_start(account=self.get_object())
        return Response({"job": JobSerializer(job).data}, status=status.HTTP_202_ACCEPTED)


class MailboxViewSet(MailErrorsMixin, viewsets.ModelViewSet):
    serializer_class = MailboxSerializer
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        account = self.request.query_params.get("account")
        return selectors.mailbox_list(
            user=self.request.user,
            account_id=int(account) if account and account.isdigit() else None,
        )

    @extend_schema(parameters=[OpenApiParameter("account", int)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        account = selectors.account_get(
            user=self.request.user, account_id=serializer.validated_data["account"].pk
        )
        parent = serializer.validated_data.get("parent")
        if parent is not None:
            parent = selectors.mailbox_get(user=self.request.user, mailbox_id=parent.pk)
        serializer.instance = services.mailbox_create(
            account=account, name=serializer.validated_data["name"], parent=parent
        )

    @extend_schema(request=MailboxRenameSerializer, responses=MailboxSerializer)
    def partial_update(self, request, *args, **kwargs):
        rename = MailboxRenameSerializer(data=request.data)
        rename.is_valid(raise_exception=True)
        mailbox = services.mailbox_rename(
            mailbox=self.get_object(), name=rename.validated_data["name"]
        )
        return Response(MailboxSerializer(mailbox).data)

    def perform_destroy(self, instance):
        services.mailbox_delete(mailbox=instance)


def _flag(request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in {"1", "true", "yes"}


def int_param(request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ValidationError({name: "Must be a whole number."})
    return int(value)


def _date_param(request, name: str) -> date | None:
    value = request.query_params.get(name)
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise ValidationError({name: "Use a date like 2026-11-26."}) from None


class MessagePagination(CursorPagination):
    """Newest first by date, as a keyset on (date, id): no OFFSET however deep the folder.

    A search first looks among the newest SEARCH_WINDOW messages of its scope (after the
    cursor). PostgreSQL cannot tell how common a word is well enough to choose a plan: for a
    word in most messages it collects and sorts every match (hundreds of ms at 100,000
    messages), while the newest few thousand by date hold a page of matches already. When
    the window holds a full page, that page is the same one the whole scope would give;
    otherwise the plain search runs (rare words are fast through the GIN index anyway).
    """

    ordering = ("-date", "-id")
    search_window = 2000

    def paginate_queryset(self, queryset, request, view=None):
        scope = getattr(view, "search_scope", None)
        if scope is not None:
            windowed = self._windowed(queryset, scope, request)
            if windowed is not None:
                queryset = windowed
        return super().paginate_queryset(queryset, request, view)

    def _windowed(self, queryset, scope, request):
        cursor = self.decode_cursor(request)
        if cursor is not None and cursor.reverse:
            return None
        offset, position = (cursor.offset, cursor.position) if cursor else (0, None)
        if position is not None:
            scope = scope.filter(date__lt=position)
            queryset_after = queryset.filter(date__lt=position)
        else:
            queryset_after = queryset
        edge = scope.order_by("-date", "-id").values_list("date", flat=True)
        threshold = edge[self.search_window - 1 : self.search_window].first()
        if threshold is None:
            return None  # a small scope: the plain search is quick
        wanted = offset + self.get_page_size(request) + 1
        found = queryset_after.filter(date__gte=threshold).order_by("-date", "-id")
        if len(found.values_list("id", flat=True)[:wanted]) < wanted:
            return None
        return queryset.filter(date__gte=threshold)


class MessageViewSet(
    MailErrorsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    lookup_value_converter = "int"
    pagination_class = MessagePagination

    def get_serializer_class(self):
        return MessageDetailSerializer if self.action == "retrieve" else MessageListSerializer

    def get_queryset(self):
        request = self.request
        if self.action != "list":
            return Message.objects.filter(account__owner=request.user).select_related(
                "mailbox", "account"
            )
        filters = selectors.MessageFilter(
            mailbox=int_param(request, "mailbox"),
            account=int_param(request, "account"),
            thread=int_param(request, "thread"),
            query=request.query_params.get("q", ""),
            unread=_flag(request, "unread"),
            flagged=_flag(request, "flagged"),
            has_attachments=_flag(request, "has_attachments"),
            since=_date_param(request, "since"),
            before=_date_param(request, "before"),
        )
        if filters.query and filters.mailbox and _flag(request, "server"):
            # The server also sees the bodies we never fetched (one folder at a time).
            mailbox = selectors.mailbox_get(user=request.user, mailbox_id=filters.mailbox)
            uids = services.mailbox_search(mailbox=mailbox, text=filters.query)
            filters = replace(filters, server_uids=tuple(uids))
        if filters.query:  # for MessagePagination's window
            unsearched = replace(filters, query="", server_uids=())
            self.search_scope = selectors.message_list(user=request.user, filters=unsearched)
        return selectors.message_list(user=request.user, filters=filters)

    @extend_schema(
        parameters=[
            OpenApiParameter(name, type_, description=text)
            for name, type_, text in [
                ("mailbox", int, "only this folder"),
                ("account", int, "only this account"),
                ("thread", int, "only this conversation"),
                ("q", str, "full-text query: every word must match (prefixes too)"),
                ("server", bool, "with q and mailbox: also ask the server's SEARCH"),
                ("unread", bool, ""),
                ("flagged", bool, ""),
                ("has_attachments", bool, ""),
                ("since", OpenApiTypes.DATE, "on or after"),
                ("before", OpenApiTypes.DATE, "before"),
            ]
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[OpenApiParameter("images", bool, description="show remote images")])
    def retrieve(self, request, *args, **kwargs):
        message = self.get_object()
        safe = services.message_body_html(
            message=message, allow_remote_images=_flag(request, "images")
        )
        body = message.body
        data = MessageListSerializer(message).data
        data.update(
            text=body.text,
            html=safe.html if safe else "",
            remote_images_blocked=safe.remote_images_blocked if safe else 0,
            headers=body.headers,
            attachments=AttachmentSerializer(message.attachments.all(), many=True).data,
        )
        return Response(data)

    @extend_schema(request=MessageFlagsSerializer, responses=MessageListSerializer)
    def partial_update(self, request, *args, **kwargs):
        flags = MessageFlagsSerializer(data=request.data)
        flags.is_valid(raise_exception=True)
        message = self.get_object()
        services.message_flags_set(messages=[message], **flags.validated_data)
        return Response(MessageListSerializer(message).data)

    def perform_destroy(self, instance):
        services.message_delete(messages=[instance])

    @extend_schema(request=MessageMoveSerializer, responses={204: None})
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        move = MessageMoveSerializer(data=request.data)
        move.is_valid(raise_exception=True)
        target = selectors.mailbox_get(user=request.user, mailbox_id=move.validated_data["mailbox"])
        services.message_move(messages=[self.get_object()], target=target)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={(200, "message/rfc822"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def raw(self, request, pk=None):
        message = self.get_object()
        response = HttpResponse(
            services.message_raw(message=message), content_type="message/rfc822"
        )
        response["Content-Disposition"] = f'attachment; filename="message-{message.pk}.eml"'
        return response

    @extend_schema(request=MessageBulkSerializer, responses={204: None})
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        bulk = MessageBulkSerializer(data=request.data)
        bulk.is_valid(raise_exception=True)
        ids, verb = bulk.validated_data["ids"], bulk.validated_data["action"]
        messages = list(self.get_queryset().filter(pk__in=ids))
        if len(messages) != len(set(ids)):
            raise ValidationError({"ids": "Some of these messages do not exist."})
        if verb == "move":
            if "mailbox" not in bulk.validated_data:
                raise ValidationError({"mailbox": "Say which folder to move to."})
            target = selectors.mailbox_get(
                user=request.user, mailbox_id=bulk.validated_data["mailbox"]
            )
            services.message_move(messages=messages, target=target)
        elif verb == "delete":
            services.message_delete(messages=messages)
        else:
            flag = {"read": ("seen", True), "unread": ("seen", False)}
            flag |= {"flag": ("flagged", True), "unflag": ("flagged", False)}
            name, value = flag[verb]
            services.message_flags_set(messages=messages, **{name: value})
        return Response(status=status.HTTP_204_NO_CONTENT)


class AttachmentViewSet(MailErrorsMixin, viewsets.GenericViewSet):
    lookup_value_converter = "int"
    queryset = Attachment.objects.none()

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def retrieve(self, request, pk=None):
        attachment = selectors.attachment_get(user=request.user, attachment_id=int(pk))
        content = services.attachment_bytes(attachment=attachment)
        content_type = attachment.content_type
        if content_type.startswith(DANGEROUS_TYPES):
            content_type = "application/octet-stream"
        response = HttpResponse(content, content_type=content_type)
        response["Content-Disposition"] = _attachment_disposition(attachment.filename)
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _attachment_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
