from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination ({"results", "next"}), newest first; ?page_size= up to 500."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
