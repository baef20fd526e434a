// Canonical JSON (sorted keys) and its hash, so a stage block's identity does not depend on key order, plus a
// flat key-by-key difference used to show what changed in a completed stage's config on `resume`.
import { createHash } from 'node:crypto';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export function hashJson(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}

function flatten(value: unknown, path: string, out: Map<string, string>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    if (entries.length === 0) out.set(path, '{}');
    for (const [k, v] of entries) flatten(v, path ? `${path}.${k}` : k, out);
    return;
  }
  out.set(path, canonicalJson(value));
}

/** The differing leaves of two JSON values, one line each: `path: old → new` (`(absent)` for a missing side). */
export function jsonDiff(before: unknown, after: unknown, root = ''): string[] {
  const a = new Map<string, string>();
  const b = new Map<string, string>();
  flatten(before, root, a);
  flatten(after, root, b);
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  return keys
    .filter((k) => a.get(k) !== b.get(k))
    .map((k) => `${k}: ${a.get(k) ?? '(absent)'} → ${b.get(k) ?? '(absent)'}`);
}
