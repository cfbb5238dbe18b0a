"""Typed answers of the WAPT agent API (wapt-format.md §4.3), each checked by its `from_json`.

Every model is a frozen dataclass built by a `from_json(data, *, endpoint)` classmethod that
checks the shape of the decoded JSON (an object where one is due, every required key, the type
of every value it keeps) and raises `ProtocolError` naming the endpoint and what was wrong. Keys
a model does not name are kept, read-only, in `extra`. Parsing does no I/O.

Decisions worth knowing, checked against the answers recorded from WAPT 1.8.2's own agent
(fixtures/wapt-1.8.2/waptservice):

- **Task state.** WAPT's `WaptTask.run()` sets `start_date`, then `progress = 100.0` only when
  `_run()` returns, and `finish_date` in a `finally`. So for a task dict on its own
  (`/task.json`, `/install.json`, …): no `start_date` and no `finish_date` is *pending*,
  `start_date` without `finish_date` is *running*, `finish_date` with `progress >= 100` is *done*
  and `finish_date` with less is *error* (the failed install of acme-broken has progress 0.0).
  A task that came out of a named list (`/tasks.json`, `/cancel_all_tasks.json`, …) carries that
  list in `listed_as`, and the list decides. `/tasks_status.json` flattens the lists in the
  order pending, running, done, errors, cancelled (`TasksStatus.from_json` explains how the
  segments are recovered).
- **Package of a task.** WAPT 1.8.2's task dict has no package key: `description` is
  ``_("Installation of {packagenames} (task #{id})")`` (``Uninstall of …`` for removals), with
  the requests joined by commas and possibly translated. The translation moves the words but
  keeps the requests right before the parenthesised task number, so `Task.packages` reads the
  last word before ``(… #<id>)`` when `<id>` is the task's own id, and strips version conditions
  (``acme-hello(=1.0.0-1)`` → ``acme-hello``). A `packagenames` key, as later WAPT versions send,
  wins; the decoded `result` of a finished task is the last resort.
- **Shifted columns.** WAPT 1.8.2 stores seven columns of its package table one place off
  (§4.4). `WAPT_182_SHIFTED_COLUMNS` maps each true field to the key 1.8.2 serves it under;
  `from_json(..., shifted_columns=True)` puts them back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, cast

from agent_bridge.errors import ProtocolError, excerpt
from wapt.version import compare_versions

__all__ = [
    "DESCRIPTION_LOCALES",
    "TASK_KEYS",
    "WAPT_182_SHIFTED_COLUMNS",
    "AgentPackage",
    "InstalledPackage",
    "PackageState",
    "PendingActions",
    "Session",
    "ShutdownItem",
    "Task",
    "TaskList",
    "TaskListName",
    "TaskState",
    "TasksStatus",
    "Upgrades",
    "unshift_wapt_182_columns",
]

TaskState = Literal["pending", "running", "done", "error", "cancelled"]
TaskListName = Literal["pending", "running", "done", "errors", "cancelled"]
PackageState = Literal["available", "installed", "update-available", "failed"]

TASK_KEYS: Final = (
    "id",
    "classname",
    "priority",
    "order",
    "force",
    "create_date",
    "start_date",
    "finish_date",
    "logs",
    "result",
    "summary",
    "progress",
    "runstatus",
    "description",
    "pidlist",
    "notify_user",
    "notify_server_on_start",
    "notify_server_on_finish",
    "created_by",
)
"""The keys of WAPT's task dict (`WaptTask.as_dict`), every one required."""

DESCRIPTION_LOCALES: Final = ("fr", "pl", "de", "es", "pt", "it", "nl", "ru")
"""The locales of WAPT's `description_xx` control fields."""

