#!/usr/bin/env bash
# Install the official MCP Python SDK 1.x client into its own venv, tests/.venv-mcp1.
#
# Bastion's own venv runs mcp 2.x; the 1.x SDK cannot share it (same import name `mcp`). The
# end-to-end test tests/e2e/test_sdk1_client.py runs tests/sdk1/client_session.py with this venv's
# interpreter, so Bastion is proven against the 1.x client that most deployed agents still ship.
#
# Idempotent: a stamp file holds the requirement spec and the python used; when it matches and
# the venv's python can import mcp, nothing is installed. Override the spec with MCP1_SPEC (for
# instance MCP1_SPEC='mcp==1.20.0' to test the oldest supported 1.x client).
#
# Usage: scripts/install-sdk1-client.sh [--force]
# Prints, last, one line: `mcp1: <version> <absolute path to the venv's python>`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/tests/.venv-mcp1"
stamp="$venv/.bastion-mcp1.stamp"
python="${PYTHON:-python3}"
spec="${MCP1_SPEC:-mcp>=1.20,<2}"

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

want="spec=$spec python=$("$python" -c 'import sys; print(sys.version.split()[0])')"

installed_version() {  # prints the mcp version importable from the venv, or nothing
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true
}

if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" && -n "$(installed_version)" ]]; then
    echo "sdk1 client up to date ($venv)"
else
    echo "installing '$spec' into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "$spec"
    version="$(installed_version)"
    if [[ -z "$version" || "${version%%.*}" != "1" ]]; then
        echo "expected an mcp 1.x in $venv, got '${version:-nothing}'" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

echo "mcp1: $(installed_version) $venv/bin/python"
