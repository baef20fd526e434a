// Real example configs (configs/demo.yaml, configs/kat-dev-72b.yaml) in a temporary folder, with the small local
// files they name, so `validate`'s file checks pass on the unchanged config and a test can change one thing.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SPECIAL_TOKENS } from '../../src/config/trainer-model';

export const ROOT = join(__dirname, '..', '..');

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

/** A tokenizer.json with the trainer's special tokens and a handful of ordinary ones (20 tokens). */
export function tokenizerJson(specials: readonly string[] = SPECIAL_TOKENS): string {
  const vocab: Record<string, number> = {};
  'abcdefghijkl'.split('').forEach((c, i) => (vocab[c] = i));
  const added = specials.map((content, i) => ({ id: 12 + i, content, special: true }));
  return JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab, merges: [] }, added_tokens: added });
}

export const TASK = {
  id: 't/1',
  prompt: 'What is 1 + 1?',
  verifier: { kind: 'answer', expected: '2' },
};

export interface Fixture {
  dir: string;
  /** The config file's path (configs/NAME.yaml inside dir, so `../.data/demo/...` resolves as in the repo). */
  file: string;
  /** Writes a file relative to the config's folder and returns its absolute path. */
  write(rel: string, text: string | Buffer): string;
}

/** A temp copy of the repository's layout for one example config, with its local inputs generated. */
export function exampleFixture(name: 'demo' | 'kat-dev-72b'): Fixture {
  const dir = mkdtempSync(join(tmpdir(), `tf-validate-${name}-`));
  const configs = join(dir, 'configs');
  mkdirSync(configs);
  const file = join(configs, `${name}.yaml`);
  copyFileSync(join(ROOT, 'configs', `${name}.yaml`), file);
  const write = (rel: string, text: string | Buffer) => {
    const p = join(configs, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, text);
    return p;
  };
  if (name === 'demo') {
    write('../.data/demo/midtrain-code.jsonl', jsonl([{ text: 'def f(): return 1' }, { text: 'x = 2' }]));
    write('../.data/demo/midtrain-tools.jsonl', jsonl([{ text: '<tool_call> ls </tool_call>' }]));
    write(
      '../.data/demo/sft.jsonl',
      jsonl([
        {
          messages: [
            { role: 'user', content: 'hi' },
            { role: 'assistant', content: 'hello' },
          ],
        },
      ]),
    );
    write('../.data/demo/tokenizer.json', tokenizerJson());
  }
  return { dir, file, write };
}
