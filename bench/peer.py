"""The peer gateway: IBM ContextForge (``mcp-contextforge-gateway`` from PyPI), in its own venv.

Set up as its docs recommend for production as far as this machine allows: authentication
required (JWT), admin UI off, multiple workers (one per core), SQLite as the database (the docs
recommend PostgreSQL + Redis for production; neither is started by this harness — recorded in
the results). The bench upstream is registered as a gateway through the admin API, its tools
are put in a virtual server, and the load generator talks MCP Streamable HTTP to
``/servers/<id>/mcp`` with a bearer token.

Every step that fails is recorded with its exact reason in the results (``peer``), and the
peer is then left out of the figures: no numbers are ever made up.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer" / "cf-venv"
PACKAGE = "mcp-contextforge-gateway"


def _run(argv: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def ensure_installed(log: Any) -> tuple[str | None, str | None]:
    """(version, None) when installed in bench/.peer/cf-venv, else (None, reason)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        log(f"peer: creating {VENV} and installing {PACKAGE} (pip)")
        r = _run(["python3", "-m", "venv", str(VENV)])
        if r.returncode != 0:
            return None, f"venv creation failed: {r.stderr.strip()[-500:]}"
    r = _run([str(py), "-c", f"import importlib.metadata as m; print(m.version('{PACKAGE}'))"])
    if r.returncode != 0:
        r = _run([str(VENV / "bin" / "pip"), "install", "--quiet", PACKAGE], timeout=900)
        if r.returncode != 0:
            return None, f"pip install {PACKAGE} failed: {(r.stdout + r.stderr).strip()[-800:]}"
        r = _run([str(py), "-c", f"import importlib.metadata as m; print(m.version('{PACKAGE}'))"])
    return r.stdout.strip(), None


async def _http(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.request(method, url, json=body, headers={"authorization": f"Bearer {token}"})
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text[:500]


async def start(workdir: Path, upstream_url: str, procs: Any, log: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"attempted": True, "package": PACKAGE, "steps": []}

    def step(name: str, ok: bool, detail: str = "") -> None:
        info["steps"].append({"step": name, "ok": ok, "detail": detail[:1000]})
        log(f"peer: {name}: {'ok' if ok else 'FAILED'} {detail[:300]}")

    version, reason = ensure_installed(log)
    if version is None:
        step("install", False, reason or "")
        info["reason"] = reason
        return info
    info["version"] = version
    step("install", True, version)

    from run import free_port, wait_http  # the harness's own helpers

    port = free_port()
    secret = secrets.token_urlsafe(48)
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
        "HOST": "127.0.0.1", "PORT": str(port),
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": secret, "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
        "PLATFORM_ADMIN_EMAIL": "admin@bench.example.com", "PLATFORM_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "BASIC_AUTH_PASSWORD": secrets.token_urlsafe(24),
        "AUTH_REQUIRED": "true", "MCPGATEWAY_UI_ENABLED": "false", "MCPGATEWAY_ADMIN_API_ENABLED": "true",
        "DATABASE_URL": f"sqlite:///{workdir}/contextforge.db", "CACHE_TYPE": "database",
        "SSRF_ALLOW_LOCALHOST": "true", "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
        "LOG_LEVEL": "ERROR", "SECURE_COOKIES": "false",
        # Its default per-tier limit (100 requests/min, then a 15-minute lockout) would measure the
        # limiter, not the gateway: a throughput benchmark needs it off (Bastion runs none either).
        "RATE_LIMITING_ENABLED": "false", "RATE_LIMIT_LOCKOUT_ENABLED": "false", "TOOL_RATE_LIMIT": "1000000",
    }
    info["env"] = {k: ("<secret>" if "SECRET" in k or "PASSWORD" in k else v) for k, v in env.items() if k not in ("PATH", "HOME")}
    argv = [str(VENV / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(os.cpu_count() or 2)]
    info["argv"] = argv[1:]

    async def launch() -> int:
        proc = procs.start(argv, workdir / "contextforge.log", env=env, cwd=str(workdir))
        await wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
        return int(proc.pid)

    try:
        pid = await launch()
    except Exception as exc:
        tail = (workdir / "contextforge.log").read_text(errors="replace")[-1500:]
        step("start", False, f"{exc}; log tail: {tail}")
        info["reason"] = f"could not start: {exc}"
        return info
    step("start", True, f"port {port}")

    r = _run([str(VENV / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", env["PLATFORM_ADMIN_EMAIL"],
              "--exp", "600", f"--secret={secret}", "--admin"], env={**env, "PATH": env["PATH"]})
    token = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
    if not token:
        step("token", False, (r.stdout + r.stderr)[-800:])
        info["reason"] = "could not mint an admin token"
        return info
    step("token", True)
    base = f"http://127.0.0.1:{port}"
    status, body = await _http("POST", f"{base}/gateways", token, {"name": "fast", "url": upstream_url, "transport": "STREAMABLEHTTP"})
    if status >= 300:
        step("register upstream", False, f"HTTP {status}: {json.dumps(body)[:800]}")
        info["reason"] = f"registering the upstream failed: HTTP {status}"
        return info
    step("register upstream", True)
    status, tools = await _http("GET", f"{base}/tools", token)
    tools = tools.get("items", tools) if isinstance(tools, dict) else tools
    if status >= 300 or not isinstance(tools, list) or not tools:
        step("list tools", False, f"HTTP {status}: {json.dumps(tools)[:800]}")
        info["reason"] = "no tools discovered from the upstream"
        return info
    by_orig = {t.get("originalName") or t.get("original_name") or t.get("name"): t for t in tools}
    step("list tools", True, ", ".join(str(t.get("name")) for t in tools))
    status, server = await _http("POST", f"{base}/servers", token,
                                 {"server": {"name": "bench", "associated_tools": [t["id"] for t in tools]}})
    if status == 422:  # older/newer API shape without the wrapper
        status, server = await _http("POST", f"{base}/servers", token, {"name": "bench", "associated_tools": [t["id"] for t in tools]})
    if status >= 300 or not isinstance(server, dict) or "id" not in server:
        step("create virtual server", False, f"HTTP {status}: {json.dumps(server)[:800]}")
        info["reason"] = f"creating the virtual server failed: HTTP {status}"
        return info
    step("create virtual server", True, server["id"])
    small, large = by_orig.get("small", {}).get("name"), by_orig.get("large", {}).get("name")
    prefix = small[: -len("small")] if small and small.endswith("small") else ""
    if not small or not large or large != prefix + "large":
        step("tool names", False, f"small={small!r} large={large!r}")
        info["reason"] = "unexpected tool naming"
        return info
    url = f"{base}/servers/{server['id']}/mcp"
    target = {"url": url, "headers": {"authorization": f"Bearer {token}"}}
    info.update({"target": target, "pid": pid, "tool_prefix": prefix, "url": url})
    info["restart"] = None  # memory is measured on the running instance only (see docs)
    return info


if __name__ == "__main__":
    print(ensure_installed(print))
    _ = asyncio, time
