"""``dicomweb import`` throughput: N small synthetic instances (64x64, ~9 KB, the ones stow.py sends) written to a
folder once, then imported into a fresh data folder (embedded PostgreSQL, fsync on) by the real command.

The time is the command's wall time minus its start (the embedded PostgreSQL's first initialisation and the parsing
processes' start), which the command logs; both are printed.

Example::

    python benchmarks/import_files.py --count 20000 --folder /tmp/import-small
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from stow import SMALL_SIZE, UidSource, make_instances

SERIES_SIZE = 500  # instances per generated series
READY = re.compile(r"^(\S+ \S+) INFO dicomweb: archive ready", re.MULTILINE)
STOPPED = re.compile(r"^(\S+ \S+) INFO dicomweb: embedded PostgreSQL stopped", re.MULTILINE)


def write_instances(folder: Path, count: int) -> None:
    """``count`` small instances in ``folder`` (kept: the next run with the same count reuses them)."""
    if len(list(folder.glob("*.dcm"))) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    uids, rng = UidSource(), np.random.default_rng(7)
    written = 0
    while written < count:
        for data in make_instances(min(SERIES_SIZE, count - written), SMALL_SIZE, uids, rng):
            (folder / f"{written:07d}.dcm").write_bytes(data)
            written += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="instances (default 20000)")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "dicomweb-import-small")
    args = parser.parse_args()
    write_instances(args.folder, args.count)
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", "--data-dir", data_dir, str(args.folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "DICOMWEB_LOG_LEVEL": "info"},
        )
        wall = time.monotonic() - started
    print(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    ready, stopped = READY.search(result.stderr), STOPPED.search(result.stderr)
    if ready is None or stopped is None:
        print(f"{args.count} instances in {wall:.1f} s: {args.count / wall:.0f}/s (wall time)")
        return 0
    parse = "%Y-%m-%d %H:%M:%S,%f"
    importing = (datetime.strptime(stopped[1], parse) - datetime.strptime(ready[1], parse)).total_seconds()
    print(f"{args.count} instances: {importing:.1f} s importing, {args.count / importing:.0f}/s; {wall:.1f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
