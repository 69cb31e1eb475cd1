"""REST API for drafts: /api/v1/mail/drafts/ (list, create, read, update, delete) and
/api/v1/mail/drafts/{id}/send/. Thin: mailcore.drafts and mailcore.outbox do the work.
Another user's draft, account, identity or upload is a 404."""

from __future__ import annotations

from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from ftpcore.api import FtpErrorsMixin
from mailcore import drafts, people, selectors
from mailcore.api import int_param
from mailcore.models import Draft, ForwardMode, Upload
from mailcore.outbox_api import OutboxCreateSerializer, PeopleErrorsMixin, outgoing_create
from mailcore.serializers import (
    OutgoingMessageSerializer,
    RecipientsField,
)


class DraftSerializer(serializers.ModelSerializer):
    saved_on_server = serializers.SerializerMethodField()

    class Meta:
        model = Draft
        fields = [
            "id", "account", "identity", "to", "cc", "bcc", "subject", "text", "html",
            "attachments", "in_reply_to", "reply_to_message", "forward_of", "forward_mode",
            "forward_attachments", "message_id", "revision", "saved_on_server",
            "server_mailbox", "server_uid", "server_error", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_saved_on_server(self, draft: Draft) -> bool:
        """True when the copy in the Drafts folder holds the latest save."""
        return draft.server_revision >= draft.revision


class DraftWriteSerializer(serializers.Serializer):
    account = serializers.IntegerField()
    identity = serializers.IntegerField(required=False, allow_null=True)
    to = RecipientsField(required=False)
    cc = RecipientsField(required=False)
    bcc = RecipientsField(required=False)
    subject = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    html = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )
    attachments = serializers.ListField(child=serializers.IntegerField(), required=False)
    in_reply_to = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    reply_to_message = serializers.IntegerField(
        required=False, allow_null=True, help_text="Id of the message answered."
    )
    forward_of = serializers.IntegerField(
        required=False, allow_null=True, help_text="Id of the message forwarded."
    )
    forward_mode = serializers.ChoiceField(choices=ForwardMode.choices, required=False)
    forward_attachments = serializers.BooleanField(required=False)


# What a draft's send takes from the draft when the request does not say (a client that
# only knows the draft's id still sends a reply as a reply, a forward with its original).
_REMEMBERED = ("reply_to_message", "forward_of", "forward_mode", "forward_attachments")


def _owned(user, data: dict) -> dict:
    """The validated fields with ids turned into the user's own objects (404 otherwise)."""
    values = dict(data)
    if "account" in values:
        values["account"] = selectors.account_get(user=user, account_id=values["account"])
    if values.get("identity") is not None:
        values["identity"] = get_object_or_404(
            people.identity_list(user=user), pk=values["identity"]
        )
    for field in ("reply_to_message", "forward_of"):
        if values.get(field) is not None:
            try:
                values[field] = selectors.message_get(user=user, message_id=values[field])
            except Http404:
                raise serializers.ValidationError({field: "No such message."}) from None
    if values.get("attachments"):
        ids = list(dict.fromkeys(values["attachments"]))
        if Upload.objects.filter(owner=user, pk__in=ids).count() != len(ids):
            raise serializers.ValidationError({"attachments": "No such upload."})
    return values


class DraftViewSet(
    PeopleErrorsMixin,
    FtpErrorsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = DraftSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        found = Draft.objects.filter(owner=self.request.user).select_related("account")
        account = int_param(self.request, "account")
        if account is not None:
            found = found.filter(account_id=account)
        message_id = self.request.query_params.get("message_id")
        if message_id:
            found = found.filter(message_id=message_id)
        return found.order_by("-updated_at", "-id")

    @extend_schema(
        parameters=[OpenApiParameter("account", int), OpenApiParameter("message_id", str)]
    )
    def list(self, request, *args, **kwargs):
        """The user's drafts, last changed first; `message_id` finds the draft whose copy is
        that message in the Drafts folder."""
        return super().list(request, *args, **kwargs)

    @extend_schema(request=DraftWriteSerializer, responses={201: DraftSerializer})
    def create(self, request):
        form = DraftWriteSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        draft = drafts.draft_create(owner=request.user, **_owned(request.user, form.validated_data))
        return Response(DraftSerializer(draft).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DraftWriteSerializer, responses=DraftSerializer)
    def update(self, request, pk=None, partial=False):
        draft = self.get_object()
        form = DraftWriteSerializer(data=request.data, partial=partial)
        form.is_valid(raise_exception=True)
        draft = drafts.draft_update(draft=draft, **_owned(request.user, form.validated_data))
        return Response(DraftSerializer(draft).data)

    @extend_schema(request=DraftWriteSerializer, responses=DraftSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk, partial=True)

    def perform_destroy(self, instance):
        drafts.draft_delete(draft=instance)

    @extend_schema(request=OutboxCreateSerializer, responses={201: OutgoingMessageSerializer})
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        """Send the message (the body is the same as POST /mail/outbox/) and delete the
        draft and its server copy, in one transaction: a refused message keeps its draft.
        A body without reply_to_message, forward_of, forward_mode and forward_attachments
        takes them from the draft."""
        draft = self.get_object()
        form = OutboxCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        if not any(field in request.data for field in _REMEMBERED):
            data.update(
                reply_to_message=draft.reply_to_message_id,
                forward_of=draft.forward_of_id,
                forward_mode=draft.forward_mode,
                forward_attachments=draft.forward_attachments,
            )
        with transaction.atomic():
            message = outgoing_create(user=request.user, data=data)
            drafts.draft_delete(draft=draft)
        return Response(OutgoingMessageSerializer(message).data, status=status.HTTP_201_CREATED)
