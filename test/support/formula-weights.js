'use strict';
// The weights and images of tools/make_torchvision_fixtures.py, computed bit for bit the same way
// (so the fixture needs no weights): element i of the p-th state_dict tensor is
// mix32((i + 1) * 0x9E3779B1 + (p + 1) * 0x85EBCA77) / 2^32, an exact multiple of 2^-32, mapped
// per kind of tensor in float64 and rounded once to float32.

function mix32(u) {
  u ^= u >>> 16;
  u = Math.imul(u, 0x85ebca6b) >>> 0;
  u ^= u >>> 13;
  u = Math.imul(u, 0xc2b2ae35) >>> 0;
  u ^= u >>> 16;
  return u >>> 0;
}

/** u(p, i) for i < n, as float64 in [0, 1). */
function uniform(p, n, f) {
  const b = Math.imul(p + 1, 0x85ebca77) >>> 0;
  for (let i = 0; i < n; i++) f(i, mix32((Math.imul(i + 1, 0x9e3779b1) + b) >>> 0) / 4294967296);
}

/** The p-th tensor of a state_dict, named `name`, of `shape`. */
function weightValues(p, name, shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let map;
  if (name.endsWith('num_batches_tracked')) map = (u) => Math.floor(u * 1000);
  else if (name.endsWith('running_var')) map = (u) => 0.5 + u;
  else if (name.endsWith('running_mean')) map = (u) => 0.2 * (2 * u - 1);
  else if (name.endsWith('.bias')) map = (u) => 0.1 * (2 * u - 1);
  else if (shape.length === 1) map = (u) => 0.75 + 0.5 * u;
  else {
    const bound = Math.sqrt(6 / shape.slice(1).reduce((a, b) => a * b, 1));
    map = (u) => (2 * u - 1) * bound;
  }
  uniform(p, n, (i, u) => (out[i] = map(u)));
  return out;
}

/** An image [3, h, w] in [-2, 2). */
function formulaImage(seed, h, w) {
  const out = new Float32Array(3 * h * w);
  uniform(1000 + seed, out.length, (i, u) => (out[i] = 4 * u - 2));
  return out;
}

module.exports = { weightValues, formulaImage };
