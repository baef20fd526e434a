"""SWE task synthesis at full size: `trainflow tasks synthesize` over three real PyPI packages, then `tasks check`
over what it wrote. Target (issue 16): ≥ 50 validated instances from ≥ 3 packages in under 30 minutes on the
2-core development machine. Writes bench/results/swe.json and prints a table.

    cd trainer && ../.venv/bin/python ../bench/swe/run.py [--out DIR] [--synth-log FILE]

--synth-log: take the synthesis from an earlier run's stdout (its TRAINFLOW_SYNTH line, with the wall time it
records) instead of running it again; the check always runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["sqlparse==0.5.3", "boltons==25.0.0", "isodate==0.7.2"]
RESULT = Path(__file__).resolve().parents[1] / "results" / "swe.json"
TARGET = {"instances": 50, "packages": 3, "seconds": 1800}


def last_line(text: str, prefix: str) -> dict:
    line = next(ln for ln in reversed(text.splitlines()) if ln.startswith(prefix))
    return json.loads(line[len(prefix) :])


def run_module(args: list[str]) -> tuple[str, float, int]:
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.tasks.swe", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return p.stdout, time.monotonic() - t0, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/trainflow-bench-swe")
    ap.add_argument("--synth-log", default=None)
    args = ap.parse_args()
    out = Path(args.out) / "swe.jsonl"
    load_before = os.getloadavg()
    if args.synth_log:
        synth = last_line(Path(args.synth_log).read_text(), "TRAINFLOW_SYNTH ")
        out = Path(synth["out"])
    else:
        argv = ["synthesize", "--out", str(out), "--per-package", "20", "--combine", "4"]
        for p in PACKAGES:
            argv += ["--package", p]
        text, _, _ = run_module(argv)
        synth = last_line(text, "TRAINFLOW_SYNTH ")
    text, check_s, _ = run_module(["check", str(out)])
    check = last_line(text, "TRAINFLOW_CHECK_SUMMARY ")
    per_instance = [json.loads(ln.split(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("TRAINFLOW_CHECK ")]
    check["problems"] = {r["instance_id"]: r["problems"] for r in per_instance if not r["ok"]}
    result = {
        "bench": "swe",
        "packages": [p["package"] for p in synth["packages"]],
        "instances": synth["instances"],
        "packages_with_instances": synth["packages_with_instances"],
        "synthesize_seconds": synth["seconds"],
        "per_package": synth["packages"],
        "check": {k: check[k] for k in ("checked", "valid", "invalid", "problems", "unusable", "seconds")},
        "check_seconds": round(check_s, 1),
        "target": TARGET,
        "meets_target": synth["instances"] >= TARGET["instances"]
        and synth["packages_with_instances"] >= TARGET["packages"]
        and synth["seconds"] < TARGET["seconds"]
        and check["valid"] == check["checked"] == synth["instances"],
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'package':<18} {'instances':>9} {'single':>6} {'combined':>8} {'candidates':>10} {'suite s':>7} {'s':>6}")
    for p in synth["packages"]:
        print(
            f"{p['package']:<18} {p['instances']:>9} {p['validated_single']:>6} {p['validated_combined']:>8} "
            f"{p['candidates']:>10} {p['suite_s']:>7.1f} {p['seconds']:>6.0f}"
        )
    print(
        f"total: {synth['instances']} instances from {synth['packages_with_instances']} packages in "
        f"{synth['seconds']:.0f}s; check: {check['valid']}/{check['checked']} valid in {check_s:.0f}s "
        f"-> {RESULT} (meets target: {result['meets_target']})"
    )
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
