// `trainflow report ID [ID …]`: one self-contained interactive HTML page of one or more pipeline runs (their
// stages' curves compared on each chart, with smoothing; the stage timeline; SVG/PNG export), read from the
// pipelines' storage.
import path from 'node:path';
import type { Command } from 'commander';
import { collectReport, JsonReader } from '../../report/collect';
import { writeReport } from '../../report/html';

export function register(program: Command): void {
  program
    .command('report')
    .description('write an interactive HTML report of one or more pipeline runs (compared on every chart)')
    .argument('<ids...>', 'pipeline ids')
    .option(
      '--storage <uri>',
      "the pipelines' storage.uri (s3://bucket/prefix or a folder)",
      's3://trainflow/runs',
    )
    .option('--endpoint <url>', 'S3 endpoint (default: $TRAINFLOW_S3_ENDPOINT or http://127.0.0.1:9000)')
    .option('--out <dir>', 'output folder (default: .data/reports/ID[+ID…])')
    .action(async (ids: string[], opts: { storage: string; endpoint?: string; out?: string }) => {
      const endpoint = opts.endpoint ?? process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
      const reader = new JsonReader({ endpoint, force_path_style: true, region: 'us-east-1' });
      const reports = [];
      for (const id of ids) reports.push(await collectReport(reader, opts.storage, id));
      const page = writeReport(reports, opts.out ?? path.join('.data', 'reports', ids.join('+')));
      process.stdout.write(`${path.resolve(page)}\n`);
    });
}
