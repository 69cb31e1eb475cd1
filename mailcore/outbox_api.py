"""REST API for sending mail (shared/API.md, Mail): outbox, uploads, identities, contacts,
groups. Views are thin: mailcore.outbox and mailcore.people do the work."""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from ftpcore.api import FtpErrorsMixin
from mailcore import forwarding, ftp_bridge, outbox, people, selectors
from mailcore.api import MailErrorsMixin, int_param
from mailcore.ftp_bridge_api import FtpFileSerializer, ftp_files
from mailcore.models import OutgoingMessage, Upload
from mailcore.outgoing_html import outgoing_html_sanitize
from mailcore.protocols.compose import AddressError, HeaderInjection
from mailcore.serializers import (
    ContactGroupSerializer,
    ContactSerializer,
    IdentitySerializer,
    OutgoingMessageCreateSerializer,
    OutgoingMessageSerializer,
    UploadCreateSerializer,
    UploadSerializer,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class PeopleErrorsMixin(MailErrorsMixin):
    """Bad addresses are listed one by one; a line break in a header is a clear 400."""

    def handle_exception(self, exc):
        if isinstance(exc, AddressError):
            count = len(exc.errors)
            exc = ValidationError(
                {
                    "detail": f"{count} invalid address{'es' if count != 1 else ''}: {exc}",
                    "addresses": exc.errors,
                }
            )
        elif isinstance(exc, HeaderInjection):
            exc = ValidationError({"detail": f"Header injection refused: {exc}"})
        elif isinstance(exc, outbox.OutboxConflict):
            exc = Conflict(str(exc))
        return super().handle_exception(exc)


class OutboxCreateSerializer(OutgoingMessageCreateSerializer):
    ftp_attachments = FtpFileSerializer(many=True, required=False, default=list)


def outgoing_create(*, user, data: dict) -> OutgoingMessage:
    """An outgoing message from the validated fields of OutboxCreateSerializer (the outbox
    POST and a draft's send/): ids become the user's own objects, a reply gets its thread
    headers, a forward its original, FTP files are fetched."""
    account = selectors.account_get(user=user, account_id=data["account"])
    identity = None
    if data.get("identity"):
        try:
            identity = people.identity_list(user=user).get(pk=data["identity"])
        except people.Identity.DoesNotExist:
            raise ValidationError({"identity": "No such identity."}) from None
    upload_ids = list(dict.fromkeys(data.get("attachments") or []))
    uploads = list(Upload.objects.filter(owner=user, pk__in=upload_ids))
    if len(uploads) != len(upload_ids):
        raise ValidationError({"attachments": "No such upload."})
    uploads.sort(key=lambda upload: upload_ids.index(upload.pk))
    in_reply_to, references = data.get("in_reply_to") or None, []
    answered = forwarded = None
    if data.get("reply_to_message"):
        answered = _original(user, data["reply_to_message"], "reply_to_message")
        in_reply_to, references = forwarding.reply_headers(original=answered)
    forward_attachment = None
    if data.get("forward_of"):
        forwarded = _original(user, data["forward_of"], "forward_of")
        if data["forward_mode"] == "attachment":
            forward_attachment = forwarding.forward_raw(original=forwarded)
    # Files from FTP sites and a forwarded message's attachments become uploads for this
    # message only: gone once it is built.
    sites = ftp_files(user=user, entries=data["ftp_attachments"])
    temporary = ftp_bridge.uploads_create_from_ftp(owner=user, files=sites)
    try:
        inline = forwarded is not None and forward_attachment is None
        if inline and data.get("forward_attachments", True):
            temporary += forwarding.forward_uploads(owner=user, original=forwarded)
        message = outbox.outbox_create(
            owner=user,
            account=account,
            identity=identity,
            to=data.get("to") or [],
            cc=data.get("cc") or [],
            bcc=data.get("bcc") or [],
            subject=data.get("subject", ""),
            text=data.get("text", ""),
            html=outgoing_html_sanitize(html=data.get("html")),
            uploads=uploads + temporary,
            in_reply_to=in_reply_to,
            references=references,
            forward_attachment=forward_attachment,
            send_at=data.get("send_at"),
            reply_to_message=answered,
            forward_of=forwarded,
        )
    finally:
        for upload in temporary:
            ftp_bridge.upload_discard(upload=upload)
    return message


class OutboxViewSet(
    PeopleErrorsMixin,
    FtpErrorsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = OutgoingMessageSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        messages = OutgoingMessage.objects.filter(owner=self.request.user).defer("raw")
        state = self.request.query_params.get("state")
        if state:
            messages = messages.filter(state=state)
        account = int_param(self.request, "account")
        if account is not None:
            messages = messages.filter(account_id=account)
        return messages.order_by("-id")

    @extend_schema(parameters=[OpenApiParameter("state", str), OpenApiParameter("account", int)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=OutboxCreateSerializer, responses={201: OutgoingMessageSerializer})
    def create(self, request):
        form = OutboxCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        message = outgoing_create(user=request.user, data=form.validated_data)
        return Response(OutgoingMessageSerializer(message).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=OutgoingMessageSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        message = outbox.outbox_cancel(message=self.get_object())
        return Response(OutgoingMessageSerializer(message).data)

    @extend_schema(request=None, responses=OutgoingMessageSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        message = outbox.outbox_retry(message=self.get_object())
        return Response(OutgoingMessageSerializer(message).data)

    @extend_schema(request=None, responses=OutgoingMessageSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """For an `unknown` message: look for its Message-ID in the Sent folder."""
        message = self.get_object()
        outbox.outbox_resolve_unknown(message=message)
        message.refresh_from_db()
        return Response(OutgoingMessageSerializer(message).data)


def _original(user, message_id: int, field: str):
    try:
        return selectors.message_get(user=user, message_id=message_id)
    except Http404:
        raise ValidationError({field: "No such message."}) from None


class UploadViewSet(mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = UploadSerializer
    lookup_value_converter = "int"
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return Upload.objects.filter(owner=self.request.user)

    @extend_schema(request=UploadCreateSerializer, responses={201: UploadSerializer})
    def create(self, request):
        form = UploadCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        file = form.validated_data["file"]
        upload = outbox.upload_create(
            owner=request.user,
            filename=file.name,
            chunks=file.chunks(),
            content_type=getattr(file, "content_type", "") or "",
        )
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        from pathlib import Path

        Path(instance.path).unlink(missing_ok=True)
        instance.delete()


class IdentityViewSet(PeopleErrorsMixin, viewsets.ModelViewSet):
    serializer_class = IdentitySerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        return people.identity_list(user=self.request.user)

    def perform_create(self, serializer):
        account = get_object_or_404(
            selectors.account_list(user=self.request.user),
            pk=serializer.validated_data["account"].pk,
        )
        data = dict(serializer.validated_data, account=account)
        serializer.instance = people.identity_create(**data)

    def perform_update(self, serializer):
        people.identity_update(identity=serializer.instance, **serializer.validated_data)


class ContactViewSet(PeopleErrorsMixin, viewsets.ModelViewSet):
    serializer_class = ContactSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        contacts = people.contact_list(user=self.request.user)
        query = self.request.query_params.get("q", "").strip()
        if query:
            contacts = contacts.filter(Q(name__icontains=query) | Q(email_address__icontains=query))
        return contacts

    def perform_create(self, serializer):
        serializer.instance = people.contact_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        people.contact_update(contact=serializer.instance, **serializer.validated_data)


class ContactGroupViewSet(PeopleErrorsMixin, viewsets.ModelViewSet):
    serializer_class = ContactGroupSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        return people.group_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = people.group_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        people.group_update(group=serializer.instance, **serializer.validated_data)
