"""Serve a blocking chunk iterator (an FTP download, a zip) from the ASGI server.

Django's StreamingHttpResponse, served over ASGI, reads a *synchronous* iterator whole into
a list before sending the first byte. This adapter is an asynchronous iterator instead: each
chunk is pulled in a worker thread, so a download streams with bounded memory and the event
loop never blocks. Django calls ``close()`` when the response ends (also when the client
went away), which closes the source (its FTP session is then not reused). A lock keeps
close() from running while a pull is still reading in its thread (a client that went away
cancels the await, not the thread).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async

_END = object()


class AsyncChunks:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._lock = threading.Lock()
        self._closed = False
        self._pull = sync_to_async(self._next, thread_sensitive=False)

    def _next(self) -> object:
        with self._lock:
            return _END if self._closed else next(self._chunks, _END)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._pull()) is not _END:
            if chunk:
                yield chunk  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