WAPT_182_SHIFTED_COLUMNS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # true field      key WAPT 1.8.2 serves its value under
        "editor": "audit_schedule",
        "keywords": "editor",
        "licence": "keywords",
        "homepage": "licence",
        "changelog": "homepage",
        "impacted_process": "changelog",
        "audit_schedule": "impacted_process",
    }
)
"""Where WAPT 1.8.2's `packages.json` and `status.json` put seven fields (wapt-format.md §4.4).

A rotation: the value of the true field on the left is served under the key on the right.
Checked on `04_packages.json`/`05_packages_latest.json` against the control of
acme-hello 1.2.0-3 (editor ``Acme``, keywords ``demo,test``, licence ``GPL-3.0-or-later``,
homepage ``https://acme.example/hello``, a two-line changelog), served as audit_schedule
``Acme``, editor ``demo,test``, keywords ``GPL-3.0-or-later``, licence the URL and homepage the
changelog. The two remaining links (impacted_process, audit_schedule) are empty in every
fixture; they close the rotation as §4.4 describes. In 1.8.2's `status.json` the seven keys
are never read from the table (its query selects other columns and the rest are `PackageEntry`
defaults, all empty), so there the fix changes nothing.
"""

_JSON_TYPE_NAMES: Final = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}

_T = TypeVar("_T")


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _frozen(data: Mapping[str, Any], known: frozenset[str] | tuple[str, ...]) -> Mapping[str, Any]:
    return MappingProxyType({key: value for key, value in data.items() if key not in known})


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


class _Fields:
    """Typed, checked access to one JSON object of an answer; a problem is a `ProtocolError`."""

    def __init__(self, data: object, *, endpoint: str, what: str) -> None:
        if not isinstance(data, dict):
            raise ProtocolError(endpoint, f"{what}: expected an object, got {_json_type(data)}")
        self.data: dict[str, Any] = data
        self.endpoint = endpoint
        self.what = what

    def problem(self, text: str) -> ProtocolError:
        return ProtocolError(self.endpoint, f"{self.what}: {text}")

    def _typed(self, key: str, kind: type[_T] | tuple[type, ...], expected: str) -> _T:
        if key not in self.data:
            raise self.problem(f"key {key!r} is missing")
        value = self.data[key]
        if isinstance(value, bool) and kind not in (bool, (bool,)):
            raise self.problem(f"key {key!r} is {_json_type(value)}, expected {expected}")
        if not isinstance(value, kind):
            raise self.problem(f"key {key!r} is {_json_type(value)}, expected {expected}")
        return cast(_T, value)

    def string(self, key: str) -> str:
        """A required string."""
        return self._typed(key, str, "a string")

    def nullable(self, key: str, *, required: bool = True) -> str | None:
        """A string or null; a missing key is an error only when `required`."""
        if key not in self.data and not required:
            return None
        if key in self.data and self.data[key] is None:
            return None
        return self._typed(key, str, "a string or null")

    def text(self, key: str) -> str:
        """An optional string: missing or null reads as the empty string."""
        value = self.nullable(key, required=False)
        return "" if value is None else value

    def integer(self, key: str) -> int:
        """A required integer."""
        return self._typed(key, int, "an integer")

    def boolean(self, key: str) -> bool:
        """A required boolean."""
        return self._typed(key, bool, "a boolean")

    def number(self, key: str) -> float:
        """A required number."""
        return float(self._typed(key, (int, float), "a number"))

    def size(self, key: str) -> int | None:
        """An optional byte count: an integer, a string of digits, or empty, null or missing."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise self.problem(f"key {key!r} is {excerpt(repr(value), 40)}, expected a byte count")

    def array(self, key: str, *, required: bool = True) -> list[Any]:
        """A JSON array; a missing key reads as empty unless `required`."""
        if key not in self.data and not required:
            return []
        return self._typed(key, list, "an array")

    def strings(self, key: str, *, required: bool = True) -> tuple[str, ...]:
        """A JSON array of strings."""
        items = self.array(key, required=required)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.problem(f"{key}[{index}] is {_json_type(item)}, expected a string")
        return tuple(items)

    def others(self, known: frozenset[str] | tuple[str, ...]) -> Mapping[str, Any]:
        return _frozen(self.data, known)


# --- session -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What `/login` answers: who the user is, their groups, and the token for later calls.

    The token is a credential: `repr` hides it, and the bridge never logs it.
    """

    username: str
    token: str = field(repr=False)
    groups: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Session(username={self.username!r}, token='<hidden>', groups={self.groups!r})"

    @classmethod
    def from_json(cls, data: object, *, endpoint: str) -> Session:
        """Parse `{"token", "username", "groups"}`.

        Raises:
            ProtocolError: not an object, a key missing, a value of the wrong type, an empty token.
        """
        fields = _Fields(data, endpoint=endpoint, what="login answer")
        token = fields.string("token")
        if not token:
            raise fields.problem("key 'token' is empty")
        return cls(username=fields.string("username"), token=token, groups=fields.strings("groups"))


