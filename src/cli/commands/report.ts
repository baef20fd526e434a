// `trainflow report ID`: an HTML page with PNG charts of a pipeline's stages (loss, reward, pass rate,
// throughput, RL turns and parallel tool calls, the stage timeline), read from the pipeline's storage.
import path from 'node:path';
import type { Command } from 'commander';
import { collectReport, JsonReader } from '../../report/collect';
import { writeReport } from '../../report/html';

export function register(program: Command): void {
  program
    .command('report')
    .description("write an HTML report (and PNG charts) of a pipeline's stages")
    .argument('<id>', 'pipeline id')
    .option(
      '--storage <uri>',
      "the pipeline's storage.uri (s3://bucket/prefix or a folder)",
      's3://trainflow/runs',
    )
    .option('--endpoint <url>', 'S3 endpoint (default: $TRAINFLOW_S3_ENDPOINT or http://127.0.0.1:9000)')
    .option('--out <dir>', 'output folder (default: .data/reports/ID)')
    .action(async (id: string, opts: { storage: string; endpoint?: string; out?: string }) => {
      const endpoint = opts.endpoint ?? process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
      const reader = new JsonReader({ endpoint, force_path_style: true, region: 'us-east-1' });
      const report = await collectReport(reader, opts.storage, id);
      const page = writeReport(report, opts.out ?? path.join('.data', 'reports', id));
      process.stdout.write(`${path.resolve(page)}\n`);
    });
}
