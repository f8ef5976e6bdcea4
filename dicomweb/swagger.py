"""``/api-docs``: Swagger UI (issue 16), where a user reads the JSON APIs, pastes a bearer token (Authorize) and
tries a call against this server (Try it out). Its script, style sheet and icons are those of the ``swagger-ui-bundle``
package, served by the archive itself under ``/api-docs/assets/``: nothing is loaded from elsewhere, and the page's
Content-Security-Policy lets it load nothing but this server's files, nor run inline scripts (the UI is started by
``swagger_init.js``). The UI reads the OpenAPI document in its 3.0 form (``openapi30.py``), the one it can render.
Public, as the document is: no patient data, not audited."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute
from swagger_ui_bundle import swagger_ui_path

from . import __version__
from .errors import NotFound
from .routing import Route

BUNDLE = Path(str(swagger_ui_path))
SWAGGER_UI_VERSION = BUNDLE.name.removeprefix("swagger-ui-")
ASSETS = "/api-docs/assets"
_JS, _CSS, _PNG, _MAP = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "image/png", "application/json"
# What /api-docs/assets/{name} serves, and nothing else: name -> (file, media type).
FILES = {
    "swagger-ui-bundle.js": (BUNDLE / "swagger-ui-bundle.js", _JS),
    "swagger-ui-bundle.js.map": (BUNDLE / "swagger-ui-bundle.js.map", _MAP),
    "swagger-ui.css": (BUNDLE / "swagger-ui.css", _CSS),
    "swagger-ui.css.map": (BUNDLE / "swagger-ui.css.map", _MAP),
    "favicon-16x16.png": (BUNDLE / "favicon-16x16.png", _PNG),
    "favicon-32x32.png": (BUNDLE / "favicon-32x32.png", _PNG),
    "init.js": (Path(__file__).with_name("swagger_init.js"), _JS),
}
# The files change only with an upgrade, whose new version in their URL (?v=) makes browsers fetch them again.
CACHE_CONTROL = "public, max-age=86400"
# Swagger UI sets styles through the DOM (allowed without 'unsafe-inline') and draws icons from data: URLs; its calls
# ("Try it out") go to this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomweb {__version__}: JSON APIs</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css?v={SWAGGER_UI_VERSION}">
<link rel="icon" type="image/png" sizes="32x32" href="{ASSETS}/favicon-32x32.png?v={SWAGGER_UI_VERSION}">
<link rel="icon" type="image/png" sizes="16x16" href="{ASSETS}/favicon-16x16.png?v={SWAGGER_UI_VERSION}">
</head><body>
<div id="swagger-ui"></div>
<noscript><p>Swagger UI needs JavaScript: the same documentation without it is at
<a href="/api-docs/plain">/api-docs/plain</a>, the document itself at <a href="/api/openapi.json">/api/openapi.json</a>.
</p></noscript>
<script src="{ASSETS}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}"></script>
<script src="{ASSETS}/init.js?v={__version__}"></script>
</body></html>
"""


async def api_docs(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


async def asset(request: Request) -> Response:
    found = FILES.get(request.path_params["name"])
    if found is None:
        raise NotFound(f"no file {request.path_params['name']} in {ASSETS}")
    path, media_type = found
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=media_type, headers=headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/api-docs", api_docs, methods=["GET"], permission=None, action=None),
        Route(ASSETS + "/{name}", asset, methods=["GET"], permission=None, action=None),
    ]
