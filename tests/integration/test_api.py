import json
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def test_token_for_the_right_password(alice):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "secret-alice"}, format="json"
    )
    assert response.status_code == 200
    assert len(response.json()["token"]) == 40


def test_wrong_password_is_400_in_the_error_format(alice):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Unable to log in with provided credentials."
    assert body["code"] == "authorization"


def test_missing_fields_name_the_field(alice):
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "password: This field is required."
    assert response.json()["errors"] == {"password": ["This field is required."]}


def test_anonymous_requests_get_401():
    response = APIClient().get("/api/v1/jobs/")
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }


def test_token_authenticates(alice, api_as):
    response = api_as(alice).get("/api/v1/jobs/")
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert response.json()["next"] is None


def test_unknown_object_is_404_in_the_error_format(alice, api_as):
    response = api_as(alice).get("/api/v1/jobs/999999/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Job matches the given query.", "code": "not_found"}


def test_schema_is_served_as_openapi_3(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/jobs/{id}/" in schema["paths"]
    assert "/api/v1/auth/token/" in schema["paths"]


def test_schema_validates_against_the_openapi_specification():
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("openapi: 3.0")


def test_docs_page_is_served(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_too_many_files_in_one_upload_is_a_400_not_a_500(alice, api_as, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    from django.core.files.uploadedfile import SimpleUploadedFile

    files = [SimpleUploadedFile(f"f{n}.txt", b"x") for n in range(3)]
    response = api_as(alice).post("/api/v1/uploads/", {"file": files}, format="multipart")
    assert response.status_code == 400
    assert "too many" in response.json()["detail"].lower()
