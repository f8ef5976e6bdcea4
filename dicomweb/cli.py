"""The ``dicomweb`` command: ``serve`` runs the server, ``import`` stores files from disk, ``token`` prints one,
``nodes`` lists, adds and removes the DICOM nodes, ``check`` reconciles the files with the index, ``backup`` and
``restore`` copy the archive out and back."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .auth import check_bind
from .config import SETTINGS, Settings
from .dimse.nodes import (
    MAX_DESCRIPTION,
    DicomNode,
    NodePermission,
    check_ae_title,
    check_host,
    check_port,
    parse_permissions,
)
from .lifetime import SUPERVISOR_PID
from .permissions import Role
from .tokens import MAX_QUERY_TOKEN_TTL_SECONDS, create_token, load_or_create_secret, secret_path

MAX_DEFAULT_WORKERS = 8  # with DICOMWEB_WORKERS=0; 8 x (pool + audit connections) stays within PostgreSQL's 100

if TYPE_CHECKING:
    import asyncpg

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
    token = sub.add_parser(
        "token",
        help="print a bearer token signed with the server's secret (DICOMWEB_JWT_SECRET_FILE or <data-dir>/jwt-secret)",
    )
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
    check = sub.add_parser("check", help="find (and with --repair, put aside) files the index and the disk disagree on")
    check.add_argument("--verify", action="store_true", help="re-hash every file (SHA-256) against its row")
    check.add_argument(
        "--repair", action="store_true", help="move orphan files to lost+found/, remove stale temp files"
    )
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    nodes = sub.add_parser("nodes", help="list, add and remove the DICOM nodes (the remote AEs the archive knows)")
    actions = nodes.add_subparsers(dest="nodes_command", required=True)
    listing = actions.add_parser("list", help="the registered nodes")
    add = actions.add_parser("add", help="register a node, or replace the one with its AE title")
    add.add_argument("ae_title", metavar="AET", help="the node's AE title (at most 16 characters)")
    add.add_argument("host", metavar="HOST", help="the host name or IP address it listens on")
    add.add_argument("port", metavar="PORT", type=int, help="the TCP port it listens on")
    add.add_argument(
        "--permit",
        default="",
        metavar="store,find,get,move,worklist,mpps,commit",
        help="what it may ask of the archive besides C-ECHO (default: nothing)",
    )
    add.add_argument("--description", default="", help="what the node is (e.g. 'CT 2')")
    add.add_argument(
        "--worklist-own-station",
        action="store_true",
        help="a worklist query naming no station gets the items scheduled on the node's own AE title only",
    )
    remove = actions.add_parser("remove", help="remove a node")
    remove.add_argument("ae_title", metavar="AET")
    backup = sub.add_parser("backup", help="copy the running archive (database dump and new files) into DEST")
    backup.add_argument("folder", metavar="DEST", type=Path, help="the backup folder (made if new; updated if not)")
    restore = sub.add_parser("restore", help="bring a backup back into an empty data folder (or empty database)")
    restore.add_argument("folder", metavar="SRC", type=Path, help="a folder made by dicomweb backup")
    for command in (backup, restore):
        command.add_argument("--copy", action="store_true", help="copy files even where a hard link would do")
    for command in (listing, add, remove, check, backup, restore):
        command.add_argument(
            "--data-dir", type=Path, help=f"{defaults['data_dir'].help} (env {defaults['data_dir'].env})"
        )
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
    if args.command in ("nodes", "check") and "DICOMWEB_LOG_LEVEL" not in os.environ:
        # A one-line answer, without the embedded PostgreSQL's start and stop (unless a log level is asked for).
        settings = settings.replace(log_level="warning")
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
    if args.command == "nodes":
        return nodes_command(settings, args)
    if args.command in ("backup", "restore"):
        from .backup import backup_command
        from .restore import restore_command

        return (backup_command if args.command == "backup" else restore_command)(settings, args.folder, args.copy)
    if args.command == "check":
        from .check import check

        return asyncio.run(check(settings, args.verify, args.repair, progress=not args.quiet))
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"dicomweb: {', '.join(missing)} does not exist", file=sys.stderr)
        return 2
    return asyncio.run(import_command(settings, args.paths, progress=not args.quiet))


def serve(settings: Settings) -> int:
    """Run the server; with several workers, uvicorn's supervisor runs ``create_app_from_env`` in each process
    and the embedded PostgreSQL (if any) is started here, once, for all of them."""
    import asyncpg
    import uvicorn

    from .app import create_app
    from .db.embedded import EmbeddedPostgres
    from .db.outage import DatabaseUnreachable
    from .db.pool import SchemaError, check_database
    from .reconcile import at_start_supervised
    from .zerocopy import HTTP_PROTOCOL

    workers = settings.workers or min(2 * (os.cpu_count() or 1), MAX_DEFAULT_WORKERS)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # dicomweb.accesslog writes one line per request
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
        "http": HTTP_PROTOCOL,  # uvicorn's httptools protocol with zero-copy sending of stored files
    }
    _log_where_things_are(settings)
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(settings, reconcile_at_start=True), **options))
        server.run()
        return 0 if server.started else 1
    try:
        dimse_port = _hold_dimse_port(settings)
    except OSError as exc:
        print(f"dicomweb: cannot start: {exc}", file=sys.stderr)
        return 1
    embedded = None
    with dimse_port or contextlib.nullcontext():
        if not settings.database_url:
            embedded = EmbeddedPostgres(settings.data_dir)
            settings = settings.replace(database_url=embedded.start())
        try:
            # Once, here: a worker that uvicorn starts while the database is unreachable must not fail its start,
            # which would stop every worker (uvicorn takes a failed start for a broken application).
            try:
                asyncio.run(check_database(settings.database_url))
                asyncio.run(at_start_supervised(settings))  # files and index reconciled before any worker stores
            except (SchemaError, DatabaseUnreachable, asyncpg.PostgresError) as exc:
                print(f"dicomweb: cannot start: {exc}", file=sys.stderr)
                return 1
            os.environ.update(settings.replace(workers=1).to_env())
            os.environ[SUPERVISOR_PID] = str(os.getpid())  # the workers end with this process (lifetime.py)
            # Each worker writes its metrics to files here; a scrape of any worker adds them up (dicomweb/metrics.py).
            metrics_dir = settings.data_dir / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            uvicorn.run("dicomweb.app:create_app_from_env", factory=True, workers=workers, **options)
        finally:
            if embedded is not None:
                embedded.stop()
    return 0


def _log_where_things_are(settings: Settings) -> None:
    """What a newcomer needs at the first start: the URLs, where the data and the token secret are, how to get a
    token (instead of the embedded PostgreSQL's output, now at debug level)."""
    import logging

    log = logging.getLogger("dicomweb")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    log.info(
        "DICOMweb at %s/dicomweb, the reporting API at %s/api/radiology (documented at %s/api-docs)", base, base, base
    )
    if settings.dimse_port:
        log.info("DICOM (DIMSE) as %s on port %d", settings.dimse_aet, settings.dimse_port)
    database = "an embedded PostgreSQL in " + str(settings.data_dir / "pg") if not settings.database_url else "yours"
    log.info("data in %s, database: %s", settings.data_dir, database)
    if settings.auth == "enabled":
        log.info(
            "tokens are signed with %s; get one with: dicomweb token --role ADMIN --subject me --data-dir %s",
            secret_path(settings.data_dir, settings.jwt_secret_file),
            settings.data_dir,
        )


def _hold_dimse_port(settings: Settings) -> socket.socket | None:
    """Bind the DIMSE port for the workers, which all listen on it with SO_REUSEPORT (``dimse/server.py``); bound
    here, never listening, so that the port is the archive's for the server's lifetime: a program already on it
    fails the start here, and none can take it while a worker restarts."""
    if not settings.dimse_port:
        return None
    guard = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pynetdicom's own server does
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        guard.bind((settings.host, settings.dimse_port))
    except OSError as exc:
        guard.close()
        if exc.errno == errno.EADDRINUSE:
            from .dimse.server import port_in_use

            raise OSError(port_in_use(settings.dimse_port)) from None
        raise
    return guard


def print_token(settings: Settings, subject: str, roles: list[str], ttl: str | None, study: str | None = None) -> int:
    """``dicomweb token``: an HS256 token from the data folder's secret, for the quick start and for scripts."""
    ttl = ttl or (DEFAULT_TTL if study is None else DEFAULT_STUDY_TTL)
    match = re.fullmatch(r"(\d+)([smhd]?)", ttl.strip())
    if match is None:
        print(f"dicomweb: --ttl {ttl!r} is not a duration like 3600, 30m, 8h or 7d", file=sys.stderr)
        return 2
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    secret = load_or_create_secret(settings.data_dir, settings.jwt_secret_file)
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
    from .app import on_store
    from .archive import open_archive
    from .db.outage import unreachable
    from .importer import DatabaseGone, import_paths

    # A stop (kill, systemd) unwinds the import as Ctrl-C does: the embedded PostgreSQL is stopped, not left running.
    importing = asyncio.current_task()
    assert importing is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, importing.cancel)
    try:
        async with open_archive(settings, on_store=on_store()) as archive:
            report = await import_paths(archive, paths, progress=progress)
    except asyncio.CancelledError:
        print("dicomweb: import stopped (SIGTERM); run it again to go on where it stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
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


def nodes_command(settings: Settings, args: argparse.Namespace) -> int:
    """``dicomweb nodes list | add | remove``: the arguments checked first (2 when invalid), then the archive's
    database, embedded or DICOMWEB_DATABASE_URL, opened as ``dicomweb import`` opens it (so also while a server
    runs on the same data folder); 1 when it cannot be reached."""
    from .db.outage import unreachable

    work: Coroutine[Any, Any, int]
    try:
        if args.nodes_command == "add":
            if len(args.description) > MAX_DESCRIPTION:
                raise ValueError(f"a description has at most {MAX_DESCRIPTION} characters")
            node = DicomNode(
                check_ae_title(args.ae_title),
                check_host(args.host),
                check_port(args.port),
                parse_permissions([p for p in args.permit.split(",") if p.strip()]),
                args.description,
                args.worklist_own_station,
            )
            work = _add_node(settings, node)
        elif args.nodes_command == "remove":
            work = _remove_node(settings, check_ae_title(args.ae_title))
        else:
            work = _list_nodes(settings)
    except ValueError as exc:
        print(f"dicomweb: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(work)
    except Exception as exc:
        if not unreachable(exc):
            raise
        print(f"dicomweb: {exc}; try again once the database is back", file=sys.stderr)
        return 1


@asynccontextmanager
async def _node_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The archive's database pool, as ``open_archive`` builds it for the server and ``dicomweb import``."""
    from .archive import open_archive

    async with open_archive(settings) as archive:
        yield archive.pool


async def _add_node(settings: Settings, node: DicomNode) -> int:
    from .db import nodes as db

    async with _node_pool(settings) as pool:
        created = await db.put_node(pool, node)
    print(f"{'added' if created else 'replaced'} {_node_line(node)}")
    return 0


async def _remove_node(settings: Settings, ae_title: str) -> int:
    from .db import nodes as db

    async with _node_pool(settings) as pool:
        removed = await db.delete_node(pool, ae_title)
    if not removed:
        print(f"dicomweb: no DICOM node {ae_title!r}", file=sys.stderr)
        return 1
    print(f"removed {ae_title}")
    return 0


async def _list_nodes(settings: Settings) -> int:
    from .db import nodes as db

    async with _node_pool(settings) as pool:
        nodes = await db.list_nodes(pool)
    if not nodes:
        print("no DICOM nodes are registered", file=sys.stderr)
        return 0
    rows = [("AE title", "host:port", "permissions", "description")]
    rows += [(n.ae_title, f"{n.host}:{n.port}", _permissions(n) or "-", n.description) for n in nodes]
    widths = [max(len(row[column]) for row in rows) for column in range(3)] + [0]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _permissions(node: DicomNode) -> str:
    permitted = ",".join(p.value for p in NodePermission if p in node.permissions)
    return permitted + (" (own station)" if node.worklist_own_station else "")


def _node_line(node: DicomNode) -> str:
    described = f" ({node.description})" if node.description else ""
    return f"{node.ae_title}{described} at {node.host}:{node.port}, permitted: {_permissions(node) or 'C-ECHO only'}"