# --- tasks ---------------------------------------------------------------------------------

_STATE_OF_LIST: Final[Mapping[TaskListName, TaskState]] = MappingProxyType(
    {
        "pending": "pending",
        "running": "running",
        "done": "done",
        "errors": "error",
        "cancelled": "cancelled",
    }
)
#: the key where Comptoir's agent names each task's list in `/tasks_status.json` (WAPT's flat
#: list loses it; a WAPT client ignores the key)
TASK_LIST_KEY: Final = "comptoir_list"

_LIST_OF_STATE: Final[Mapping[TaskState, TaskListName]] = MappingProxyType(
    {state: name for name, state in _STATE_OF_LIST.items()}
)
_PACKAGE_TASK_CLASSES: Final = frozenset({"WaptPackageInstall", "WaptPackageRemove"})
# "<anything> <requests> (<word(s)> #<id>)": WAPT appends the task number last, in any language.
_DESCRIPTION_TAIL: Final = re.compile(r"(?:^|\s)(?P<requests>\S+)\s*\([^()]*#\s*(?P<id>\d+)\)\s*\Z")
_REQUEST_NAME: Final = re.compile(r"[^\s()\[\]]+")


def _request_name(request: str) -> str | None:
    """`acme-hello(=1.0.0-1)` or `acme-hello [x64_fr,en_PROD]` → `acme-hello`."""
    match = _REQUEST_NAME.match(request.strip())
    return match.group(0) if match else None


def _state_from_fields(
    start_date: str | None, finish_date: str | None, progress: float
) -> TaskState:
    if finish_date is None:
        return "pending" if start_date is None else "running"
    return "done" if progress >= 100.0 else "error"


@dataclass(frozen=True)
class Task:
    """One of WAPT's task dicts, every key typed, `result` decoded a second time.

    `result_raw` is `result` as the agent sent it (a JSON text); `result` is that text decoded.
    `listed_as` is the list of `/tasks.json` (or the segment of `/tasks_status.json`) the task
    came from, or None for a task dict on its own; `state` uses it first (see the module doc).
    """

    id: int
    classname: str
    priority: int
    order: int
    force: bool
    create_date: str | None
    start_date: str | None
    finish_date: str | None
    logs: str
    result: Any
    result_raw: str
    summary: str
    progress: float
    runstatus: str
    description: str
    pidlist: str
    notify_user: bool
    notify_server_on_start: bool
    notify_server_on_finish: bool
    created_by: str | None
    listed_as: TaskListName | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(
        cls, data: object, *, endpoint: str, listed_as: TaskListName | None = None
    ) -> Task:
        """Parse a task dict; `listed_as` names the list it came from, if any.

        Raises:
            ProtocolError: not an object, one of `TASK_KEYS` missing, a value of the wrong
                type, or a `result` that is not a JSON text.
        """
        fields = _Fields(data, endpoint=endpoint, what="task")
        task_id = fields.integer("id")
        fields.what = f"task #{task_id}"
        result_raw = fields.string("result")
        try:
            result = json.loads(result_raw)
        except ValueError as e:
            raise fields.problem(f"result is not a JSON text: {excerpt(result_raw, 60)}") from e
        return cls(
            id=task_id,
            classname=fields.string("classname"),
            priority=fields.integer("priority"),
            order=fields.integer("order"),
            force=fields.boolean("force"),
            create_date=fields.nullable("create_date"),
            start_date=fields.nullable("start_date"),
            finish_date=fields.nullable("finish_date"),
            logs=fields.string("logs"),
            result=result,
            result_raw=result_raw,
            summary=fields.string("summary"),
            progress=fields.number("progress"),
            runstatus=fields.string("runstatus"),
            description=fields.string("description"),
            pidlist=fields.string("pidlist"),
            notify_user=fields.boolean("notify_user"),
            notify_server_on_start=fields.boolean("notify_server_on_start"),
            notify_server_on_finish=fields.boolean("notify_server_on_finish"),
            created_by=fields.nullable("created_by"),
            listed_as=listed_as,
            extra=fields.others(TASK_KEYS),
        )

    @property
    def state(self) -> TaskState:
        """pending, running, done, error or cancelled: from `listed_as`, else from the dates."""
        if self.listed_as is not None:
            return _STATE_OF_LIST[self.listed_as]
        return _state_from_fields(self.start_date, self.finish_date, self.progress)

    @property
    def is_finished(self) -> bool:
        """True once the task is done, failed or cancelled: it will not change any more."""
        return self.state in ("done", "error", "cancelled")

    @property
    def packages(self) -> tuple[str, ...]:
        """The package names an install or remove task acts on; empty for other tasks.

        From `packagenames` when the agent sends it, else from the description (the requests
        right before ``(… #<id>)``), else from the decoded result of a finished task.
        """
        names = self.extra.get("packagenames")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return tuple(name for n in names if (name := _request_name(n)))
        if self.classname not in _PACKAGE_TASK_CLASSES:
            return ()
        match = _DESCRIPTION_TAIL.search(self.description)
        if match and int(match.group("id")) == self.id:
            found = tuple(
                name
                for request in match.group("requests").split(",")
                if (name := _request_name(request))
            )
            if found:
                return found
        return self._packages_from_result()

    @property
    def package(self) -> str | None:
        """The (first) package an install or remove task acts on, e.g. ``acme-hello``."""
        packages = self.packages
        return packages[0] if packages else None

    def _packages_from_result(self) -> tuple[str, ...]:
        result = self.result
        if not isinstance(result, dict):
            return ()
        if self.classname == "WaptPackageRemove":
            removed = [r for key in ("removed", "errors") for r in result.get(key) or []]
            return tuple(name for r in removed if isinstance(r, str) and (name := _request_name(r)))
        for key in ("install", "upgrade", "skipped", "errors", "unavailable"):
            for item in result.get(key) or []:
                if isinstance(item, list) and item and isinstance(item[0], str):
                    name = _request_name(item[0])
                    if name:
                        return (name,)
        return ()


