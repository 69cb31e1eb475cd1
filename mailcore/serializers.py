from rest_framework import serializers

from mailcore.models import Attachment, MailAccount, Mailbox, Message
from webapp.validators import clean_fingerprint, clean_host


class MailAccountSerializer(serializers.ModelSerializer):
    password = serializers.CharField(write_only=True, trim_whitespace=False)
    smtp_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )

    class Meta:
        model = MailAccount
        fields = [
            "id", "name", "email_address", "display_name",
            "incoming_protocol", "incoming_host", "incoming_port", "incoming_security",
            "username", "password", "incoming_tls_fingerprint",
            "smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password",
            "smtp_tls_fingerprint", "pop3_leave_on_server",
            "sync_state", "last_sync_at", "last_error",
        ]  # fmt: skip
        read_only_fields = ["sync_state", "last_sync_at", "last_error"]
        extra_kwargs = {
            "incoming_port": {"min_value": 1, "max_value": 65535},
            "smtp_port": {"min_value": 1, "max_value": 65535},
        }

    def validate_incoming_host(self, value: str) -> str:
        return clean_host(value, example="imap.example.org")

    def validate_smtp_host(self, value: str) -> str:
        return clean_host(value, required=False, example="smtp.example.org")

    def validate_incoming_tls_fingerprint(self, value: str) -> str:
        return clean_fingerprint(value)

    def validate_smtp_tls_fingerprint(self, value: str) -> str:
        return clean_fingerprint(value)


class MailboxSerializer(serializers.ModelSerializer):
    class Meta:
        model = Mailbox
        fields = [
            "id", "account", "name", "path", "parent", "delimiter", "role", "selectable",
            "total", "unread",
        ]  # fmt: skip
        read_only_fields = ["path", "delimiter", "role", "selectable", "total", "unread"]


class MailboxRenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)


class AddressSerializer(serializers.Serializer):
    name = serializers.CharField()
    email = serializers.CharField()


class MessageListSerializer(serializers.ModelSerializer):
    sender = serializers.SerializerMethodField()
    to = AddressSerializer(many=True)
    cc = AddressSerializer(many=True)
    thread_count = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id", "mailbox", "uid", "message_id", "thread", "thread_count", "subject", "sender",
            "to", "cc", "date", "snippet", "size", "seen", "flagged", "answered",
            "has_attachments",
        ]  # fmt: skip
        read_only_fields = fields

    def to_representation(self, message: Message) -> dict:
        """By hand: lists render 50 to 500 of these per request, and DRF's generic walk over
        the declared fields costs more than the query. The fields above still describe it."""
        return {
            "id": message.pk,
            "mailbox": message.mailbox_id,
            "uid": message.uid,
            "message_id": message.message_id,
            "thread": message.thread_id,
            "thread_count": self.get_thread_count(message),
            "subject": message.subject,
            "sender": self.get_sender(message),
            "to": message.to,
            "cc": message.cc,
            "date": serializers.DateTimeField().to_representation(message.date),
            "snippet": message.snippet,
            "size": message.size,
            "seen": message.seen,
            "flagged": message.flagged,
            "answered": message.answered,
            "has_attachments": message.has_attachments,
        }

    def get_sender(self, message: Message) -> dict[str, str]:
        return {"name": message.sender_name, "email": message.sender_email}

    def get_thread_count(self, message: Message) -> int:
        """Messages in the conversation (1 when it stands alone)."""
        count = getattr(message, "thread_count", None)
        if count is None:
            count = message.thread.message_count if message.thread_id else 1
        return count or 1


class AttachmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attachment
        fields = ["id", "filename", "content_type", "size", "content_id", "inline"]


class MessageDetailSerializer(MessageListSerializer):
    text = serializers.CharField()
    html = serializers.CharField()
    remote_images_blocked = serializers.IntegerField()
    headers = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    attachments = AttachmentSerializer(many=True)

    class Meta(MessageListSerializer.Meta):
        fields = [
            *MessageListSerializer.Meta.fields,
            "text", "html", "remote_images_blocked", "headers", "attachments",
        ]  # fmt: skip
        read_only_fields = fields


class MessageFlagsSerializer(serializers.Serializer):
    seen = serializers.BooleanField(required=False)
    flagged = serializers.BooleanField(required=False)


class MessageMoveSerializer(serializers.Serializer):
    mailbox = serializers.IntegerField()


class MessageBulkSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=1000)
    action = serializers.ChoiceField(choices=["read", "unread", "flag", "unflag", "move", "delete"])
    mailbox = serializers.IntegerField(required=False)


# Sending side: identities, contacts, groups, uploads, the outbox ---------------------------

from mailcore.models import (  # noqa: E402 — appended section
    Contact,
    ContactGroup,
    ForwardMode,
    Identity,
    OutgoingMessage,
    Upload,
)


class IdentitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Identity
        fields = ["id", "account", "name", "email_address", "signature"]

    def validate_account(self, account: MailAccount) -> MailAccount:
        request = self.context.get("request")
        if request is not None and account.owner_id != request.user.pk:
            raise serializers.ValidationError("No such account.")
        return account

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            fields["account"].queryset = MailAccount.objects.filter(owner=request.user)
        return fields


class ContactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ["id", "name", "email_address", "collected", "last_used_at"]
        read_only_fields = ["collected", "last_used_at"]


class ContactGroupSerializer(serializers.ModelSerializer):
    members = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        model = ContactGroup
        fields = ["id", "name", "members"]


class UploadSerializer(serializers.ModelSerializer):
    class Meta:
        model = Upload
        fields = ["id", "filename", "size", "content_type"]
        read_only_fields = fields


class UploadCreateSerializer(serializers.Serializer):
    file = serializers.FileField()


class RecipientsField(serializers.ListField):
    """A list of entries ("Name <a@x>", "a@x, b@y", a group's name); a string is one entry."""

    child = serializers.CharField(trim_whitespace=False, allow_blank=True)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        return super().to_internal_value(data)


class OutgoingMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = OutgoingMessage
        fields = [
            "id", "account", "identity", "state", "attempts", "next_attempt_at", "last_error",
            "sent_at", "message_id", "subject", "to", "cc", "bcc", "send_at", "size",
            "accepted", "refused", "reply", "sent_copy_saved", "created_at",
            "reply_to_message", "forward_of",
        ]  # fmt: skip
        read_only_fields = fields


class OutgoingMessageCreateSerializer(serializers.Serializer):
    account = serializers.IntegerField()
    identity = serializers.IntegerField(required=False, allow_null=True)
    to = RecipientsField(required=False, default=list)
    cc = RecipientsField(required=False, default=list)
    bcc = RecipientsField(required=False, default=list)
    subject = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    html = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )
    attachments = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list
    )
    in_reply_to = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    reply_to_message = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Id of the message answered: sets In-Reply-To and References from it.",
    )
    forward_of = serializers.IntegerField(
        required=False, allow_null=True, help_text="Id of the message forwarded."
    )
    forward_mode = serializers.ChoiceField(
        choices=ForwardMode.choices,
        default=ForwardMode.INLINE,
        help_text="inline: the original's attachments travel along; "
        "attachment: the whole original as a message/rfc822 part.",
    )
    forward_attachments = serializers.BooleanField(
        default=True,
        help_text="An inline forward carries the original's attachments; false leaves them out.",
    )
    send_at = serializers.DateTimeField(required=False, allow_null=True)
