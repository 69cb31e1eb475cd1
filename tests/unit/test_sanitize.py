"""Hostile HTML made safe (mailcore.protocols.sanitize), checked through a real HTML parse.

Each XSS case is sanitized with nh3 (no mocks) and the result is parsed back: no script-ish
element, no event handler, no javascript:/vbscript:/data: link, no CSS url() may survive.
"""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest

from mailcore.protocols.sanitize import SafeHtml, sanitize_html, text_to_html

FORBIDDEN_TAGS = {
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "form",
    "input", "button", "textarea", "select", "meta", "base", "link", "svg", "math", "template",
    "noscript", "title", "video", "audio", "source", "mglyph", "xmp", "plaintext", "html", "body",
}  # fmt: skip
URL_ATTRS = {"href", "src", "background", "data-remote-src", "action", "formaction", "srcset"}


class Inspector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def inspect(html: str) -> Inspector:
    inspector = Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector


def squeeze(value: str) -> str:
    """A URL as a browser reads its scheme: no controls or whitespace, lower case."""
    return re.sub(r"[\x00-\x20]", "", value).lower()


def assert_safe(html: str) -> Inspector:
    parsed = inspect(html)
    for tag, attrs in parsed.elements:
        assert tag not in FORBIDDEN_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (name, html)
            assert name not in {"srcset", "action", "formaction", "id", "class"}, (name, html)
            if name in URL_ATTRS:
                url = squeeze(value)
                assert not url.startswith(("javascript:", "vbscript:")), (name, value)
                if name == "href":
                    assert url.startswith(("http://", "https://", "mailto:")), (name, value)
                if url.startswith("data:"):
                    assert tag == "img" and name == "src", (tag, name, value)
                    assert re.match(r"data:image/(png|jpeg|gif|webp)[;,]", url), value
            if name == "style":
                css = squeeze(value)
                for banned in ("url(", "expression", "javascript", "position", "\\", "@import"):
                    assert banned not in css, (value, html)
        if tag == "a" and "href" in attrs:
            assert attrs.get("target") == "_blank"
            assert set(attrs.get("rel", "").split()) >= {"noopener", "noreferrer", "nofollow"}
    return parsed


