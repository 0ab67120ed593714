"""Hot reload of a separate ``policy_file``: poll, validate, swap the engine atomically.

Owns the current ``PolicyEngine`` for one file. Each check reads the file and hashes its bytes in
a worker thread (mtimes are too coarse to trust alone); new bytes are compiled in the thread too.
An invalid file keeps the old engine and is reported once; a valid one with a different policy
hash is announced through ``on_change`` (awaited, e.g. an audit record) and only then swapped in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from bastion.errors import ConfigError
from bastion.policy.engine import PolicyEngine
from bastion.policy.settings import read_policy_file

logger = logging.getLogger(__name__)

OnChange = Callable[[str, str], Awaitable[None]]
"""``on_change(old_policy_hash, new_policy_hash)``; if it raises, the new policy is not used."""
OnError = Callable[[ConfigError], None]
"""Called once per distinct failure to read or compile the file; the old engine stays in force."""


def _log_error(error: ConfigError) -> None:
    logger.error("policy file rejected; keeping the previous policy: %s", error)


def _read(path: Path) -> tuple[str, str]:
    text = read_policy_file(path)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


class PolicyWatcher:
    """The live engine for one policy file.

    Read ``watcher.engine`` once per exchange and keep that reference: a swap never changes an
    engine already handed out, so in-flight calls finish under the policy they started with.
    """

    def __init__(self, path: Path, engine: PolicyEngine, file_sha256: str, *, on_change: OnChange,
                 on_error: OnError = _log_error, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ConfigError("policy reload interval_s must be positive")
        self.path = path
        self.interval_s = interval_s
        self._engine = engine
        self._file_sha256: str | None = file_sha256
        self._last_error: str | None = None
        self._on_change = on_change
        self._on_error = on_error

    @classmethod
    async def open(cls, path: Path, *, on_change: OnChange, on_error: OnError = _log_error,
                   interval_s: float = 2.0) -> PolicyWatcher:
        """Load the file for the first time.

        Raises:
            ConfigError: the file cannot be read or its policy is invalid (nothing to fall back to).
        """
        text, digest = await asyncio.to_thread(_read, path)
        engine = await asyncio.to_thread(PolicyEngine.from_text, text, source=str(path))
        return cls(path, engine, digest, on_change=on_change, on_error=on_error, interval_s=interval_s)

    @property
    def engine(self) -> PolicyEngine:
        """The engine in force now."""
        return self._engine

    async def check_once(self) -> bool:
        """Look at the file once; returns True iff a new policy was swapped in."""
        try:
            text, digest = await asyncio.to_thread(_read, self.path)
        except ConfigError as exc:
            self._file_sha256 = None  # reconsider the file when it comes back
            self._report(exc)
            return False
        if digest == self._file_sha256:
            return False
        try:
            engine = await asyncio.to_thread(PolicyEngine.from_text, text, source=str(self.path))
        except ConfigError as exc:
            self._file_sha256 = digest
            self._report(exc)
            return False
        self._last_error = None
        old = self._engine
        if engine.policy_hash == old.policy_hash:
            self._file_sha256 = digest  # formatting or comments changed, not the policy
            return False
        try:
            await self._on_change(old.policy_hash, engine.policy_hash)
        except Exception:
            logger.exception("policy change callback failed; keeping policy %s", old.policy_hash)
            return False  # digest not recorded: the next check tries again
        self._engine = engine
        self._file_sha256 = digest
        return True

    async def run(self) -> None:
        """Check every ``interval_s`` seconds until cancelled (run it in the app's TaskGroup)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()

    def _report(self, error: ConfigError) -> None:
        message = str(error)
        if message == self._last_error:
            return
        self._last_error = message
        try:
            self._on_error(error)
        except Exception:
            logger.exception("policy error callback failed")
