"""The kiosk executable's entry point (PyInstaller builds it from `kiosk/comptoir-kiosk.spec`).

Two jobs. Called by its own agent as the interpreter of a package's `setup.py` (`kiosk.frozen`:
the runner's `-I -S … -c CODE ARGS` command line), it runs that code and nothing else: no Qt,
no Flask. Otherwise it is `comptoir kiosk` (the same options), which, from a stick, finds the
bundle beside it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run as the setup.py interpreter or as the kiosk; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    from kiosk.frozen import interpreter_request, run_as_interpreter

    request = interpreter_request(args)
    if request is not None:
        return run_as_interpreter(*request)
    from comptoir.kiosk import kiosk

    try:
        kiosk.main(args=args, prog_name="comptoir-kiosk", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