XSS = [
    '<img src="x" onerror="alert(1)">',
    "<img src=x onerror=alert(1)//>",
    '<img src="https://example.org/a.png" onerror="alert(1)" onload="alert(2)">',
    '<a href="jav&#x09;ascript:alert(1)">tab</a>',
    '<a href="jav&#x0A;ascript:alert(1)">newline</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">dec</a>',
    '<a href="javascript&colon;alert(1)">colon entity</a>',
    '<a href="  JaVaScRiPt:alert(1)">mixed case</a>',
    '<a href="\x01javascript:alert(1)">control</a>',
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data</a>',
    '<a href="//evil.example/x">protocol-relative</a>',
    '<a href="/logout">relative</a>',
    "<svg><script>alert(1)</script></svg>",
    '<svg onload="alert(1)"><circle r="5"/></svg>',
    "<svg><style><img src=x onerror=alert(1)></style></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "<style>@import url(https://evil.example/x.css); body{background:url(https://t.example/p)}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table>"
    "</mtext></math>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    '<svg></p><style><a id="</style><img src=1 onerror=alert(1)>">',
    '<table><td><a href="https://ok.example/"><table><td>nested<script>alert(1)</script>',
    '<p><b><i><u><a href="https://ok.example/">deep</a></u></i></b></p>' * 3,
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<iframe src="https://evil.example/" srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="https://evil.example/x.swf"></object><embed src="https://evil.example/x">',
    '<form action="https://evil.example/"><input name="password"><button>Go</button></form>',
    '<div style="background:url(javascript:alert(1))">bg</div>',
    '<div style="background-image: url(https://t.example/p.gif)">bg</div>',
    '<div style="width: expression(alert(1))">ie</div>',
    '<div style="position:fixed;top:0;left:0">overlay</div>',
    '<p style="color: \\75 rl(https://t.example/x)">escape</p>',
    '<p style="list-style: url(https://t.example/x) disc">list</p>',
    '<p style="behavior: url(x.htc); -moz-binding: url(x.xml#y)">legacy</p>',
    '<img src="data:image/svg+xml;base64,PHN2Zy8+">',
    '<img src="data:text/html,<script>alert(1)</script>">',
    '<img srcset="https://t.example/1.png 1x, https://t.example/2.png 2x">',
    '<a href="https://ok.example/" target="_self" rel="opener">rel</a>',
    '<a href="https://ok.example/" ping="https://t.example/ping">ping</a>',
    '<div id="x" class="y" data-foo="z" onclick="alert(1)">attrs</div>',
    "<!--[if mso]><script>alert(1)</script><![endif]--><p>conditional</p>",
    '<video poster="https://t.example/p.png"><source src="https://t.example/v.mp4"></video>',
    '<input type="image" src="https://t.example/p.png">',
    '<body onload="alert(1)" background="https://t.example/bg.png">body</body>',
    "<plaintext><script>alert(1)</script>",
    "<xmp><script>alert(1)</script></xmp>",
    "<template><script>alert(1)</script></template>",
    '<img data-remote-src="javascript:alert(1)">',
    '<p title="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">quoted attr</p>',
    '<a href="https://ok.example/"><img src="https://t.example/x.png"></a>',
]


@pytest.mark.parametrize("html", XSS)
def test_xss_is_neutralised(html):
    result = sanitize_html(html)
    assert isinstance(result, SafeHtml)
    assert_safe(result.html)
    # Also with remote images on, and with every cid mapped.
    assert_safe(sanitize_html(html, allow_remote_images=True).html)
    assert_safe(sanitize_html(html, cid_url=lambda cid: "https://app.example/cid/" + cid).html)


@pytest.mark.parametrize("html", XSS)
def test_sanitizing_twice_changes_nothing_more(html):
    """mXSS guard: if re-parsing our output built a different tree, a second pass would
    differ (images held back are not re-counted: their src is already gone)."""
    once = sanitize_html(html, allow_remote_images=True).html
    assert sanitize_html(once, allow_remote_images=True).html == once


def test_script_style_and_title_contents_are_gone_text_kept():
    result = sanitize_html(
        "<title>Title text</title><style>p{color:red}</style><p>Visible</p>"
        "<script>var secret = 1;</script><form><label>Label</label></form>"
    )
    assert result.html == "<p>Visible</p>Label"


def test_img_with_relative_src_and_onerror_is_dropped():
    assert sanitize_html('<p>a<img src="x" onerror="alert(1)">b</p>').html == "<p>ab</p>"


def test_javascript_links_lose_their_href_but_keep_their_text():
    result = sanitize_html('<a href="jav&#x09;ascript:alert(1)">click</a>')
    assert result.html == '<a target="_blank" rel="noopener noreferrer nofollow">click</a>'


def test_links_open_in_a_new_tab_without_opener_or_referrer():
    result = sanitize_html(
        '<a href="https://example.org/?a=1&amp;b=2" target="_top" rel="opener">x</a>'
        '<a href="mailto:bob@example.org?subject=hi">mail</a>'
    )
    assert result.html == (
        '<a href="https://example.org/?a=1&amp;b=2" target="_blank" '
        'rel="noopener noreferrer nofollow">x</a>'
        '<a href="mailto:bob@example.org?subject=hi" target="_blank" '
        'rel="noopener noreferrer nofollow">mail</a>'
    )


def test_remote_images_are_held_back_and_counted():
    html = (
        '<p><img src="https://t.example/a.png" alt="A" width="10">'
        '<img src="HTTP://t.example/b.gif"></p>'
        '<table background="https://t.example/bg.png"><tr><td background="http://t.example/c.png">'
        "cell</td></tr></table>"
        '<img srcset="https://t.example/s.png 2x" src="data:image/png;base64,iVBORw0KGgo=">'
    )
    blocked = sanitize_html(html)
    assert blocked.remote_images_blocked == 4
    assert '<img data-remote-src="https://t.example/a.png" alt="A" width="10">' in blocked.html
    assert '<img data-remote-src="HTTP://t.example/b.gif">' in blocked.html
    assert "background=" not in blocked.html and "srcset" not in blocked.html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in blocked.html
    assert ' src="http' not in blocked.html.lower()

    shown = sanitize_html(html, allow_remote_images=True)
    assert shown.remote_images_blocked == 0
    assert '<img src="https://t.example/a.png" alt="A" width="10">' in shown.html
    assert '<table background="https://t.example/bg.png">' in shown.html
    assert "data-remote-src" not in shown.html and "srcset" not in shown.html


def test_remote_image_urls_are_escaped_in_data_remote_src():
    result = sanitize_html('<img src="https://t.example/a.png?x=&quot;&gt;&lt;script&gt;&amp;y">')
    assert result.remote_images_blocked == 1
    (element,) = inspect(result.html).elements
    assert element == ("img", {"data-remote-src": 'https://t.example/a.png?x="><script>&y'})
    assert "&quot;&gt;&lt;script&gt;&amp;y" in result.html


def test_cid_images_are_mapped_or_dropped():
    seen = []

    def cid_url(cid: str) -> str | None:
        seen.append(cid)
        return "data:image/png;base64,AAAA" if cid == "logo@example.org" else None

    result = sanitize_html(
        '<img src="cid:logo@example.org" alt="logo"><img src="CID:logo%40example.org">'
        '<img src="cid:missing@example.org" alt="gone">'
        '<table><tr><td background="cid:logo@example.org">x</td></tr></table>',
        cid_url=cid_url,
    )
    assert result.html == (
        '<img src="data:image/png;base64,AAAA" alt="logo">'
        '<img src="data:image/png;base64,AAAA">'
        '<table><tbody><tr><td background="data:image/png;base64,AAAA">x</td></tr></tbody></table>'
    )
    assert seen.count("logo@example.org") == 3 and "missing@example.org" in seen
    assert result.remote_images_blocked == 0
    # Without a mapping there is nothing to show.
    assert sanitize_html('<img src="cid:logo@example.org">').html == ""


def test_cid_urls_that_point_at_our_own_server_are_not_remote():
    result = sanitize_html(
        '<img src="cid:a@b">', cid_url=lambda cid: "https://satchel.example/api/parts/2"
    )
    assert result.html == '<img src="https://satchel.example/api/parts/2">'
    assert result.remote_images_blocked == 0


def test_only_safe_css_survives():
    result = sanitize_html(
        "<p style=\"COLOR: Red; background-color:#fff; font-family: 'Segoe UI', Arial;"
        " margin: 0 auto; padding-left: 2px; border: 1px solid rgb(1, 2, 3);"
        " position: absolute; z-index: 99; background-image: url(x); width: calc(100% - 2px);"
        " line-height: 1.5; text-align: center; display: none; content: 'x'\">t</p>"
    )
    (element,) = inspect(result.html).elements
    kept = {d.split(":", 1)[0].strip() for d in element[1]["style"].split(";") if d.strip()}
    assert kept == {
        "color", "background-color", "font-family", "margin", "padding-left", "border",
        "width", "line-height", "text-align", "display",
    }  # fmt: skip


def test_formatting_markup_is_kept():
    html = (
        "<h1>T</h1><p><b>b</b><i>i</i><u>u</u><s>s</s><strike>k</strike><sub>1</sub>"
        "<sup>2</sup><small>s</small><big>b</big><code>c</code></p><center>c</center>"
        '<font color="red" face="Arial" size="2">f</font><ul><li>x</li></ul><ol start="3">'
        "<li>y</li></ol><blockquote>q</blockquote><pre>  p</pre><hr>"
        '<table border="1" cellpadding="2"><thead><tr><th colspan="2">h</th></tr></thead>'
        '<tbody><tr><td valign="top" bgcolor="#eee">d</td></tr></tbody></table>'
    )
    assert sanitize_html(html).html == html


def test_full_document_with_head_is_reduced_to_its_body():
    html = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>News</title>'
        "<style>.x{}</style></head><body><div>Hello</div></body></html>"
    )
    assert sanitize_html(html).html == "<div>Hello</div>"


