// Launchers by kind, as named in the config (`defaults.launcher`, `pools.NAME.launcher`).
import { UserError } from '../errors';
import { LocalLauncher } from './local';
import { poolFromEnvironment } from './cluster';
import { SlurmLauncher } from './slurm';
import { KubernetesLauncher } from './kubernetes';
import type { Launcher } from './types';

export function createLauncher(kind: string): Launcher {
  switch (kind) {
    case 'local':
      return new LocalLauncher();
    case 'slurm':
      return new SlurmLauncher({ pool: poolFromEnvironment() });
    case 'kubernetes':
      return new KubernetesLauncher({ pool: poolFromEnvironment(), poolName: process.env.TRAINFLOW_POOL });
    default:
      throw new UserError(
        `launcher "${kind}" is not available in this build (known: local); set defaults.launcher or pools.<name>.launcher to local`,
      );
  }
}
