// Constants of the contract that both languages use; generate.ts writes them into the Python module.
import {
  BAD_INPUT_PREFIX,
  EXIT_BAD_INPUT,
  EXIT_DONE,
  EXIT_PREEMPTED,
  PROTOCOL_VERSION,
  STATUS_LINE_PREFIX,
} from './job';
import { TRACKED_NAMES_LM, TRACKED_NAMES_ROLLOUT } from '../config/metrics';

/** Strings, numbers and string maps (each is a valid Python literal as JSON). */
export const CONTRACT_CONSTANTS: Record<string, string | number | Record<string, string>> = {
  PROTOCOL_VERSION,
  EXIT_DONE,
  EXIT_BAD_INPUT,
  EXIT_PREEMPTED,
  BAD_INPUT_PREFIX,
  STATUS_LINE_PREFIX,
  TRACKED_NAMES_LM,
  TRACKED_NAMES_ROLLOUT,
};
