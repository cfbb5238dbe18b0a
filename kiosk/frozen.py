"""The frozen kiosk as the Python interpreter that runs packages' `setup.py`.

The agent runs each `setup.py` in a child process: `[python, -I, -S, -B, -u, -X, utf8, -c,
<bootstrap>, <settings>]` (`agent_bridge.agent.runner`), with `python` = `sys.executable`. In
the PyInstaller build `sys.executable` is the kiosk itself, and the target machine may have no
Python at all. So the executable accepts that command line: `interpreter_request` recognises
it (a few of CPython's flags, then `-c CODE ARGS…`; anything else is the kiosk's own command
line) and `run_as_interpreter` runs the code as `python -c` would, with the build's standard
library (the spec bundles all of it) and nothing of the kiosk loaded. Pure standard library:
the entry script calls it before importing anything else.
"""

from __future__ import annotations

import builtins
import contextlib
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["interpreter_request", "run_as_interpreter"]

#: CPython flags the runner passes that take no value (`-I` isolated, `-S` no site, `-B` no
#: bytecode, `-u` unbuffered, `-E`/`-s` ignore the environment / user site)
_FLAGS: Final = frozenset({"-I", "-S", "-B", "-u", "-E", "-s"})


def interpreter_request(argv: Sequence[str]) -> tuple[list[str], str, list[str]] | None:
    """(flags, code, arguments) when `argv` (without the program name) is `[flags…] -c CODE
    [ARG…]` with only the flags the runner uses; None for any other command line.

    `-X` options are kept with the flags (`-X utf8` as two items or `-Xutf8` as one).
    """
    flags: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item in _FLAGS:
            flags.append(item)
            i += 1
        elif item == "-X" and i + 1 < len(argv):
            flags.append(f"-X{argv[i + 1]}")
            i += 2
        elif item.startswith("-X") and len(item) > 2:
            flags.append(item)
            i += 1
        elif item == "-c" and i + 1 < len(argv):
            return flags, argv[i + 1], list(argv[i + 2 :])
        else:
            return None
    return None


def run_as_interpreter(flags: Sequence[str], code: str, arguments: Sequence[str]) -> int:
    """Run `code` as `python <flags> -c code arguments…` would; return the exit status.

    `sys.argv` is `["-c", *arguments]` and the code runs as `__main__` from `<string>` (the
    runner's bootstrap cuts those frames from tracebacks). `-u` makes stdout and stderr write
    through, `-X utf8` makes them UTF-8, `-B` writes no bytecode, `-I` keeps the current
    directory off `sys.path`. An uncaught exception prints its traceback and gives 1, like
    CPython.
    """
    if "-B" in flags or "-I" in flags:
        sys.dont_write_bytecode = True
    if "-I" in flags:
        sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        if "-Xutf8" in flags:
            reconfigure(
                encoding="utf-8", errors="backslashreplace" if stream is sys.stderr else "strict"
            )
        if "-u" in flags:
            reconfigure(write_through=True)
    sys.argv = ["-c", *arguments]
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
    main = type(sys)("__main__")
    main.__dict__.update(namespace)
    sys.modules["__main__"] = main
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)  # noqa: S102 (what -c does)
    except SystemExit as e:
        return _exit_status(e.code)
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    return 0


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
