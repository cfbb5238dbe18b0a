"""What a teacher sees, made from the agent's answers: package cards, their states, the task list.

Nothing here knows of HTTP requests: the classes take the bridge's client and models and the
user's session record, and return plain view models for the templates.

- `TaskBoard` keeps the agent's task list for the whole portal. It asks `/tasks.json` with
  the last event id it saw and no wait, so the agent answers the lists only when a task
  changed, and at most every `min_interval` seconds. (`/tasks.json` names each list;
  `/tasks_status.json` flattens them, and the bridge must then guess the list from the dates,
  which reads a task that Comptoir's agent cancelled, dated when cancelled, as failed.)
- `Catalog` is the user's package list (`/packages.json?latest=1` with their token), sorted,
  with a folded search text per package. `UserBoard.catalog` keeps it in the session record
  for `cache_seconds`, and drops it as soon as a task changes state.
- A `Card` is a package with the state the teacher should see. The state combines the
  package's install state on the machine with the tasks about it: a pending task makes it
  *queued*, a running one *installing* or *removing*, and the user's own latest task, when it
  failed, makes it *failed* with the reason from the task's summary. A cancelled install that
  had started makes it *cancelled* (with a retry): the user's own latest task, or anyone's when
  the agent records
  the package as ERROR because the cancellation stopped its `setup.py` half-way (the card then
  says that the installation may be incomplete, rather than that it failed).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from agent_bridge.client import AgentClient
from agent_bridge.models import AgentPackage, Session, Task
from portal.sessions import SessionRecord

__all__ = [
    "LIVE_STATES",
    "Card",
    "CardState",
    "Catalog",
    "TaskBoard",
    "TaskItem",
    "UserBoard",
    "fold",
    "step_of",
]

CardState = Literal[
    "available",
    "installed",
    "update-available",
    "failed",
    "cancelled",
    "queued",
    "installing",
    "removing",
]
LIVE_STATES: Final = frozenset({"queued", "installing", "removing"})
"""States that change by themselves: their cards are refreshed by the status box's poll."""

_INSTALL: Final = "WaptPackageInstall"
_REMOVE: Final = "WaptPackageRemove"
_STEPS: Final = ("downloading", "verifying", "installing", "removing", "reading")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_FAILURE_LOG_LINES: Final = 40
_FINISHED_SHOWN: Final = 5
_QUALIFIED_EXCEPTION: Final = re.compile(r"^(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*: ")


def fold(text: str) -> str:
    """`text` without accents, case-folded: "Géométrie" and "geometrie" match."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def step_of(task: Task) -> str | None:
    """The step the agent reports (`runstatus`): downloading, verifying, installing, removing,
    reading (the indexes), or None for anything else."""
    words = task.runstatus.split()
    if words and words[0].lower() in _STEPS:
        return words[0].lower()
    return None


def is_uuid(text: str) -> bool:
    """True for a lowercase 8-4-4-4-12 hexadecimal UUID, the only names icons may have."""
    return _UUID.fullmatch(text) is not None


def dom_id(package: str) -> str:
    """A stable HTML id for a package's card (package names are untrusted text)."""
    return "card-" + hashlib.sha256(package.encode("utf-8")).hexdigest()[:16]


# --- tasks ---------------------------------------------------------------------------------


