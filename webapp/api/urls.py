from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from ftpcore.api import FtpSiteViewSet, TransferViewSet
from mailcore.api import AttachmentViewSet, MailAccountViewSet, MailboxViewSet, MessageViewSet
from mailcore.ftp_bridge_api import AttachmentSaveToFtpView, UploadFromFtpView
from mailcore.outbox_api import (
    ContactGroupViewSet,
    ContactViewSet,
    IdentityViewSet,
    OutboxViewSet,
    UploadViewSet,
)
from webapp.api.auth import TokenView
from webapp.jobs.api import JobViewSet

router = SimpleRouter(use_regex_path=False)
router.register("ftp/sites", FtpSiteViewSet, basename="ftp-site")
router.register("ftp/transfers", TransferViewSet, basename="ftp-transfer")
router.register("jobs", JobViewSet, basename="job")
router.register("mail/accounts", MailAccountViewSet, basename="mail-account")
router.register("mail/mailboxes", MailboxViewSet, basename="mail-mailbox")
router.register("mail/messages", MessageViewSet, basename="mail-message")
router.register("mail/attachments", AttachmentViewSet, basename="mail-attachment")
router.register("mail/outbox", OutboxViewSet, basename="mail-outbox")
router.register("mail/identities", IdentityViewSet, basename="mail-identity")
router.register("mail/contacts", ContactViewSet, basename="mail-contact")
router.register("mail/groups", ContactGroupViewSet, basename="mail-group")
router.register("uploads", UploadViewSet, basename="upload")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("uploads/from-ftp/", UploadFromFtpView.as_view(), name="upload-from-ftp"),
    path(
        "mail/attachments/<int:pk>/save-to-ftp/",
        AttachmentSaveToFtpView.as_view(),
        name="mail-attachment-save-to-ftp",
    ),
    path("", include(router.urls)),
]
