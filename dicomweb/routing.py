"""The routes, each saying what a caller needs and how a call is audited (``Route``), and which route a request
reaches, found once per request: the middlewares that need it (metrics, authentication, audit) and the router itself
share the answer.

Starlette's router tries each route's regular expression in turn, and so did the middlewares before it: about 45 µs
for a frame's path, twice per request. Here a route whose path has only plain ``{name}`` parameters is first compared
segment by segment with the request's path (a few string comparisons), and only a route that passes is asked to match;
``MatchedRouter`` then runs the route found without matching again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from .actions import Action
from .permissions import Permission

ROUTE_MATCH = "dicomweb.route_match"  # the scope key under which route_of keeps its answer


class Route(StarletteRoute):
    """A route that carries the permission a caller needs (None: public, no token asked) and the action its audit
    event records (None: not audited), so that neither lives in a second table of path strings (dicom-server puts
    its audit event type on the controller action). Both are keyword-only without a default: every route decides.
    A route answers one method, so that one permission never covers a read and a write; HEAD comes with GET
    (RFC 9110 §9.3.2) and needs what GET needs."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str],
        permission: Permission | None,
        action: Action | None,
        name: str | None = None,
    ) -> None:
        named = {method.upper() for method in methods} - {"HEAD"}
        if len(named) != 1:
            raise ValueError(f"{path}: a route answers one method (HEAD comes with GET), not {sorted(methods)}")
        super().__init__(path, endpoint, methods=methods, name=name)
        self.method = named.pop()
        self.permission = permission
        self.action = action


def leaves(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route below the mounts, with its full path template (mount prefixes included)."""
    for route in routes:
        if isinstance(route, Mount):
            yield from leaves(route.routes, prefix + route.path)
        else:
            yield prefix + str(getattr(route, "path", "")), route


def undecided(routes: Sequence[BaseRoute]) -> list[str]:
    """The routes that do not say what they need and how they are audited (any route but a ``Route``)."""
    return [
        f"{template} ({type(route).__name__})" for template, route in leaves(routes) if not isinstance(route, Route)
    ]


@dataclass(frozen=True)
class RouteMatch:
    """The route a request will reach: its path template (``/dicomweb/studies/{StudyInstanceUID}``) and the values
    of its path parameters; for a full match (path and method) also the route and the scope changes that Starlette's
    router would make on the way to it (mounts' root paths, path parameters, endpoint)."""

    template: str
    path_params: Mapping[str, str]
    route: BaseRoute | None = None
    scope_changes: Mapping[str, Any] = field(default_factory=dict)


def match_route(
    routes: Sequence[BaseRoute], scope: Scope, prefix: str = "", changes: Mapping[str, Any] | None = None
) -> RouteMatch | None:
    """The route of the table a request will reach, if any: as Starlette's router picks it, the first whose path
    and method match, else the first whose path matches (the router answers that one 405). Taking the first path
    match alone would check a request against another route's permission when two routes share a path pattern
    but name its parameter differently."""
    segments = scope["path"].split("/")
    partial: RouteMatch | None = None
    for route in routes:
        if not _may_match(route, prefix, segments):
            continue
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        path = str(getattr(route, "path", ""))
        if isinstance(route, Mount):  # the router goes into the first mount whose prefix matches
            return match_route(route.routes, {**scope, **child}, prefix + path, {**(changes or {}), **child})
        if match is Match.FULL:
            return RouteMatch(prefix + path, child.get("path_params", {}), route, {**(changes or {}), **child})
        partial = partial or RouteMatch(prefix + path, child.get("path_params", {}))
    return partial


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> RouteMatch | None:
    """``match_route``, once per request. Call it before the router runs (routing rewrites the scope's root_path
    under mounts)."""
    if ROUTE_MATCH not in scope:
        scope[ROUTE_MATCH] = match_route(routes, scope)
    found: RouteMatch | None = scope[ROUTE_MATCH]
    return found


class MatchedRouter(Router):
    """Starlette's router, which runs the route ``route_of`` found for the request (the scope changes Starlette's
    matching would make, then the route) instead of matching again; anything else (no match, a path matched with
    another method, lifespan) goes through Starlette's own matching, with its 404, 405 and redirects."""

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = scope.get(ROUTE_MATCH)
        if scope["type"] == "http" and isinstance(found, RouteMatch) and found.route is not None:
            scope.setdefault("router", self)
            scope.update(found.scope_changes)
            await found.route.handle(scope, receive, send)
            return
        await super().app(scope, receive, send)


_SKELETON = "_dicomweb_skeletons"  # where a route keeps its path's segments under each mount prefix


def _may_match(route: BaseRoute, prefix: str, segments: list[str]) -> bool:
    """False when the request's path cannot be this route's: another number of segments, or another literal one.
    True when it may be (then the route's own matching decides), and for routes this cannot tell (parameters with a
    converter, parts of segments, mounts)."""
    if not isinstance(route, StarletteRoute):
        return True
    skeletons: dict[str, list[str | None] | None] = route.__dict__.setdefault(_SKELETON, {})
    if prefix not in skeletons:
        skeletons[prefix] = _skeleton(prefix + route.path)
    skeleton = skeletons[prefix]
    if skeleton is None:
        return True
    return len(segments) == len(skeleton) and all(
        expected == segment if expected is not None else segment != ""
        for expected, segment in zip(skeleton, segments, strict=True)
    )


def _skeleton(template: str) -> list[str | None] | None:
    """The template's segments, None for a plain ``{name}`` one (any non-empty segment, as Starlette's default
    converter); None when some segment is anything else with a parameter in it."""
    skeleton: list[str | None] = []
    for segment in template.split("/"):
        if "{" not in segment:
            skeleton.append(segment)
        elif segment.startswith("{") and segment.endswith("}") and ":" not in segment and segment.count("{") == 1:
            skeleton.append(None)
        else:
            return None
    return skeleton
