'use strict';
// A whole model against fixed expected outputs produced independently of the kernels: the
// committed fixture (weights + logits) was computed by the float64 reference path
// (test/fixtures/make-tiny-fixture.js). Runs on every device present.
//
// The reference and the tolerance follow the math actually in force. The CPU computes in FP32:
// the committed logits, at the FP32 tolerance. On CUDA, conv2d defaults to TF32 (sp.getMath()),
// which rounds each operand to 11 significant bits before multiplying: that moves logits here by
// up to ~13 times the FP32 tolerance (checked below), so a TF32 (or BF16) run is compared with
// the float64 reference computed from operands rounded the same way (test/support/model-reference.js),
// and 'fp32' (3xTF32) and 'direct' runs with the committed logits. What is then left between GPU
// and reference is FP32 summation order and operands that round the other way because the GPU's
// FP32 activations differ from the float64 ones in their last bits: the check on every machine
// below shows that such differences (8 ulps) stay within the FP32 tolerance; CUDA gets twice it.
const path = require('path');
const { expect } = require('chai');
const expected = require('./fixtures/tiny-spp.expected.json');
const { sp, cudaStatus } = require('./support/helpers');
const { rng } = require('./support/reference');
const { modelForward } = require('./support/model-reference');

const weights = path.join(__dirname, 'fixtures', 'tiny-spp.safetensors');
const fill = (n, a, b, scale) => Float32Array.from({ length: n }, (_, i) => Math.sin(a * i + b) * scale);
const images = expected.sizes.map(([h, w], k) => ({ data: fill(3 * h * w, 0.11 + 0.02 * k, k, 1), C: 3, H: h, W: w }));
const FP32 = { rtol: 1e-4, atol: 1e-5 }; // what FP32 arithmetic is held to against float64 logits
const fp32Tol = (want) => FP32.atol + FP32.rtol * Math.abs(want);

async function loadReference() {
  const file = await sp.readSafetensors(weights);
  return { spec: JSON.parse(file.metadata.spec), W: (n) => file.tensors.get(n)?.data };
}

/** The logits (flat) a run in these math modes should give: the committed ones, unless a mode rounds operands. */
async function referenceLogits(math) {
  if (math.conv !== 'tf32' && math.conv !== 'bf16' && math.linear !== 'tf32' && math.linear !== 'bf16') return expected.logits.flat();
  const { spec, W } = await loadReference();
  return images.flatMap((img) => Array.from(modelForward(img, spec, W, { math })));
}

/** The modes CUDA really runs: 'direct' where the GPU has no tensor cores or their check failed for a mode. */
async function effectiveMath() {
  const m = sp.getMath();
  const check = await sp.tensorCoreCheck();
  const eff = (mode) => (mode === 'direct' || !check.ran || !check.modes[mode].ok ? 'direct' : mode);
  return { conv: eff(m.conv), linear: eff(m.linear) };
}

describe('whole-model fixture: the references of the math modes (every machine)', function () {
  it('TF32 and BF16 rounding move the logits past the FP32 tolerance; their references are stable to last-bit differences of the activations', async function () {
    const { spec, W } = await loadReference();
    images.forEach((img, k) => {
      const exact = modelForward(img, spec, W);
      exact.forEach((v, i) => expect(Math.abs(v - expected.logits[k][i]), `image ${k}: the reference path reproduces the fixture`).to.be.below(1e-9));
    });
    for (const conv of ['tf32', 'bf16']) {
      const math = { conv, linear: 'fp32' };
      let moved = 0, flips = 0;
      images.forEach((img, k) => {
        const exact = modelForward(img, spec, W);
        const rounded = modelForward(img, spec, W, { math });
        rounded.forEach((v, i) => (moved = Math.max(moved, Math.abs(v - exact[i]) / fp32Tol(exact[i]))));
        // A device's FP32 activations differ from float64's by a few ulps, so an operand near a
        // rounding boundary may round the other way: mimic that with +-8 ulps on every activation.
        const r = rng(1000 + k);
        for (let t = 0; t < 50; t++) {
          const p = modelForward(img, spec, W, { math, perturb: (v) => v * (1 + (2 * r.next() - 1) * 8 * 2 ** -24) });
          p.forEach((v, i) => (flips = Math.max(flips, Math.abs(v - rounded[i]) / fp32Tol(exact[i]))));
        }
      });
      console.log(`      ${conv}: rounding moves logits by up to ${moved.toFixed(2)}, last-bit differences by up to ${flips.toFixed(3)} FP32 tolerances`);
      expect(moved, `${conv}: largest move, in FP32 tolerances`).to.be.above(2);
      expect(flips, `${conv}: largest effect of last-bit differences, in FP32 tolerances`).to.be.at.most(1);
    }
  });
});

const devices = ['cpu', ...(cudaStatus().ok ? ['cuda'] : [])];
for (const device of devices) {
  describe(`whole-model fixture on ${device}`, function () {
    // The CPU runs the default modes in FP32 ('bf16' takes BF16 products on some CPUs: layers.test.js). On CUDA: the defaults in force (TF32
    // convolutions unless SPPNET_MATH says otherwise), then FP32 and TF32 explicitly.
    const runs = device === 'cpu'
      ? [{ label: 'FP32', math: null }]
      : [{ label: 'the default math modes', math: null }, { label: "math 'fp32'", math: { conv: 'fp32', linear: 'fp32' } }, { label: "conv math 'tf32'", math: { conv: 'tf32', linear: 'fp32' } }];
    for (const { label, math } of runs)
      it(`tiny-spp.safetensors gives the committed logits on a ragged batch of 4 images (${label})`, async function () {
        const saved = sp.getMath();
        if (math) sp.setMath(math);
        try {
          const inForce = device === 'cpu' ? { conv: 'direct', linear: 'direct' } : await effectiveMath();
          const want = await referenceLogits(inForce);
          const scale = device === 'cpu' ? 1 : 2; // summation order and rounding flips (see the top)
          const model = await sp.loadModel({ weights, device });
          const imgs = images.map((i) => sp.tensor(i.data, [i.C, i.H, i.W], { device }));
          const logits = await model.run(imgs);
          const got = await logits.data();
          expect(got.length).to.equal(want.length);
          want.forEach((w, i) => {
            const tol = scale * fp32Tol(w);
            expect(Math.abs(got[i] - w), `${device}, conv ${inForce.conv}, linear ${inForce.linear}: logit ${i} is ${got[i]}, want ${w} +- ${tol.toExponential(2)}`).to.be.at.most(tol);
          });
          [logits, ...imgs].forEach((t) => t.dispose());
          model.dispose();
        } finally {
          sp.setMath(saved);
        }
      });
  });
}
