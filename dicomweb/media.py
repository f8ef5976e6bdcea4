"""Media types, and the Content-Type / Accept decisions that lead to 415 and 406 (PS3.18 §8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import parse_options_header

from .errors import BadRequest, NotAcceptable, UnsupportedMediaType

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
JSON = "application/json"
MULTIPART_RELATED = "multipart/related"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: lower-cased ``type/subtype`` and parameters (names lower-cased, values unquoted)."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @classmethod
    def parse(cls, value: str) -> MediaType:
        # Media types are ASCII (RFC 9110 §8.3.1); anything else (a query parameter can hold any character) becomes
        # "?" and then matches no type, instead of failing python-multipart's latin-1 encoding.
        main, raw_params = parse_options_header(value.encode("latin-1", "replace"))
        params = {k.decode("latin-1").strip().lower(): v.decode("latin-1") for k, v in raw_params.items()}
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        return cls(main.decode("latin-1").strip().lower(), params, quality)

    def specificity(self, offered: str) -> int:
        """How closely this (Accept) range names the offered ``type/subtype``: 2 exact, 1 ``type/*``, 0 ``*/*``, -1 not.

        A bare ``*`` (Java's default Accept header) counts as ``*/*``.
        """
        if self.type == offered:
            return 2
        if self.type.endswith("/*") and self.type != "*/*":
            return 1 if offered.split("/")[0] == self.type[:-2] else -1
        return 0 if self.type in ("*/*", "*") else -1


@dataclass(frozen=True)
class StowBody:
    """What a STOW-RS request body is: a multipart/related stream with a boundary, or a single DICOM file."""

    boundary: bytes | None


def stow_body(content_type: str | None) -> StowBody:
    """Check a STOW-RS Content-Type (PS3.18 §10.5.1.1); 415 for anything but DICOM PS3.10 instances."""
    if not content_type:
        raise UnsupportedMediaType(f'Content-Type is missing; send multipart/related; type="{DICOM}"')
    media = MediaType.parse(content_type)
    if media.type == DICOM:
        return StowBody(boundary=None)
    if media.type != MULTIPART_RELATED:
        raise UnsupportedMediaType(
            f'Content-Type {media.type} is not supported; send multipart/related; type="{DICOM}" or {DICOM}'
        )
    part_type = media.params.get("type")
    # RFC 2387 makes "type" mandatory; a missing one is tolerated and each part's own Content-Type is checked.
    if part_type is not None and MediaType.parse(part_type).type != DICOM:
        raise UnsupportedMediaType(
            f'multipart/related type "{part_type}" is not supported; only type="{DICOM}" (PS3.10 instances) is'
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise BadRequest("Content-Type multipart/related has no boundary parameter")
    if len(boundary) > 70:
        # RFC 2046 §5.1.1: boundaries are 1 to 70 characters.
        raise BadRequest("multipart boundary is longer than 70 characters")
    return StowBody(boundary=boundary.encode("latin-1"))


def check_part_type(content_type: str | None) -> bool:
    """Whether a multipart part may hold a DICOM instance (no Content-Type means the request's type)."""
    return content_type is None or MediaType.parse(content_type).type == DICOM


def accept_ranges(accept: str) -> list[MediaType]:
    """The media ranges of an Accept header, highest quality first (stable for equal q), refusals (q=0) dropped."""
    ranges = [MediaType.parse(part) for part in _split_accept(accept)]
    return sorted((r for r in ranges if r.quality > 0), key=lambda r: -r.quality)


def _split_accept(accept: str) -> list[str]:
    """Split at commas outside quoted strings (a quoted parameter may hold a comma)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in accept:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str:
    """Pick the offered media type the Accept header prefers (RFC 9110 §12.5.1); 406 if it refuses them all.

    Each offered type takes the quality of the most specific range that matches it (exact, then ``type/*``, then
    ``*/*``), so ``application/dicom+json;q=0, */*`` refuses DICOM JSON whatever the wildcard says. The highest
    quality above 0 wins; ties go to the earlier offered type, the resource's preference.
    """
    if not accept:
        return offered[0]
    ranges = [MediaType.parse(part) for part in _split_accept(accept)]
    best: str | None = None
    best_quality = 0.0
    for candidate in offered:
        specificity, quality = -1, 0.0
        for media in ranges:
            rank = media.specificity(candidate)
            # Equally specific ranges (the same type listed twice) are read generously: the higher q counts.
            if rank > specificity or (rank == specificity and media.quality > quality):
                specificity, quality = rank, media.quality
        if specificity >= 0 and quality > best_quality:
            best, best_quality = candidate, quality
    if best is None:
        raise NotAcceptable(f"none of {', '.join(offered)} is acceptable to Accept: {accept}")
    return best
