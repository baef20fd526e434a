// The local stack's MinIO for the data-plane tests (its endpoint and keys from the env vars the stack sets).
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';

/** The local stack's MinIO; fails loudly (not a skip) when it is not up. */
export async function minio(): Promise<{ client: S3Client; bucket: string }> {
  const endpoint = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
  const bucket = process.env.TRAINFLOW_BUCKET ?? 'trainflow';
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'trainflow',
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'trainflow-secret',
    },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch (err) {
    throw new Error(
      `MinIO is unreachable at ${endpoint} (bucket ${bucket}): start the local stack with \`trainflow dev up\` (${String(err)})`,
    );
  }
  return { client, bucket };
}
