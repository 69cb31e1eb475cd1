from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ftpcore.models import FtpSite, Transfer, UploadSession
from ftpcore.validators import clean_encoding, clean_initial_path
from webapp.validators import clean_fingerprint, clean_host, clean_single_line


class FtpSiteSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )

    class Meta:
        model = FtpSite
        fields = [
            "id", "name", "host", "port", "security", "username", "password", "passive",
            "initial_path", "encoding", "tls_fingerprint", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]
        extra_kwargs = {"port": {"min_value": 1, "max_value": 65535}}

    def validate_host(self, value: str) -> str:
        return clean_host(value, example="ftp.example.org")

    def validate_username(self, value: str) -> str:
        return clean_single_line(value)

    def validate_password(self, value: str) -> str:
        return clean_single_line(value)

    def validate_initial_path(self, value: str) -> str:
        return clean_initial_path(value)

    def validate_encoding(self, value: str) -> str:
        return clean_encoding(value)

    def validate_tls_fingerprint(self, value: str) -> str:
        return clean_fingerprint(value)


class DisplayNameField(serializers.CharField):
    """Names the site's encoding could not decode carry surrogate escapes (the engine's
    round-trip form), which JSON cannot encode: shown with U+FFFD instead. Such names are
    not addressable through the API yet."""

    def to_representation(self, value) -> str:
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class EntrySerializer(serializers.Serializer):
    name = DisplayNameField()
    type = serializers.ChoiceField(choices=["file", "dir", "link"])
    size = serializers.IntegerField(allow_null=True)
    modified = serializers.DateTimeField(allow_null=True)
    permissions = serializers.CharField(allow_null=True)
    target = DisplayNameField(allow_null=True)


class ListingSerializer(serializers.Serializer):
    path = serializers.CharField()
    entries = EntrySerializer(many=True)


class SiteCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    welcome = serializers.CharField()
    features = serializers.ListField(child=serializers.CharField())


def _path_field(**kwargs) -> serializers.CharField:
    return serializers.CharField(max_length=4096, trim_whitespace=False, **kwargs)


class PathSerializer(serializers.Serializer):
    path = _path_field()


class DeleteSerializer(PathSerializer):
    recursive = serializers.BooleanField(default=False)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$", "example": "755"},
            {"type": "integer", "minimum": 0, "maximum": 0o7777},
        ]
    }
)
class ModeField(serializers.Field):
    """An octal string ("755", "0o644") or the numeric mode (493 == 0o755), as os.chmod."""

    default_error_messages = {
        "invalid": 'Give the mode as an octal string such as "755", or its number.',
    }

    def to_internal_value(self, data) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            mode = data
        elif isinstance(data, str):
            text = data.strip().lower().removeprefix("0o")
            if not text or any(c not in "01234567" for c in text):
                self.fail("invalid")
            mode = int(text, 8)
        else:
            self.fail("invalid")
        if not 0 <= mode <= 0o7777:
            self.fail("invalid")
        return mode

    def to_representation(self, value: int) -> str:
        return f"{value:03o}"


class ChmodSerializer(PathSerializer):
    mode = ModeField()


# "from" is a Python keyword, so this one is built rather than declared.
RenameSerializer = type(
    "RenameSerializer",
    (serializers.Serializer,),
    {"from": _path_field(), "to": _path_field(), "__module__": __name__},
)


class _OwnSiteField(serializers.PrimaryKeyRelatedField):
    """A site id among the requesting user's own sites (another user's: "does not exist")."""

    def get_queryset(self):
        return FtpSite.objects.filter(owner=self.context["request"].user)


class TransferSerializer(serializers.ModelSerializer):
    """A background transfer. Create with kind + site + path (+ target_site/target_path for
    copies; a multipart ``file`` for uploads, whose path is the remote file, or a directory
    when it ends in "/")."""

    site = _OwnSiteField()
    target_site = _OwnSiteField(required=False, allow_null=True)
    path = _path_field(required=False, allow_blank=True, default="")
    target_path = _path_field(required=False, allow_blank=True, default="")
    file = serializers.FileField(write_only=True, required=False)

    class Meta:
        model = Transfer
        fields = [
            "id", "kind", "state", "site", "path", "target_site", "target_path", "name",
            "bytes_done", "bytes_total", "attempts", "last_error", "sha256",
            "created_at", "started_at", "finished_at", "file",
        ]  # fmt: skip
        read_only_fields = [
            "state", "name", "bytes_done", "bytes_total", "attempts", "last_error", "sha256",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip

    def validate_path(self, value: str) -> str:
        return clean_single_line(value)

    def validate_target_path(self, value: str) -> str:
        return clean_single_line(value)

    def validate(self, attrs: dict) -> dict:
        kind = attrs.get("kind")
        if kind == Transfer.Kind.UPLOAD and not attrs.get("file"):
            raise serializers.ValidationError({"file": ["An upload needs a file."]})
        if kind != Transfer.Kind.UPLOAD and attrs.get("file"):
            raise serializers.ValidationError({"file": ["Only uploads take a file."]})
        if kind in (Transfer.Kind.DOWNLOAD, Transfer.Kind.COPY) and not attrs.get("path"):
            raise serializers.ValidationError({"path": ["Give the path of the file."]})
        if kind == Transfer.Kind.COPY and not attrs.get("target_path"):
            raise serializers.ValidationError(
                {"target_path": ["Give where to copy to (a path ending in / keeps the name)."]}
            )
        if kind != Transfer.Kind.COPY and (attrs.get("target_site") or attrs.get("target_path")):
            raise serializers.ValidationError({"target_path": ["Only copies have a target."]})
        return attrs


class UploadSessionSerializer(serializers.ModelSerializer):
    """A chunked upload: send its bytes with PUT .../uploads/{id}/?offset=N (raw body)."""

    class Meta:
        model = UploadSession
        fields = ["id", "path", "size", "offset", "state", "created_at", "updated_at"]
        read_only_fields = fields


class UploadStartSerializer(serializers.Serializer):
    path = _path_field(required=False, allow_blank=True, default="")  # the folder
    name = serializers.CharField(max_length=255, trim_whitespace=False)
    size = serializers.IntegerField(min_value=0)

    def validate_path(self, value: str) -> str:
        return clean_single_line(value)

    def validate_name(self, value: str) -> str:
        return clean_single_line(value)
