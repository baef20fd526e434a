// `validate --check-remote` against the local stack's MinIO (a real S3 API): the s3:// inputs a config names —
// data sources (an object or a folder prefix), the tokenizer, an init checkpoint — are found when they exist and
// reported at their field's YAML position when they do not. Needs the local stack (`trainflow dev up`).
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { validateConfigFile } from '../../src/config/checks';
import { ConfigError } from '../../src/config/load';
import { ObjectStore } from '../../src/storage/s3';
import { minio } from '../dataplane/s3';
import { exampleFixture } from './fixtures';

const ENDPOINT = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';

test('s3:// data, tokenizer and checkpoint are checked with --check-remote, and only then', async () => {
  const { client, bucket } = await minio();
  const prefix = `tests/check-remote-${Date.now()}`;
  const put = (key: string, body: string) =>
    client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}`, Body: body }));
  await put('data/part-0.jsonl', '{"text": "a"}\n');
  await put('folder/x/part-1.parquet', 'PAR1....PAR1');
  await put('tok/tokenizer.json', '{}');
  await put('ckpt/config.json', '{}');
  const uri = (key: string) => `s3://${bucket}/${prefix}/${key}`;
  const fx = exampleFixture('demo');
  const config = {
    api_version: 'trainflow/v1',
    metadata: { name: 'remote' },
    storage: { uri: `s3://${bucket}/${prefix}/runs`, endpoint: ENDPOINT, force_path_style: true },
    model: { init: { checkpoint: uri('ckpt') }, tokenizer: { path: uri('tok') } },
    stages: [
      {
        name: 'a',
        kind: 'midtrain',
        data: {
          sources: [
            { path: uri('data/part-0.jsonl') },
            { path: uri('folder'), format: 'parquet' },
            { path: uri('missing/') },
          ],
        },
        train: { steps: 1 },
      },
    ],
  };
  writeFileSync(fx.file, stringify(config));
  const store = new ObjectStore({ endpoint: ENDPOINT, region: 'us-east-1', force_path_style: true });
  const problems = async (remote?: ObjectStore) =>
    validateConfigFile(fx.file, { remote }).then(
      () => [],
      (err: unknown) => {
        if (err instanceof ConfigError) return err.message.split('\n').map((l) => l.replace(fx.file, 'F'));
        throw err;
      },
    );
  expect(await problems()).toEqual([]); // without --check-remote nothing remote is looked at
  expect(await problems(store)).toEqual([
    `F:21:17 stages[0].data.sources[2].path: no such object or folder ${uri('missing/')} (or no .jsonl/.parquet file among its first keys)`,
  ]);

  config.model = { init: { checkpoint: uri('nockpt') }, tokenizer: { path: uri('notok/tokenizer.json') } };
  writeFileSync(fx.file, stringify(config));
  expect(await problems(store)).toEqual([
    `F:10:17 model.init.checkpoint: no checkpoint at ${uri('nockpt')} (neither config.json nor COMMIT.json under it)`,
    `F:12:11 model.tokenizer.path: no such object ${uri('notok/tokenizer.json')}`,
    `F:21:17 stages[0].data.sources[2].path: no such object or folder ${uri('missing/')} (or no .jsonl/.parquet file among its first keys)`,
  ]);
});
