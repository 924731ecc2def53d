'use strict';
// The k best classes (Model.predict, sp.classify, the HTTP service): against a full sort.
const { expect } = require('chai');
const path = require('path');
const { topK } = require(path.join(__dirname, '..', 'dist', 'core', 'topk'));
const { rng, freshSeed } = require('./support/reference');

const bySort = (row, k, labels) =>
  Array.from(row, (score, index) => ({ index, score }))
    .sort((a, b) => {
      const an = Number.isNaN(a.score), bn = Number.isNaN(b.score);
      if (an !== bn) return an ? 1 : -1;
      return (an ? 0 : b.score - a.score) || a.index - b.index;
    })
    .slice(0, Math.max(0, k))
    .map((x) => (labels ? { ...x, label: labels[x.index] } : x));

describe('topK', function () {
  it('equals a full sort (highest first, ties by lower index, NaN last) on random rows, offsets and k', function () {
    const seed = freshSeed();
    const r = rng(seed).next;
    for (let t = 0; t < 300; t++) {
      const K = 1 + Math.floor(r() * 40);
      const pad = Math.floor(r() * 5);
      const all = Float32Array.from({ length: K + 2 * pad }, () => {
        const u = r();
        return u < 0.1 ? NaN : u < 0.4 ? Math.floor(r() * 4) / 4 : r(); // ties and NaNs
      });
      const k = Math.floor(r() * (K + 3));
      const labels = r() < 0.5 ? Array.from({ length: K }, (_, i) => `c${i}`) : undefined;
      const got = topK(all, k, labels, pad, K);
      const want = bySort(all.subarray(pad, pad + K), Math.min(k, K), labels);
      expect(JSON.stringify(got), `seed ${seed}, case ${t}`).to.equal(JSON.stringify(want));
    }
  });
});
