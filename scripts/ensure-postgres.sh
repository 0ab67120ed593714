#!/usr/bin/env bash
# Make sure the PostgreSQL server the contract tests use (127.0.0.1:5432, database `test`) is up.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
    sleep 1
done
echo "PostgreSQL is not reachable at 127.0.0.1:5432; tests marked 'postgres' will fail" >&2
exit 1
