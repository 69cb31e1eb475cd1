"""The compose dialog's rich-text editor in Chromium: it runs under the real CSP, its toolbar
and shortcuts format text, "Plain text" converts both ways, and what it produces arrives at
the real aiosmtpd peer as sanitized HTML with a readable text alternative."""

from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import expect

from mailcore import people
from tests.browser.test_compose_ui import account  # noqa: F401 — a fixture
from tests.browser.test_mail_ui import _log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _open(page):
    page.goto("/mail/")
    page.locator("#compose-button").click()
    expect(page.locator("#compose-rich")).to_be_visible()


def _tool(page, name: str):
    return page.locator(f'#compose-toolbar [aria-label="{name}"]')


def _sent(smtp):
    [captured] = smtp.wait_for_messages(1, timeout=40)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return parsed.get_body(("html",)).get_content(), text


def test_the_editor_runs_under_the_strict_csp(browser, live_server_url, alice, account):  # noqa: F811
    context = browser.new_context(base_url=live_server_url)  # the pages' own CSP, not bypassed
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.on("pageerror", lambda error: refused.append(str(error)))
    _log_in(page)
    _open(page)
    page.locator("#compose-rich").click()
    page.keyboard.type("plain ")
    page.keyboard.press("Control+b")
    page.keyboard.type("bold")
    page.locator("#compose-rich").press("Control+Shift+8")
    page.keyboard.type(" item")
    html = page.locator("#compose-rich").inner_html()
    context.close()
    assert re.search(r"<ul><li>plain(&nbsp;| )<b>\u200b?bold item</b></li></ul>", html), html
    assert refused == []


