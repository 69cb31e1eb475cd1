"""Making hostile mail HTML safe to show, and plain text readable as HTML.

`sanitize_html` is an allowlist over nh3 (ammonia): only formatting tags and attributes
survive, every URL is checked here (links: http, https, mailto; images: http(s), cid:, and
data: for a few raster image types), inline styles keep a short list of CSS properties and
never a url() or an escape, and remote images are held back until the reader asks for them.

How remote images are held back: nh3's attribute filter can change or drop an attribute but
cannot rename one, so after the first pass the serialized output (html5ever's canonical form:
every attribute double-quoted, `"` and `&` escaped, every `<` in text escaped) is rewritten
tag by tag: an `img` with a remote `src` keeps the address in `data-remote-src` instead, a
remote `background` attribute is dropped. A second nh3 pass then re-checks the result, so a
mistake in that rewrite can cost a picture but never safety.

No Django imports: this is used by the protocol engines and by the views alike.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

__all__ = ["SafeHtml", "sanitize_html", "text_to_html"]


@dataclass(frozen=True)
class SafeHtml:
    html: str
    remote_images_blocked: int


# Allowlists -----------------------------------------------------------------------------------

_TAGS = frozenset(
    {
        "a", "abbr", "b", "big", "blockquote", "br", "caption", "center", "cite", "code",
        "col", "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q",
        "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

# Dropped together with everything inside them (the rest of the unknown tags are unwrapped:
# their text stays, the tag goes). svg and math go whole: their foreign-content parsing rules
# are where mutation XSS lives.
_CLEAN_CONTENT_TAGS = frozenset(
    {
        "script", "style", "title", "template", "noscript", "iframe", "frame", "frameset",
        "object", "applet", "noembed", "noframes", "xmp", "svg", "math",
    }
)  # fmt: skip

_GENERIC_ATTRS = frozenset(
    {"style", "title", "dir", "lang", "align", "valign", "width", "height", "bgcolor"}
)
_CELL_ATTRS = frozenset(
    {"colspan", "rowspan", "nowrap", "background", "abbr", "axis", "headers", "scope"}
)
_TAG_ATTRS: dict[str, frozenset[str]] = {
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "border", "hspace", "vspace"}),
    "font": frozenset({"color", "face", "size"}),
    "table": frozenset({"border", "cellpadding", "cellspacing", "background", "frame", "rules"}),
    "tr": frozenset({"background"}),
    "td": _CELL_ATTRS,
    "th": _CELL_ATTRS,
    "col": frozenset({"span"}),
    "colgroup": frozenset({"span"}),
    "ol": frozenset({"start", "type", "reversed"}),
    "ul": frozenset({"type"}),
    "li": frozenset({"value", "type"}),
    "hr": frozenset({"size", "noshade", "color"}),
    "blockquote": frozenset({"type"}),
}

_CSS_PROPERTIES = frozenset(
    {
        "color", "background-color", "background",
        "font", "font-family", "font-size", "font-style", "font-variant", "font-weight",
        "font-stretch",
        "text-align", "text-decoration", "text-decoration-color", "text-decoration-line",
        "text-decoration-style", "text-indent", "text-overflow", "text-shadow", "text-transform",
        "letter-spacing", "word-spacing", "word-break", "word-wrap", "overflow-wrap", "direction",
        "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
        "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
        "border", "border-top", "border-right", "border-bottom", "border-left",
        "border-color", "border-style", "border-width",
        "border-top-color", "border-top-style", "border-top-width",
        "border-right-color", "border-right-style", "border-right-width",
        "border-bottom-color", "border-bottom-style", "border-bottom-width",
        "border-left-color", "border-left-style", "border-left-width",
        "border-radius", "border-top-left-radius", "border-top-right-radius",
        "border-bottom-left-radius", "border-bottom-right-radius",
        "border-collapse", "border-spacing",
        "width", "height", "max-width", "min-width", "max-height", "min-height",
        "display", "vertical-align", "line-height", "white-space", "overflow",
        "list-style", "list-style-type", "list-style-position",
        "float", "clear", "table-layout", "caption-side", "empty-cells",
    }
)  # fmt: skip

# A CSS value is dropped if it holds any of these (lower-cased): no url(), no escapes that a
# CSS parser would turn into one, no legacy script hooks, no comments or at-rules.
_CSS_BANNED = ("\\", "url", "image", "expression", "script", "behavior", "binding", "@", "/*",
               "<", ">", "&#")  # fmt: skip
_CSS_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla", "calc"})
_CSS_FUNCTION_RE = re.compile(r"([a-z0-9_-]*)\s*\(")

_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_DATA_IMAGE_RE = re.compile(r"data:image/(?:png|jpe?g|pjpeg|gif|webp)(?:;[a-z0-9=._+-]*)*,", re.I)
_SCHEME_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")
# What a browser's URL parser ignores: leading/trailing C0 controls and spaces, and any tab or
# newline anywhere ("jav&#x09;ascript:" is javascript:).
_URL_STRIP = "".join(chr(c) for c in range(0x21))
_URL_TAB_NL_RE = re.compile(r"[\t\n\r]")

LINK_REL = "noopener noreferrer nofollow"


def _normalize_url(value: str) -> str:
    return _URL_TAB_NL_RE.sub("", value.strip(_URL_STRIP))


def _scheme(url: str) -> str | None:
    match = _SCHEME_RE.match(url)
    return match.group(1).lower() if match else None


def _is_remote(url: str) -> bool:
    return _scheme(_normalize_url(url)) in ("http", "https")


def _safe_link(value: str) -> str | None:
    url = _normalize_url(value)
    return url if _scheme(url) in _LINK_SCHEMES else None


def _clean_style(value: str) -> str | None:
    kept = []
    for declaration in value.split(";"):
        name, colon, css = declaration.partition(":")
        name, css = name.strip().lower(), css.strip()
        if not colon or name not in _CSS_PROPERTIES or not css:
            continue
        lowered = css.lower()
        if any(banned in lowered for banned in _CSS_BANNED):
            continue
        if any(fn not in _CSS_FUNCTIONS for fn in _CSS_FUNCTION_RE.findall(lowered)):
            continue
        if any(ord(ch) < 0x20 for ch in css):
            continue
        kept.append(f"{name}:{css}")
    return ";".join(kept) or None


class _Policy:
    """The attribute decisions of one sanitize_html call (nh3 calls `first` for every
    attribute it allows; `second` re-checks the rewritten markup)."""

    def __init__(self, cid_url: Callable[[str], str | None] | None):
        self.cid_url = cid_url
        self.trusted: set[str] = set()  # what cid_url returned: ours, never "remote"

    def _image_url(self, value: str) -> str | None:
        url = _normalize_url(value)
        scheme = _scheme(url)
        if scheme in ("http", "https"):
            return url
        if scheme == "cid":
            if self.cid_url is None:
                return None
            content_id = unquote(url[4:]).strip().strip("<>")
            mapped = self.cid_url(content_id) if content_id else None
            if mapped is None or _scheme(_normalize_url(mapped)) in ("javascript", "vbscript"):
                return None
            self.trusted.add(mapped)
            return mapped
        if scheme == "data" and _DATA_IMAGE_RE.match(url):
            return url
        return None  # relative, javascript:, other data:, unknown schemes

    def first(self, tag: str, attr: str, value: str) -> str | None:
        if attr == "href":
            return _safe_link(value)
        if attr in ("src", "background"):
            return self._image_url(value)
        if attr == "style":
            return _clean_style(value)
        return value

    def second(self, tag: str, attr: str, value: str) -> str | None:
        if attr == "href":
            return _safe_link(value)
        if attr in ("src", "background"):
            if value in self.trusted:
                return value
            return self._image_url(value)
        if attr == "data-remote-src":
            return value if _is_remote(value) else None
        if attr == "style":
            return _clean_style(value)
        return value


def _cleaner(attribute_filter, *, remote_src_attr: bool) -> nh3.Cleaner:
    attributes = {"*": set(_GENERIC_ATTRS), **{tag: set(a) for tag, a in _TAG_ATTRS.items()}}
    if remote_src_attr:
        attributes["img"] = attributes["img"] | {"data-remote-src"}
    return nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes=attributes,
        attribute_filter=attribute_filter,
        strip_comments=True,
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        # Every URL is judged by the attribute filter; these only let its answers through.
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=set(_CSS_PROPERTIES),
    )


# html5ever serializes a start tag as `<name attr="value" ...>`, `"` and `&` escaped inside
# values; the attribute names here all come from the allowlist above.
_IMAGE_TAG_RE = re.compile(r'<(img|table|tr|td|th)((?:\s+[a-z-]+="[^"]*")*)\s*/?>')
_ATTR_RE = re.compile(r'([a-z-]+)="([^"]*)"')


def sanitize_html(
    html: str,
    *,
    allow_remote_images: bool = False,
    cid_url: Callable[[str], str | None] | None = None,
) -> SafeHtml:
    """Allowlisted HTML, safe to put in a sandboxed iframe's srcdoc.

    `cid_url(content_id)` maps `cid:` images to a URL (drop the image when it answers None);
    with remote images not allowed, an `img` keeps its remote address only in
    `data-remote-src`, and `remote_images_blocked` counts those plus dropped remote
    `background` attributes, so the UI can offer to show them.
    """
    if not html:
        return SafeHtml("", 0)
    html = html.replace("\x00", "")
    policy = _Policy(cid_url)
    first = _cleaner(policy.first, remote_src_attr=False).clean(html)
    blocked = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal blocked
        tag = match.group(1)
        attrs = []
        for name, raw in _ATTR_RE.findall(match.group(2)):
            value = html_lib.unescape(raw)
            remote = (
                name in ("src", "background") and value not in policy.trusted and _is_remote(value)
            )
            if remote and not allow_remote_images:
                blocked += 1
                if tag == "img" and name == "src":
                    attrs.append(("data-remote-src", value))
                continue  # a remote background is dropped
            attrs.append((name, value))
        if tag == "img" and not any(name in ("src", "data-remote-src") for name, _ in attrs):
            return ""  # an image with nothing to show (bad or unmapped source)
        rendered = "".join(f' {name}="{html_lib.escape(value)}"' for name, value in attrs)
        return f"<{tag}{rendered}>"

    rewritten = _IMAGE_TAG_RE.sub(rewrite, first)
    final = _cleaner(policy.second, remote_src_attr=True).clean(rewritten)
    return SafeHtml(final, blocked)


# Plain text -> HTML ---------------------------------------------------------------------------

# Links in plain text: http(s):// and www. addresses, mailto: and bare e-mail addresses.
_LINK_RE = re.compile(
    r"""
    (?P<url>(?<![\w.@/-])(?:https?://|www\.)[^\s<>"'`\x00-\x1f\x7f]+)
    | (?P<mailto>(?<![\w.-])mailto:[^\s<>"'`\x00-\x1f\x7f]+)
    | (?P<email>(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING_PUNCT = ".,;:!?'\"*"
_PAIRS = {")": "(", "]": "[", "}": "{"}
_QUOTE_RE = re.compile(r"(?:>[ \t]?)+")
_TEXT_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
BLOCKQUOTE_STYLE = "margin:0 0 0 0.8ex;border-left:2px solid #ccc;padding-left:1ex"
TEXT_STYLE = "white-space:pre-wrap;word-wrap:break-word"


def _trim_url(url: str) -> str:
    """Drop sentence punctuation and unbalanced closing brackets from a link's end."""
    while url:
        last = url[-1]
        unbalanced = last in _PAIRS and url.count(last) > url.count(_PAIRS[last])
        if last in _TRAILING_PUNCT or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def _anchor(href: str, label: str) -> str:
    return (
        f'<a href="{html_lib.escape(href)}" target="_blank" rel="{LINK_REL}">'
        f"{html_lib.escape(label)}</a>"
    )


def _linkify(text: str) -> str:
    out = []
    position = 0
    for match in _LINK_RE.finditer(text):
        start, end = match.span()
        found = match.group()
        if match.group("email"):
            href = "mailto:" + found
        else:
            found = _trim_url(found)
            end = start + len(found)
            if match.group("url"):
                href = found if "://" in found else "http://" + found
                if found.lower() == "www.":
                    continue
            else:
                href = found
                if len(found) <= len("mailto:"):
                    continue
        out.append(html_lib.escape(text[position:start]))
        out.append(_anchor(href, found))
        position = end
    out.append(html_lib.escape(text[position:]))
    return "".join(out)


def text_to_html(text: str) -> str:
    """Plain text as HTML: escaped, line breaks kept (a pre-wrap block), http(s)/www/mailto
    and e-mail addresses as links (new tab, no opener, no referrer), and lines quoted with
    ">" in nested <blockquote>s."""
    text = _TEXT_CONTROLS_RE.sub("", (text or "").replace("\r\n", "\n").replace("\r", "\n"))
    out = [f'<div style="{TEXT_STYLE}">']
    depth = 0
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(_linkify("\n".join(run)))
            run.clear()

    for line in text.split("\n"):
        marks = _QUOTE_RE.match(line) if line.startswith(">") else None
        level = marks.group().count(">") if marks else 0
        content = line[marks.end() :] if marks else line
        if level != depth:
            flush()
            while depth < level:
                out.append(f'<blockquote type="cite" style="{BLOCKQUOTE_STYLE}">')
                depth += 1
            while depth > level:
                out.append("</blockquote>")
                depth -= 1
        run.append(content)
    flush()
    out.append("</blockquote>" * depth)
    out.append("</div>")
    return "".join(out)
