// `trainflow tasks synthesize|check`: build SWE task instances from real PyPI packages, and check a file of them.
// Both run the trainer's module (python -m trainflow_trainer.tasks.swe) in its venv, passing its output through;
// relative paths are taken from the caller's working directory.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import type { Command } from 'commander';
import { repoRoot } from '../../pipeline/paths';

function runTrainerModule(args: string[]): never {
  const python = path.join(repoRoot, '.venv', 'bin', 'python');
  const r = spawnSync(python, ['-m', 'trainflow_trainer.tasks.swe', ...args], {
    cwd: path.join(repoRoot, 'trainer'),
    stdio: 'inherit',
    env: { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '1' },
  });
  if (r.error) {
    process.stderr.write(`trainflow: could not run ${python}: ${r.error.message} (run make setup)\n`);
    process.exit(2);
  }
  process.exit(r.status ?? 1);
}

const collect = (value: string, previous: string[]) => [...previous, value];

export function register(program: Command): void {
  const tasks = program.command('tasks').description('SWE task instances: synthesise them and check them');
  tasks
    .command('synthesize')
    .description(
      'synthesise validated SWE instances from real PyPI sdists that ship their tests (procedural bugs, FAIL_TO_PASS/PASS_TO_PASS)',
    )
    .requiredOption('--package <NAME==VERSION>', 'a PyPI release (repeatable)', collect, [])
    .requiredOption('--out <FILE.jsonl>', 'the instances file (the sdists are kept next to it)')
    .option('--per-package <n>', 'most instances per package', '20')
    .option('--max-candidates <n>', 'most single mutations tried per package', '80')
    .option('--combine <n>', 'of --per-package, how many may combine two bugs', '4')
    .option('--seed <n>', 'seed of the sampled mutations', '0')
    .option('--time-budget <seconds>', 'stop trying new candidates after this long')
    .option('--min-instances <n>', 'exit 1 when fewer instances were made', '1')
    .action((o: Record<string, string | string[] | undefined>) => {
      const args = ['synthesize', '--out', path.resolve(o.out as string)];
      for (const p of o.package as string[]) args.push('--package', p);
      for (const k of ['per-package', 'max-candidates', 'combine', 'seed', 'time-budget', 'min-instances']) {
        const v = o[k.replace(/-(\w)/g, (_m, c: string) => c.toUpperCase())];
        if (typeof v === 'string') args.push(`--${k}`, v);
      }
      runTrainerModule(args);
    });
  tasks
    .command('check')
    .description(
      'check each SWE instance of a file: its base tree fails FAIL_TO_PASS, the gold patch passes all, an empty patch scores 0',
    )
    .argument('<file>', 'a SWE instances JSONL file')
    .option('--count <n>', 'check only the first N instances')
    .action((file: string, o: { count?: string }) => {
      runTrainerModule(['check', path.resolve(file), ...(o.count ? ['--count', o.count] : [])]);
    });
}
