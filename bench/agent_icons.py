"""Benchmark 9: the agent's first update fetching 5,000 icons from a loopback repository.

The repository is the signed 5,000-entry index of `agent_latency.py` (one version of each of
5,000 packages, every entry with its own `package_uuid`) and one small PNG per entry under
`icons/`, served by `http.server` in a child process on 127.0.0.1, with HTTP/1.1 keep-alive
and TCP_NODELAY, as nginx or Apache serve WAPT repositories. The agent (`Agent`,
in-process, its data directory under `bench/data/`) loads the index, then:

- **after**: `Agent.refresh_icons()` into an empty `cache/icons/`: `sources.fetch_icons`, a
  few threads over one keep-alive connection each;
- **before** (same-run reference): the loop `refresh_icons` ran until this change, kept here
  as it was: one `HttpSource.fetch_icon` (urllib, a new connection per icon) and one
  `write_atomic` after the other;
- **second update**: `refresh_icons()` again with every icon present (nothing is asked).

Before, each icon was written with `write_atomic` (two fsyncs); after, atomically without
fsync and one directory fsync at the end (a cache: an icon left empty by a power cut is
fetched again). A second same-run reference is the floor: writing the same files from memory
(`write_atomic(durable=False)`), no network. Creating a file costs about 0.7 ms on this
machine's disk, so that floor, not the network, bounds the first update.
Target: at least twice as fast as one by one, same run. The ratio to the floor is shown: the
closer to 1, the more of the network work hides behind the writes.

    .venv/bin/python bench/agent_icons.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import agent_latency
import common
from common import Row, Samples

FULL_COUNT = agent_latency.FULL_COUNT
QUICK_COUNT = agent_latency.QUICK_COUNT
TARGET_SPEEDUP = 2.0
ICON_PADDING = 1500  # bytes of a private chunk: icons of ~1.6 KB, like a 48x48 PNG


def png(seed: int) -> bytes:
    """A valid 1x1 PNG with a private ancillary chunk so that each icon is about 1.6 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, seed % 256, (seed >> 8) % 256, 0x80]))
    padding = (seed.to_bytes(4, "big") * (ICON_PADDING // 4 + 1))[:ICON_PADDING]
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"cmPt", padding)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def prepare(quick: bool) -> tuple[Path, int]:
    """The repository directory (index + icons), built once and reused; and its icon count."""
    from wapt.repository import read_index

    catalog = agent_latency.prepare_catalog(quick, distinct=True)
    count = QUICK_COUNT if quick else FULL_COUNT
    directory = common.DATA / f"agent-icons-{count}"
    params = {"count": count, "padding": ICON_PADDING, "index": common.read_stamp(catalog)}
    stamp = common.read_stamp(directory)
    if stamp and stamp.get("params") == params and (directory / "Packages").is_file():
        return directory, stamp["icons"]
    common.fresh_directory(directory)
    shutil.copyfile(catalog / "Packages", directory / "Packages")
    index = read_index((directory / "Packages").read_bytes(), common.trust_store(), source="bench")
    (directory / "icons").mkdir()
    for number, entry in enumerate(index.entries):
        (directory / "icons" / f"{entry.package_uuid}.png").write_bytes(png(number))
    common.write_stamp(directory, {"params": params, "icons": len(index.entries)})
    return directory, len(index.entries)


def serve(directory: Path, port: int) -> None:
    """The child process: HTTP/1.1 with keep-alive and TCP_NODELAY, as nginx or Apache.

    (`python -m http.server` leaves Nagle's algorithm on: headers and body go in two writes,
    and every keep-alive request then waits ~40 ms for a delayed ACK.)
    """
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """`serve` in a child process on a free loopback port."""
    port = agent_latency.free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(directory), str(port)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/Packages", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the loopback HTTP server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def make_agent(root: Path, url: str) -> Any:
    from agent_bridge.agent.auth import LocalAccounts
    from agent_bridge.agent.config import AgentConfig, RepositoryConfig
    from agent_bridge.agent.core import Agent

    config = AgentConfig(
        data_dir=root / "agent-data",
        trusted_certs=common.PKI / "ca.crt",
        repositories=(RepositoryConfig("bench", url=url),),
        maturities=("PROD", "PREPROD", "DEV"),
        locales=("fr", "en", "de"),
        architectures=("x64", "x86"),
        host_uuid=agent_latency.HOST_UUID,
    )
    return Agent(config, authenticator=LocalAccounts({}))


def serial_icons(agent: Any) -> int:
    """What `Agent.refresh_icons` did before: one icon after the other, a connection each."""
    from agent_bridge.agent.core import UUID_PATTERN
    from wapt.fsutil import write_atomic

    icons = agent.config.cache_dir / "icons"
    icons.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for item in agent.newest_entries().values():
        package_uuid = item.entry.package_uuid
        if not UUID_PATTERN.fullmatch(package_uuid) or (icons / f"{package_uuid}.png").exists():
            continue
        data = item.source.fetch_icon(package_uuid)
        if data is not None:
            write_atomic(icons / f"{package_uuid}.png", data)
            fetched += 1
    return fetched


def run(quick: bool, repeat: int | None = None) -> dict[str, Any]:
    times = repeat or (2 if quick else 3)
    began = time.perf_counter()
    directory, count = prepare(quick)
    prepare_s = time.perf_counter() - began
    root = common.fresh_directory(common.DATA / "agent-icons-run")
    after, before, second, floor = Samples(), Samples(), Samples(), Samples()
    with http_server(directory) as url:
        agent = make_agent(root, url)
        try:
            loaded = agent.refresh_catalog(network=True)
            if loaded["count"] != count or loaded["errors"]:
                raise RuntimeError(f"the agent loaded {loaded['count']}: {loaded['errors']}")
            icons = agent.config.cache_dir / "icons"
            bodies = [p.read_bytes() for p in sorted((directory / "icons").glob("*.png"))]
            for _ in range(times):
                floor.add(
                    write_floor(root / "floor", bodies)
                )  # alternated, so that both see the same machine
                for samples, how in ((before, "one by one"), (after, "refresh_icons")):
                    shutil.rmtree(icons, ignore_errors=True)
                    start = time.perf_counter()
                    got = serial_icons(agent) if samples is before else agent.refresh_icons()
                    samples.add(time.perf_counter() - start)
                    if got != count or len(list(icons.glob("*.png"))) != count:
                        raise RuntimeError(f"{how}: {got} icons of {count}")
                start = time.perf_counter()
                if agent.refresh_icons() != 0:
                    raise RuntimeError("the second update fetched icons again")
                second.add(time.perf_counter() - start)
        finally:
            agent.stop()
    return result(quick, count, times, prepare_s, after, before, second, floor)


def write_floor(target: Path, bodies: list[bytes]) -> float:
    """Seconds to write `bodies` as icon files from memory, as `refresh_icons` writes them."""
    from wapt.fsutil import fsync_directory, write_atomic

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    start = time.perf_counter()
    for number, body in enumerate(bodies):
        write_atomic(target / f"{number:05d}.png", body, durable=False)
    fsync_directory(target)
    return time.perf_counter() - start


def result(
    quick: bool,
    count: int,
    times: int,
    prepare_s: float,
    after: Samples,
    before: Samples,
    second: Samples,
    floor: Samples,
) -> dict[str, Any]:
    speedup = before.median / after.median
    to_floor = after.median / floor.median
    rows = [
        Row(
            f"agent first update: {count:,} icons over loopback HTTP",
            f"≥ {TARGET_SPEEDUP:.0f}× faster than one by one" if not quick else "(quick)",
            f"median {after.median:.3f} s (best {after.best:.3f} s)",
            f"one by one, same run: median {before.median:.3f} s; "
            f"floor (writing the files alone): median {floor.median:.3f} s",
            f"{speedup:.1f}× faster than one by one; {to_floor:.2f}× the floor",
            speedup >= TARGET_SPEEDUP if not quick else None,
        ),
        Row(
            "next update, every icon present",
            "(informative)",
            f"median {second.median * 1000:.1f} ms",
            "nothing asked",
            "",
            None,
        ),
    ]
    return {
        "name": "agent_icons",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "icons": count,
            "rounds": times,
            "after_s": after.as_dict(),
            "before_s": before.as_dict(),
            "second_update_s": second.as_dict(),
            "floor_s": floor.as_dict(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 icons")
    parser.add_argument("--repeat", type=int, help="rounds of each (default 3)")
    parser.add_argument("--serve", nargs=2, metavar=("DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]))
        return
    outcome = run(args.quick, args.repeat)
    print(common.table(outcome["rows"]))
    for key in ("after_s", "before_s", "second_update_s", "floor_s"):
        print(f"  {key[:-2]:<14} {Samples(outcome['details'][key]['values']).describe()}")
    common.write_results("agent_icons", {**outcome, "rows": [r.__dict__ for r in outcome["rows"]]})


if __name__ == "__main__":
    main()
