// Agent sessions and what the proxy records for them.
//
// The rollout manager issues one key per agent session; every request made with that key is recorded as
// turns (one per returned choice): prompt ids, output ids, log-probs, the policy version of each generated
// token, the request's messages (tool results included) and the returned message (tool calls included).
// Finishing a session with a reward turns it into a trajectory: its conversation tree plus metadata.
import { hash, randomBytes } from 'node:crypto';
import { buildTree, versionRange, type Sequence, type TokenMeta, type TreeNode } from './tree';

export interface TurnRecord {
  id: string;
  kind: 'chat' | 'completion';
  /** chat: the request's messages (user, assistant, tool) as the agent sent them */
  messages?: unknown[];
  promptIds: number[];
  outputIds: number[];
  logprobs: number[];
  versions: number[];
  finishReason: string | null;
  /** chat: the assistant message returned (content, tool_calls); completion: { text } */
  output: unknown;
  /** the turn this chat request continues (its messages + reply are a prefix of this request's) */
  parent: string | null;
  /** the prompt did not extend the parent's prompt + output token for token */
  drift: boolean;
  /** the proxy replaced the prompt by the recorded ids + the new messages' ids (token in, token out) */
  fixed: boolean;
  upstream: string;
  at: number;
}

export interface Session {
  id: string;
  taskId: string;
  groupId: string | null;
  meta: Record<string, unknown>;
  createdAt: number;
  /** when the session was issued or last made a request (idle expiry counts from here) */
  lastActiveAt: number;
  /** the session's API key (so finishing or expiring it revokes the key without a scan) */
  key: string;
  turns: TurnRecord[];
  drift: { detected: number; fixed: number };
  /** requests being answered now (a session is never expired in the middle of a generation) */
  inFlight: number;
  /** index of the upstream this session sticks to (affinity), set on its first request */
  upstream: number | null;
  finished: boolean;
  nextRequest: number;
  /** chat turns by the key of their request's messages (findParent's index) */
  byMessages: Map<string, TurnRecord[]>;
}

export interface Trajectory {
  trajectory_id: string;
  session_id: string;
  task_id: string;
  group_id: string | null;
  reward: number;
  tree: TreeNode;
  turns: {
    id: string;
    parent: string | null;
    drift: boolean;
    fixed: boolean;
    finish_reason: string | null;
  }[];
  versions: { min: number; max: number } | null;
  drift: { detected: number; fixed: number };
  meta: Record<string, unknown>;
  finished_at: string;
  /** The verifier's per-test outcomes (swe tasks: test id → passed | failed | …), when it ran named tests. */
  tests?: Record<string, string>;
}

export class SessionError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class SessionStore {
  private readonly byKey = new Map<string, Session>();
  private readonly byId = new Map<string, Session>();
  private seq = 0;

  issue(
    taskId: string,
    groupId: string | null = null,
    meta: Record<string, unknown> = {},
  ): { session: Session; key: string } {
    const id = `s${(++this.seq).toString(36)}-${randomBytes(4).toString('hex')}`;
    const key = `tfs_${randomBytes(24).toString('base64url')}`;
    const session: Session = {
      id,
      taskId,
      groupId,
      meta,
      createdAt: Date.now(),
      lastActiveAt: Date.now(),
      key,
      turns: [],
      drift: { detected: 0, fixed: 0 },
      inFlight: 0,
      upstream: null,
      finished: false,
      nextRequest: 0,
      byMessages: new Map(),
    };
    this.byKey.set(key, session);
    this.byId.set(id, session);
    return { session, key };
  }

  byApiKey(key: string): Session | undefined {
    return this.byKey.get(key);
  }

  get(id: string): Session | undefined {
    return this.byId.get(id);
  }

  all(): Session[] {
    return [...this.byId.values()];
  }

  get size(): number {
    return this.byId.size;
  }

  /** Ends a session: its key stops working and its record becomes a trajectory. */
  finish(id: string, reward: number): Trajectory {
    const s = this.byId.get(id);
    if (!s) throw new SessionError(`no session ${id} (finished, expired or never issued)`, 404);
    if (s.finished) throw new SessionError(`session ${id} is already finished`, 409);
    this.remove(s);
    return toTrajectory(s, reward);
  }

  /**
   * Removes the sessions idle (no request, no finish) for longer than `idleMs` and returns them. Their keys
   * stop working at once; what they recorded is not turned into trajectories (see TrajectoryProxy.expire).
   */
  expire(idleMs: number, now = Date.now()): Session[] {
    const out: Session[] = [];
    for (const s of this.byId.values()) if (s.inFlight === 0 && now - s.lastActiveAt > idleMs) out.push(s);
    for (const s of out) this.remove(s);
    return out;
  }

