"""The file manager pages (site list, form, delete, test connection, the browser shell) —
server side, with the test client, against a real pyftpdlib server where a server is needed."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from ftpcore import services
from ftpcore.models import FtpSite

pytestmark = pytest.mark.django_db


def seed_site(owner, server=None, **fields) -> FtpSite:
    values = {
        "name": "Home",
        "host": server.host if server else "127.0.0.1",
        "port": server.port if server else 9,
        "username": "alice",
        "password": "secret-alice",
    }
    return services.site_create(owner=owner, **{**values, **fields})


@pytest.fixture
def web(client, alice):
    client.force_login(alice)
    return client


def test_pages_need_a_login(client):
    for name in ("files", "files-sites", "files-sites-add"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_no_sites_shows_the_add_card(web):
    response = web.get(reverse("files"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "No FTP sites yet" in body
    assert reverse("files-sites-add") in body
    assert "files.js" not in body
    assert 'aria-current="page"' in body and ">Files<" in body


def test_browser_page_carries_the_sites_as_json(web, alice, bob):
    first = seed_site(alice, name="Alpha")
    second = seed_site(alice, name="Beta <b>", initial_path="/pub")
    seed_site(bob, name="Bobs")
    response = web.get(reverse("files"), {"site": second.pk, "path": "/pub/x"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Beta <b>" not in body  # escaped everywhere
    data = json.loads(
        body.split('id="files-data" type="application/json">')[1].split("</script>")[0]
    )
    assert data["site"] == second.pk
    assert data["path"] == "/pub/x"
    assert [s["id"] for s in data["sites"]] == [first.pk, second.pk]
    assert data["api"] == "/api/v1/ftp/sites/"
    assert data["transfers"] == "/api/v1/ftp/transfers/"
    assert "Bobs" not in body


def test_another_users_site_is_404_everywhere(web, bob):
    site = seed_site(bob)
    assert web.get(reverse("files"), {"site": site.pk}).status_code == 404
    assert web.get(reverse("files-sites-edit", args=[site.pk])).status_code == 404
    assert web.get(reverse("files-sites-delete", args=[site.pk])).status_code == 404
    assert web.post(reverse("files-sites-delete", args=[site.pk])).status_code == 404
    assert web.post(reverse("files-sites-test", args=[site.pk])).status_code == 404
    assert (
        web.post(reverse("files-sites-trust", args=[site.pk]), {"fingerprint": "AA"}).status_code
        == 404
    )
    assert FtpSite.objects.filter(pk=site.pk).exists()


def test_add_site_with_default_port_follows_security(web, alice):
    response = web.post(
        reverse("files-sites-add"),
        {"host": "ftp.example.org", "security": "implicit_tls", "username": "me", "password": "pw",
         "passive": "on", "initial_path": "", "encoding": "", "name": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.context["form"].errors
    site = FtpSite.objects.get(owner=alice)
    assert response["Location"] == f"{reverse('files')}?site={site.pk}"
    assert (site.port, site.name, site.initial_path, site.encoding) == (
        990,
        "ftp.example.org",
        "/",
        "utf-8",
    )
    assert site.password == "pw" and site.passive is True

    web.post(reverse("files-sites-add"), {"host": "h2", "security": "explicit_tls", "name": "Two"})
    two = FtpSite.objects.get(name="Two")
    assert (two.port, two.username, two.passive) == (21, "anonymous", False)


def test_add_site_form_errors(web, alice):
    response = web.post(
        reverse("files-sites-add"),
        {"host": "ftp example", "security": "none", "port": "70000", "initial_path": "pub",
         "encoding": "utf-16", "tls_fingerprint": "nope"},
    )  # fmt: skip
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) == {"host", "port", "initial_path", "encoding", "tls_fingerprint"}
    assert "Please correct the fields marked below." in response.content.decode()
    assert not FtpSite.objects.exists()


def test_edit_keeps_a_blank_password(web, alice):
    site = seed_site(alice)
    page = web.get(reverse("files-sites-edit", args=[site.pk]))
    assert "secret-alice" not in page.content.decode()
    response = web.post(
        reverse("files-sites-edit", args=[site.pk]),
        {"name": "Renamed", "host": "127.0.0.1", "security": "none", "port": "2121",
         "username": "alice", "password": "", "initial_path": "/", "encoding": "utf-8"},
    )  # fmt: skip
    assert response.status_code == 302
    site.refresh_from_db()
    assert (site.name, site.port, site.password) == ("Renamed", 2121, "secret-alice")
    web.post(
        reverse("files-sites-edit", args=[site.pk]),
        {"name": "Renamed", "host": "127.0.0.1", "security": "none", "port": "2121",
         "username": "alice", "password": "new-pw", "initial_path": "/", "encoding": "utf-8"},
    )  # fmt: skip
    site.refresh_from_db()
    assert site.password == "new-pw"


def test_delete_asks_then_removes(web, alice):
    site = seed_site(alice, name="Doomed")
    page = web.get(reverse("files-sites-delete", args=[site.pk]))
    assert "Remove Doomed?" in page.content.decode()
    assert FtpSite.objects.filter(pk=site.pk).exists()
    response = web.post(reverse("files-sites-delete", args=[site.pk]))
    assert response.status_code == 302
    assert not FtpSite.objects.filter(pk=site.pk).exists()


def test_site_list_and_settings_card(web, alice):
    seed_site(alice, name="Alpha")
    body = web.get(reverse("files-sites")).content.decode()
    assert "Alpha" in body and "Test connection" in body
    settings = web.get(reverse("settings")).content.decode()
    assert "FTP sites" in settings and reverse("files-sites-add") in settings


def test_test_connection_shows_welcome_and_features(web, alice, ftp):
    site = seed_site(alice, ftp)
    response = web.post(reverse("files-sites-test", args=[site.pk]), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "Connection works." in body
    assert "MLST" in body  # a feature pyftpdlib announces
    assert "<html" not in body  # the fragment only


def test_test_connection_530_in_words(web, alice, ftp):
    site = seed_site(alice, ftp, password="wrong")
    response = web.post(reverse("files-sites-test", args=[site.pk]))  # without htmx: whole list
    body = response.content.decode()
    assert response.status_code == 200
    assert "Could not connect." in body
    assert "530 " in body
    assert "Login refused: wrong user name or password" in body
    assert "<html" in body.lower()


def test_untrusted_certificate_then_trust(web, alice, ftps):
    site = seed_site(alice, ftps, security="explicit_tls")
    body = web.post(
        reverse("files-sites-test", args=[site.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert ftps.fingerprint in body
    assert "Trust this certificate" in body
    response = web.post(
        reverse("files-sites-trust", args=[site.pk]),
        {"fingerprint": ftps.fingerprint},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert "Certificate saved as trusted" in body
    assert "Connection works." in body
    site.refresh_from_db()
    assert site.tls_fingerprint == ftps.fingerprint


def test_trust_rejects_a_bad_fingerprint(web, alice):
    site = seed_site(alice)
    body = web.post(
        reverse("files-sites-trust", args=[site.pk]), {"fingerprint": "zz"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "SHA-256 fingerprint" in body
    site.refresh_from_db()
    assert site.tls_fingerprint == ""