def test_empty_and_nul():
    assert sanitize_html("") == SafeHtml("", 0)
    assert sanitize_html("a\x00b").html == "ab"


def test_random_tag_soup_is_always_safe():
    rng = random.Random(2047)
    pieces = [
        "<", ">", "</", "/>", '"', "'", "=", " ", "script", "img", "svg", "math", "style",
        "a", "href", "src", "onerror", "javascript:", "java\tscript:", "alert(1)", "<!--",
        "-->", "&#x09;", "&lt;", "url(", "style=", "mglyph", "table", "td", "noscript",
        "cid:x", "https://t.example/", "data:image/png;base64,AA", "background", "title",
    ]  # fmt: skip
    for _ in range(500):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        for allow in (False, True):
            assert_safe(sanitize_html(html, allow_remote_images=allow, cid_url=str).html)


# text_to_html -----------------------------------------------------------------------------------


def test_text_is_escaped_and_keeps_its_line_breaks():
    html = text_to_html("a < b & c > d\n  indented\r\nwindows line\n\n<script>alert(1)</script>")
    assert html == (
        '<div style="white-space:pre-wrap;word-wrap:break-word">a &lt; b &amp; c &gt; d\n'
        "  indented\nwindows line\n\n&lt;script&gt;alert(1)&lt;/script&gt;</div>"
    )


