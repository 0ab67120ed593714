"""parse_run turns the conformance CLI's SUMMARY block and checks.json files into a SuiteResult (no node needed)."""

import json
from pathlib import Path

import pytest
from harness import HarnessError, parse_run

URL = "http://127.0.0.1:1/mcp"


def _write(results: Path, scenario: str, statuses: list[str]) -> None:
    folder = results / f"server-{scenario}-2026-01-02T03-04-05-678Z"
    folder.mkdir()
    checks = [{"id": f"{scenario}-{i}", "name": "N", "status": s, "description": "d"} for i, s in enumerate(statuses)]
    (folder / "checks.json").write_text(json.dumps(checks))


def test_parses_summary_and_checks(tmp_path: Path) -> None:
    _write(tmp_path, "tools-list", ["SUCCESS"])
    _write(tmp_path, "server-sse-polling", ["INFO", "WARNING", "WARNING"])
    _write(tmp_path, "json-schema-2020-12", ["SUCCESS", "FAILURE", "SUCCESS"])
    output = (
        "=== SUMMARY ===\n✓ tools-list: 1 passed, 0 failed\n✓ server-sse-polling: 0 passed, 0 failed\n"
        "✗ json-schema-2020-12: 2 passed, 1 failed\n\nTotal: 3 passed, 1 failed\n"
    )
    result = parse_run(URL, output, 1, tmp_path)
    assert [s.name for s in result.scenarios] == ["tools-list", "server-sse-polling", "json-schema-2020-12"]
    assert (result.passed, result.failed, result.warnings) == (3, 1, 2)
    assert (result.scenarios_passed, result.scenarios_failed) == (2, 1)
    assert result.describe_failures() == "json-schema-2020-12/json-schema-2020-12-1: d"


def test_scenario_without_checks_file_counts_as_one_failure(tmp_path: Path) -> None:
    output = "✗ ping: 0 passed, 1 failed\nTotal: 0 passed, 1 failed\n"
    result = parse_run(URL, output, 1, tmp_path)
    assert result.scenario("ping").failed == 1


@pytest.mark.parametrize(
    ("output", "exit_code"),
    [
        ("✓ tools-list: 2 passed, 0 failed\nTotal: 2 passed, 0 failed\n", 0),  # counts disagree with checks.json
        ("✓ tools-list: 1 passed, 0 failed\nTotal: 9 passed, 0 failed\n", 0),  # Total disagrees
        ("✓ tools-list: 1 passed, 0 failed\nTotal: 1 passed, 0 failed\n", 1),  # exit code disagrees
        ("Error: something else entirely\n", 1),  # no SUMMARY at all
    ],
)
def test_inconsistent_output_raises(tmp_path: Path, output: str, exit_code: int) -> None:
    _write(tmp_path, "tools-list", ["SUCCESS"])
    with pytest.raises(HarnessError):
        parse_run(URL, output, exit_code, tmp_path)
