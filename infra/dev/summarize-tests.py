"""Sums jest's JSON reports and pytest's JUnit XML into one line: `N passed, N failed[, N skipped]`.
A runner that left no report (it crashed before reporting) counts as one failure, so it cannot pass silently:
jest.json and pytest.xml always, and every name run-tests.sh listed in `expected-reports`."""

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results = Path(sys.argv[1])
passed = failed = skipped = 0

expected = {"jest.json", "pytest.xml"}
if (results / "expected-reports").exists():
    expected |= set((results / "expected-reports").read_text().split())
failed += sum(not (results / name).exists() for name in expected)

# jest.json, and the other lanes' jest-*.json (run-tests.sh)
for jest in sorted(results.glob("jest*.json")):
    report = json.loads(jest.read_text())
    passed += report["numPassedTests"]
    failed += report["numFailedTests"] + report.get("numRuntimeErrorTestSuites", 0)
    skipped += report["numPendingTests"] + report.get("numTodoTests", 0)

# pytest.xml, and pytest-vllm.xml when the vLLM tests ran in their own lane (run-tests.sh)
for pytest in sorted(results.glob("pytest*.xml")):
    root = ET.parse(pytest).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for s in suites:
        total, fails, errors, skips = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += total - fails - errors - skips
        failed += fails + errors
        skipped += skips

line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
