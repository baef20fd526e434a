// The facts `validate` copies from the Python trainer (src/config/trainer-model.ts, the enums in schema.ts) agree
// with the trainer's own definitions: its Python is run and its lists compared, so a change in model.py,
// tokenizer.py, stages/, tasks/ or rl/batch.py that validate does not know about fails here.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ADVANTAGE_SCALINGS, DATA_KINDS, KINDS, TASK_FAMILIES } from '../../src/config/schema';
import {
  HF_ARCHITECTURES,
  HF_DEFAULT_MAX_POSITIONS,
  HF_ROPE_TYPES,
  SUPPORTED_MODELS,
  MODEL_CONFIG_FIELDS,
  SPECIAL_TOKENS,
  TRAINER_PRESETS,
} from '../../src/config/trainer-model';
import { ROOT } from './fixtures';

const PYTHON = join(ROOT, '.venv', 'bin', 'python');

const SCRIPT = `
import dataclasses, json
from trainflow_trainer.model import ARCHITECTURES, PRESETS, ROPE_TYPES, ModelConfig, supported_models
from trainflow_trainer.tokenizer import SPECIAL_TOKENS
from trainflow_trainer.stages import STAGES
from trainflow_trainer.tasks import FAMILIES
from trainflow_trainer.data import DATA_KINDS
from trainflow_trainer.tasks.task import VERIFIER_KINDS
from trainflow_trainer.rl.batch import SCALINGS
fields = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
max_pos = next(f.default for f in dataclasses.fields(ModelConfig) if f.name == "max_position_embeddings")
print(json.dumps({
    "fields": fields,
    "presets": {k: dataclasses.asdict(v) for k, v in PRESETS.items()},
    "special": SPECIAL_TOKENS,
    "kinds": sorted(STAGES),
    "families": list(FAMILIES),
    "data_kinds": list(DATA_KINDS),
    "verifiers": list(VERIFIER_KINDS),
    "scalings": list(SCALINGS),
    "max_pos": max_pos,
    "architectures": ARCHITECTURES,
    "rope_types": list(ROPE_TYPES),
    "supported": supported_models(),
}))
`;

test("trainer-model.ts and the schema's enums match the trainer's Python definitions", () => {
  expect({ python: existsSync(PYTHON) }).toEqual({ python: true }); // `make setup` builds .venv
  const out = execFileSync(PYTHON, ['-c', SCRIPT], {
    cwd: join(ROOT, 'trainer'),
    env: { ...process.env, OMP_NUM_THREADS: '1' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  const py = JSON.parse(out) as {
    fields: Record<string, string>;
    presets: Record<string, Record<string, number | boolean>>;
    special: string[];
    kinds: string[];
    families: string[];
    data_kinds: string[];
    verifiers: string[];
    scalings: string[];
    max_pos: number;
    architectures: Record<string, string>;
    rope_types: string[];
    supported: string;
  };
  expect(MODEL_CONFIG_FIELDS).toEqual(py.fields);
  expect(TRAINER_PRESETS).toEqual(py.presets);
  expect([...SPECIAL_TOKENS]).toEqual(py.special);
  expect([...KINDS].sort()).toEqual(py.kinds);
  expect([...TASK_FAMILIES]).toEqual(py.families);
  expect([...DATA_KINDS]).toEqual(py.data_kinds);
  expect(['answer', 'unit_tests', 'swe_tests']).toEqual(py.verifiers); // checks.ts taskProblem
  expect([...ADVANTAGE_SCALINGS]).toEqual(py.scalings);
  expect(HF_DEFAULT_MAX_POSITIONS).toBe(py.max_pos);
  expect(HF_ARCHITECTURES).toEqual(py.architectures);
  expect([...HF_ROPE_TYPES]).toEqual(py.rope_types);
  expect(SUPPORTED_MODELS).toBe(py.supported);
});
