from django.contrib import admin

from mailcore.models import Attachment, MailAccount, Mailbox, Message, MessageBody, Thread


@admin.register(MailAccount)
class MailAccountAdmin(admin.ModelAdmin):
    list_display = ["name", "email_address", "owner", "incoming_protocol", "incoming_host"]
    list_display += ["sync_state", "last_sync_at"]
    list_filter = ["incoming_protocol", "sync_state", "incoming_security"]
    search_fields = ["name", "email_address", "owner__username", "incoming_host", "username"]
    list_select_related = ["owner"]
    exclude = ["password", "smtp_password"]  # secrets are set through the app, never shown
    readonly_fields = ["sync_state", "last_sync_at", "sync_started_at", "last_error"]


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["path", "account", "role", "total", "unread", "uidvalidity", "synced_down_to"]
    list_filter = ["role"]
    search_fields = ["path", "account__name", "account__owner__username"]
    list_select_related = ["account"]
    readonly_fields = ["uidvalidity", "uidnext", "highestmodseq", "synced_down_to"]
    raw_id_fields = ["account", "parent"]


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    fields = ["filename", "content_type", "size", "part", "inline"]
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "sender_email", "mailbox", "date", "seen", "flagged", "size"]
    list_filter = ["seen", "flagged", "has_attachments", "date"]
    search_fields = ["subject", "sender_email", "sender_name", "message_id"]
    list_select_related = ["mailbox"]
    raw_id_fields = ["account", "mailbox", "thread"]
    readonly_fields = ["uid", "modseq", "bodystructure", "message_id", "references"]
    date_hierarchy = "date"
    show_full_result_count = False  # a 100,000-message folder must not wait on COUNT(*)
    inlines = [AttachmentInline]


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ["subject", "account", "message_count", "last_date"]
    search_fields = ["subject"]
    raw_id_fields = ["account"]


@admin.register(MessageBody)
class MessageBodyAdmin(admin.ModelAdmin):
    list_display = ["message", "fetched_at"]
    raw_id_fields = ["message"]


from mailcore.models import (  # noqa: E402 — appended section
    Contact,
    ContactGroup,
    Draft,
    Identity,
    OutgoingMessage,
    Upload,
)


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ["email_address", "name", "account"]
    search_fields = ["email_address", "name", "account__owner__username"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["email_address", "name", "owner", "collected", "last_used_at"]
    list_filter = ["collected"]
    search_fields = ["email_address", "name", "owner__username"]
    raw_id_fields = ["owner"]


@admin.register(ContactGroup)
class ContactGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "owner"]
    search_fields = ["name", "owner__username"]
    raw_id_fields = ["owner"]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["filename", "owner", "size", "content_type", "created_at"]
    search_fields = ["filename", "owner__username"]
    readonly_fields = ["path"]
    raw_id_fields = ["owner"]


@admin.register(OutgoingMessage)
class OutgoingMessageAdmin(admin.ModelAdmin):
    list_display = ["subject", "owner", "account", "state", "attempts", "next_attempt_at"]
    list_display += ["sent_at"]
    list_filter = ["state", "sent_copy_saved"]
    search_fields = ["subject", "message_id", "owner__username", "mail_from"]
    list_select_related = ["owner", "account"]
    raw_id_fields = ["owner", "account", "identity"]
    exclude = ["raw"]
    readonly_fields = [
        "state", "message_id", "mail_from", "recipients", "size", "attempts",
        "first_attempt_at", "next_attempt_at", "last_error", "lease_until", "claim_token",
        "body_sent", "accepted", "refused", "reply", "sent_at", "sent_copy_saved",
        "sent_copy_error",
    ]  # fmt: skip


@admin.register(Draft)
class DraftAdmin(admin.ModelAdmin):
    list_display = ["subject", "owner", "account", "updated_at", "revision", "server_revision"]
    search_fields = ["subject", "message_id", "owner__username"]
    list_select_related = ["owner", "account"]
    raw_id_fields = ["owner", "account", "identity"]
    readonly_fields = [
        "message_id", "revision", "server_revision", "server_mailbox", "server_uid",
        "server_error", "push_token", "push_lease_until",
    ]  # fmt: skip
