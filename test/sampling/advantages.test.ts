// Advantage scaling: plain GRPO by default, and the difficulty / entropy scalings' direction and bounds.
import { advantageScales, groupAdvantages, scaledAdvantages } from '../../src/sampling';

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

test('group advantages are centred and, by default, of unit standard deviation', () => {
  const a = groupAdvantages([1, 0, 0, 1, 1, 0, 0, 0]);
  expect(sum(a)).toBeCloseTo(0, 9);
  expect(Math.sqrt(sum(a.map((x) => x * x)) / a.length)).toBeCloseTo(1, 4);
  expect(groupAdvantages([1, 0], false)).toEqual([0.5, -0.5]);
  expect(groupAdvantages([1, 1, 1])).toEqual([0, 0, 0]); // no signal
  expect(groupAdvantages([])).toEqual([]);
});

test('none leaves GRPO untouched', () => {
  const groups = [{ rewards: [1, 0, 0, 0] }, { rewards: [1, 1, 1, 0] }];
  expect(scaledAdvantages(groups, 'none')).toEqual(groups.map((g) => groupAdvantages(g.rewards)));
});

test('difficulty scaling amplifies harder groups and damps easier ones, within bounds', () => {
  const groups = [{ rewards: [1, 0, 0, 0] }, { rewards: [1, 1, 0, 0] }, { rewards: [1, 1, 1, 0] }];
  const [hard, mid, easy] = advantageScales(groups, 'difficulty');
  expect(hard).toBeGreaterThan(1);
  expect(mid).toBeCloseTo(1);
  expect(easy).toBeLessThan(1);
  expect(hard).toBeCloseTo(0.75 / 0.5);
  const scaled = scaledAdvantages(groups, 'difficulty');
  expect(scaled[0][0]).toBeCloseTo(groupAdvantages(groups[0].rewards)[0] * hard);
  const extreme = advantageScales(
    [{ rewards: [0, 0, 0, 1] }, { rewards: [1, 1, 1, 1] }, { rewards: [1, 1, 1, 1] }],
    'difficulty',
  );
  expect(extreme[0]).toBe(2);
  expect(advantageScales([{ rewards: [1, 1] }], 'difficulty')).toEqual([1]);
});

test('entropy scaling follows the group entropy relative to the batch', () => {
  const groups = [
    { rewards: [1, 0], entropy: 2.0 },
    { rewards: [1, 0], entropy: 1.0 },
    { rewards: [1, 0], entropy: 0.1 },
  ];
  const [hi, mid, lo] = advantageScales(groups, 'entropy');
  expect(hi).toBeCloseTo(2.0 / (3.1 / 3));
  expect(mid).toBeLessThan(1);
  expect(lo).toBe(0.5);
  expect(() => advantageScales([{ rewards: [1, 0] }], 'entropy')).toThrow(
    /group 0 has no valid mean token entropy/,
  );
  expect(() => advantageScales(groups, 'loud' as never)).toThrow(/advantage_scaling/);
  expect(() => advantageScales(groups, 'entropy', { minScale: 2 })).toThrow(/minScale/);
});
