import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_pages_need_login(client):
    for path in ["/", "/mail/", "/files/", "/settings/"]:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_wrong_login_shows_an_error_not_a_trace(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Please enter a correct username and password" in page
    assert 'role="alert"' in page
    assert "Traceback" not in page


def test_login_lands_on_the_shell(client, alice):
    response = client.post(
        "/login/", {"username": "alice", "password": "secret-alice"}, follow=True
    )
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == "/mail/"
    for label in ["Mail", "Files", "Settings"]:
        assert f">{label}</a>" in page
    assert ">Admin</a>" not in page


def test_staff_see_the_admin_link(client, django_user_model):
    admin = django_user_model.objects.create_superuser("carol", "carol@example.org", "pw-carol-1")
    client.force_login(admin)
    assert ">Admin</a>" in client.get("/settings/").content.decode()
    assert client.get("/admin/jobs/job/").status_code == 200


def test_forms_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/settings/token/").status_code == 403
    assert client.post("/settings/check/").status_code == 403


def test_token_replacement(client, alice):
    client.force_login(alice)
    client.post("/settings/token/")
    first = alice.auth_token.key
    response = client.post("/settings/token/", follow=True)
    alice.refresh_from_db()
    assert alice.auth_token.key != first
    assert alice.auth_token.key in response.content.decode()


def test_logout_is_a_post(client, alice):
    client.force_login(alice)
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/settings/").status_code == 302


def test_healthz(client):
    assert client.get("/healthz").json() == {"ok": True}


def test_pages_carry_a_strict_content_security_policy(client, alice):
    client.force_login(alice)
    policy = client.get("/settings/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy
    assert "Content-Security-Policy" not in client.get("/api/v1/docs/")
