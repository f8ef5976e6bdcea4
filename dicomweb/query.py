"""The QIDO-RS query model: query parameters (PS3.18 §8.3.4) parsed into typed match keys. Pure, no I/O.

Matching follows PS3.4 §C.2.2.2: single value (C.2.2.2.1), UID list (C.2.2.2.2, values separated by backslash
or comma as PS3.18 §8.3.4.1 allows), universal (C.2.2.2.3, an empty value: no condition, the attribute is
returned), wildcard ``*`` and ``?`` (C.2.2.2.4, not for UI, DA, TM, DT or numbers), range for DA and TM
(C.2.2.2.5, open ends allowed; StudyDate and StudyTime ranges together match as one date-time range,
C.2.2.2.5.1) and sequence matching (C.2.2.2.6) on RequestAttributesSequence items.

Keys are named by keyword or by tag (``PatientName`` or ``00100010``). A key the archive cannot match (a valid
DICOM attribute that is not indexed, or one below the query level) is not silently dropped: it is listed in
``Query.ignored`` and the response names it in a ``Warning: 299`` header, as PS3.18 §8.3.4.1 allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from .attributes import (
    AGGREGATES,
    BY_KEYWORD,
    SEQUENCE_PARENT,
    Attribute,
    Level,
    normalize_name,
    parse_date,
    parse_time,
)
from .errors import BadRequest
from .uids import is_valid_uid

# PS3.18 §8.3.4: the query parameters that are not attribute keys.
LIMIT, OFFSET, FUZZY, INCLUDE = "limit", "offset", "fuzzymatching", "includefield"
RESERVED = frozenset({LIMIT, OFFSET, FUZZY, INCLUDE})
MAX_VALUE_LENGTH = 1024  # characters of one query value; longer values are refused, not truncated

LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)
QUERYABLE: dict[str, Attribute] = {**BY_KEYWORD, **{a.keyword: a for a in AGGREGATES if a.kind == "text_list"}}
RETURNABLE: dict[str, Attribute] = {**BY_KEYWORD, **{a.keyword: a for a in AGGREGATES}}
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class Matching(StrEnum):
    SINGLE = "single"
    LIST = "list"
    WILDCARD = "wildcard"
    RANGE = "range"
    FUZZY = "fuzzy"  # PN with fuzzymatching=true: values are the folded words of the query


@dataclass(frozen=True)
class MatchKey:
    """One attribute condition. ``values``: SINGLE (v,), LIST (v, ...), WILDCARD (LIKE pattern,), RANGE (low, high)
    with None for an open end, FUZZY (word, ...). PN values are folded (case- and accent-free) as the index
    stores them."""

    attribute: Attribute
    matching: Matching
    values: tuple[Any, ...]
    parameter: str


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS request at one level."""

    level: Level
    keys: tuple[MatchKey, ...] = ()
    includes: frozenset[str] = frozenset()  # keywords (or 8-digit tags for attributes without one) to return
    include_all: bool = False
    ignored: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    universal: frozenset[str] = field(default_factory=frozenset)  # keywords sent with an empty value


def parse(params: Iterable[tuple[str, str]], level: Level) -> Query:
    """Parse query parameters (name, value pairs, repeated names allowed) for a search at ``level``."""
    keys: list[MatchKey] = []
    includes: set[str] = set()
    ignored: list[str] = []
    universal: set[str] = set()
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    items = list(params)
    for name, value in items:
        if name == FUZZY:
            if value.lower() not in ("true", "false"):
                raise BadRequest(f"fuzzymatching must be true or false, got {value[:40]!r}")
            fuzzy = value.lower() == "true"
    for name, value in items:
        if len(value) > MAX_VALUE_LENGTH:
            raise BadRequest(f"the value of {name[:64]} is longer than {MAX_VALUE_LENGTH} characters")
        if "\x00" in value:
            raise BadRequest(f"the value of {name[:64]} contains a NUL character")
        if name == LIMIT:
            limit = _count(name, value)
        elif name == OFFSET:
            offset = _count(name, value)
        elif name == FUZZY:
            continue
        elif name == INCLUDE:
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item == "all":
                    include_all = True
                else:  # a path "Sequence.Item" returns the whole sequence
                    includes.add([_keyword(part, INCLUDE) for part in item.split(".")][0])
        else:
            attribute = _attribute(name)
            if attribute is None or LEVEL_ORDER.index(attribute.level) > LEVEL_ORDER.index(level):
                ignored.append(name)
                continue
            if value == "":
                universal.add(attribute.keyword)
                continue
            keys.append(_match(attribute, value, name, fuzzy))
    _check_time_ranges(keys)
    return Query(
        level=level,
        keys=tuple(keys),
        includes=frozenset(includes),
        include_all=include_all,
        ignored=tuple(ignored),
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        universal=frozenset(universal),
    )


