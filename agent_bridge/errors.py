"""The one exception hierarchy of the bridge: every error `AgentClient` raises is a `BridgeError`.

Messages name the URL or endpoint first, then the value and the reason, for example
``"/install.json: package 'acme-app' not allowed for this user (403): NOT_ALLOWED"``. Foreign
errors (sockets, `http.client`, `json`) are wrapped at the boundary with ``raise ... from e``.

No message, attribute or ``repr`` ever holds a password or a token: the bridge builds them from
the endpoint, the status and the agent's answer only, and the agent never echoes credentials.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentUnavailableError",
    "AuthenticationError",
    "BridgeError",
    "NotAllowedError",
    "ProtocolError",
    "TaskTimeoutError",
    "UnknownPackageError",
    "UnknownTaskError",
]

EXCERPT_LENGTH = 200
"""How many characters of an agent's answer an error message quotes."""


def excerpt(text: str, limit: int = EXCERPT_LENGTH) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis. Raises nothing."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class BridgeError(Exception):
    """Root of every error raised by the bridge."""


class AgentUnavailableError(BridgeError):
    """The agent cannot be reached: connection refused after the retry budget, or a timeout.

    `url` is the URL that was asked for (it never holds credentials); `reason` says what failed.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: agent unavailable: {reason}")


class AuthenticationError(BridgeError):
    """The agent refused the credentials (401): bad password, missing, expired or forged token.

    `agent_message` is the agent's own answer, e.g. ``BAD_AUTHENTICATION`` or werkzeug's
    "Could not verify your access level…" text.
    """

    def __init__(self, endpoint: str, agent_message: str) -> None:
        self.endpoint = endpoint
        self.agent_message = agent_message
        super().__init__(f"{endpoint}: authentication refused (401): {excerpt(agent_message)}")


class NotAllowedError(BridgeError):
    """The agent refused the action (403), e.g. a package not granted to any of the user's groups.

    `package` is the package the call named, or None for a call that names none (WAPT also
    answers 403 to a peer other than 127.0.0.1).
    """

    def __init__(self, endpoint: str, package: str | None, agent_message: str) -> None:
        self.endpoint = endpoint
        self.package = package
        self.agent_message = agent_message
        what = f"package {package!r} not allowed for this user" if package else "not allowed"
        super().__init__(f"{endpoint}: {what} (403): {excerpt(agent_message)}")


class UnknownPackageError(BridgeError):
    """The agent does not know the package the call named (404)."""

    def __init__(self, endpoint: str, package: str, agent_message: str) -> None:
        self.endpoint = endpoint
        self.package = package
        self.agent_message = agent_message
        super().__init__(f"{endpoint}: unknown package {package!r} (404): {excerpt(agent_message)}")


class ProtocolError(BridgeError):
    """The agent answered something that is not what the API promises.

    Not JSON, JSON of the wrong shape, a missing key or a value of the wrong type. `endpoint`
    names the call and `problem` what was wrong with the answer.
    """

    def __init__(self, endpoint: str, problem: str) -> None:
        self.endpoint = endpoint
        self.problem = problem
        super().__init__(f"{endpoint}: malformed answer: {problem}")


class AgentError(BridgeError):
    """Any other failure status (500, 404 of an endpoint the agent lacks, 3xx, …).

    `status` is the HTTP status, `body` an excerpt of the agent's answer.
    """

    def __init__(self, endpoint: str, status: int, body: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.body = excerpt(body)
        super().__init__(f"{endpoint}: agent answered HTTP {status}: {self.body}")


class TaskTimeoutError(BridgeError):
    """A task did not finish within the time `AgentClient.wait_for_task` was given.

    `task_id` is the task, `timeout` the seconds waited, `last_state` the state last seen
    (None if the task was not listed yet).
    """

    def __init__(self, task_id: int, timeout: float, last_state: str | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.last_state = last_state
        seen = f"last seen {last_state}" if last_state else "not listed by the agent"
        super().__init__(f"task #{task_id}: not finished after {timeout:g} s ({seen})")


class UnknownTaskError(BridgeError):
    """The agent does not list the task at all (an id from before an agent restart, or a typo)."""

    def __init__(self, endpoint: str, task_id: int) -> None:
        self.endpoint = endpoint
        self.task_id = task_id
        super().__init__(f"{endpoint}: task #{task_id} is not known to the agent")
