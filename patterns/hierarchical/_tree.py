"""The shape of a hierarchy: supervisors (:class:`Node`), leaves (:class:`Team`), escalation.

Plain frozen data, so a tree can be built, checked and inspected without any agent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..common import AggregateFn, Aggregator, RouteFn, Router

__all__ = ["SLACK", "Escalation", "Node", "Team", "budget", "height", "paths", "walk"]

#: Seconds a derived node timeout adds on top of its children's, for routing and combining.
SLACK = 2.0


@dataclass(frozen=True)
class Team:
    """A leaf: whatever answers :class:`Job` requests on ``topic`` (often an Orchestrator).

    ``timeout`` is how long the parent waits for one answer.
    """

    name: str
    topic: str
    timeout: float = 60.0
    description: str = ""


@dataclass(frozen=True)
class Escalation:
    """What a node does when a child fails or times out.

    First it asks the same child again, ``retries`` more times. Then, if ``reroute`` maps the
    child to a sibling, it gives that sibling the work (with the same retries). If that
    fails too: ``on_failure="fail"`` fails this node, escalating to its parent;
    ``"report"`` carries on and lists the failure in a partial result.
    """

    retries: int = 1
    reroute: Mapping[str, str] = field(default_factory=dict)
    on_failure: Literal["fail", "report"] = "fail"


@dataclass(frozen=True)
class Node:
    """A supervisor: ``name`` (its agent name), ``topic`` (where it takes jobs), children.

    ``timeout`` is how long a parent waits for this node; by default it is derived from the
    children's timeouts and the escalation (the worst case of retries and reroutes).
    """

    name: str
    topic: str
    children: Sequence[Node | Team]
    route: RouteFn | Router | None = None
    combine: AggregateFn | Aggregator | None = None
    escalation: Escalation = field(default_factory=Escalation)
    timeout: float | None = None
    description: str = ""


def budget(child: Node | Team) -> float:
    """How long a parent waits for ``child``: its timeout, or the derived worst case."""
    if child.timeout is not None:
        return child.timeout
    assert isinstance(child, Node)
    tries = child.escalation.retries + 1
    by_name = {c.name: c for c in child.children}
    worst = 0.0
    for c in child.children:
        spent = tries * budget(c)
        alternate = child.escalation.reroute.get(c.name)
        if alternate is not None:
            spent += tries * budget(by_name[alternate])
        worst = max(worst, spent)
    return worst + SLACK


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every supervisor below it, depth first."""
    yield node
    for child in node.children:
        if isinstance(child, Node):
            yield from walk(child)


def paths(
    node: Node | Team, above: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Node | Team]]:
    """Every node and team below ``node`` (itself included) with its path of names."""
    path = (*above, node.name)
    yield path, node
    if isinstance(node, Node):
        for child in node.children:
            yield from paths(child, path)


def height(node: Node | Team) -> int:
    """Levels below ``node``: 0 for a team."""
    if isinstance(node, Team):
        return 0
    return 1 + max((height(c) for c in node.children), default=0)
