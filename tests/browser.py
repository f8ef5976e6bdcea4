"""Debian's Chromium driven by the node scripts in ``tests/e2e/`` through playwright-core, for the tests in a real
browser (``test_ohif.py``, ``test_swagger.py``): the check that the tools are installed, and running one script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).parent / "e2e"
ARTIFACTS = E2E / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def require_tools(*others: tuple[str, Path]) -> None:
    """Skip (locally) or fail (CI) unless chromium, playwright-core, node and ``others`` (what, a file it installs)
    are installed (``tests/e2e/setup.sh`` installs them all)."""
    missing = [
        what
        for what, path in (
            ("Debian's chromium (/usr/bin/chromium)", CHROMIUM),
            ("playwright-core (tests/e2e/node_modules)", E2E / "node_modules" / "playwright-core"),
            *others,
        )
        if not path.exists()
    ]
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        message = f"missing {', '.join(missing)}: run tests/e2e/setup.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def artifacts_of(request: pytest.FixtureRequest) -> Path:
    """``tests/e2e/artifacts/<test>/``, emptied: where a driver saves its screenshots and report."""
    artifacts: Path = ARTIFACTS / request.node.name
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    return artifacts


def drive(driver: Path, job: dict[str, Any], artifacts: Path, timeout: float) -> dict[str, Any]:
    """Run ``node driver '<job JSON>'``; its JSON report from stdout (saved with its stderr in ``artifacts``)."""
    process = subprocess.Popen(
        ["node", str(driver), json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=E2E,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            # SIGTERM first: playwright closes the browser on it (a killed node would leave Chromium behind).
            process.terminate()
            try:
                process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    (artifacts / "driver.log").write_text(stderr)
    assert process.returncode == 0, f"the driver failed:\n{stderr[-5000:]}"
    report: dict[str, Any] = json.loads(stdout)
    (artifacts / "report.json").write_text(json.dumps(report, indent=2))
    return report