def test_toolbar_shortcuts_and_links_make_html_that_arrives_sanitized(
    page,
    screenshot,
    alice,
    account,  # noqa: F811
    smtp,
    celery_worker,
):
    identity = people.identity_create(
        account=account, name="Alice", email_address=account.email_address, signature="Alice L."
    )
    _log_in(page)
    _open(page)
    page.locator("#compose-from").select_option(f"i:{identity.pk}:{account.pk}")
    page.locator("#compose-to-input").fill("bob@example.org,")
    page.locator("#compose-subject").fill("Formatted")
    rich = page.locator("#compose-rich")
    page.locator("#compose-subject").press("Tab")  # the body comes next, the toolbar after it
    expect(rich).to_be_focused()
    page.keyboard.type("Hello ")
    page.keyboard.press("Control+b")
    page.keyboard.type("bold")
    page.keyboard.press("Control+b")
    expect(_tool(page, "Bold")).to_have_attribute("aria-pressed", "false")
    page.keyboard.type(" and ")
    _tool(page, "Italic").click()
    page.keyboard.type("italic")
    expect(_tool(page, "Italic")).to_have_attribute("aria-pressed", "true")
    _tool(page, "Italic").click()
    page.keyboard.type(" and ")
    page.keyboard.press("Control+u")
    page.keyboard.type("underlined")
    page.keyboard.press("Control+u")
    page.keyboard.type(".")
    page.keyboard.press("Enter")
    _tool(page, "Bulleted list").click()
    expect(_tool(page, "Bulleted list")).to_have_attribute("aria-pressed", "true")
    page.keyboard.type("first")
    page.keyboard.press("Enter")
    page.keyboard.type("second")
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # an empty item ends the list
    _tool(page, "Quote").click()
    page.keyboard.type("quoted words")
    expect(_tool(page, "Quote")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Enter")
    _tool(page, "Quote").click()  # the new line leaves the quote
    page.keyboard.type("Read the docs")
    page.keyboard.press("Shift+Home")
    page.keyboard.press("Control+k")
    expect(page.locator("#compose-linkbar")).to_be_visible()
    page.locator("#compose-link-url").fill("docs.example.org/start")
    page.locator("#compose-link-url").press("Enter")
    expect(page.locator("#compose-linkbar")).to_be_hidden()
    expect(rich.locator('a[href="https://docs.example.org/start"]')).to_have_text("Read the docs")
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.keyboard.press("Control+b")
    page.keyboard.type("unformat me")
    page.keyboard.press("Shift+Home")
    _tool(page, "Remove formatting").click()
    expect(rich.locator("b", has_text="unformat me")).to_have_count(0)
    expect(rich.locator("b")).to_have_text("bold")
    expect(rich.locator("i")).to_have_text("italic")
    expect(rich.locator("u")).to_have_text("underlined")
    expect(rich.locator("ul > li")).to_have_count(2)
    expect(rich.locator("blockquote")).to_have_text("quoted words")
    screenshot("compose-rich")
    page.keyboard.press("Control+Enter")

    html, text = _sent(smtp)
    assert "<b>bold</b>" in html and "<i>italic</i>" in html and "<u>underlined</u>" in html
    assert "<li>first</li>" in html.replace("<br>", "")
    assert '<blockquote type="cite"' in html
    assert 'href="https://docs.example.org/start"' in html
    assert "Alice L." in html  # the identity's signature, in both parts
    assert text.startswith("Hello bold and italic and underlined.\n- first\n- second\n")
    assert "> quoted words\n" in text
    assert "Read the docs <https://docs.example.org/start>" in text
    assert text.rstrip().endswith("-- \nAlice L.")


def test_plain_text_switch_converts_both_ways_and_sends_text_only(
    page,
    screenshot,
    alice,
    account,  # noqa: F811
    smtp,
    celery_worker,
):
    _log_in(page)
    _open(page)
    page.locator("#compose-to-input").fill("bob@example.org,")
    page.locator("#compose-subject").fill("Plain")
    page.locator("#compose-rich").click()
    page.keyboard.type("Line one")
    page.keyboard.press("Enter")
    page.keyboard.press("Control+b")
    page.keyboard.type("Line two")
    page.locator("#compose-rich").press("Control+]")
    plain = page.locator("#compose-plain")
    plain.click()
    expect(plain).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#compose-rich")).to_be_hidden()
    expect(_tool(page, "Bold")).to_be_hidden()
    expect(page.locator("#compose-text")).to_have_value("Line one\n> Line two")
    screenshot("compose-plain")
    page.locator("#compose-text").press("End")
    page.keyboard.type("\n\nThird <b>not bold</b>")
    plain.click()  # back to rich: paragraphs, the quote as a blockquote, markup as text
    rich = page.locator("#compose-rich")
    expect(rich.locator("blockquote")).to_have_text("Line two")
    expect(rich.locator("b")).to_have_count(0)
    expect(rich).to_contain_text("Third <b>not bold</b>")
    plain.click()
    expect(page.locator("#compose-text")).to_have_value(
        "Line one\n> Line two\n\nThird <b>not bold</b>"
    )
    page.locator("#compose-text").press("Control+Enter")
    [captured] = smtp.wait_for_messages(1, timeout=40)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    assert parsed.get_content_type() == "text/plain"
    assert "Third <b>not bold</b>" in parsed.get_content()
    # The choice is remembered: the next message starts in plain text.
    page.goto("/mail/")
    page.locator("#compose-button").click()
    expect(page.locator("#compose-text")).to_be_visible()
    expect(page.locator("#compose-plain")).to_have_attribute("aria-pressed", "true")


def test_the_toolbar_fits_a_phone(page, screenshot, alice, account):  # noqa: F811
    page.set_viewport_size({"width": 390, "height": 844})
    _log_in(page)
    _open(page)
    page.locator("#compose-rich").click()
    page.keyboard.type("Short note from the phone.")
    toolbar = page.locator("#compose-toolbar").bounding_box()
    plain = page.locator("#compose-plain").bounding_box()
    assert toolbar["x"] >= 0 and toolbar["x"] + toolbar["width"] <= 390
    assert plain["x"] + plain["width"] <= 390
    bold = page.locator('#compose-toolbar [aria-label="Bold"]').bounding_box()
    assert abs(plain["y"] - bold["y"]) < 6  # one row
    screenshot("compose-phone")
