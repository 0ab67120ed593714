"""List filtering: an item is listed iff some call to it could be allowed or approved for this caller."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import EngineFactory

from bastion.policy import Kind

POLICY = """
policy:
  rules:
    - id: sre-query
      match: {groups: [sre], server: postgres, tool: query}
      action: allow
    - id: no-drop
      match: {tool: "drop_*"}
      action: deny
    - id: analysts-read-only
      match: {groups: [analysts], annotations: {readOnlyHint: true}}
      action: allow
    - id: dev-search
      match: {groups: [dev], tool: search, args: {scope: {eq: own}}}
      action: allow
    - id: dev-search-cel
      match: {groups: [dev], tool: export}
      when: "size(args) == 0"
      action: require_approval
    - id: ext-users
      match: {groups: [ext], server: ext}
      action: allow
    - id: ext-no-destructive
      match: {server: ext, annotations: {destructiveHint: true}}
      action: deny
    - id: night-deny
      match: {tool: deploy, time: {hours: "00:00-06:00"}}
      action: deny
    - id: ops-deploy
      match: {groups: [ops], tool: deploy}
      action: allow
    - id: public-files
      match: {resource: "file:///public/*"}
      action: allow
    - id: mask-only
      match: {groups: [nobody]}
      mask: [pii]
"""

READ_ONLY = {"readOnlyHint": True}

CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("allowed caller", dict(groups={"sre"}, server="postgres", name="query"), True),
    ("no rule allows", dict(groups={"dev"}, server="postgres", name="query"), False),
    ("certain deny hides even when another rule allows", dict(groups={"sre"}, server="postgres", name="drop_db"),
     False),
    ("trusted read-only annotation grants", dict(groups={"analysts"}, server="wiki", name="read",
     annotations=READ_ONLY), True),
    ("untrusted annotation grants nothing", dict(groups={"analysts"}, server="wiki", name="read",
     annotations=READ_ONLY, upstream_trusted=False), False),
    ("argument-dependent allow counts as possible", dict(groups={"dev"}, server="any", name="search"), True),
    ("CEL-dependent approval counts as possible", dict(groups={"dev"}, server="any", name="export"), True),
    ("untrusted upstream may be destructive: deny hides", dict(groups={"ext"}, server="ext", name="x",
     annotations=READ_ONLY, upstream_trusted=False), False),
    ("trusted read-only tool stays", dict(groups={"ext"}, server="ext", name="x", annotations=READ_ONLY), True),
    ("time-dependent deny does not hide", dict(groups={"ops"}, server="ci", name="deploy"), True),
    ("resource URI glob", dict(kind=Kind.RESOURCE, server="files", name="file:///public/a.txt"), True),
    ("resource outside the glob", dict(kind=Kind.RESOURCE, server="files", name="file:///secret/a.txt"), False),
    ("mask-only rules grant nothing", dict(groups={"nobody"}, server="x", name="y"), False),
]


@pytest.mark.parametrize(("case", "item", "visible"), CASES, ids=[c[0] for c in CASES])
def test_visibility_when_caller_and_item_vary(engine_from: EngineFactory, case: str, item: dict[str, Any],
                                              visible: bool) -> None:
    arguments: dict[str, Any] = dict(subject="alice", groups=frozenset(), kind=Kind.TOOL, annotations={},
                                     upstream_trusted=True)
    arguments.update(item)
    arguments["groups"] = frozenset(arguments["groups"])
    assert engine_from(POLICY).visible(**arguments) is visible


def test_everything_is_listed_when_default_allows_and_nothing_denies(engine_from: EngineFactory) -> None:
    engine = engine_from("""
    policy:
      default: allow
      rules:
        - id: no-drop
          match: {tool: "drop_*"}
          action: deny
    """)
    assert engine.visible("a", frozenset(), "s", Kind.TOOL, "list", {}, False) is True
    assert engine.visible("a", frozenset(), "s", Kind.TOOL, "drop_x", {}, False) is False