def _check_time_ranges(keys: list[MatchKey]) -> None:
    """PS3.4 §C.2.2.2.5: a TM range must not end before it starts, unless it is the StudyTime of a combined
    StudyDate + StudyTime range (C.2.2.2.5.1), where it spans midnight between two dates."""
    date_range = any(k.attribute.keyword == "StudyDate" and k.matching is Matching.RANGE for k in keys)
    for key in keys:
        if key.attribute.kind != "time" or key.matching is not Matching.RANGE:
            continue
        low, high = key.values
        combined = key.attribute.keyword == "StudyTime" and date_range
        if low is not None and high is not None and low > high and not combined:
            raise BadRequest(f"{_shown(key.parameter)}: the time range ends before it starts")


def _count(name: str, value: str) -> int:
    if not value.isdigit() or not value.isascii():
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return min(int(value), 2**31 - 1)


def _shown(text: str) -> str:
    """A user-supplied name, shortened for an error message."""
    return text if len(text) <= 64 else text[:64] + "..."


def _keyword(name: str, parameter: str) -> str:
    """The DICOM keyword a parameter names (keyword or 8-digit tag); 400 for anything else."""
    parameter = _shown(parameter)
    if _TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return str(keyword)
        if int(name[:4], 16) % 2 == 1:  # a private attribute: named by its tag
            return name.upper()
        raise BadRequest(f"{parameter}: {name} is not a known DICOM attribute tag")
    if tag_for_keyword(name) is None:
        raise BadRequest(f"{parameter}: {_shown(name)!r} is not a DICOM keyword or tag")
    return name


def _attribute(name: str) -> Attribute | None:
    """The indexed attribute a query key names, None if it is a valid DICOM attribute the index lacks."""
    keywords = [_keyword(part, name) for part in name.split(".")]
    if len(keywords) > 2:  # nested sequences: not indexed
        return None
    if len(keywords) == 2:  # sequence matching: Sequence.Item (PS3.18 §8.3.4.1)
        parent, item = keywords
        return QUERYABLE.get(item) if SEQUENCE_PARENT.get(item) == parent else None
    if keywords[0] in SEQUENCE_PARENT:  # an item attribute on its own is not a key of this level
        return None
    return QUERYABLE.get(keywords[0])


def match_key(attribute: Attribute, value: str, parameter: str) -> MatchKey:
    """One key's condition as QIDO-RS matches it (PS3.4 C.2.2.2), for a search outside QIDO-RS's levels (the
    Modality Worklist); BadRequest says what is wrong with the value."""
    if len(value) > MAX_VALUE_LENGTH or "\x00" in value:
        raise BadRequest(f"the value of {parameter} is longer than {MAX_VALUE_LENGTH} characters or has a NUL")
    return _match(attribute, value, parameter, fuzzy=False)


