from django.http import HttpRequest

SECTIONS = [("mail", "Mail"), ("files", "Files"), ("settings", "Settings")]


def navigation(request: HttpRequest) -> dict:
    """The section the page belongs to, so the nav can mark it current."""
    match = getattr(request, "resolver_match", None)
    current = match.url_name.split("-")[0] if match and match.url_name else ""
    return {"nav_sections": SECTIONS, "nav_current": current}
