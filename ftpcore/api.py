"""REST API for files (shared/API.md, Files). Views are thin: selectors read, services act.

Every FTP refusal becomes 502 with the server's own words, its reply code and plain words
(``replies.py``); a path with CR, LF or NUL (the engine's ValueError) becomes 400.
"""

from __future__ import annotations

import io
import unicodedata
from urllib.parse import quote

from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from ftpcore import chunked, selectors, services, transfers
from ftpcore.models import UploadSession
from ftpcore.protocols import ftp
from ftpcore.serializers import (
    ChmodSerializer,
    DeleteSerializer,
    EntrySerializer,
    FtpSiteSerializer,
    ListingSerializer,
    PathSerializer,
    RenameSerializer,
    SiteCheckSerializer,
    TransferSerializer,
    UploadSessionSerializer,
    UploadStartSerializer,
)
from ftpcore.streaming import AsyncChunks
from webapp.api.errors import RemoteRefusal

PATH_PARAM = OpenApiParameter("path", str, description="Absolute, or relative to initial_path")


def remote_refusal(exc: ftp.FtpError) -> RemoteRefusal:
    detail = str(exc)  # "550 No such file": the code, then the server's words
    extra = {"reply_code": exc.code, "explanation": exc.explanation}
    if isinstance(exc, ftp.FtpCertificateError):
        return RemoteRefusal(detail, "untrusted_certificate", fingerprint=exc.fingerprint, **extra)
    if isinstance(exc, ftp.FtpAuthError):
        return RemoteRefusal(detail, "auth_failed", **extra)
    if exc.code is not None:
        return RemoteRefusal(detail, f"ftp_{exc.code}", **extra)
    if isinstance(exc, ftp.FtpConnectionError):
        return RemoteRefusal(detail, "unreachable", **extra)
    if isinstance(exc, ftp.FtpTransferError):
        return RemoteRefusal(detail, "transfer_failed", **extra)
    return RemoteRefusal(detail, "remote_error", **extra)


class FtpErrorsMixin:
    """The server's refusal becomes 502 with its words; a bad path becomes 400."""

    def handle_exception(self, exc):
        if isinstance(exc, ftp.FtpError):
            exc = remote_refusal(exc)
        elif isinstance(exc, ValueError):
            exc = ValidationError({"detail": str(exc)})
        return super().handle_exception(exc)


