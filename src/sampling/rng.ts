// A small seeded PRNG (SplitMix32 over a 32-bit state) whose whole state is one number, so a sampler's
// draws are reproducible from a seed and resume exactly from the state saved with its statistics.
export class Rng {
  private s: number;
  constructor(seedOrState: number) {
    this.s = seedOrState >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.s = (this.s + 0x9e3779b9) >>> 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  get state(): number {
    return this.s;
  }
}
