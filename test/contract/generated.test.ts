// The contract's generated files (JSON Schema, the trainer's pydantic models, constants) must be what the zod
// schemas generate now: a change to a schema without `make contract` fails here, like configs/README.md.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { contractJsonSchema, staleContractFiles } from '../../src/contract/generate';
import { repoRoot } from '../../src/pipeline/paths';

const python = path.join(repoRoot, '.venv', 'bin', 'python');

test('the checked-in contract files are current (make contract regenerates them)', () => {
  expect(staleContractFiles()).toEqual([]);
}, 120_000);

test('every message is in the schema, and durations and sizes are integers with no defaults', () => {
  const defs = contractJsonSchema().$defs as Record<string, { properties?: Record<string, unknown> }>;
  for (const name of ['PipelineConfig', 'StageConfig', 'JobSpec', 'JobStatus'])
    expect(defs[name]).toBeDefined();
  expect(defs.RetryConfig.properties?.initial_interval).toMatchObject({ type: 'integer' });
  expect(JSON.stringify(defs)).not.toContain('"default"');
});

test('the Python models accept the resolved demo and production configs exactly, and refuse a missing field', () => {
  const script = `
import json, subprocess, sys
from trainflow_trainer.contract import PipelineConfig, StageConfig
for f in sys.argv[1:]:
    raw = subprocess.run(["node", "bin/trainflow.js", "validate", f, "--json"], cwd="..", check=True,
                         capture_output=True, text=True).stdout
    resolved = json.loads(raw)
    parsed = PipelineConfig.model_validate(resolved)
    assert parsed.model_dump(mode="json", exclude_unset=True) == resolved, f
    stage = dict(resolved["stages"][0]); del stage["checkpoint"]
    try:
        StageConfig.model_validate(stage)
    except Exception as e:
        assert "checkpoint" in str(e), e
    else:
        raise AssertionError("a stage without its resolved checkpoint block was accepted")
print("ok")
`;
  const out = execFileSync(python, ['-c', script, 'configs/demo.yaml', 'configs/kat-dev-72b.yaml'], {
    cwd: path.join(repoRoot, 'trainer'),
    encoding: 'utf8',
  });
  expect(out.trim()).toBe('ok');
}, 60_000);
