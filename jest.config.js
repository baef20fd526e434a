// Jest runs the TypeScript tests through swc (fast, no type check: `npm run typecheck` does that).
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  rootDir: '.',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' } }] },
  // Integration tests share one local stack (Temporal dev server, MinIO); run files one at a time on 2 cores.
  setupFiles: ['<rootDir>/test/setup/env.ts'],
  maxWorkers: 1,
  testTimeout: 120000,
};
