"""`python -m trainflow_trainer.tasks.swe synthesize --package NAME==VER … --out FILE.jsonl [options]`
`python -m trainflow_trainer.tasks.swe check FILE.jsonl [--count N]`

synthesize: builds validated SWE instances from real PyPI sdists (synth/pipeline.py); prints progress on
stderr and a last line `TRAINFLOW_SYNTH {summary}`. Exit 0 when at least --min-instances were written, 1 when
fewer, 2 on bad input.
check: confirms every instance of a file (check.py); prints `TRAINFLOW_CHECK {...}` per instance and
`TRAINFLOW_CHECK_SUMMARY {...}`. Exit 0 iff every instance is valid and none is unusable.
(`trainflow tasks synthesize|check` run this module.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.tasks.swe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    syn = sub.add_parser("synthesize", help="synthesise validated instances from PyPI packages")
    syn.add_argument("--package", action="append", required=True, help="NAME==VERSION (repeatable)")
    syn.add_argument("--out", required=True, help="the instances JSONL (sdists are kept next to it)")
    syn.add_argument("--per-package", type=int, default=20, help="most instances per package")
    syn.add_argument("--max-candidates", type=int, default=80, help="most single mutations tried per package")
    syn.add_argument("--combine", type=int, default=4, help="of --per-package, how many may be combined bugs")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--test-requirement", action="append", help="pinned test dependency (default pytest==8.3.4)")
    syn.add_argument("--time-budget", type=float, default=None, help="stop trying new candidates after S seconds")
    syn.add_argument("--min-instances", type=int, default=1, help="exit 1 when fewer were made")
    chk = sub.add_parser("check", help="check the instances of a file")
    chk.add_argument("file")
    chk.add_argument("--count", type=int, default=None, help="check only the first N")
    args = ap.parse_args(argv)

    if args.cmd == "synthesize":
        from .synth.package import DEFAULT_TEST_REQUIREMENTS, PackageError, parse_spec
        from .synth.pipeline import summary_line, synthesize

        try:
            for spec in args.package:
                parse_spec(spec)
        except PackageError as e:
            print(f"trainflow: bad input: {e}", file=sys.stderr)
            return 2
        if args.per_package < 1 or args.combine < 0 or args.combine >= args.per_package:
            print("trainflow: bad input: --per-package ≥ 1 and 0 ≤ --combine < --per-package", file=sys.stderr)
            return 2
        summary = synthesize(
            args.package,
            Path(args.out),
            per_package=args.per_package,
            max_candidates=args.max_candidates,
            combine=args.combine,
            seed=args.seed,
            test_requirements=tuple(args.test_requirement or DEFAULT_TEST_REQUIREMENTS),
            time_budget_s=args.time_budget,
        )
        print(summary_line(summary), flush=True)
        return 0 if summary["instances"] >= args.min_instances else 1

    from .check import check_file

    if not Path(args.file).is_file():
        print(f"trainflow: bad input: no such file {args.file}", file=sys.stderr)
        return 2
    summary = check_file(args.file, args.count)
    print("TRAINFLOW_CHECK_SUMMARY " + json.dumps(summary), flush=True)
    return 0 if not summary["invalid"] and not summary["unusable"] else 1


if __name__ == "__main__":
    sys.exit(main())
