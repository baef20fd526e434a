#!/usr/bin/env node
// The `trainflow` command: runs the TypeScript CLI through tsx's CommonJS hook, so a checkout needs no build step.
// The pinned AWS SDK supports Node 20; its notice about future releases needing Node 22 is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
require('tsx/cjs');
require('../src/cli/main.ts').main();
