// `trainflow schedule create|list|describe|pause|unpause|trigger|delete`: recurring retrains on Temporal
// Schedules. See src/pipeline/schedules.ts for how a run gets its scheduled time and init checkpoint.
import type { Command } from 'commander';
import { addConnectionFlags, clientFor, type ConnectionFlags } from '../../pipeline/cli-support';
import { createSchedule, scheduleRuns, withSchedule, type OverlapName } from '../../pipeline/schedules';

export function register(program: Command): void {
  const schedule = program.command('schedule').description('recurring pipeline runs (Temporal Schedules)');

  addConnectionFlags(
    schedule
      .command('create')
      .description('create a schedule that starts the pipeline of --config at each --cron time')
      .argument('<name>', 'schedule name (runs get ids NAME-<time>)')
      .requiredOption(
        '--config <file>',
        'pipeline config (YAML); may use {{scheduled_date}} / {{scheduled_time}}',
      )
      .option('--cron <expr>', '5-field cron expression (default: the config’s schedule.cron)')
      .option(
        '--overlap <policy>',
        'skip | buffer-one | buffer-all | cancel-other | terminate-other | allow-all',
      )
      .option('--no-pause-on-failure', 'keep the schedule running after a failed run'),
  ).action(
    async (
      name: string,
      opts: ConnectionFlags & {
        config: string;
        cron?: string;
        overlap?: OverlapName;
        pauseOnFailure: boolean;
      },
    ) => {
      const client = await clientFor(opts);
      await createSchedule(client, {
        name,
        configFile: opts.config,
        cron: opts.cron,
        overlap: opts.overlap,
        pauseOnFailure: opts.pauseOnFailure,
      });
      process.stdout.write(`created schedule ${name}\n`);
    },
  );

  addConnectionFlags(
    schedule.command('list').description('list the schedules and their next run times'),
  ).action(async (opts: ConnectionFlags) => {
    const client = await clientFor(opts);
    let any = false;
    for await (const s of client.schedule.list()) {
      any = true;
      const next = s.info?.nextActionTimes?.[0]?.toISOString() ?? '-';
      process.stdout.write(`${s.scheduleId}  ${s.state.paused ? 'paused' : 'active'}  next ${next}\n`);
    }
    if (!any) process.stdout.write('no schedules\n');
  });

  addConnectionFlags(
    schedule
      .command('describe')
      .description('show a schedule: spec, state, recent and next runs')
      .argument('<name>'),
  ).action(async (name: string, opts: ConnectionFlags) => {
    const client = await clientFor(opts);
    const d = await withSchedule(client, name, (h) => h.describe());
    const lines = [
      `schedule ${name}: ${d.state.paused ? `paused${d.state.note ? ` (${d.state.note})` : ''}` : 'active'}`,
      `  cron: ${(d.spec.calendars ?? []).length ? JSON.stringify(d.spec.calendars) : JSON.stringify(d.spec)}`,
      `  overlap: ${d.policies.overlap}, pause on failure: ${d.policies.pauseOnFailure}`,
      `  next: ${
        d.info.nextActionTimes
          .slice(0, 3)
          .map((t) => t.toISOString())
          .join(', ') || '-'
      }`,
      `  runs: ${(await scheduleRuns(client, name)).join(', ') || 'none yet'}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });

  for (const [verb, description] of [
    ['pause', 'stop starting runs'],
    ['unpause', 'start runs again'],
    ['trigger', 'start a run now'],
    ['delete', 'remove the schedule (runs already started continue)'],
  ] as const) {
    addConnectionFlags(schedule.command(verb).description(description).argument('<name>')).action(
      async (name: string, opts: ConnectionFlags) => {
        const client = await clientFor(opts);
        await withSchedule(client, name, async (h) => {
          if (verb === 'pause') await h.pause('paused from the trainflow CLI');
          else if (verb === 'unpause') await h.unpause();
          else if (verb === 'trigger') await h.trigger();
          else await h.delete();
        });
        process.stdout.write(
          `${verb}${verb.endsWith('e') ? 'd' : verb === 'trigger' ? 'ed' : 'd'} schedule ${name}\n`,
        );
      },
    );
  }
}
