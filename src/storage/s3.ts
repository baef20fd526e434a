// The S3 side of the store: one client per endpoint, `s3://bucket/key` URIs, and the few object operations the
// checkpoint store and the manifest need. Works against MinIO (path-style, custom endpoint) and AWS S3 alike;
// credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) as the SDK resolves them.
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { UserError } from '../errors';

/** How to reach the object store: the `storage` block of the config minus the URI. */
export interface StorageEndpoint {
  endpoint?: string;
  region?: string;
  force_path_style?: boolean;
}

export interface S3Location {
  bucket: string;
  key: string;
}

export function parseS3Uri(uri: string): S3Location {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  if (!m) throw new UserError(`not an S3 URI: ${JSON.stringify(uri)} (expected s3://bucket/prefix)`);
  return { bucket: m[1], key: m[2].replace(/\/+$/, '') };
}

export function joinUri(base: string, ...parts: string[]): string {
  return [base.replace(/\/+$/, ''), ...parts.map((p) => p.replace(/^\/+|\/+$/g, ''))]
    .filter(Boolean)
    .join('/');
}

const clients = new Map<string, S3Client>();

/** One client per endpoint settings, shared by the process (the SDK keeps a connection pool per client). */
export function s3Client(endpoint: StorageEndpoint): S3Client {
  const id = JSON.stringify([
    endpoint.endpoint ?? '',
    endpoint.region ?? '',
    endpoint.force_path_style ?? false,
  ]);
  let client = clients.get(id);
  if (!client) {
    client = new S3Client({
      endpoint: endpoint.endpoint,
      region: endpoint.region ?? process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: endpoint.force_path_style ?? false,
      // Checksums only where S3 requires them: MinIO and older S3-compatible stores reject some of the
      // SDK's newer default trailers, and the commit protocol carries its own sha256 anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
    });
    clients.set(id, client);
  }
  return client;
}

/** Errors that mean "the endpoint is not there" (connection refused, DNS, timeout), not "the object is not there". */
function isUnreachable(err: unknown): boolean {
  const e = err as { code?: string; name?: string; cause?: { code?: string } };
  const codes = ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN'];
  return codes.includes(e?.code ?? '') || codes.includes(e?.cause?.code ?? '') || e?.name === 'TimeoutError';
}

export class StorageUnreachableError extends UserError {}

/** Rethrows a connection failure as one sentence with the fix; other errors pass through unchanged. */
export function explainS3Error(err: unknown, endpoint: StorageEndpoint): never {
  if ((err as { name?: string })?.name === 'CredentialsProviderError') {
    throw new UserError(
      'no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for the local stack: trainflow / trainflow-secret).',
    );
  }
  if (isUnreachable(err)) {
    throw new StorageUnreachableError(
      `S3 is unreachable at ${endpoint.endpoint ?? 'the default AWS endpoint'}: start it with \`trainflow dev up\` (or fix storage.endpoint in the config).`,
    );
  }
  throw err;
}

/** A store rooted at one endpoint: small helpers over the SDK commands, with the unreachable error made clear. */
export class ObjectStore {
  readonly client: S3Client;
  constructor(readonly endpoint: StorageEndpoint) {
    this.client = s3Client(endpoint);
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      return explainS3Error(err, this.endpoint);
    }
  }

  async checkBucket(uri: string): Promise<void> {
    const { bucket } = parseS3Uri(uri);
    await this.call(() => this.client.send(new HeadBucketCommand({ Bucket: bucket })));
  }

  async getBytes(uri: string): Promise<Buffer | undefined> {
    const { bucket, key } = parseS3Uri(uri);
    return this.call(async () => {
      try {
        const out = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return Buffer.from(await out.Body!.transformToByteArray());
      } catch (err) {
        if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') return undefined;
        throw err;
      }
    });
  }

  /** Whether one object exists (HeadObject; nothing is downloaded). */
  async exists(uri: string): Promise<boolean> {
    const { bucket, key } = parseS3Uri(uri);
    return this.call(async () => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return true;
      } catch (err) {
        const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
        if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404)
          return false;
        throw err;
      }
    });
  }

  /** The first keys (at most `max`, one request) under a prefix folder, as full URIs. */
  async firstKeys(prefixUri: string, max = 100): Promise<string[]> {
    const { bucket, key } = parseS3Uri(prefixUri);
    const prefix = key ? `${key.replace(/\/$/, '')}/` : '';
    const page = await this.call(() =>
      this.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: max })),
    );
    return (page.Contents ?? []).map((o) => `s3://${bucket}/${o.Key}`);
  }

  async getStream(uri: string): Promise<Readable | undefined> {
    const { bucket, key } = parseS3Uri(uri);
    return this.call(async () => {
      try {
        const out = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return out.Body as Readable;
      } catch (err) {
        if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') return undefined;
        throw err;
      }
    });
  }

  async getJson<T>(uri: string): Promise<T | undefined> {
    const bytes = await this.getBytes(uri);
    return bytes === undefined ? undefined : (JSON.parse(bytes.toString('utf8')) as T);
  }

  async putBytes(
    uri: string,
    body: Buffer | string,
    contentType = 'application/octet-stream',
  ): Promise<void> {
    const { bucket, key } = parseS3Uri(uri);
    await this.call(() =>
      this.client.send(
        new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }),
      ),
    );
  }

  async putJson(uri: string, value: unknown): Promise<void> {
    await this.putBytes(uri, `${JSON.stringify(value, null, 2)}\n`, 'application/json');
  }

  /** Uploads a stream of any size: lib-storage switches to a multipart upload above one part (8 MiB here). */
  async upload(uri: string, body: Readable | Buffer): Promise<void> {
    const { bucket, key } = parseS3Uri(uri);
    await this.call(async () => {
      const upload = new Upload({
        client: this.client,
        params: { Bucket: bucket, Key: key, Body: body },
        partSize: 8 * 1024 * 1024,
        queueSize: 4,
      });
      await upload.done();
    });
  }

  /** Every key under a prefix (recursive), as full URIs with their sizes. */
  async list(prefixUri: string): Promise<{ uri: string; size: number }[]> {
    const { bucket, key } = parseS3Uri(prefixUri);
    const prefix = key ? `${key}/` : '';
    const out: { uri: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(() =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
        ),
      );
      for (const obj of page.Contents ?? [])
        out.push({ uri: `s3://${bucket}/${obj.Key}`, size: obj.Size ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** The immediate "folders" under a prefix (common prefixes with delimiter `/`), as names. */
  async listFolders(prefixUri: string): Promise<string[]> {
    const { bucket, key } = parseS3Uri(prefixUri);
    const prefix = key ? `${key}/` : '';
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(() =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: prefix,
            Delimiter: '/',
            ContinuationToken: token,
          }),
        ),
      );
      for (const p of page.CommonPrefixes ?? [])
        names.push(p.Prefix!.slice(prefix.length).replace(/\/$/, ''));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return names;
  }

  async deleteObject(uri: string): Promise<void> {
    const { bucket, key } = parseS3Uri(uri);
    await this.call(() => this.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })));
  }

  /** Deletes every object under a prefix (1000 keys per request, the S3 limit). */
  async deletePrefix(prefixUri: string): Promise<number> {
    const { bucket } = parseS3Uri(prefixUri);
    const objects = await this.list(prefixUri);
    for (let i = 0; i < objects.length; i += 1000) {
      const batch = objects.slice(i, i + 1000).map((o) => ({ Key: parseS3Uri(o.uri).key }));
      await this.call(() =>
        this.client.send(
          new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } }),
        ),
      );
    }
    return objects.length;
  }
}
