// Constants of the contract that both languages use; generate.ts writes them into the Python module.
import {
  BAD_INPUT_PREFIX,
  EXIT_BAD_INPUT,
  EXIT_DONE,
  EXIT_PREEMPTED,
  PROTOCOL_VERSION,
  STATUS_LINE_PREFIX,
} from './job';
import { EPISODE_LINE_PREFIX, RL_LINE_PREFIX } from './driver';
import { DATAPLANE_LINE_PREFIX, SERVE_LINE_PREFIX } from './ready';
import { TRACKED_NAMES_LM, TRACKED_NAMES_ROLLOUT } from '../config/metrics';

/** Strings, numbers and string maps (each is a valid Python literal as JSON). */
export const CONTRACT_CONSTANTS: Record<string, string | number | Record<string, string>> = {
  PROTOCOL_VERSION,
  EXIT_DONE,
  EXIT_BAD_INPUT,
  EXIT_PREEMPTED,
  BAD_INPUT_PREFIX,
  STATUS_LINE_PREFIX,
  RL_LINE_PREFIX,
  EPISODE_LINE_PREFIX,
  SERVE_LINE_PREFIX,
  DATAPLANE_LINE_PREFIX,
  TRACKED_NAMES_LM,
  TRACKED_NAMES_ROLLOUT,
};
