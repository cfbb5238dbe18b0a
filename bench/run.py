"""Run every benchmark and print one Markdown table: target, measured, reference, ratio, result.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...]      (`make bench`)

Generated data is kept under `bench/data/` (git-ignored) and reused; the first run builds it.
Results also go to `bench/results/latest.json` and `bench/results/latest.md` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import agent_icons
import agent_latency
import bundle
import common
import index_http
import kiosk_start
import portal_load
import scan_repo
import site_hosts
import verify_large

BENCHMARKS = {
    "verify_large": verify_large,
    "index_http": index_http,
    "scan_repo": scan_repo,
    "agent_latency": agent_latency,
    "agent_icons": agent_icons,
    "bundle": bundle,
    "portal_load": portal_load,
    "site_hosts": site_hosts,
    "kiosk_start": kiosk_start,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args()

    start = time.perf_counter()
    code_before = common.code_digest()
    info = common.machine()
    info["wapt/ digest"] = code_before
    print("## Machine\n")
    print(common.machine_markdown(info))
    print(flush=True)

    results: list[dict[str, Any]] = []
    for name, module in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"## {name}\n", flush=True)
        began = time.perf_counter()
        result = module.run(args.quick)
        result["wall_s"] = time.perf_counter() - began
        module.print_result(result)
        print(
            f"\n({name}: {result['wall_s']:.1f} s, of which data preparation "
            f"{result['prepare_s']:.1f} s)\n",
            flush=True,
        )
        results.append(result)

    total = time.perf_counter() - start
    rows = [row for result in results for row in result["rows"]]
    summary = common.table(rows)
    changed = common.code_digest() != code_before
    print("## Summary\n")
    print(summary)
    print(f"\nTotal wall time: {total:.1f} s (data preparation {_prepared(results):.1f} s).")
    if changed:
        print("\nWARNING: wapt/ changed while the benchmarks ran; the figures mix two versions.")

    common.RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "quick": args.quick,
        "total_s": total,
        "code_changed_during_run": changed,
        "results": [{**r, "rows": [row.__dict__ for row in r["rows"]]} for r in results],
    }
    (common.RESULTS / "latest.json").write_text(
        json.dumps(payload, indent=1, ensure_ascii=False), "utf-8"
    )
    (common.RESULTS / "latest.md").write_text(
        f"{common.machine_markdown(info)}\n\n{summary}\n\nTotal wall time: {total:.1f} s\n",
        "utf-8",
    )
    failed = [row for row in rows if row.passed is False]
    return 1 if failed else 0


def _prepared(results: list[dict[str, Any]]) -> float:
    return sum(r["prepare_s"] for r in results)


if __name__ == "__main__":
    sys.exit(main())
