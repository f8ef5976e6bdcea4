"""routing.py: the route found once per request is the one Starlette's own matching finds, for every route."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Match, Mount, Route

from dicomweb.app import all_routes
from dicomweb.routing import match_route

from .conftest import LiveServer

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]


def starlettes_choice(routes: Sequence[BaseRoute], scope: dict[str, Any], prefix: str = "") -> tuple[str, bool] | None:
    """What Starlette's router does, route by route with each route's own matching: the template it runs (True) or
    answers 405 for (False)."""
    partial: tuple[str, bool] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        path = str(getattr(route, "path", ""))
        if isinstance(route, Mount):
            return starlettes_choice(route.routes, {**scope, **child}, prefix + path)
        if match is Match.FULL:
            return prefix + path, True
        partial = partial or (prefix + path, False)
    return partial


def leaf_templates(routes: Sequence[BaseRoute], prefix: str = "") -> list[str]:
    templates = []
    for route in routes:
        if isinstance(route, Mount):
            templates += leaf_templates(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            templates.append(prefix + route.path)
    return templates


def sample_paths() -> list[str]:
    """Every route's path with values in its parameters, and near misses of each."""
    paths = set()
    for template in leaf_templates(all_routes()):
        path = re.sub(r"\{[^}]+\}", "1.2.840.113619", template)
        paths |= {path, path + "/", path + "/extra", path.rsplit("/", 1)[0] + "//", path.replace("/1.2.840", "/")}
    return sorted(paths | {"/", "/unknown", "/dicomweb", "/dicomweb/", "/dicomweb/studies/1/series/2/frames/1"})


@pytest.mark.parametrize("path", sample_paths())
def test_same_route_as_starlette(path: str) -> None:
    routes = all_routes()
    for method in METHODS:
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        found = match_route(routes, scope)
        expected = starlettes_choice(routes, scope)
        assert (None if found is None else (found.template, found.route is not None)) == expected, (method, path)


def test_unknown_paths_and_methods(session_server: LiveServer) -> None:
    """What no route runs still gets Starlette's answers: 404 for an unknown path, 405 for a known path with another
    method; a known one runs its route."""
    server = session_server
    assert httpx.get(f"{server.url}/dicomweb/nothing/here").status_code == 404
    assert httpx.put(f"{server.dicomweb}/studies").status_code == 405
    assert httpx.get(f"{server.url}/healthz").status_code == 200
