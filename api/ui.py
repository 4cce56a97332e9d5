"""/ui: a live view of a world in the browser, served whole by the node.

Plain HTML, CSS and JavaScript from api/ui (no build step, nothing from a CDN). The pages
and their assets are public, as /docs is; everything they show comes from the API with
the user's key, which the page keeps in the tab (sessionStorage), never in a URL the
server sees.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from service.worlds import Worlds

PAGES = Path(__file__).resolve().parent / "ui"
ASSETS = "/ui/assets"

# The pages load only from the node: a script or style from elsewhere (an injected tag, a CDN
# link added by mistake) is refused by the browser, and no other site may frame them.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(name: str) -> FileResponse:
    return FileResponse(PAGES / name, media_type="text/html; charset=utf-8", headers=HEADERS)


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=PAGES), name="ui-assets")

    @app.get("/ui", include_in_schema=False)
    async def _ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    @app.get("/ui/", include_in_schema=False)
    async def _ui_index() -> FileResponse:
        return _page("index.html")

    @app.get("/ui/worlds/{world}", include_in_schema=False)
    async def _ui_world(world: str) -> FileResponse:
        # A name the API would refuse gets the API's problem (400 invalid-key); a valid name the
        # CP tier does not hold still gets the page, which shows the API's 404 for it.
        Worlds.check(world)
        return _page("world.html")