def _tasks(items: list[Any], *, endpoint: str, listed_as: TaskListName | None) -> tuple[Task, ...]:
    return tuple(Task.from_json(item, endpoint=endpoint, listed_as=listed_as) for item in items)


@dataclass(frozen=True)
class TasksStatus:
    """What `/tasks_status.json` answers: the newest event id, and every task when one changed.

    `tasks` is None when nothing changed before the long poll ended.
    """

    last_event_id: int
    tasks: tuple[Task, ...] | None

    @classmethod
    def from_json(cls, data: object, *, endpoint: str) -> TasksStatus:
        """Parse `{"last_event_id", "tasks"?}` and recover the list each task came from.

        WAPT flattens its lists as pending + running + done + errors + cancelled. Pending and
        running tasks have no `finish_date`, done and failed ones have one, so the segments
        follow: a task without `finish_date` before the first finished one is pending (or
        running, if started), a finished one is done or in errors by its progress, and a
        task without `finish_date` *after* a finished one, or a task listed a second time (a
        running task that was cancelled is listed in errors and in cancelled), is in the
        cancelled segment. One case cannot be told apart: cancelled tasks when no task at all
        has finished read as pending. WAPT's agent always lists its finished start-up update,
        and `/tasks.json` (`TaskList`) names the lists exactly. Comptoir's agent names each
        task's list (`TASK_LIST_KEY`), which is then taken as said.

        Raises:
            ProtocolError: not an object, `last_event_id` missing or not an integer, `tasks`
                not an array of task dicts.
        """
        fields = _Fields(data, endpoint=endpoint, what="tasks status")
        last_event_id = fields.integer("last_event_id")
        if "tasks" not in fields.data:
            return cls(last_event_id=last_event_id, tasks=None)
        tasks: list[Task] = []
        seen_finished = False
        seen_ids: set[int] = set()
        for item in fields.array("tasks"):
            task = Task.from_json(item, endpoint=endpoint)
            finished = task.finish_date is not None
            named = item.get(TASK_LIST_KEY) if isinstance(item, dict) else None
            if isinstance(named, str) and named in _STATE_OF_LIST:
                listed_as = cast(TaskListName, named)  # Comptoir's agent says it
            elif task.id in seen_ids or (seen_finished and not finished):
                listed_as = "cancelled"
            else:
                listed_as = _LIST_OF_STATE[task.state]
            seen_finished = seen_finished or finished
            seen_ids.add(task.id)
            tasks.append(replace(task, listed_as=listed_as))
        return cls(last_event_id=last_event_id, tasks=tuple(tasks))

    def find(self, task_id: int) -> Task | None:
        """The task with this id (its last listing, so a cancelled copy wins), or None."""
        for task in reversed(self.tasks or ()):
            if task.id == task_id:
                return task
        return None