def _match(attribute: Attribute, value: str, parameter: str, fuzzy: bool) -> MatchKey:
    kind = attribute.kind
    if kind == "uid":
        uids = tuple(v for v in re.split(r"[\\,]", value) if v)
        if not uids:
            raise BadRequest(f"{_shown(parameter)}: {value!r} lists no UID")
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(f"{parameter}: {uid[:80]!r} is not a valid UID (wildcards are not allowed for UIDs)")
        if len(uids) == 1:
            return MatchKey(attribute, Matching.SINGLE, uids, parameter)
        return MatchKey(attribute, Matching.LIST, uids, parameter)
    if kind in ("date", "time"):
        return _range(attribute, value, parameter)
    if kind == "int":
        # IS values are ASCII digits within a signed 32-bit integer (PS3.5 §6.2).
        if not re.fullmatch(r"[+-]?[0-9]{1,10}", value.strip()) or not -(2**31) <= int(value) < 2**31:
            raise BadRequest(f"{_shown(parameter)} must be an integer of at most 32 bits, got {value[:40]!r}")
        return MatchKey(attribute, Matching.SINGLE, (int(value),), parameter)
    if kind == "pn":
        folded = normalize_name(value)
        if fuzzy:
            # Fuzzy matching (PS3.18 §8.3.4.6): every word of the query starts some name component, in any order.
            words = tuple(w for w in re.split(r"[\s^=,*?]+", folded) if w)
            if words:
                return MatchKey(attribute, Matching.FUZZY, words, parameter)
        value = folded
    if kind == "text_list" and ("\\" in value or "," in value):
        items = tuple(v for v in re.split(r"[\\,]", value) if v)
        if not items or any("*" in v or "?" in v for v in items):
            raise BadRequest(f"{_shown(parameter)}: {value[:40]!r} must list values without wildcards")
        return MatchKey(attribute, Matching.LIST, items, parameter)
    if "*" in value or "?" in value:
        return MatchKey(attribute, Matching.WILDCARD, (like_pattern(value),), parameter)
    return MatchKey(attribute, Matching.SINGLE, (value,), parameter)


def _range(attribute: Attribute, value: str, parameter: str) -> MatchKey:
    parse_value: Callable[[str], Any] = parse_date if attribute.kind == "date" else parse_time
    vr = "DA" if attribute.kind == "date" else "TM"
    low, dash, high = value.partition("-")
    bounds = (low.strip(), high.strip()) if dash else (value.strip(), None)
    parsed: list[Any] = []
    for bound in bounds:
        if bound is None or bound == "":
            parsed.append(None)
            continue
        converted = parse_value(bound)
        if converted is None:
            raise BadRequest(f"{parameter}: {bound[:40]!r} is not a valid {vr} value (PS3.5 §6.2)")
        parsed.append(converted)
    if not dash:
        return MatchKey(attribute, Matching.SINGLE, (parsed[0],), parameter)
    if parsed[0] is None and parsed[1] is None:
        raise BadRequest(f"{parameter}: a range needs at least one end, got {value!r}")
    if vr == "DA" and parsed[0] is not None and parsed[1] is not None and parsed[0] > parsed[1]:
        # (A TM range may "end before it starts" when it combines with a StudyDate range, C.2.2.2.5.1.)
        raise BadRequest(f"{parameter}: the range {value!r} ends before it starts")
    return MatchKey(attribute, Matching.RANGE, (parsed[0], parsed[1]), parameter)


def like_escape(text: str) -> str:
    """``text`` as literal characters in a LIKE pattern (backslash is PostgreSQL's default LIKE escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(value: str) -> str:
    """A DICOM wildcard value as a LIKE pattern: ``*`` → ``%``, ``?`` → ``_``, LIKE's own characters escaped."""
    return like_escape(value).replace("*", "%").replace("?", "_")


def like_literals(pattern: str) -> list[str]:
    """The literal runs of a LIKE pattern made by ``like_pattern``, unescaped (``%mül_er%`` → ``["mül", "er"]``)."""
    runs, current, escaped = [], [], False
    for char in pattern:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "%_":
            runs.append("".join(current))
            current = []
        else:
            current.append(char)
    runs.append("".join(current))
    return [run for run in runs if run]
