"""Field rules: mask a JSON value because of its key name or its JSON path, whatever it contains.

Names are compared after normalisation (case, ``_``, ``-`` and spaces ignored); paths use a small
JSONPath subset: ``$``, ``.name``, ``['name']``, ``[n]``, ``[*]``, ``.*`` and ``..`` (any depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from bastion.errors import ConfigError
from bastion.masking.model import Strategy

ANY: Final = "\x00*"
DESCEND: Final = "\x00.."
Segment = str | int


def normalise_name(key: str) -> str:
    """Key as compared by name rules: lowercase, without ``_``, ``-``, ``.`` and spaces."""
    return key.lower().translate(_DROP_SEPARATORS)


_DROP_SEPARATORS: Final = str.maketrans("", "", "_-. ")
_STEP: Final = re.compile(r"\.(?=\.[A-Za-z_$*])|\.([A-Za-z_$][\w$-]*|\*)|\[(\*|\d+|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")


def compile_path(path: str) -> tuple[Segment, ...]:
    """Parse ``$.users[*].email`` into segments (str key, int index, ``ANY``, ``DESCEND``).

    Raises:
        ConfigError: the path is not in the supported subset.
    """
    if not path.startswith("$"):
        raise ConfigError(f"JSON path must start with '$': {path!r}")
    steps: list[Segment] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ConfigError(f"unsupported JSON path syntax at offset {pos}: {path!r}")
        name, bracket = m.group(1), m.group(2)
        if m.group(0) == ".":
            steps.append(DESCEND)
        elif name == "*" or bracket == "*":
            steps.append(ANY)
        elif name is not None:
            steps.append(name)
        elif bracket.isdigit():
            steps.append(int(bracket))
        else:
            steps.append(bracket[1:-1])
        pos = m.end()
    if steps and steps[-1] == DESCEND:
        raise ConfigError(f"JSON path cannot end with '..': {path!r}")
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Mask every value whose key or path matches, with one label and strategy."""

    name: str
    label: str
    strategy: Strategy
    names: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()
    paths: tuple[tuple[Segment, ...], ...] = ()

    def matches_key(self, key: str) -> bool:
        """True when ``key`` is one of the rule's names or matches one of its patterns."""
        return normalise_name(key) in self.names or any(p.search(key) for p in self.patterns)


PathState = frozenset[tuple[int, int]]
"""NFA state of path matching: (path index, step index) pairs still alive at this depth."""


def _closure(paths: tuple[tuple[Segment, ...], ...], states: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Add the states reachable by letting a ``..`` match zero segments."""
    todo = list(states)
    while todo:
        p, i = todo.pop()
        if i < len(paths[p]) and paths[p][i] == DESCEND and (p, i + 1) not in states:
            states.add((p, i + 1))
            todo.append((p, i + 1))
    return states


def initial_state(paths: tuple[tuple[Segment, ...], ...]) -> PathState:
    """State at ``$``: every path at its first step."""
    return frozenset(_closure(paths, {(p, 0) for p in range(len(paths))}))


def step_state(paths: tuple[tuple[Segment, ...], ...], state: PathState, seg: Segment) -> tuple[PathState, int]:
    """Advance ``state`` by one key or index; also return the index of a completed path, or -1."""
    nxt: set[tuple[int, int]] = set()
    for p, i in state:
        steps = paths[p]
        if i >= len(steps):
            continue
        want = steps[i]
        if want == DESCEND:
            nxt.add((p, i))  # ``..`` also swallows this segment
        elif want == ANY or want == seg:
            nxt.add((p, i + 1))
    nxt = _closure(paths, nxt)
    done = next((p for p, i in nxt if i == len(paths[p])), -1)
    return frozenset(nxt), done