@dataclass(frozen=True)
class TaskList:
    """What `/tasks.json` answers: the agent's task lists, each task's `listed_as` set."""

    running: Task | None
    pending: tuple[Task, ...]
    done: tuple[Task, ...]
    errors: tuple[Task, ...]
    cancelled: tuple[Task, ...]
    last_task_id: int
    last_event_id: int

    @classmethod
    def from_json(cls, data: object, *, endpoint: str) -> TaskList:
        """Parse the lists `running` (a task or null), `pending`, `done`, `errors`, `cancelled`.

        `last_task_id` and `last_event_id` are required integers too.

        Raises:
            ProtocolError: not an object, a key missing, a value of the wrong type.
        """
        fields = _Fields(data, endpoint=endpoint, what="task lists")
        if "running" not in fields.data:
            raise fields.problem("key 'running' is missing")
        running_data = fields.data["running"]
        return cls(
            running=None
            if running_data is None
            else Task.from_json(running_data, endpoint=endpoint, listed_as="running"),
            pending=_tasks(fields.array("pending"), endpoint=endpoint, listed_as="pending"),
            done=_tasks(fields.array("done"), endpoint=endpoint, listed_as="done"),
            errors=_tasks(fields.array("errors"), endpoint=endpoint, listed_as="errors"),
            cancelled=_tasks(fields.array("cancelled"), endpoint=endpoint, listed_as="cancelled"),
            last_task_id=fields.integer("last_task_id"),
            last_event_id=fields.integer("last_event_id"),
        )

    def all(self) -> tuple[Task, ...]:
        """Every listed task, in WAPT's order: pending, running, done, errors, cancelled."""
        running = (self.running,) if self.running else ()
        return self.pending + running + self.done + self.errors + self.cancelled

    def find(self, task_id: int) -> Task | None:
        """The task with this id (a cancelled listing wins over an errors one), or None."""
        for task in reversed(self.all()):
            if task.id == task_id:
                return task
        return None


# --- packages ------------------------------------------------------------------------------


