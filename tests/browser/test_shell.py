"""The shell as a person uses it: log in, look around, run the demo job, watch it live."""

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _log_in(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_wrong_password_then_right_one(page, screenshot, alice):
    _log_in(page, "alice", "not-her-password")
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username")
    screenshot("login-error")
    page.get_by_label("Password").fill("secret-alice")
    page.get_by_label("Password").press("Enter")
    expect(page).to_have_url(f"{page.context._impl_obj._options['baseURL']}/mail/")
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Mail")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    screenshot("mail-empty")


def test_connectivity_check_shows_live_progress(page, screenshot, alice, celery_worker):
    _log_in(page, "alice", "secret-alice")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Settings").click()
    expect(page.locator(".connection")).to_have_attribute("data-state", "open")
    page.evaluate(
        """() => {
            window.heard = [];
            document.addEventListener("satchel:job.progress",
                (e) => window.heard.push([e.detail.job.state, e.detail.job.done]));
        }"""
    )
    page.get_by_role("button", name="Run check").click()
    row = page.locator("#jobs tbody tr").first
    expect(row.locator("[data-field=state]")).to_have_text("done", timeout=30_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator("[data-field=checks] li")).to_have_count(5)
    expect(page.locator(".toast")).to_contain_text("Connectivity check finished.")
    heard = page.evaluate("window.heard")
    done_values = [done for state, done in heard if state == "running"]
    assert done_values == sorted(done_values) and done_values[-1] == 5
    assert heard[-1] == ["done", 5]
    screenshot("settings-check-done")
    page.set_viewport_size({"width": 390, "height": 800})
    screenshot("settings-phone")


def test_admin_can_use_the_admin_site(page, screenshot, django_user_model):
    django_user_model.objects.create_superuser("carol", "carol@example.org", "pw-carol-1")
    _log_in(page, "carol", "pw-carol-1")
    page.get_by_role("link", name="Admin").click()
    expect(page.locator("#site-name")).to_be_visible()
    page.goto("/admin/jobs/job/")
    page.get_by_role("button", name="Run connectivity check").click()
    expect(page.locator(".messagelist")).to_contain_text("queued")
    screenshot("admin-job")


def test_api_docs_render_without_any_outside_host(page, screenshot, alice):
    outside = []
    page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
    _log_in(page, "alice", "secret-alice")
    page.goto("/api/v1/docs/")
    expect(page.get_by_role("heading", name="Satchel API")).to_be_visible()
    expect(page.get_by_text("/api/v1/jobs/{id}/").first).to_be_visible()
    assert outside == []
    screenshot("api-docs")


def test_pages_run_under_the_strict_content_security_policy(
    browser, live_server_url, screenshot, alice, celery_worker
):
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    refused = []
    page.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.on("pageerror", lambda error: refused.append(str(error)))
    _log_in(page, "alice", "secret-alice")
    for path in ["/mail/", "/mail/accounts/add/", "/settings/", "/files/"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto("/settings/")
    page.get_by_role("button", name="Run check").click()
    expect(page.locator("#jobs tbody tr").first.locator("[data-field=state]")).to_have_text(
        "done", timeout=30_000
    )
    context.close()
    assert refused == []