def attachment_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name; nothing a header can break on."""
    name = filename.encode("utf-8", "replace").decode("utf-8")  # undecodable bytes -> "?"
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C") or "download"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = "".join("_" if c in '"\\%;?' else c for c in fallback).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _data(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class OctetStreamParser(BaseParser):
    """Chunks are raw bytes; the view reads them from the request stream, never whole."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class FtpSiteViewSet(FtpErrorsMixin, viewsets.ModelViewSet):
    """FTP sites. File actions use the web process's pooled sessions (ftpcore/pool.py)."""

    serializer_class = FtpSiteSerializer
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.site_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.site_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        services.site_update(site=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        services.site_delete(site=instance)

    @extend_schema(request=None, responses=SiteCheckSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        return Response(services.site_check(site=self.get_object()))

    @extend_schema(parameters=[PATH_PARAM], responses=ListingSerializer)
    @action(detail=True, methods=["get"], url_path="list")
    def listing(self, request, pk=None):
        site = self.get_object()
        path, entries = services.file_list(site=site, path=request.query_params.get("path"))
        return Response(ListingSerializer({"path": path, "entries": entries}).data)

    @extend_schema(parameters=[PATH_PARAM], responses={(200, "*/*"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        site = self.get_object()
        path = request.query_params.get("path")
        if not path:
            raise ValidationError({"path": ["Give the path of the file to download."]})
        download = services.file_download_open(site=site, path=path)
        content_type = "application/zip" if download.is_zip else "application/octet-stream"
        response = StreamingHttpResponse(AsyncChunks(download.chunks), content_type=content_type)
        if download.size is not None:
            response["Content-Length"] = str(download.size)
        response["Content-Disposition"] = attachment_disposition(download.name)
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @extend_schema(
        parameters=[PATH_PARAM],
        request={
            "multipart/form-data": inline_serializer(
                "FtpUpload", {"file": serializers.ListField(child=serializers.FileField())}
            )
        },
        responses={201: EntrySerializer(many=True)},
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request, pk=None):
        site = self.get_object()
        files = request.FILES.getlist("file")
        if not files:
            raise ValidationError({"file": ["Attach at least one file."]})
        entries = services.file_upload(
            site=site, directory=request.query_params.get("path"), files=files
        )
        return Response(EntrySerializer(entries, many=True).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PathSerializer, responses=PathSerializer)
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser])
    def mkdir(self, request, pk=None):
        site = self.get_object()
        path = services.file_mkdir(site=site, path=_data(PathSerializer, request)["path"])
        return Response({"path": path}, status=status.HTTP_201_CREATED)

    @extend_schema(request=RenameSerializer, responses=RenameSerializer)
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser])
    def rename(self, request, pk=None):
        site = self.get_object()
        data = _data(RenameSerializer, request)
        old, new = services.file_rename(site=site, source=data["from"], target=data["to"])
        return Response({"from": old, "to": new})

    @extend_schema(request=DeleteSerializer, responses={204: None})
    @action(
        detail=True, methods=["post"], url_path="delete", parser_classes=[JSONParser, FormParser]
    )
    def delete_path(self, request, pk=None):  # not "delete": that is the HTTP method's handler
        site = self.get_object()
        data = _data(DeleteSerializer, request)
        services.file_delete(site=site, path=data["path"], recursive=data["recursive"])
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=ChmodSerializer, responses=ChmodSerializer)
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser])
    def chmod(self, request, pk=None):
        site = self.get_object()
        data = _data(ChmodSerializer, request)
        path = services.file_chmod(site=site, path=data["path"], mode=data["mode"])
        return Response({"path": path, "mode": f"{data['mode']:03o}"})

    # Chunked uploads (ftpcore/chunked.py) -------------------------------------------------

    def _upload(self, site, upload_id: int):
        queryset = selectors.upload_session_list(user=self.request.user, site=site)
        return get_object_or_404(queryset.select_related("site"), pk=upload_id)

    @extend_schema(
        methods=["post"], request=UploadStartSerializer, responses={201: UploadSessionSerializer}
    )
    @extend_schema(methods=["get"], responses=UploadSessionSerializer(many=True))
    @action(detail=True, methods=["get", "post"], parser_classes=[JSONParser, FormParser])
    def uploads(self, request, pk=None):
        """Start a chunked upload of ``name`` (``size`` bytes) into the folder ``path``; or
        list the open ones (to resume one after the page was reloaded)."""
        site = self.get_object()
        if request.method == "GET":
            rows = selectors.upload_session_list(user=request.user, site=site)
            rows = rows.filter(state=UploadSession.State.OPEN)[:100]
            return Response(UploadSessionSerializer(rows, many=True).data)
        data = _data(UploadStartSerializer, request)
        upload = chunked.upload_session_create(
            owner=request.user, site=site, directory=data["path"], name=data["name"],
            size=data["size"],
        )  # fmt: skip
        return Response(UploadSessionSerializer(upload).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["put"],
        parameters=[OpenApiParameter("offset", int, required=True)],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: UploadSessionSerializer, 409: OpenApiTypes.OBJECT},
    )
    @extend_schema(methods=["get", "delete"], responses=UploadSessionSerializer)
    @action(
        detail=True,
        methods=["get", "put", "delete"],
        url_path="uploads/<int:upload_id>",
        parser_classes=[OctetStreamParser],
    )
    def upload_session(self, request, pk=None, upload_id=None):
        """GET: the confirmed offset; PUT (raw body, ``?offset=``): append a chunk, the last
        one completes the file; DELETE: cancel (the temporary file is deleted)."""
        upload = self._upload(self.get_object(), upload_id)
        if request.method == "DELETE":
            upload = chunked.upload_session_cancel(upload=upload)
        elif request.method == "PUT":
            offset = request.query_params.get("offset", "")
            if not offset.isdigit():
                raise ValidationError({"offset": ["Give the chunk's offset in bytes."]})
            length = int(request.META.get("CONTENT_LENGTH") or 0)
            try:
                upload = chunked.upload_session_write(
                    upload=upload,
                    offset=int(offset),
                    source=request.stream or io.BytesIO(),
                    length=length,
                )
            except chunked.OffsetMismatch as exc:
                return _conflict(str(exc), "offset_mismatch", exc.expected)
            except chunked.ChunkBusy as exc:
                return _conflict(str(exc), "chunk_busy", upload.offset)
            except chunked.UploadFinished as exc:
                return _conflict(str(exc), "upload_finished", upload.offset)
        return Response(UploadSessionSerializer(upload).data)


def _conflict(detail: str, code: str, offset: int) -> Response:
    return Response(
        {"detail": detail, "code": code, "offset": offset}, status=status.HTTP_409_CONFLICT
    )


class TransferViewSet(
    FtpErrorsMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Background transfers run by the workers (ftpcore/transfers.py): create (201, enqueued
    after commit), read, cancel, retry, pause, resume, and fetch a finished download."""

    serializer_class = TransferSerializer
    lookup_value_converter = "int"
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self):
        return transfers.transfer_list(user=self.request.user)

    @extend_schema(
        description="One ``file`` -> the transfer; several ``file`` parts (an upload into the "
        "folder ``path``) -> the list of transfers, queued in one go."
    )
    def create(self, request, *args, **kwargs):
        files = request.FILES.getlist("file")
        if len(files) < 2:
            return super().create(request, *args, **kwargs)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        rows = transfers.transfer_create_uploads(
            owner=request.user, site=data["site"], folder=data["path"] or "/", uploads=files
        )
        body = self.get_serializer(rows, many=True).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = transfers.transfer_create(
            owner=self.request.user,
            kind=data["kind"],
            site=data["site"],
            path=data.get("path", ""),
            target_site=data.get("target_site"),
            target_path=data.get("target_path", ""),
            upload=data.get("file"),
        )

    def _act(self, service) -> Response:
        transfer = service(transfer=self.get_object())
        return Response(TransferSerializer(transfer, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=TransferSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(transfers.transfer_cancel)

    @extend_schema(request=None, responses=TransferSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._act(transfers.transfer_retry)

    @extend_schema(request=None, responses=TransferSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(transfers.transfer_pause)

    @extend_schema(request=None, responses=TransferSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(transfers.transfer_resume)

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None):
        transfer = self.get_object()
        path = transfers.transfer_file_path(transfer=transfer)
        if path is None:
            raise NotFound("Only a finished download has a file to fetch.")
        response = FileResponse(
            open(path, "rb"),  # noqa: SIM115 — FileResponse closes it
            content_type="application/octet-stream",
        )
        response["Content-Disposition"] = attachment_disposition(transfer.name or path.name)
        response["X-Content-Type-Options"] = "nosniff"
        return response