  /**
   * Ends a session without a trajectory (the rollout manager aborts a group that can no longer be trained):
   * its key stops working at once, so the agent's next request is refused. Returns it, or undefined.
   */
  revoke(id: string): Session | undefined {
    const s = this.byId.get(id);
    if (s) this.remove(s);
    return s;
  }

  private remove(s: Session): void {
    s.finished = true;
    this.byKey.delete(s.key);
    this.byId.delete(s.id);
  }
}

export function turnSequence(t: TurnRecord): Sequence {
  return {
    turnId: t.id,
    tokens: t.promptIds.concat(t.outputIds),
    meta: [
      ...t.promptIds.map((): TokenMeta => ({ logprob: null, version: null })),
      ...t.outputIds.map((_, i): TokenMeta => ({ logprob: t.logprobs[i], version: t.versions[i] })),
    ],
  };
}

export function sessionTree(s: Session): TreeNode {
  return buildTree(s.turns.map(turnSequence));
}

export function toTrajectory(s: Session, reward: number): Trajectory {
  const tree = sessionTree(s);
  return {
    trajectory_id: s.id,
    session_id: s.id,
    task_id: s.taskId,
    group_id: s.groupId,
    reward,
    tree,
    turns: s.turns.map((t) => ({
      id: t.id,
      parent: t.parent,
      drift: t.drift,
      fixed: t.fixed,
      finish_reason: t.finishReason,
    })),
    versions: versionRange(tree),
    drift: { ...s.drift },
    meta: s.meta,
    finished_at: new Date().toISOString(),
  };
}

// ------------------------------------------------------------------------------------------------ drift

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Each message serialised once; the key of the first k messages is messagesKey(parts, k). */
export function messageParts(messages: unknown[]): string[] {
  return messages.map((m) => JSON.stringify(m));
}

/**
 * The index key of the first k messages: a digest of their serialised form, so that the index holds a fixed
 * size per turn rather than a copy of the whole conversation so far (quadratic in the session's length).
 */
export function messagesKey(parts: string[], k = parts.length): string {
  // one-shot hash: no Hash object per request (it runs on every chat request, once per assistant message)
  return hash('sha256', (k === parts.length ? parts : parts.slice(0, k)).join('\u0001'), 'base64');
}

/** Records a turn in the session (and in the index findParent uses). */
export function addTurn(s: Session, t: TurnRecord, key: string | null): void {
  s.turns.push(t);
  if (key === null) return;
  const list = s.byMessages.get(key);
  if (list) list.push(t);
  else s.byMessages.set(key, [t]);
}

/**
 * The recorded chat turn a new request continues: the longest recorded request whose messages are a prefix
 * of the new ones and that is followed there by an assistant message (the agent's copy of the reply). Among
 * the `n` choices of one request, the one whose reply the agent copied wins. One map lookup per assistant
 * message of the request, so the cost does not grow with the session's history.
 */
export function findParent(
  s: Session,
  messages: unknown[],
  parts: string[] = messageParts(messages),
): TurnRecord | null {
  for (let k = messages.length - 1; k >= 1; k--) {
    if ((messages[k] as { role?: string } | null)?.role !== 'assistant') continue;
    const found = s.byMessages.get(messagesKey(parts, k));
    if (found) return found.find((t) => replyMatches(t.output, messages[k])) ?? found[0];
  }
  return null;
}

interface Message {
  content?: unknown;
  tool_calls?: { function?: { name?: string; arguments?: unknown } }[];
}

function replyMatches(recorded: unknown, sent: unknown): boolean {
  const a = recorded as Message;
  const b = sent as Message;
  const calls = (m: Message): unknown =>
    (m.tool_calls ?? []).map((c) => [c.function?.name, normaliseArgs(c.function?.arguments)]);
  return (a.content ?? '') === (b.content ?? '') && sameJson(calls(a), calls(b));
}

function normaliseArgs(args: unknown): unknown {
  if (typeof args !== 'string') return args;
  try {
    return JSON.parse(args) as unknown;
  } catch {
    return args;
  }
}

export function startsWith(a: number[], prefix: number[]): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

/** The ids a continuation of `parent` must start with: its prompt followed by what the model generated. */
export function recordedHistory(parent: TurnRecord): number[] {
  return parent.promptIds.concat(parent.outputIds);
}

/** startsWith(ids, recordedHistory(parent)) without building the history (runs on every chat request). */
export function extendsHistory(ids: number[], parent: TurnRecord): boolean {
  const p = parent.promptIds;
  const o = parent.outputIds;
  if (ids.length < p.length + o.length) return false;
  for (let i = 0; i < p.length; i++) if (ids[i] !== p[i]) return false;
  for (let i = 0; i < o.length; i++) if (ids[p.length + i] !== o[i]) return false;
  return true;
}
