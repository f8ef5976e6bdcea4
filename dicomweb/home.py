"""``GET /``: a small HTML page for whoever opens the server's address in a browser (issue 16): what this server is,
what it holds (counts only, no patient data, as /metrics), where its DICOMweb root and DICOM port are, links to the
API documentation and the metrics, and the OHIF data source to paste. No token needed, nothing audited."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import __version__
from .db.outage import unreachable
from .state import archive_of
from .urls import base_url

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomweb {version}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem}}pre{{padding:.6rem;overflow:auto}}
td{{padding:.1rem 1rem .1rem 0}}</style>
</head><body>
<h1>dicomweb {version}</h1>
<p>A DICOMweb archive (STOW-RS, QIDO-RS, WADO-RS, WADO-URI) with a reporting API and a DICOM port.</p>
<table>
<tr><td>Studies</td><td id="studies">{studies}</td></tr>
<tr><td>Series</td><td id="series">{series}</td></tr>
<tr><td>Instances</td><td id="instances">{instances}</td></tr>
<tr><td>DICOMweb root</td><td><code>{root}</code></td></tr>
<tr><td>DICOM (DIMSE)</td><td>{dimse}</td></tr>
</table>
<p><a href="/api-docs">API documentation</a> (Swagger UI: try the calls with a token) ·
<a href="/api/openapi.json">OpenAPI document</a> ·
<a href="/metrics">Metrics</a> · <a href="/readyz">Readiness</a></p>
<p>Every other request needs a bearer token: <code>dicomweb token --role ADMIN --subject me</code> where the
server's data folder is. An OHIF v3 data source for this server:</p>
<pre>{ohif}</pre>
</body></html>
"""

OHIF = """{{
  "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
  "sourceName": "dicomweb",
  "configuration": {{
    "friendlyName": "dicomweb",
    "name": "dicomweb",
    "wadoUriRoot": "{root}/wado",
    "qidoRoot": "{root}",
    "wadoRoot": "{root}",
    "qidoSupportsIncludeField": true,
    "supportsWildcard": true,
    "enableStudyLazyLoad": true,
    "imageRendering": "wadors",
    "thumbnailRendering": "wadors",
    "bulkDataURI": {{ "enabled": true }}
  }}
}}"""


async def home(request: Request) -> Response:
    archive = archive_of(request)
    settings = archive.settings
    counts: list[str] = ["?"] * 3  # the database gone: the page still answers
    try:
        row = await archive.pool.fetchrow(
            "SELECT (SELECT count(*) FROM study), (SELECT count(*) FROM series), (SELECT count(*) FROM instance)"
        )
        counts = [f"{int(value):,}" for value in row] if row is not None else counts
    except Exception as exc:
        if not unreachable(exc):
            raise
    root = base_url(request, settings.public_url)
    dimse = f"AE title <code>{html.escape(settings.dimse_aet)}</code>, port {settings.dimse_port}"
    page = PAGE.format(
        version=html.escape(__version__),
        studies=counts[0],
        series=counts[1],
        instances=counts[2],
        root=html.escape(root),
        dimse=dimse if settings.dimse_port else "off",
        ohif=html.escape(OHIF.format(root=root)),
    )
    return HTMLResponse(page)
