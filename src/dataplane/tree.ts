// A session's conversation tree, rebuilt from its recorded turns by longest common token prefix.
//
// Every turn is one sequence: its prompt ids followed by the ids the model generated. Inserting all of a
// session's sequences into a radix tree (nodes hold runs of tokens, a node splits where two sequences part)
// gives the shape the trainer packs: a multi-turn chat is one path, `n > 1` choices and agent forks are
// branches. A token the model generated carries its log-prob and policy version; a token that only ever
// appeared in a prompt (system, user, tool text) carries neither and gets no loss.

export interface TokenMeta {
  /** log-prob of the token under the policy that sampled it; null for prompt tokens */
  logprob: number | null;
  /** policy version of the weights that sampled it; null for prompt tokens */
  version: number | null;
}

export interface TreeNode {
  tokens: number[];
  logprobs: (number | null)[];
  versions: (number | null)[];
  children: TreeNode[];
  /** ids of the turns whose sequence ends exactly here (leaves, or a turn another one extends) */
  turns: string[];
}

/** One sequence to insert: token ids with per-token metadata (prompt tokens have null meta). */
export interface Sequence {
  turnId: string;
  tokens: number[];
  meta: TokenMeta[];
}

export function emptyTree(): TreeNode {
  return { tokens: [], logprobs: [], versions: [], children: [], turns: [] };
}

/**
 * Inserts a sequence below `root`. Where the sequence runs along existing tokens, generated metadata wins
 * over null (a later prompt repeats earlier outputs as plain prompt tokens, the earlier record keeps the
 * log-prob). Two different generated records for the same token at the same place (sampled twice, under
 * different policy versions or distributions) do not merge: the tree forks there, so each branch keeps its
 * own behaviour log-prob and version (the trainer's trie merges the tokens again, with per-branch data).
 */
export function insert(root: TreeNode, seq: Sequence): void {
  let node = root;
  let i = 0;
  const n = seq.tokens.length;
  for (;;) {
    if (i === n) {
      node.turns.push(seq.turnId);
      return;
    }
    const child = node.children.find((c) => c.tokens[0] === seq.tokens[i] && compatible(c, 0, seq.meta[i]));
    if (!child) {
      node.children.push({
        tokens: seq.tokens.slice(i),
        logprobs: seq.meta.slice(i).map((m) => m.logprob),
        versions: seq.meta.slice(i).map((m) => m.version),
        children: [],
        turns: [seq.turnId],
      });
      return;
    }
    let k = 0;
    while (
      k < child.tokens.length &&
      i + k < n &&
      child.tokens[k] === seq.tokens[i + k] &&
      compatible(child, k, seq.meta[i + k])
    ) {
      if (child.logprobs[k] === null && seq.meta[i + k].logprob !== null) {
        child.logprobs[k] = seq.meta[i + k].logprob;
        child.versions[k] = seq.meta[i + k].version;
      }
      k++;
    }
    if (k < child.tokens.length) split(child, k);
    node = child;
    i += k;
  }
}

/** Whether a record may share node position k: one side is a prompt token, or both sampled it alike. */
function compatible(node: TreeNode, k: number, meta: TokenMeta): boolean {
  const lp = node.logprobs[k];
  return lp === null || meta.logprob === null || (lp === meta.logprob && node.versions[k] === meta.version);
}

/** Splits `node` after `k` tokens: the node keeps the head, a new only child takes the tail. */
function split(node: TreeNode, k: number): void {
  const tail: TreeNode = {
    tokens: node.tokens.slice(k),
    logprobs: node.logprobs.slice(k),
    versions: node.versions.slice(k),
    children: node.children,
    turns: node.turns,
  };
  node.tokens = node.tokens.slice(0, k);
  node.logprobs = node.logprobs.slice(0, k);
  node.versions = node.versions.slice(0, k);
  node.children = [tail];
  node.turns = [];
}

export function buildTree(seqs: Sequence[]): TreeNode {
  const root = emptyTree();
  for (const s of seqs) insert(root, s);
  return root;
}

/** Every root-to-leaf path as one flat token list (what a flat, untried trainer would see). */
export function branches(root: TreeNode): number[][] {
  const out: number[][] = [];
  const walk = (node: TreeNode, prefix: number[]): void => {
    const here = prefix.concat(node.tokens);
    if (node.children.length === 0) out.push(here);
    for (const c of node.children) walk(c, here);
  };
  walk(root, []);
  return out;
}

export function countTokens(root: TreeNode): { unique: number; total: number } {
  const total = branches(root).reduce((s, b) => s + b.length, 0);
  let unique = 0;
  const walk = (node: TreeNode): void => {
    unique += node.tokens.length;
    node.children.forEach(walk);
  };
  walk(root);
  return { unique, total };
}

/** Generated tokens (those with a log-prob) of a tree, counted once per node. */
export function generatedTokens(root: TreeNode): number {
  let n = 0;
  const walk = (node: TreeNode): void => {
    n += node.logprobs.filter((lp) => lp !== null).length;
    node.children.forEach(walk);
  };
  walk(root);
  return n;
}

/** The policy versions found in a tree (for staleness: the oldest generated token decides). */
export function versionRange(root: TreeNode): { min: number; max: number } | null {
  let min = Infinity;
  let max = -Infinity;
  const walk = (node: TreeNode): void => {
    for (const v of node.versions) {
      if (v !== null) {
        min = Math.min(min, v);
        max = Math.max(max, v);
      }
    }
    node.children.forEach(walk);
  };
  walk(root);
  return min === Infinity ? null : { min, max };
}
