'use strict';
// What the tests of Model.run's recorded sequences and compiled runs share: the devices to run on
// and a network with every layer kind Model.run records.
const { cudaStatus } = require('./helpers');

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
const rand = (r, n) => Float32Array.from({ length: n }, () => r.normal());

// Every layer kind Model.run records: conv (Winograd-sized too), LRN + max pool, LRN alone, max
// pool, batch norm folded and alone, a concat of branches, ReLU, spp and fc.
const everyKindSpec = {
  name: 'sequence-test',
  inChannels: 3,
  layers: [
    { type: 'conv', name: 'c1', out: 32, kernel: 3, padding: 1 },
    { type: 'lrn', size: 3 },
    { type: 'maxpool', kernel: 2 },
    { type: 'conv', name: 'c2', out: 32, kernel: 3, padding: 1, relu: false },
    { type: 'batchnorm', name: 'b2', relu: true },
    { type: 'concat', branches: [[{ type: 'conv', name: 'a', out: 8, kernel: 1 }], [{ type: 'conv', name: 'b', out: 6, kernel: 3, padding: 1 }, { type: 'lrn', size: 5 }], [{ type: 'maxpool', kernel: 3, stride: 1, padding: 1 }]] },
    { type: 'batchnorm', name: 'b3' },
    { type: 'relu' },
    { type: 'spp', levels: [3, 2, 1] },
    { type: 'fc', name: 'f1', out: 24, relu: true },
    { type: 'dropout', p: 0.5 },
    { type: 'fc', name: 'f2', out: 5 },
  ],
};

module.exports = { devices, rand, everyKindSpec };
