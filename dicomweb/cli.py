"""The ``dicomweb`` command: ``serve`` runs the server, ``import`` stores files from disk, ``token`` prints one."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .auth import check_bind
from .config import SETTINGS, Settings
from .permissions import Role
from .tokens import MAX_QUERY_TOKEN_TTL_SECONDS, create_token, load_or_create_secret

DEFAULT_TTL = "8h"
DEFAULT_STUDY_TTL = "5m"  # a study-scoped token rides in URLs: short by default, at most an hour


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb", description="DICOMweb archive (STOW-RS, QIDO-RS, WADO-RS)")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = {s.name: s for s in SETTINGS}
    serve = sub.add_parser("serve", help="run the DICOMweb server")
    serve.add_argument("--host", help=f"{defaults['host'].help} (env {defaults['host'].env})")
    serve.add_argument("--port", type=int, help=f"{defaults['port'].help} (env {defaults['port'].env})")
    serve.add_argument("--workers", type=int, help=f"{defaults['workers'].help} (env {defaults['workers'].env})")
    for command in (serve, importer := sub.add_parser("import", help="store DICOM files and folders in the archive")):
        command.add_argument(
            "--data-dir", type=Path, help=f"{defaults['data_dir'].help} (env {defaults['data_dir'].env})"
        )
    importer.add_argument("paths", nargs="+", type=Path, help="files and folders to import (walked recursively)")
    token = sub.add_parser("token", help="print a bearer token signed with the server's secret (<data-dir>/jwt-secret)")
    token.add_argument(
        "--role", action="append", required=True, choices=[r.value for r in Role], help="role (repeatable)"
    )
    token.add_argument("--subject", required=True, help="who the token is for (the audit trail names them)")
    token.add_argument(
        "--study",
        metavar="StudyInstanceUID",
        help="make a study-scoped token: reads only this study, and may be sent as the access_token query parameter",
    )
    token.add_argument(
        "--ttl",
        help=f"lifetime: seconds, or a number with s, m, h or d (default {DEFAULT_TTL}; with --study "
        f"{DEFAULT_STUDY_TTL}, at most {MAX_QUERY_TOKEN_TTL_SECONDS // 60}m)",
    )
    token.add_argument("--data-dir", type=Path, help=f"{defaults['data_dir'].help} (env {defaults['data_dir'].env})")
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "workers", "data_dir") and v is not None}
    settings = settings.replace(**overrides)
    settings.configure_logging()
    if args.command == "serve":
        try:
            check_bind(settings)
        except ValueError as exc:
            print(f"dicomweb: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "token":
        return print_token(settings, args.subject, args.role, args.ttl, args.study)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"dicomweb: {', '.join(missing)} does not exist", file=sys.stderr)
        return 2
    return asyncio.run(import_command(settings, args.paths, progress=not args.quiet))


def serve(settings: Settings) -> int:
    """Run the server; with several workers, uvicorn's supervisor runs ``create_app_from_env`` in each process
    and the embedded PostgreSQL (if any) is started here, once, for all of them."""
    import uvicorn

    from .app import create_app
    from .db.embedded import EmbeddedPostgres
    from .zerocopy import HTTP_PROTOCOL

    workers = settings.workers or os.cpu_count() or 1
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # dicomweb.accesslog writes one line per request
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
        "http": HTTP_PROTOCOL,  # uvicorn's httptools protocol with zero-copy sending of stored files
    }
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
        server.run()
        return 0 if server.started else 1
    embedded = None
    if not settings.database_url:
        embedded = EmbeddedPostgres(settings.data_dir)
        settings = settings.replace(database_url=embedded.start())
    os.environ.update(settings.replace(workers=1).to_env())
    # Each worker writes its metrics to files here; a scrape of any worker adds them up (dicomweb/metrics.py).
    metrics_dir = settings.data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        uvicorn.run("dicomweb.app:create_app_from_env", factory=True, workers=workers, **options)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def print_token(settings: Settings, subject: str, roles: list[str], ttl: str | None, study: str | None = None) -> int:
    """``dicomweb token``: an HS256 token from the data folder's secret, for the quick start and for scripts."""
    ttl = ttl or (DEFAULT_TTL if study is None else DEFAULT_STUDY_TTL)
    match = re.fullmatch(r"(\d+)([smhd]?)", ttl.strip())
    if match is None:
        print(f"dicomweb: --ttl {ttl!r} is not a duration like 3600, 30m, 8h or 7d", file=sys.stderr)
        return 2
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    secret = load_or_create_secret(settings.data_dir)
    audience = settings.jwt_audience or None
    try:
        token = create_token(
            secret, subject, [Role(r) for r in roles], seconds, settings.jwt_issuer, audience, study=study
        )
    except ValueError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


async def import_command(settings: Settings, paths: list[Path], progress: bool) -> int:
    """``dicomweb import``: the archive opened on its own (no HTTP app), the files stored, a summary on stderr."""
    from .archive import open_archive
    from .db.outage import unreachable
    from .importer import DatabaseGone, import_paths

    try:
        async with open_archive(settings) as archive:
            report = await import_paths(archive, paths, progress=progress)
    except Exception as exc:
        if not (isinstance(exc, DatabaseGone) or unreachable(exc)):
            raise
        print(f"dicomweb: {exc}; run the import again once the database is back", file=sys.stderr)
        return 1
    print(
        f"stored {report.stored}, already stored {report.already_stored}, skipped {report.skipped} non-DICOM, "
        f"failed {len(report.failures)} ({report.bytes / 1e6:.1f} MB read)",
        file=sys.stderr,
    )
    if report.outages:
        print(f"  waited {report.outages} time(s) for the database to come back", file=sys.stderr)
    for reason, count in report.reasons.most_common():
        print(f"  {count} x {reason}", file=sys.stderr)
    for path, reason in report.failures[:50]:
        print(f"  {path}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0