class TaskBoard:
    """The agent's tasks, shared by every request, asked again only when one changed.

    Raises (from `tasks`) what `AgentClient.tasks` raises.
    """

    def __init__(
        self,
        client: AgentClient,
        *,
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last_event_id = -1
        self._checked: float | None = None
        self._tasks: dict[int, Task] = {}

    def tasks(self, *, fresh: bool = False) -> dict[int, Task]:
        """Every task the agent lists, by id (a cancelled listing wins over an error one).

        `fresh` asks the agent even if it was asked less than `min_interval` seconds ago
        (after this portal queued or cancelled a task).
        """
        with self._lock:
            now = self.clock()
            if fresh or self._checked is None or now - self._checked >= self.min_interval:
                listing = self.client.tasks(self._last_event_id, timeout_ms=0)
                if listing is not None:
                    self._tasks = {task.id: task for task in listing.all()}
                    self._last_event_id = listing.last_event_id
                self._checked = now
            return self._tasks


@dataclass(frozen=True)
class TaskItem:
    """One task in the status box. `title` is the package's display name, if known."""

    task: Task
    title: str
    package: str | None
    kind: Literal["install", "remove", "other"]
    own: bool
    position: int | None
    #: a cancelled install that stopped `setup.py` half-way: the package may be half-installed
    incomplete: bool = False

    @property
    def state(self) -> str:
        return self.task.state

    @property
    def step(self) -> str | None:
        return step_of(self.task)

    @property
    def active(self) -> bool:
        return self.task.state in ("pending", "running")

    @property
    def percent(self) -> int:
        return max(0, min(100, round(self.task.progress)))

    @property
    def bar_class(self) -> str:
        """`p0`…`p100` in steps of 5: the width of the bar, set by the style sheet (no inline
        style under the CSP)."""
        return f"p{5 * round(self.percent / 5)}"

    @property
    def reason(self) -> str:
        """Why a failed task failed: its summary, else its last log line, without the module
        path of the exception ("agent_bridge.agent.installer.InstallError: " goes)."""
        lines = [line for line in self.task.logs.splitlines() if line.strip()]
        reason = self.task.summary.strip() or (lines[-1].strip() if lines else "")
        return _QUALIFIED_EXCEPTION.sub("", reason, count=1)

    @property
    def log_tail(self) -> str:
        return "\n".join(self.task.logs.splitlines()[-_FAILURE_LOG_LINES:])


# --- catalog -------------------------------------------------------------------------------


def display_name(package: AgentPackage) -> str:
    return package.name.strip() or package.package


SEARCHES_KEPT = 256


@dataclass(frozen=True)
class Catalog:
    """The packages a user may see, sorted by display name, with what search needs."""

    packages: tuple[AgentPackage, ...]
    search_text: Mapping[str, str]
    categories: tuple[str, ...]
    signature: tuple[tuple[int, str], ...]
    fetched_at: float
    #: package name -> display name, for the status box
    titles: Mapping[str, str] = field(default_factory=dict)
    #: recent searches: (query, category) -> result; a catalog is rebuilt, never changed
    searches: dict[tuple[str, str], list[AgentPackage]] = field(default_factory=dict)
    #: the agent's tag for the answer this catalog was built from
    etag: str | None = None

    @classmethod
    def build(
        cls,
        packages: Iterable[AgentPackage],
        *,
        signature: tuple[tuple[int, str], ...],
        now: float,
        etag: str | None = None,
    ) -> Catalog:
        ordered = tuple(sorted(packages, key=lambda p: (fold(display_name(p)), p.package)))
        search_text = {
            p.package: fold(
                " ".join(
                    (
                        p.package,
                        p.name,
                        p.description,
                        p.description_fr,
                        p.editor,
                        p.keywords,
                        " ".join(p.categories),
                    )
                )
            )
            for p in ordered
        }
        categories = tuple(
            sorted({c for p in ordered for c in p.categories if c.strip()}, key=fold)
        )
        titles = {p.package: display_name(p) for p in ordered}
        return cls(ordered, search_text, categories, signature, now, titles, {}, etag)

    def get(self, name: str) -> AgentPackage | None:
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, AgentPackage]:
        return {p.package: p for p in self.packages}

    def search(self, query: str = "", category: str = "") -> list[AgentPackage]:
        """Packages whose text holds every word of `query` (accents and case ignored), in
        `category` when one is given."""
        words = fold(query).split()
        key = (" ".join(words), category)
        found = self.searches.get(key)
        if found is not None:
            return found
        found = [
            p
            for p in self.packages
            if (not category or category in p.categories)
            and all(word in self.search_text[p.package] for word in words)
        ]
        if len(self.searches) >= SEARCHES_KEPT:
            self.searches.clear()
        self.searches[key] = found
        return found


@dataclass(frozen=True)
class Card:
    """A package as its card shows it. `task` is the task that decides a live or failed state;
    `own` says whether it is the user's (they may cancel it)."""

    package: AgentPackage
    state: CardState
    task: Task | None = None
    own: bool = False
    position: int | None = None

    @property
    def name(self) -> str:
        return self.package.package

    @property
    def title(self) -> str:
        return display_name(self.package)

    @property
    def dom_id(self) -> str:
        return dom_id(self.package.package)

    @property
    def icon_uuid(self) -> str | None:
        uuid = self.package.package_uuid.strip().lower()
        return uuid if is_uuid(uuid) else None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def on_machine(self) -> bool:
        """Installed here (or failed to be), or being removed: a card of "My software"."""
        return self.package.install_status is not None or self.state in ("failed", "removing")

    @property
    def incomplete(self) -> bool:
        """The agent records the package as ERROR: a cancelled install stopped half-way."""
        return self.package.install_status == "ERROR"

    @property
    def item(self) -> TaskItem | None:
        if self.task is None:
            return None
        return _item(self.task, self.title, self.own, self.position, self.incomplete)

    def description(self, lang: str) -> str:
        return self.package.description_for(lang)


