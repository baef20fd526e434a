// The command line as a user meets it: every sub-command has --help, and validate reports bad input with
// exit code 2 and the FILE:LINE:COL form, through the real `trainflow` entry point.
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main';
import { exampleFixture } from '../config/fixtures';

const run = promisify(execFile);
const CLI = join(__dirname, '..', '..', 'bin', 'trainflow.js');

function allCommands(cmd: Command, prefix: string[] = []): [string[], Command][] {
  return cmd.commands.flatMap((c) => [
    [[...prefix, c.name()], c] as [string[], Command],
    ...allCommands(c, [...prefix, c.name()]),
  ]);
}

test('every sub-command has a description and --help', () => {
  const commands = allCommands(buildProgram());
  expect(commands.length).toBeGreaterThanOrEqual(5);
  for (const [path, cmd] of commands) {
    expect([path.join(' '), cmd.description().length > 0]).toEqual([path.join(' '), true]);
    expect(cmd.helpInformation()).toContain(`Usage: trainflow ${path.join(' ')}`);
  }
});

async function validate(lines: string[]): Promise<{ code: number; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'trainflow-cli-'));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, lines.join('\n'));
  return run('node', [CLI, 'validate', file]).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => ({
      code: e.code,
      stderr: e.stderr.replaceAll(file, 'bad.yaml'),
    }),
  );
}

const HEAD = ['api_version: trainflow/v1', 'metadata: { name: bad }', 'storage: { uri: s3://trainflow/x }'];

test('trainflow validate: a bad config exits 2 with every problem on stderr', async () => {
  const typeErrors = await validate([
    ...HEAD,
    'model: { init: { preset: huge } }',
    'stages:',
    '  - name: a',
    '    kind: sft',
    '    train: { steps: 3, lr: fast }',
  ]);
  expect(typeErrors.code).toBe(2);
  expect(typeErrors.stderr.trim().split('\n')).toEqual([
    'bad.yaml:4:26 model.init.preset: expected one of tiny | small | 1b (a larger model starts from {checkpoint: PATH_OR_S3_URI}), got "huge"',
    'bad.yaml:8:28 stages[0].train.lr: expected a positive number, got "fast"',
  ]);
  // Cross-field checks run once every field has the right type.
  const crossField = await validate([
    ...HEAD,
    'model: { init: { preset: tiny } }',
    'stages:',
    '  - name: a',
    '    kind: sft',
    '    train: { steps: 3 }',
    '    gates: [{ metric: reward_mean, min: 1 }]',
  ]);
  expect(crossField.code).toBe(2);
  expect(crossField.stderr.trim().split('\n')).toEqual([
    'bad.yaml:4:8 model.tokenizer: required when model.init is a preset (a preset brings no tokenizer): set {path: tokenizer.json}',
    'bad.yaml:6:5 stages[0]: sft stages need the data block',
    'bad.yaml:9:23 stages[0].gates[0].metric: unknown metric for a sft stage (known: loss, eval_loss, grad_norm, lr, tokens_per_s), got "reward_mean"',
  ]);
});

test('trainflow validate: a good config prints the resolved YAML', async () => {
  // The demo's data and tokenizer (made by `make demo-data`) are checked too: a copy with small stand-ins.
  const { stdout, stderr } = await run('node', [CLI, 'validate', exampleFixture('demo').file]);
  expect(stderr).toContain(
    'valid (7 stages: midtrain-1 → midtrain-2 → sft → rft → eval-before-rl → rl → eval-after-rl)',
  );
  expect(stdout).toContain('heartbeat_timeout: 60000');
});
