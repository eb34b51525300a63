"""``convergent serve``: a FastAPI app over a :class:`~convergent.app.searcher.Searcher`.

    GET  /                       the search page (one offline HTML file, no CDN)
    GET  /api/info               {"count", "kind", "model", "root", "max_upload_bytes", "max_k"}
    GET  /api/search?q=...&k=10  {"query", "results": [{"id", "name", "score", "thumb", "image"}]}
    POST /api/search/image       multipart ``file``: the images nearest to the upload
    GET  /api/thumb/{id}         a PNG thumbnail of indexed image ``id``
    GET  /api/image/{id}         indexed image ``id`` itself

Files are named by their index id only, never by a path from the request, so nothing but an
indexed file can be read (no path traversal). Uploads are cut at ``max_upload_bytes`` and
refused before decoding above ``max_pixels`` pixels. Every error is JSON ``{"error": "..."}``
with a 4xx status.
"""

import io
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from convergent.app.errors import AppError
from convergent.app.searcher import MAX_K, Searcher, as_rows
from convergent.data.images import ImageTooLarge, open_image
from convergent.data.limits import MAX_IMAGE_PIXELS

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
THUMB_SIDE = 256
FORM_OVERHEAD = 16 * 1024
"""Bytes a multipart form adds around the uploaded file (boundaries, headers, file name)."""


class BodyLimit:
    """ASGI middleware: a request body longer than ``limit`` bytes is refused with 413 — at once
    when its ``Content-Length`` says so, else as soon as that many bytes have arrived — so an
    upload is never spooled to memory or disk beyond the limit."""

    def __init__(self, app, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"error": self.message}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self.message)
            return message

        return await self.app(scope, limited, send)


def create_app(searcher: Searcher, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int | None = MAX_IMAGE_PIXELS) -> FastAPI:  # fmt: skip
    """The app answering queries with ``searcher``."""
    app = FastAPI(title="convergent image search", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=max_upload_bytes + FORM_OVERHEAD,
                       message=f"upload larger than {max_upload_bytes:,} bytes")  # fmt: skip
    index, root = searcher.index, searcher.index.root
    page = resources.files("convergent.app").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        detail = e.detail if e.status_code != 404 or e.detail != "Not Found" else "not found"
        return JSONResponse({"error": str(detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return JSONResponse({"error": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(AppError)
    async def app_error(_: Request, e: AppError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    def rows(hits: list[dict]) -> list[dict]:
        return [{"id": h["id"], "name": h["name"], "score": h["score"], "thumb": f"/api/thumb/{h['id']}",
                 "image": f"/api/image/{h['id']}"} for h in as_rows(hits, root)]  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def info() -> dict:
        model = searcher.embedder.info
        return {"count": len(index), "kind": model.kind, "model": model.path, "root": root,
                "max_upload_bytes": max_upload_bytes, "max_k": MAX_K}  # fmt: skip

    @app.get("/api/search")
    def search_text(q: str = Query("", max_length=1000), k: int = Query(10, ge=1, le=MAX_K)) -> dict:
        return {"query": q, "results": rows(searcher.text(q, k))}

    @app.post("/api/search/image")
    def search_image(file: UploadFile = File(...), k: int = Query(10, ge=1, le=MAX_K)) -> dict:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes:,} bytes")
        if not data:
            raise HTTPException(400, "empty upload: send an image file as the form field 'file'")
        try:
            with open_image(io.BytesIO(data), max_pixels):
                pass  # the header's size, before anything is decoded
        except ImageTooLarge as e:
            raise HTTPException(413, f"image {e}") from e
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the upload is no image
            raise HTTPException(400, f"the upload is not a readable image ({type(e).__name__})") from e
        return {"query": file.filename, "results": rows(searcher.image(io.BytesIO(data), k, max_pixels))}

    def indexed(image_id: int) -> Path:
        path = index.paths([image_id]).get(image_id)
        if path is None or not Path(path).is_file():
            raise HTTPException(404, f"no indexed image {image_id}")
        return Path(path)

    @app.get("/api/image/{image_id}")
    def image(image_id: int) -> FileResponse:
        return FileResponse(indexed(image_id))

    @app.get("/api/thumb/{image_id}")
    def thumb(image_id: int) -> Response:
        path = indexed(image_id)
        try:
            with open_image(str(path), max_pixels) as img:
                img.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
                img = img.convert("RGBA")
                img.thumbnail((THUMB_SIDE, THUMB_SIDE))
                out = io.BytesIO()
                img.save(out, "PNG")
        except Exception as e:  # noqa: BLE001 - changed on disk since it was indexed
            raise HTTPException(404, f"indexed image {image_id} is no longer readable") from e
        return Response(out.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def serve(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Run the app on uvicorn until interrupted."""
    uvicorn.run(create_app(searcher, **limits), host=host, port=port, log_level="warning")


__all__ = ["create_app", "serve"]
