import {
  branches,
  buildTree,
  countTokens,
  generatedTokens,
  versionRange,
  type Sequence,
  type TokenMeta,
} from '../../src/dataplane/tree';

const P = (turnId: string, prompt: number[], out: number[], v = 1): Sequence => ({
  turnId,
  tokens: prompt.concat(out),
  meta: [
    ...prompt.map((): TokenMeta => ({ logprob: null, version: null })),
    ...out.map((t): TokenMeta => ({ logprob: -t / 10, version: v })),
  ],
});

test('a multi-turn chain is one path; generated metadata survives being repeated as prompt', () => {
  const t = buildTree([P('a', [1, 2], [3, 4], 1), P('b', [1, 2, 3, 4, 5], [6], 2)]);
  expect(branches(t)).toEqual([[1, 2, 3, 4, 5, 6]]);
  const node = t.children[0];
  expect(node.tokens).toEqual([1, 2, 3, 4]);
  expect(node.logprobs).toEqual([null, null, -0.3, -0.4]);
  expect(node.turns).toEqual(['a']);
  expect(node.children[0].versions).toEqual([null, 2]);
  expect(versionRange(t)).toEqual({ min: 1, max: 2 });
});

test('inserting in any order gives the same branches; forks split nodes at the longest common prefix', () => {
  const seqs = [P('a', [1, 2], [3, 4]), P('b', [1, 2], [3, 9]), P('c', [1, 7], [8])];
  const t1 = buildTree(seqs);
  const t2 = buildTree([...seqs].reverse());
  const sorted = (x: number[][]) => x.map((b) => b.join(',')).sort();
  expect(sorted(branches(t1))).toEqual(sorted(branches(t2)));
  expect(sorted(branches(t1))).toEqual(['1,2,3,4', '1,2,3,9', '1,7,8']);
  expect(countTokens(t1)).toEqual({ unique: 7, total: 11 });
  expect(t1.children).toHaveLength(1);
  expect(t1.children[0].tokens).toEqual([1]);
  // The later prompt-only copy did not erase the earlier log-prob of token 3.
  expect(t2.children[0].children.find((c) => c.tokens[0] === 2)!.logprobs).toEqual([null, -0.3]);
});

test('the same token sampled twice under different policies forks: each branch keeps its own log-prob and version', () => {
  // two completions of one prompt both sampled 3 then 4; the second under version 2 with other log-probs
  const a = P('a', [1, 2], [3, 4], 1);
  const b: Sequence = { ...P('b', [1, 2], [3, 4], 2), turnId: 'b' };
  b.meta = b.meta.map((m) => (m.logprob === null ? m : { logprob: m.logprob - 0.5, version: 2 }));
  const t = buildTree([a, b]);
  expect(branches(t)).toEqual([
    [1, 2, 3, 4],
    [1, 2, 3, 4],
  ]);
  const [x, y] = t.children[0].children;
  expect([x.logprobs, x.versions]).toEqual([
    [-0.3, -0.4],
    [1, 1],
  ]);
  expect([y.logprobs, y.versions]).toEqual([
    [-0.8, -0.9],
    [2, 2],
  ]);
  // identical records still share (n > 1 choices that agree), and prompt copies still merge
  expect(branches(buildTree([a, { ...a, turnId: 'c' }]))).toEqual([[1, 2, 3, 4]]);
  expect(generatedTokens(t)).toBe(4);
});