def _kind(task: Task) -> Literal["install", "remove", "other"]:
    if task.classname == _INSTALL:
        return "install"
    if task.classname == _REMOVE:
        return "remove"
    return "other"


def _item(
    task: Task, title: str, own: bool, position: int | None, incomplete: bool = False
) -> TaskItem:
    return TaskItem(task, title, task.package, _kind(task), own, position, incomplete)


# --- one user's board ----------------------------------------------------------------------


class UserBoard:
    """One signed-in user's view of the machine: their catalog, cards and tasks.

    `record` is their session record: it keeps the catalog for `cache_seconds`, the ids of the
    tasks they queued here, and the task states the status box last showed.

    Raises (from every method that asks the agent) the bridge's errors.
    """

    def __init__(
        self,
        client: AgentClient,
        tasks: TaskBoard,
        record: SessionRecord,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert record.agent_session is not None
        self.client = client
        self.task_board = tasks
        self.record = record
        self.session: Session = record.agent_session
        self.cache_seconds = cache_seconds
        self.clock = clock

    @property
    def username(self) -> str:
        return self.session.username

    # -- tasks --

    def _own_ids(self) -> set[int]:
        ids: set[int] = self.record.cache.setdefault("task_ids", set())
        return ids

    def remember(self, tasks: Iterable[Task]) -> None:
        """Note tasks this user queued here: their results are shown to them."""
        with self.record.lock:
            self._own_ids().update(task.id for task in tasks)
            self.record.cache.pop("catalog", None)

    def is_own(self, task: Task) -> bool:
        return task.created_by == self.username or task.id in self._own_ids()

    def tasks(self, *, fresh: bool = False) -> dict[int, Task]:
        return self.task_board.tasks(fresh=fresh)

    @staticmethod
    def _signature(tasks: Mapping[int, Task]) -> tuple[tuple[int, str], ...]:
        return tuple(sorted((task.id, task.state) for task in tasks.values()))

    @staticmethod
    def _positions(tasks: Mapping[int, Task]) -> dict[int, int]:
        """Place in the queue of each pending task (1: next to run)."""
        running = sum(1 for t in tasks.values() if t.state == "running")
        pending = sorted(
            (t for t in tasks.values() if t.state == "pending"), key=lambda t: (t.priority, t.id)
        )
        return {task.id: index + 1 + running for index, task in enumerate(pending)}

    # -- catalog --

    def catalog(self, *, tasks: Mapping[int, Task] | None = None) -> Catalog:
        """The user's catalog: the cached one, unless it is old or a task changed state."""
        tasks = self.tasks() if tasks is None else tasks
        signature = self._signature(tasks)
        # One rebuild at a time per session, and the others meanwhile keep the catalog that
        # just expired (when no task of the user's changed): no request waits for it.
        lock: threading.Lock = self.record.cache.setdefault("catalog_lock", threading.Lock())
        kept = self.record.cache.get("catalog")
        previous = kept if isinstance(kept, Catalog) and kept.signature == signature else None
        if previous is not None and self.clock() - previous.fetched_at < self.cache_seconds:
            return previous
        if not lock.acquire(blocking=previous is None):
            assert previous is not None
            return previous
        try:
            cached = self.record.cache.get("catalog")
            now = self.clock()
            if (
                isinstance(cached, Catalog)
                and cached.signature == signature
                and now - cached.fetched_at < self.cache_seconds
            ):
                return cached
            # Ask the agent for the list only if it changed since the one we hold.
            etag = previous.etag if previous is not None else None
            packages, etag = self.client.packages_if_changed(self.session, etag)
            if packages is None and previous is not None:
                catalog = dataclasses.replace(previous, fetched_at=now)
            else:
                assert packages is not None
                catalog = Catalog.build(packages, signature=signature, now=now, etag=etag)
            self.record.cache["catalog"] = catalog
            return catalog
        finally:
            lock.release()

    def cards(
        self, packages: Sequence[AgentPackage], tasks: Mapping[int, Task] | None = None
    ) -> list[Card]:
        """The cards of `packages`, with the states the tasks give them."""
        tasks = self.tasks() if tasks is None else tasks
        positions = self._positions(tasks)
        about: dict[str, list[Task]] = {}
        for task in tasks.values():
            if task.classname in (_INSTALL, _REMOVE):
                for name in task.packages:
                    about.setdefault(name, []).append(task)
        return [self._card(p, about.get(p.package, []), positions) for p in packages]

    def _card(self, package: AgentPackage, tasks: list[Task], positions: dict[int, int]) -> Card:
        active = [t for t in tasks if t.state in ("pending", "running")]
        if active:
            running = [t for t in active if t.state == "running"]
            task = running[0] if running else min(active, key=lambda t: t.id)
            if task.state == "running":
                state: CardState = "removing" if task.classname == _REMOVE else "installing"
            else:
                state = "queued"
            return Card(package, state, task, self.is_own(task), positions.get(task.id))
        own_ids = self._own_ids()
        mine = [t for t in tasks if t.id in own_ids]
        if mine:
            latest = max(mine, key=lambda t: t.id)
            if latest.state == "error":
                return Card(package, "failed", latest, True)
            if latest.state == "cancelled" and latest.classname == _INSTALL and latest.start_date:
                # cancelled once it had started (a request withdrawn from the queue changed
                # nothing: the card is simply as the machine is)
                return Card(package, "cancelled", latest, True)
        if package.install_status == "ERROR":
            # Recorded as failed: if the last install was cancelled (by anyone, seen from any
            # session), it is a cancellation that stopped setup.py half-way, not a failure.
            installs = [t for t in tasks if t.classname == _INSTALL]
            last = max(installs, key=lambda t: t.id) if installs else None
            if last is not None and last.state == "cancelled":
                return Card(package, "cancelled", last, self.is_own(last))
        return Card(package, package.state)

    def card(self, name: str) -> Card | None:
        """The card of one package, or None if the user may not see it."""
        tasks = self.tasks()
        package = self.catalog(tasks=tasks).get(name)
        return None if package is None else self.cards([package], tasks)[0]

    def installed(self, tasks: Mapping[int, Task] | None = None) -> list[Card]:
        """Cards of the packages on this machine (or that failed to install), for "My software"."""
        tasks = self.tasks() if tasks is None else tasks
        catalog = self.catalog(tasks=tasks)
        return [card for card in self.cards(catalog.packages, tasks) if card.on_machine]

    # -- the status box --

    def status(self, tasks: Mapping[int, Task] | None = None) -> StatusBox:
        """The user's tasks: those pending or running, then the last ones they queued here."""
        tasks = self.tasks() if tasks is None else tasks
        catalog = self.record.cache.get("catalog")  # titles need not be fresh
        if not isinstance(catalog, Catalog):
            catalog = self.catalog(tasks=tasks)
        titles = catalog.titles
        positions = self._positions(tasks)
        own_ids = self._own_ids()
        items: list[TaskItem] = []
        for task in sorted(tasks.values(), key=lambda t: t.id, reverse=True):
            active = task.state in ("pending", "running")
            if not (active and self.is_own(task)) and task.id not in own_ids:
                continue
            name = task.package
            title = titles.get(name, name) if name else task.description
            incomplete = False
            if task.state == "cancelled" and task.classname == _INSTALL and name:
                # the catalog that follows this task list says whether setup.py was stopped
                package = self.catalog(tasks=tasks).get(name)
                incomplete = package is not None and package.install_status == "ERROR"
            items.append(
                _item(task, title or task.description, True, positions.get(task.id), incomplete)
            )
        active_items = [i for i in items if i.active]
        finished = [i for i in items if not i.active][:_FINISHED_SHOWN]
        others = sum(
            1 for t in tasks.values() if t.state in ("pending", "running") and not self.is_own(t)
        )
        return StatusBox(tuple(active_items), tuple(finished), others)

    def changes(self, box: StatusBox) -> list[TaskItem]:
        """The user's tasks whose state or step changed since the last call (for the
        screen-reader announcement); the first call only sets the reference."""
        seen_now = {item.task.id: (item.state, item.step) for item in box.items}
        with self.record.lock:
            before: dict[int, tuple[str, str | None]] | None = self.record.cache.get("seen")
            self.record.cache["seen"] = seen_now
        if before is None:
            return []
        return [item for item in box.items if before.get(item.task.id) != seen_now[item.task.id]]


@dataclass(frozen=True)
class StatusBox:
    """The status box: the user's active tasks, their last finished ones, and how many other
    tasks run or wait on this machine. It polls while any task is active."""

    active: tuple[TaskItem, ...]
    finished: tuple[TaskItem, ...]
    others: int

    @property
    def items(self) -> tuple[TaskItem, ...]:
        return self.active + self.finished

    @property
    def polling(self) -> bool:
        return bool(self.active) or self.others > 0
