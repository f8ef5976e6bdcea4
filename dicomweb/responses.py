"""Response classes, one per media type."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from .media import DICOM_JSON


class DicomJSONResponse(Response):
    """``application/dicom+json`` (PS3.18 Annex F) rendered with orjson."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