def link(href: str, label: str | None = None) -> str:
    return (
        f'<a href="{href}" target="_blank" rel="noopener noreferrer nofollow">'
        f"{label if label is not None else href}</a>"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://example.org/x.", f"see {link('https://example.org/x')}."),
        ("(http://example.org/a_(b))", f"({link('http://example.org/a_(b)')})"),
        ("www.example.org, ok", f"{link('http://www.example.org', 'www.example.org')}, ok"),
        ("mail bob@example.org!", f"mail {link('mailto:bob@example.org', 'bob@example.org')}!"),
        ("mailto:bob@example.org?subject=hi", link("mailto:bob@example.org?subject=hi")),
        (
            "https://e.org/?a=1&b=<2>",
            f"{link('https://e.org/?a=1&amp;b=', 'https://e.org/?a=1&amp;b=')}&lt;2&gt;",
        ),
        (
            'http://e.org/"onmouseover="alert(1)',
            f"{link('http://e.org/')}&quot;onmouseover=&quot;alert(1)",
        ),
        ("javascript:alert(1)", "javascript:alert(1)"),
        ("data:text/html,<b>x</b>", "data:text/html,&lt;b&gt;x&lt;/b&gt;"),
        ("ftp://example.org/file", "ftp://example.org/file"),
        ("notwww.example.org", "notwww.example.org"),
        ("www.", "www."),
        ("<https://example.org/>", f"&lt;{link('https://example.org/')}&gt;"),
    ],
)
def test_links_in_text(text, expected):
    prefix = '<div style="white-space:pre-wrap;word-wrap:break-word">'
    assert text_to_html(text) == prefix + expected + "</div>"


def test_quoted_lines_become_nested_blockquotes():
    html = text_to_html("Reply\n> quoted\n> > deeper\n>> still deeper\n> back\nend")
    style = "margin:0 0 0 0.8ex;border-left:2px solid #ccc;padding-left:1ex"
    quote = f'<blockquote type="cite" style="{style}">'
    assert html == (
        '<div style="white-space:pre-wrap;word-wrap:break-word">Reply'
        f"{quote}quoted{quote}deeper\nstill deeper</blockquote>back</blockquote>end</div>"
    )


def test_text_to_html_output_is_safe_and_survives_sanitizing():
    text = "Hi <b>\n> quote https://example.org/\nwww.example.org and a@b.example\n"
    html = text_to_html(text)
    assert_safe(html)
    assert sanitize_html(html).html == html


def test_text_to_html_strips_control_characters():
    assert "\x00" not in text_to_html("a\x00b\x1bc")
