// Every jest worker: the local stack's documented defaults, quiet SDK logs, and no AWS SDK notice about Node 22.
import { DefaultLogger, Runtime } from '@temporalio/worker';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
process.env.AWS_ACCESS_KEY_ID ??= 'trainflow';
process.env.AWS_SECRET_ACCESS_KEY ??= 'trainflow-secret';
process.env.TRAINFLOW_LOG_FORMAT ??= 'json';
process.env.TRAINFLOW_LOG_LEVEL ??= 'warn';

try {
  Runtime.install({ logger: new DefaultLogger('WARN') });
} catch {
  // already installed in this process by an earlier test file
}
