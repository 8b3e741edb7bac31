"""Form fields decoded strictly: bytes that are not valid UTF-8 must not turn into another name.

Starlette decodes a form field that is not valid in its charset as Latin-1 instead, which stores
mojibake (`JosÃ©`) that no later check can tell from a real name. These routes decode the invalid
bytes to U+FFFD instead, which the name rule refuses with a clear 422 (facegate.names).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser


class _StrictMultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            # Valid bytes, so that the parser's own decoding neither fails nor falls back to Latin-1.
            text = bytes(part.data).decode(self._charset, errors="replace")
            part.data = bytearray(text.encode(self._charset, errors="replace"))
        super().on_part_end()


class _StrictFormRequest(Request):
    async def _get_form(self, **limits: Any) -> FormData:
        if self._form is None and self.headers.get("content-type", "").startswith("multipart/form-data"):
            try:
                async with aclosing(self.stream()) as stream:
                    self._form = await _StrictMultiPartParser(self.headers, stream, **limits).parse()
            except MultiPartException as exc:
                raise HTTPException(status_code=400, detail=exc.message) from exc
        return await super()._get_form(**limits)


class StrictFormRoute(APIRoute):
    """A route whose multipart text fields never fall back to Latin-1."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictFormRequest(request.scope, request.receive))

        return strict_handler
