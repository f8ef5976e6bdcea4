"""Searching the archive's index, for QIDO-RS (later C-FIND): a parsed query in, DICOM JSON results out.

Each result carries the attributes PS3.18 Table 10.6.3-3/-4/-5 requires at its level (plus StudyDescription,
SeriesDate, SeriesTime and BodyPartExamined, which OHIF shows), the attributes used as match keys, and those named
by ``includefield``. Indexed attributes come from the index columns; others from the stored metadata of one
instance of the study or series (``includefield=all`` at instance level returns the instance's whole metadata).
Searches not scoped to a study also return the study's attributes, and instance searches not scoped to a series
the series' (PS3.18 §10.6.3.3). Answers are capped per level; a capped answer says how many more there are.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword

from ..archive import Archive
from ..attributes import SEQUENCE_PARENT, Attribute, Level
from ..db import search as db
from ..query import LEVEL_ORDER, QUERYABLE, Matching, MatchKey, Query

# Server-side caps on one answer; a capped answer says how many more there are, counting at most COUNT_BOUND
# matches so that the count never scans a whole large table.
MAX_RESULTS = {Level.STUDY: 1000, Level.SERIES: 5000, Level.INSTANCE: 10000}
COUNT_BOUND = 100_000

DEFAULT_KEYWORDS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName", "PatientName",
        "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDate", "SeriesTime",
        "BodyPartExamined", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "StudyInstanceUID",
    ),
    Level.INSTANCE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
        "StudyInstanceUID", "SeriesInstanceUID",
    ),
}  # fmt: skip

RETRIEVE_URL, INSTANCE_AVAILABILITY = "00081190", "00080056"


@dataclass(frozen=True)
class SearchResult:
    """One answer: the matches as DICOM JSON, in the documented order, and how many more the cap left out."""

    results: list[dict[str, Any]]
    # Matches beyond this answer, when the server's cap (not the client's limit) cut it; 0 otherwise.
    more: int = 0
    # Whether ``more`` is a lower bound (the count stopped at COUNT_BOUND).
    more_at_least: bool = False


async def search(archive: Archive, query: Query, scope: Mapping[str, str], base_url: str) -> SearchResult:
    """The entities at ``query.level`` matching ``query`` within ``scope`` (the UIDs of the resource path, e.g.
    StudyInstanceUID), rendered with RetrieveURLs and BulkDataURIs under ``base_url``."""
    level = query.level
    query = _scoped(query, scope)
    cap = MAX_RESULTS[level]
    limit = min(query.limit, cap) if query.limit is not None else cap
    keywords = _keywords(query, scope)
    needs_metadata = any(k not in _columns(level) for k in keywords) or (query.include_all and level is Level.INSTANCE)
    async with archive.pool.acquire() as conn:
        rows = await db.search(conn, query, limit + 1, needs_metadata)
        more = 0
        if len(rows) > limit and (query.limit is None or query.limit > cap):
            more = await db.count(conn, query, COUNT_BOUND) - query.offset - limit
    results = [_render(row, level, keywords, query.include_all, base_url) for row in rows[:limit]]
    return SearchResult(results, more, more + query.offset >= COUNT_BOUND - cap)


def _scoped(query: Query, scope: Mapping[str, str]) -> Query:
    """Add the UIDs of the resource path (/studies/{StudyInstanceUID}/series...) as single value keys."""
    keys = [MatchKey(QUERYABLE[name], Matching.SINGLE, (uid,), name) for name, uid in scope.items()]
    return Query(**{**query.__dict__, "keys": (*keys, *query.keys)})


@functools.cache
def _columns(level: Level) -> frozenset[str]:
    return frozenset(a.keyword for a in db.returned_attributes(level))


def _keywords(query: Query, scope: Mapping[str, str]) -> list[str]:
    """What each result carries, in tag order."""
    level = query.level
    wanted = set(DEFAULT_KEYWORDS[level])
    if level is not Level.STUDY and "StudyInstanceUID" not in scope:
        wanted.update(DEFAULT_KEYWORDS[Level.STUDY])
    if level is Level.INSTANCE and "SeriesInstanceUID" not in scope:
        wanted.update(DEFAULT_KEYWORDS[Level.SERIES])
    # A key on a sequence item (RequestAttributesSequence.ScheduledProcedureStepID) returns the whole sequence.
    wanted.update(SEQUENCE_PARENT.get(k.attribute.keyword, k.attribute.keyword) for k in query.keys)
    wanted.update(query.universal)
    wanted.update(query.includes)
    if query.include_all:
        wanted.update(_columns(level))
    depth = LEVEL_ORDER.index(level)
    # Indexed attributes of lower levels are not returned (PS3.18 §10.6.3.3: e.g. no series attributes on studies).
    wanted = {k for k in wanted if k not in _LEVEL_OF or LEVEL_ORDER.index(_LEVEL_OF[k]) <= depth}
    wanted -= SEQUENCE_PARENT.keys()
    return sorted(wanted, key=_tag_of)


_LEVEL_OF = {a.keyword: a.level for a in db.returned_attributes(Level.INSTANCE)}
_ATTRIBUTES = {a.keyword: a for a in db.returned_attributes(Level.INSTANCE)}


@functools.cache
def _tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else keyword.upper()


def _render(row: Any, level: Level, keywords: list[str], include_all: bool, base: str) -> dict[str, Any]:
    metadata: dict[str, Any] = orjson.loads(row["metadata"]) if "metadata" in row and row["metadata"] else {}
    result: dict[str, Any] = {}
    if include_all and level is Level.INSTANCE:
        result.update({tag: _absolute(element, base) for tag, element in metadata.items()})
    columns = _columns(level)
    for keyword in keywords:
        tag = _tag_of(keyword)
        if keyword in columns:
            result[tag] = _element(_ATTRIBUTES[keyword], row[_ATTRIBUTES[keyword].column])
        elif tag in metadata:
            result[tag] = _absolute(metadata[tag], base)
        elif tag_for_keyword(keyword) is not None:
            result[tag] = {"vr": _vr(keyword)}
    study = row["study_instance_uid"]
    url = f"{base}/studies/{study}"
    if level is not Level.STUDY:
        url += f"/series/{row['series_instance_uid']}"
    if level is Level.INSTANCE:
        url += f"/instances/{row['sop_instance_uid']}"
    result[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    result[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    return dict(sorted(result.items()))


def _element(attribute: Attribute, value: Any) -> dict[str, Any]:
    vr = "IS" if attribute.column.startswith("number_of_") else _vr(attribute.keyword)
    if value is None or value == []:
        return {"vr": vr}
    if attribute.kind == "pn":
        groups = str(value).split("=")
        names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
        return {"vr": vr, "Value": [{k: v for k, v in names.items() if v}]}
    if attribute.kind == "date":
        return {"vr": vr, "Value": [value.strftime("%Y%m%d")]}
    if attribute.kind == "time":
        return {"vr": vr, "Value": [_format_time(value)]}
    if attribute.kind == "text_list":
        return {"vr": vr, "Value": list(value)}
    return {"vr": vr, "Value": [value]}


@functools.cache
def _vr(keyword: str) -> str:
    """The dictionary VR of a keyword (looked up once: rendering a page of results asks thousands of times)."""
    return str(dictionary_VR(keyword))


def _format_time(value: datetime.time) -> str:
    text = value.strftime("%H%M%S")
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _absolute(element: dict[str, Any], base: str) -> dict[str, Any]:
    """A stored element with its BulkDataURIs (relative to the base URL) made absolute, sequences included."""
    if "BulkDataURI" in element:
        return {**element, "BulkDataURI": f"{base}/{element['BulkDataURI']}"}
    if element.get("vr") == "SQ" and "Value" in element:
        items = [{t: _absolute(e, base) for t, e in item.items()} for item in element["Value"]]
        return {**element, "Value": items}
    return element
