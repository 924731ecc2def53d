'use strict';
// A whole model against fixed expected outputs produced independently of the kernels: the
// committed fixture (weights + logits) was computed by the float64 reference path
// (test/fixtures/make-tiny-fixture.js). Runs on every device present.
const path = require('path');
const expected = require('./fixtures/tiny-spp.expected.json');
const { sp, cudaStatus, expectClose } = require('./support/helpers');

const fill = (n, a, b, scale) => Float32Array.from({ length: n }, (_, i) => Math.sin(a * i + b) * scale);

for (const device of ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])]) {
  describe(`whole-model fixture on ${device}`, function () {
    it('tiny-spp.safetensors gives the committed logits on a ragged batch of 4 images', async function () {
      const model = await sp.loadModel({ weights: path.join(__dirname, 'fixtures', 'tiny-spp.safetensors'), device });
      const imgs = expected.sizes.map(([h, w], k) => sp.tensor(fill(3 * h * w, 0.11 + 0.02 * k, k, 1), [3, h, w], { device }));
      const logits = await model.run(imgs);
      expectClose(await logits.data(), expected.logits.flat(), { rtol: 1e-4, atol: 1e-5, label: 'fixture logits' });
      model.dispose();
    });
  });
}