def unshift_wapt_182_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a 1.8.2 `packages.json`/`status.json` row with the seven fields put back.

    Keys absent from the row stay absent. Raises nothing.
    """
    fixed = dict(row)
    for true_key, served_key in WAPT_182_SHIFTED_COLUMNS.items():
        if served_key in row:
            fixed[true_key] = row[served_key]
        else:
            fixed.pop(true_key, None)
    return fixed


#: keys read as text: missing or null is ""
_PACKAGE_TEXT_KEYS: Final = (
    "architecture",
    "section",
    "priority",
    "name",
    "maintainer",
    "description",
    "description_fr",
    "description_pl",
    "description_de",
    "description_es",
    "description_pt",
    "description_it",
    "description_nl",
    "description_ru",
    "depends",
    "conflicts",
    "maturity",
    "locale",
    "target_os",
    "editor",
    "keywords",
    "licence",
    "homepage",
    "changelog",
    "impacted_process",
    "audit_schedule",
    "filename",
    "md5sum",
    "package_uuid",
    "repo_url",
)

_PACKAGE_NULLABLE: Final = (
    "signer",
    "signature_date",
    "install_date",
    "explicit_by",
    "install_status",
    "install_version",
)
_PACKAGE_NULLABLE_SET: Final = frozenset(_PACKAGE_NULLABLE)
_PACKAGE_TEXT_SET: Final = frozenset(_PACKAGE_TEXT_KEYS)
_PACKAGE_TEXT_DEFAULTS: Final = {
    **dict.fromkeys(_PACKAGE_TEXT_KEYS, ""),
    **dict.fromkeys(_PACKAGE_NULLABLE, None),
}

_PACKAGE_KEYS: Final = frozenset(
    {
        "package",
        "version",
        "categories",
        "installed_size",
        "size",
        "previous",
        *_PACKAGE_TEXT_KEYS,
        *_PACKAGE_NULLABLE,
    }
)


@dataclass(frozen=True)
class AgentPackage:
    """A package dict of `/packages.json`: its control fields and its state on this host.

    Text fields missing or null in the answer read as "". `install_status` is WAPT's local
    status (``OK``, ``ERROR``, ``RUNNING``, … or None when not installed) and `install_version`
    the installed version. `previous` holds the older versions WAPT lists with `latest=1`.
    """

    package: str
    version: str
    architecture: str
    section: str
    priority: str
    name: str
    categories: tuple[str, ...]
    maintainer: str
    description: str
    description_fr: str
    description_pl: str
    description_de: str
    description_es: str
    description_pt: str
    description_it: str
    description_nl: str
    description_ru: str
    depends: str
    conflicts: str
    maturity: str
    locale: str
    target_os: str
    editor: str
    keywords: str
    licence: str
    homepage: str
    changelog: str
    impacted_process: str
    audit_schedule: str
    installed_size: int | None
    size: int | None
    filename: str
    md5sum: str
    package_uuid: str
    signer: str | None
    signature_date: str | None
    install_status: str | None
    install_version: str | None
    install_date: str | None
    explicit_by: str | None
    previous: tuple[AgentPackage, ...]
    repo_url: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(
        cls, data: object, *, endpoint: str, shifted_columns: bool = False
    ) -> AgentPackage:
        """Parse one package dict; with `shifted_columns`, undo WAPT 1.8.2's column shift.

        `package`, `version`, `install_status` and `install_version` are required (the last
        two may be null); the fix applies to the `previous` entries too.

        Raises:
            ProtocolError: not an object, a required key missing, a value of the wrong type.
        """
        fields = _Fields(data, endpoint=endpoint, what="package")
        row = unshift_wapt_182_columns(fields.data) if shifted_columns else fields.data
        package = row.get("package")
        if type(package) is not str:
            raise fields.problem("key 'package' is missing or not a string")
        fields.data, fields.what = row, f"package {package!r}"
        # One pass over the row: a catalog has thousands of rows (bench: 5,000 in ~30 ms).
        values: dict[str, Any] = dict(_PACKAGE_TEXT_DEFAULTS)
        values["package"] = package
        get = row.get
        for key, value in row.items():
            if key in _PACKAGE_TEXT_SET:
                if type(value) is str:
                    values[key] = value
                elif value is not None:
                    raise fields.problem(f"key {key!r} is {_json_type(value)}, expected a string")
            elif key in _PACKAGE_NULLABLE_SET:
                if value is not None and type(value) is not str:
                    raise fields.problem(f"key {key!r} is {_json_type(value)}, expected a string")
                values[key] = value
        if type(get("version")) is not str:
            raise fields.problem("key 'version' is missing or not a string")
        values["version"] = row["version"]
        for key in ("install_status", "install_version"):
            if key not in row:
                raise fields.problem(f"key {key!r} is missing")
        categories = get("categories")
        if isinstance(categories, list):
            values["categories"] = fields.strings("categories")
        elif categories is None or type(categories) is str:
            values["categories"] = _csv(categories or "")
        else:
            raise fields.problem(f"key 'categories' is {_json_type(categories)}")
        values["installed_size"] = fields.size("installed_size")
        values["size"] = fields.size("size")
        previous = get("previous")
        values["previous"] = (
            tuple(
                cls.from_json(item, endpoint=endpoint, shifted_columns=shifted_columns)
                for item in fields.array("previous")
            )
            if previous
            else ()
        )
        values["extra"] = MappingProxyType({key: row[key] for key in row.keys() - _PACKAGE_KEYS})
        # Frozen dataclass: build without its __init__'s 48 object.__setattr__ calls.
        package_row = object.__new__(cls)
        package_row.__dict__.update(values)
        return package_row

    def description_for(self, lang: str) -> str:
        """The description in `lang` (``fr``, ``fr_FR``, ``fr-FR``…), else the default one.

        WAPT 1.8.2's agent already serves `description` in its own locale and leaves the
        `description_xx` keys empty; Comptoir's agent may fill them.
        """
        code = lang[:2].lower()
        if code in DESCRIPTION_LOCALES:
            localized: str = getattr(self, f"description_{code}")
            if localized.strip():
                return localized
        return self.description

    @property
    def state(self) -> PackageState:
        """available, installed, update-available or failed, for this host.

        ``ERROR`` is failed; no `install_status` or no `install_version` is available; any other
        status (``OK``, ``WARNING``, ``RUNNING``, …) is installed, or update-available when
        `version` is newer than `install_version` by WAPT's comparator
        (`wapt.version.compare_versions`).
        """
        if self.install_status == "ERROR":
            return "failed"
        if not self.install_status or not self.install_version:
            return "available"
        if compare_versions(self.version, self.install_version) > 0:
            return "update-available"
        return "installed"


_INSTALLED_KEYS: Final = frozenset(
    {
        "package",
        "version",
        "install_status",
        "install_date",
        "install_output",
        "install_par",
        "description",
        "repo_version",
        "repo_versions",
        "architecture",
        "section",
        "priority",
        "maturity",
        "locale",
        "name",
        *WAPT_182_SHIFTED_COLUMNS,
    }
)


@dataclass(frozen=True)
class InstalledPackage:
    """A row of `/status.json`: a package installed (or whose install failed) on this host.

    `install_par` is who asked for it (WAPT's `explicit_by`, ``root`` when anonymous),
    `repo_version` the newest version the repositories offer and `repo_versions` all of them.
    """

    package: str
    version: str
    install_status: str
    install_date: str | None
    install_output: str
    install_par: str | None
    description: str
    repo_version: str | None
    repo_versions: tuple[str, ...]
    architecture: str
    section: str
    priority: str
    maturity: str
    locale: str
    name: str
    editor: str
    keywords: str
    licence: str
    homepage: str
    changelog: str
    impacted_process: str
    audit_schedule: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(
        cls, data: object, *, endpoint: str, shifted_columns: bool = False
    ) -> InstalledPackage:
        """Parse one status row; with `shifted_columns`, undo WAPT 1.8.2's column shift.

        Raises:
            ProtocolError: not an object, `package`, `version` or `install_status` missing or
                not a string, another value of the wrong type.
        """
        fields = _Fields(data, endpoint=endpoint, what="status row")
        if shifted_columns:
            fields.data = unshift_wapt_182_columns(fields.data)
        package = fields.string("package")
        fields.what = f"status row {package!r}"
        repo_versions = fields.data.get("repo_versions")
        return cls(
            package=package,
            version=fields.string("version"),
            install_status=fields.string("install_status"),
            install_date=fields.nullable("install_date", required=False),
            install_output=fields.text("install_output"),
            install_par=fields.nullable("install_par", required=False),
            description=fields.text("description"),
            repo_version=fields.nullable("repo_version", required=False) or None,
            repo_versions=fields.strings("repo_versions")
            if isinstance(repo_versions, list)
            else tuple(v for v in fields.text("repo_versions").split("|") if v),
            architecture=fields.text("architecture"),
            section=fields.text("section"),
            priority=fields.text("priority"),
            maturity=fields.text("maturity"),
            locale=fields.text("locale"),
            name=fields.text("name"),
            editor=fields.text("editor"),
            keywords=fields.text("keywords"),
            licence=fields.text("licence"),
            homepage=fields.text("homepage"),
            changelog=fields.text("changelog"),
            impacted_process=fields.text("impacted_process"),
            audit_schedule=fields.text("audit_schedule"),
            extra=fields.others(_INSTALLED_KEYS),
        )

    @property
    def failed(self) -> bool:
        """True when WAPT recorded the install as ``ERROR``."""
        return self.install_status == "ERROR"

    @property
    def update_available(self) -> bool:
        """True when a repository offers a newer version (`wapt.version.compare_versions`)."""
        return (
            bool(self.repo_version) and compare_versions(self.repo_version or "", self.version) > 0
        )


# --- upgrades ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingActions:
    """What an upgrade would do: package requests to install, upgrade, add, and names to remove."""

    install: tuple[str, ...]
    upgrade: tuple[str, ...]
    additional: tuple[str, ...]
    remove: tuple[str, ...]
    #: Comptoir's agent only: what the machine keeps for the shutdown run
    at_shutdown: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShutdownItem:
    """Comptoir's agent only: one package the machine keeps for the shutdown run.

    `request` is e.g. ``tis-heavy(=1-1)``; `deadline` the time (UTC text ending in ``Z``) by
    which it must be installed, or None; `impacted_process` the applications its install closes.
    """

    request: str
    package: str
    deadline: str | None
    impacted_process: tuple[str, ...]

    @classmethod
    def from_json(cls, data: object, *, endpoint: str) -> ShutdownItem:
        """Parse `{"request", "package", "deadline", "impacted_process"}`.

        Raises:
            ProtocolError: not an object, a key missing, a value of the wrong type.
        """
        fields = _Fields(data, endpoint=endpoint, what="at_shutdown item")
        return cls(
            request=fields.string("request"),
            package=fields.string("package"),
            deadline=fields.nullable("deadline", required=False),
            impacted_process=fields.strings("impacted_process", required=False),
        )


_UPGRADES_KEYS: Final = (
    "date",
    "upgrades",
    "errors",
    "running_tasks",
    "pending_tasks",
    "pending",
    "at_shutdown",
    "impacted_process",
)


def _impacted(data: object, *, endpoint: str) -> Mapping[str, tuple[str, ...]]:
    fields = _Fields(data, endpoint=endpoint, what="upgrades: impacted_process")
    return MappingProxyType({name: fields.strings(name) for name in fields.data})


@dataclass(frozen=True)
class Upgrades:
    """What `/checkupgrades.json` answers after the first update (before it, WAPT says null).

    `upgrades` are requests like ``acme-hello(=1.2.0-3)``; `errors` the packages whose last
    install failed; `extra` holds Enterprise keys such as `wua_status`.
    """

    date: str | None
    upgrades: tuple[str, ...]
    errors: tuple[str, ...]
    running_tasks: tuple[Task, ...]
    pending_tasks: tuple[Task, ...]
    pending: PendingActions
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Comptoir's agent only: the shutdown items with their deadlines (empty from WAPT's)
    shutdown_items: tuple[ShutdownItem, ...] = ()
    #: Comptoir's agent only: package name -> processes its install closes
    impacted_process: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def from_json(cls, data: object, *, endpoint: str) -> Upgrades:
        """Parse `{"date", "upgrades", "errors", "running_tasks", "pending_tasks", "pending"}`.

        Raises:
            ProtocolError: not an object, a key missing, a value of the wrong type.
        """
        fields = _Fields(data, endpoint=endpoint, what="upgrades")
        if "pending" not in fields.data:
            raise fields.problem("key 'pending' is missing")
        pending = _Fields(fields.data["pending"], endpoint=endpoint, what="upgrades: pending")
        return cls(
            date=fields.nullable("date"),
            upgrades=fields.strings("upgrades"),
            errors=fields.strings("errors"),
            running_tasks=_tasks(
                fields.array("running_tasks"), endpoint=endpoint, listed_as="running"
            ),
            pending_tasks=_tasks(
                fields.array("pending_tasks"), endpoint=endpoint, listed_as="pending"
            ),
            pending=PendingActions(
                install=pending.strings("install"),
                upgrade=pending.strings("upgrade"),
                additional=pending.strings("additional"),
                remove=pending.strings("remove"),
                at_shutdown=(
                    pending.strings("at_shutdown") if "at_shutdown" in pending.data else ()
                ),
            ),
            extra=fields.others(_UPGRADES_KEYS),
            shutdown_items=tuple(
                ShutdownItem.from_json(item, endpoint=endpoint)
                for item in fields.array("at_shutdown", required=False)
            ),
            impacted_process=_impacted(fields.data.get("impacted_process", {}), endpoint=endpoint),
        )

    @property
    def has_work(self) -> bool:
        """True when an upgrade would do something or a task is running (waptexit's test)."""
        return bool(self.upgrades or self.pending.remove or self.running_tasks)

    @property
    def has_shutdown_work(self) -> bool:
        """`has_work`, or something kept for the shutdown run (Comptoir's agent)."""
        return self.has_work or bool(self.pending.at_shutdown)
