"""The validated tree of supervisors and the agents that run it."""

from __future__ import annotations

from agentbus import UsageError, handle

from ..common import check_step
from ._supervisor import Supervisor
from ._tree import Node, Team, budget, height, paths, walk

__all__ = ["Hierarchy"]


class Hierarchy:
    """A validated tree of :class:`Node` supervisors over :class:`Team` leaves.

    ``max_depth`` bounds the levels below the root (a team under the root is at depth 1);
    ``max_fanout`` bounds each node's children and delegations per job. Raises
    :class:`UsageError` when the tree breaks a limit, a node has no children, names or
    topics collide, a reroute names no sibling, or a setting is out of range.
    """

    def __init__(self, root: Node, *, max_depth: int = 4, max_fanout: int = 8) -> None:
        if max_depth < 1 or max_fanout < 1:
            raise UsageError(
                f"max_depth and max_fanout must be at least 1, got {max_depth!r}, {max_fanout!r}"
            )
        self.root = root
        self.max_depth = max_depth
        self.max_fanout = max_fanout
        for path, _ in paths(root, ()):
            if len(path) - 1 > max_depth:
                raise UsageError(
                    f"the hierarchy is {len(path) - 1} levels deep at {'/'.join(path)!r}; "
                    f"max_depth is {max_depth}"
                )
        nodes = list(walk(root))  # after the depth check: a cyclic tree never gets here
        node_topics = {n.topic for n in nodes}
        for node in walk(root):
            self._check_node(node)
            for team in node.children:
                if isinstance(team, Team):
                    self._check_team(team, node_topics)
        for label, values in (
            ("names", [n.name for n in nodes]),
            ("topics", [n.topic for n in nodes]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise UsageError(f"supervisor {label} must be unique in a hierarchy: {repeated!r}")

    @staticmethod
    def _check_team(team: Team, node_topics: set[str]) -> None:
        handle(team.topic)  # validates the topic name now
        if team.topic in node_topics:
            raise UsageError(
                f"team {team.name!r} uses the topic of a supervisor ({team.topic!r}); "
                "put that Node in the tree instead, so depth and cycles can be checked"
            )
        if team.timeout <= 0:
            raise UsageError(f"team {team.name!r}: timeout must be positive, got {team.timeout!r}")

    def _check_node(self, node: Node) -> None:
        handle(node.topic)  # validates the topic name now
        names = [c.name for c in node.children]
        if not names:
            raise UsageError(f"supervisor {node.name!r} has no children")
        if len(names) > self.max_fanout:
            raise UsageError(
                f"supervisor {node.name!r} has {len(names)} children; max_fanout is {self.max_fanout}"
            )
        if len(set(names)) != len(names):
            raise UsageError(f"supervisor {node.name!r} has two children with one name: {names!r}")
        esc = node.escalation
        if esc.retries < 0 or esc.on_failure not in ("fail", "report"):
            raise UsageError(
                f"supervisor {node.name!r}: escalation needs retries >= 0 and on_failure "
                f"'fail' or 'report', got {esc.retries!r}, {esc.on_failure!r}"
            )
        for failed, alternate in esc.reroute.items():
            if failed not in names or alternate not in names or failed == alternate:
                raise UsageError(
                    f"supervisor {node.name!r}: reroute {failed!r} -> {alternate!r} must name "
                    f"two different children of {names!r}"
                )
        if node.timeout is not None and node.timeout <= 0:
            raise UsageError(f"supervisor {node.name!r}: timeout must be positive")
        if node.route is not None:
            check_step(node.route, "route", f"route of {node.name!r}")
        if node.combine is not None:
            check_step(node.combine, "aggregate", f"combine of {node.name!r}")

    @property
    def topic(self) -> str:
        """Where the root takes jobs."""
        return self.root.topic

    @property
    def timeout(self) -> float:
        """How long a requester of the root should wait at most (its derived budget)."""
        return budget(self.root)

    def agents(self) -> list[Supervisor]:
        """One :class:`Supervisor` agent per node, root first; host them in any runtimes."""
        return [
            Supervisor(
                node, height=height(node), max_depth=self.max_depth, max_fanout=self.max_fanout
            )
            for node in walk(self.root)
        ]
