"""Apps: a named set of agents plus an optional entry point, loadable by the CLI.

``agentbus run FILE.py`` loads the file's :class:`App`, hosts its agents, starts a run
named after the app and awaits its ``main``; ``agentbus worker MODULE:OBJ`` hosts the
agents only, joining a system that another process drives.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .agent import Agent
from .errors import UsageError

if TYPE_CHECKING:
    from .budget import Budget
    from .runs import Run

__all__ = ["App", "load_app"]

MainFn = Callable[["Run"], Awaitable[Any]]
F = TypeVar("F", bound=MainFn)


class App:
    """``App(name, agents=[...])``; decorate ``async def main(run)`` with ``@app.main``.

    ``agents`` holds agent instances or zero-argument factories (called once per
    runtime that hosts the app, so each process gets fresh instances).
    ``partitions`` declares the app's partitioned topics (``{"orders": 8}``), which
    ``agentbus run`` and ``agentbus worker`` pass on as ``Runtime(partitions=)``.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Agent | Callable[[], Agent]] = (),
        *,
        main: MainFn | None = None,
        description: str = "",
        partitions: Mapping[str, int] | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not name:
            raise UsageError("an App needs a name")
        self.name = name
        self._agents = list(agents)
        self._main = main
        self.description = description
        #: Partitioned topics and their partition counts.
        self.partitions: dict[str, int] = dict(partitions or {})
        #: Limits for each run of the app (``rt.run(app)``, ``agentbus run``).
        self.budget = budget
        self._ref: str | None = None
        # Where the app is defined, to find how to load it again (see ``ref``).
        self._module: str | None = sys._getframe(1).f_globals.get("__name__")

    @property
    def ref(self) -> str | None:
        """How to load this app again (``MODULE:OBJ`` or ``FILE.py:OBJ``), recorded in
        each run started with ``rt.run(app)``; ``None`` when it cannot be found (an app
        that is no module's global)."""
        return self._ref if self._ref is not None else _find_ref(self, self._module)

    @ref.setter
    def ref(self, value: str | None) -> None:
        self._ref = value

    def main(self, fn: F) -> F:
        """Register the entry point: ``async def main(run: Run) -> result``."""
        self._main = fn
        return fn

    def build_agents(self) -> list[Agent]:
        """Fresh agent instances for one runtime."""
        out = []
        for item in self._agents:
            agent = item if isinstance(item, Agent) else item()
            if not isinstance(agent, Agent):
                raise UsageError(f"app {self.name!r}: {item!r} did not produce an Agent")
            out.append(agent)
        return out

    async def run_main(self, run: Run) -> Any:
        """Await the entry point. Raises :class:`UsageError` when there is none."""
        if self._main is None:
            raise UsageError(f"app {self.name!r} has no main; decorate one with @app.main")
        return await self._main(run)


def _find_ref(app: App, module_name: str | None) -> str | None:
    """``app``'s reference in the module that defined it, if it is a global there."""
    module = sys.modules.get(module_name or "")
    if module is None:
        return None
    attr = next((k for k, v in vars(module).items() if v is app), None)
    if attr is None:
        return None
    path = getattr(module, "__file__", None)
    if module_name == "__main__" or module.__spec__ is None:
        # A script, or a file loaded by path: loadable again only by its path.
        return f"{Path(path).resolve()}:{attr}" if path else None
    return f"{module_name}:{attr}"


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    module_name = f"agentbus_app_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # Let the script import siblings (shared helpers next to the example).
    sys.path.insert(0, str(path.parent.resolve()))
    spec.loader.exec_module(module)
    return module


def load_app(ref: str) -> App:
    """Load an :class:`App` from ``path/to/file.py[:OBJ]`` or ``package.module:OBJ``.

    Without ``:OBJ`` the module's only App (or the one named ``app``) is used.
    Raises :class:`UsageError` with a precise message when it cannot be loaded.
    """
    target, _, attr = ref.partition(":")
    if target.endswith(".py") or "/" in target:
        module = _load_file(Path(target))
        origin = str(Path(target).resolve())
    else:
        if not target:
            raise UsageError(f"expected MODULE:OBJ or FILE.py, got {ref!r}")
        # Like uvicorn and celery: modules are looked up from the working directory too.
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from exc
        origin = target
    if attr:
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise UsageError(f"module {target!r} has no attribute {attr!r}") from None
    else:
        apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
        if "app" in apps:
            attr, obj = "app", apps["app"]
        elif len(apps) == 1:
            attr, obj = next(iter(apps.items()))
        else:
            raise UsageError(f"{target!r} defines {len(apps)} App objects; name one: {target}:OBJ")
    if isinstance(obj, type) and issubclass(obj, Agent):
        obj = App(obj.agent_name, [obj])
    elif isinstance(obj, Agent):
        obj = App(obj.name, [obj])
    elif isinstance(obj, list | tuple) and all(isinstance(a, Agent) for a in obj):
        obj = App(attr, list(obj))
    if not isinstance(obj, App):
        raise UsageError(
            f"{ref!r} is a {type(obj).__name__}; expected an agentbus.App, an Agent or a list of agents"
        )
    obj.ref = f"{origin}:{attr}"
    return obj
