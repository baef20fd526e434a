// The local stack is healthy: a workflow round trip through the Temporal dev server and an object round trip
// through MinIO. Runs against the stack `make test` started (addresses from the environment).
import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import { Worker } from '@temporalio/worker';

const temporalAddress = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
const s3Endpoint = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
const bucket = process.env.TRAINFLOW_BUCKET ?? 'trainflow';

test('a workflow runs through the Temporal dev server', async () => {
  const connection = await Connection.connect({ address: temporalAddress });
  const taskQueue = `health-${randomUUID()}`;
  const worker = await Worker.create({
    connection: await (
      await import('@temporalio/worker')
    ).NativeConnection.connect({ address: temporalAddress }),
    taskQueue,
    workflowsPath: require.resolve('./ping-workflow'),
  });
  try {
    const result = await worker.runUntil(
      new Client({ connection }).workflow.execute('ping', {
        taskQueue,
        workflowId: taskQueue,
        args: ['hello'],
      }),
    );
    expect(result).toBe('pong: hello');
  } finally {
    await connection.close();
  }
});

test('an object round-trips through MinIO', async () => {
  const s3 = new S3Client({ endpoint: s3Endpoint, region: 'us-east-1', forcePathStyle: true });
  const key = `health/${randomUUID()}.txt`;
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'trainflow' }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    expect(await got.Body?.transformToString()).toBe('trainflow');
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  } finally {
    s3.destroy();
  }
});
