// `trainflow render-job CONFIG STAGE [--launcher slurm|kubernetes]`: what a cluster launcher would submit for a
// stage, for review before a run — the sbatch script, or the Kubernetes manifests as YAML — on stdout, with the
// job spec inside (the ConfigMap) or beside it (Slurm reads spec.json from the job folder; printed with --spec).
import type { Command } from 'commander';
import path from 'node:path';
import { stringify } from 'yaml';
import { loadConfigFile } from '../../config/load';
import type { PipelineConfig, PoolConfig } from '../../config/schema';
import { UserError } from '../../errors';
import { jobShape, withSpecPath } from '../../launchers/cluster';
import { renderKubernetesManifests, SPEC_DIR } from '../../launchers/kubernetes';
import { SlurmLauncher } from '../../launchers/slurm';
import { jobName, type JobLaunch } from '../../launchers/types';
import { dataDir, trainerJobCommand } from '../../pipeline/paths';
import { buildJobSpec } from '../../contract/job';
import { stagePrefix } from '../../storage/manifest';
import { joinUri } from '../../storage/s3';

type ClusterLauncher = 'slurm' | 'kubernetes';

/** The pool to render with: the stage's own when it uses that launcher, else the config's first pool that does. */
function pickPool(
  config: PipelineConfig,
  stagePool: string,
  launcher: ClusterLauncher,
): { name?: string; pool?: PoolConfig; note?: string } {
  const own = config.pools[stagePool];
  if (own?.launcher === launcher) return { name: stagePool, pool: own };
  const other = Object.entries(config.pools).find(([, p]) => p.launcher === launcher);
  if (other) {
    return {
      name: other[0],
      pool: other[1],
      note: `the stage's pool ${stagePool} is not a ${launcher} pool; rendering with pool ${other[0]}`,
    };
  }
  return { note: `no ${launcher} pool in the config; rendering with the launcher's defaults` };
}

export interface RenderedJob {
  launcher: ClusterLauncher;
  pool?: string;
  text: string;
  note?: string;
}

export function renderJob(
  file: string,
  stageName: string,
  opts: { launcher?: string; pipelineId?: string },
): RenderedJob {
  const config = loadConfigFile(file);
  const index = config.stages.findIndex((s) => s.name === stageName);
  if (index < 0) {
    throw new UserError(
      `${file}: no stage named "${stageName}" (stages: ${config.stages.map((s) => s.name).join(', ')})`,
    );
  }
  const stage = config.stages[index];
  const requested = opts.launcher ?? config.pools[stage.resources.pool]?.launcher;
  if (requested !== 'slurm' && requested !== 'kubernetes') {
    throw new UserError(
      `--launcher: expected slurm or kubernetes, got ${requested ?? 'nothing'} (stage ${stageName} runs on pool ${stage.resources.pool}, launcher ${String(config.pools[stage.resources.pool]?.launcher)})`,
    );
  }
  const { name: poolName, pool, note } = pickPool(config, stage.resources.pool, requested);

  const pipelineId = opts.pipelineId ?? `${config.metadata.name}-preview`;
  const name = jobName(pipelineId, stage.name);
  const outputPrefix = stagePrefix(config.storage.uri, pipelineId, stage.name);
  const spec = buildJobSpec({
    pipelineId,
    pipelineName: config.metadata.name,
    runId: 'RUN_ID',
    stageIndex: index,
    attempt: 1,
    stage,
    model: config.model,
    tracking: config.tracking,
    inputCheckpoint: index === 0 ? null : `<output of stage ${config.stages[index - 1].name}>`,
    outputPrefix,
    statusUri: joinUri(outputPrefix, 'status.json'),
    storage: {
      endpoint: config.storage.endpoint,
      region: config.storage.region,
      force_path_style: config.storage.force_path_style,
    },
    workDir: path.join(dataDir(), 'work', name),
  });
  const base = trainerJobCommand();
  const launch: JobLaunch = { name, command: base.command, cwd: base.cwd, env: {}, spec, attempt: 1 };

  if (requested === 'slurm') {
    const { script } = new SlurmLauncher({ pool }).render(launch);
    return { launcher: requested, pool: poolName, text: script, note };
  }
  const manifests = renderKubernetesManifests({
    name,
    argv: withSpecPath(launch, `${SPEC_DIR}/spec.json`),
    env: {},
    spec,
    attempt: 1,
    shape: jobShape(spec, pool),
    pool,
    poolName,
  });
  const docs = [manifests.configMap, manifests.service, manifests.job].filter((d) => d !== undefined);
  return {
    launcher: requested,
    pool: poolName,
    // YAML 1.1 quoting: strings that 1.1 readers take for timestamps, booleans (yes/on) or octals stay strings.
    text: docs.map((d) => stringify(d, { aliasDuplicateObjects: false, version: '1.1' })).join('---\n'),
    note,
  };
}

export function register(program: Command): void {
  program
    .command('render-job')
    .description(
      "print what a cluster launcher would submit for a stage: Slurm's batch script or Kubernetes YAML",
    )
    .argument('<config>', 'pipeline config (YAML)')
    .argument('<stage>', 'stage name')
    .option('--launcher <kind>', 'slurm or kubernetes (default: the launcher of the stage’s pool)')
    .option('--pipeline-id <id>', 'pipeline id to render into names and paths', undefined)
    .action((file: string, stageName: string, opts: { launcher?: string; pipelineId?: string }) => {
      const rendered = renderJob(file, stageName, opts);
      if (rendered.note) process.stderr.write(`render-job: ${rendered.note}\n`);
      process.stdout.write(rendered.text);
      process.stderr.write(
        `render-job: ${rendered.launcher} job for stage ${stageName}${rendered.pool ? ` on pool ${rendered.pool}` : ''}\n`,
      );
    });
}
