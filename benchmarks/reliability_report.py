"""Collect the figures the fault tests wrote (``.shoprec/faults/*.json``) into ``benchmarks/results/reliability.json``.

Each test records what it injected, how many rows or requests were involved and what was lost (must be 0).
Run by ``make faults`` after the tests; can be run by hand afterwards too.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults-dir", default=str(REPO / ".shoprec" / "faults"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reliability.json"))
    p.add_argument("--command", default="make faults")
    p.add_argument("--exit-code", type=int, default=None, help="exit status of the pytest run")
    a = p.parse_args(argv)
    tests = {}
    for f in sorted(Path(a.faults_dir).glob("*.json")):
        d = json.loads(f.read_text())
        tests[d.pop("test", f.stem)] = d
    lost = {k: v.get("lost") for k, v in tests.items()}
    report = {
        "command": a.command,
        "pytest_exit_code": a.exit_code,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores (shared), no GPU",
        "summary": {
            "tests": len(tests),
            "faults_injected": sum(int(v.get("faults_injected") or 0) for v in tests.values()),
            "lost": sum(int(x or 0) for x in lost.values()),
            "all_lost_zero": all((x or 0) == 0 for x in lost.values()),
        },
        "tests": tests,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{out}: {len(tests)} tests, {report['summary']['faults_injected']} faults injected, "
          f"lost {report['summary']['lost']}")
    return report


if __name__ == "__main__":
    main()
