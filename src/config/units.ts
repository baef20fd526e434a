// Typed units in the config: durations (`500ms`, `30s`, `5m`, `2h`, `7d`) resolve to milliseconds and sizes
// (`512Mi`, `8Gi`, `1G`) to bytes, so the rest of the code never parses strings.
import { z } from 'zod';

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  k: 1e3,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2]]);
}

export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * SIZE_UNITS[m[2] ?? '']);
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const DURATION_HINT = 'expected a duration such as 30s, 5m, 2h or 7d';

/** A duration written with its unit; resolves to milliseconds. */
export const duration = () =>
  z
    .string({ error: DURATION_HINT })
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined || ms <= 0) {
        ctx.addIssue({ code: 'custom', message: DURATION_HINT, input: text });
        return z.NEVER;
      }
      return ms;
    })
    .meta({ format: 'duration' });

const SIZE_HINT = 'expected a size such as 512Mi, 8Gi or 2G';

/** A byte size with an optional SI or binary suffix; resolves to bytes. */
export const size = () =>
  z
    .union([z.number(), z.string()], { error: SIZE_HINT })
    .transform((value, ctx) => {
      const bytes = typeof value === 'number' ? value : parseSize(value);
      if (bytes === undefined || bytes <= 0) {
        ctx.addIssue({ code: 'custom', message: SIZE_HINT, input: value });
        return z.NEVER;
      }
      return bytes;
    })
    .meta({ format: 'size' });
