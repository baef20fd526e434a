// The config reference (configs/README.md) is generated from the zod schema, so it cannot drift from it:
// every field with its type, default and description. A test compares the committed file with this output.
import { z } from 'zod';
import { pipelineConfigSchema } from './schema';

type JsonSchema = {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  prefixItems?: JsonSchema[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  required?: string[];
  default?: unknown;
  description?: string;
  pattern?: string;
  minimum?: number;
  exclusiveMinimum?: number;
  maximum?: number;
  format?: string;
};

type Row = { path: string; type: string; required: boolean; default: string; description: string };

function typeOf(s: JsonSchema): string {
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (s.enum) return s.enum.map((v) => `\`${String(v)}\``).join(' | ');
  const alts = s.anyOf ?? s.oneOf;
  if (alts) return alts.map(typeOf).join(' or ');
  if (s.prefixItems) return `[${s.prefixItems.map(typeOf).join(', ')}]`;
  if (s.type === 'array') return `list of ${s.items ? typeOf(s.items) : 'values'}`;
  if (s.type === 'object') {
    if (s.properties) return 'mapping';
    const v = s.additionalProperties;
    return `mapping of name → ${typeof v === 'object' ? typeOf(v) : 'value'}`;
  }
  if (s.type === 'integer') {
    if (s.exclusiveMinimum === 0) return 'positive integer';
    if (s.minimum === 0) return 'integer ≥ 0';
    return 'integer';
  }
  if (s.type === 'number') {
    if (s.exclusiveMinimum === 0) return 'positive number';
    if (s.minimum === 0 && s.maximum === 1) return 'number in [0, 1]';
    if (s.minimum !== undefined) return `number ≥ ${s.minimum}`;
    return 'number';
  }
  if (s.format === 'duration') return 'duration';
  if (s.format === 'size') return 'size';
  if (s.type === 'string' && s.format === 'uri') return 'URL';
  return Array.isArray(s.type) ? s.type.join(' or ') : (s.type ?? 'any');
}

function walk(s: JsonSchema, path: string, required: boolean, rows: Row[]): void {
  rows.push({
    path,
    type: typeOf(s),
    required,
    default: s.default === undefined ? '' : `\`${JSON.stringify(s.default)}\``,
    description: (s.description ?? '').replace(/\n/g, ' '),
  });
  const children = (node: JsonSchema, prefix: string) => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      walk(child, `${prefix}.${key}`, (node.required ?? []).includes(key), rows);
    }
  };
  if (s.properties) children(s, path);
  if (s.type === 'array' && s.items?.properties) children(s.items, `${path}[]`);
  if (typeof s.additionalProperties === 'object' && s.additionalProperties.properties) {
    children(s.additionalProperties, `${path}.NAME`);
  }
  for (const [i, alt] of (s.anyOf ?? s.oneOf ?? []).entries()) {
    if (alt.properties) children(alt, `${path}{${i + 1}}`);
  }
}

export function configReference(): string {
  const schema = z.toJSONSchema(pipelineConfigSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const rows: Row[] = [];
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    walk(child, key, (schema.required ?? []).includes(key), rows);
  }
  const esc = (t: string) => t.replace(/\|/g, '\\|');
  const lines = [
    '# Pipeline config reference (v1)',
    '',
    '<!-- Generated from src/config/schema.ts by `npx trainflow config-reference > configs/README.md`;',
    '     a test fails when this file and the schema disagree. Do not edit by hand. -->',
    '',
    'A pipeline config is one YAML file; `trainflow validate FILE` checks it and prints it with every default',
    'filled in. Durations are written with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`) and sizes with an optional',
    'suffix (`512Mi`, `8Gi`, `2G`); unknown keys are errors. Local paths are relative to the config file.',
    'Strings may contain `{{scheduled_time}}`, `{{scheduled_date}}` or `{{pipeline_id}}`, filled in when a run',
    "starts (for a scheduled retrain, the schedule's time). Alternatives of a union are numbered `{1}`, `{2}`…",
    '',
    '| field | type | required | default | description |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| \`${r.path}\` | ${esc(r.type)} | ${r.required ? 'yes' : ''} | ${esc(r.default)} | ${esc(r.description)} |`,
    ),
    '',
  ];
  return lines.join('\n');
}
