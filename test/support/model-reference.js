'use strict';
// A model's forward pass on the float64 layer references of test/support, optionally with the
// operands of conv and fc layers rounded as a CUDA math mode rounds them before multiplying:
// the reference a GPU run in that mode is compared with (its products are then exact in FP32
// and summed in FP32, so only summation order and rare rounding flips separate the two).
const { refConv2d, refMaxPool2d, refLrn, refLinear } = require('./layers-reference');
const { refSpp } = require('./reference');

const pair = (v, d) => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** To TF32 (10 stored mantissa bits) as cvt.rna.tf32.f32: the value as FP32, then to nearest, ties away from zero. */
function toTf32(v) {
  f32[0] = v;
  if (Number.isFinite(f32[0])) u32[0] = (u32[0] + 0x1000) & 0xffffe000;
  return f32[0];
}

/** To BF16 (7 stored mantissa bits) as cvt.rn.bf16x2.f32: the value as FP32, then to nearest, ties to even. */
function toBf16(v) {
  f32[0] = v;
  if (Number.isFinite(f32[0])) u32[0] = (u32[0] + 0x7fff + ((u32[0] >>> 16) & 1)) & 0xffff0000;
  return f32[0];
}

/** How each CUDA math mode rounds the operands of a product (null: FP32 or better, no rounding). */
const ROUNDING = { tf32: toTf32, bf16: toBf16, fp32: null, direct: null };

/**
 * image: { data, C, H, W }; spec: a model spec (conv, lrn, maxpool, relu, dropout, spp with max
 * pooling, fc); W(name): a parameter's data; math: { conv, linear } modes (default: exact);
 * perturb: optional f(v) applied to every activation a conv or fc layer reads (to mimic the
 * FP32 rounding of a device's intermediate results). Returns the logits (Float64Array).
 */
function modelForward(image, spec, W, { math = {}, perturb } = {}) {
  const rc = ROUNDING[math.conv ?? 'direct'], rl = ROUNDING[math.linear ?? 'direct'];
  const operand = (round, a) => (perturb || round ? Float64Array.from(a, (v) => (round ? round(perturb ? perturb(v) : v) : perturb(v))) : a);
  let x = { ...image, data: Float64Array.from(image.data) };
  let flat = null;
  for (const l of spec.layers) {
    if (l.type === 'conv') {
      const [kh, kw] = pair(l.kernel);
      const o = { cout: l.out, kh, kw, stride: pair(l.stride, 1), padding: pair(l.padding, 0), dilation: pair(l.dilation, 1), groups: l.groups || 1, relu: l.relu !== false }; // a conv's ReLU is on unless relu: false, as in lib/nn/layers.ts
      const w = W(`${l.name}.weight`);
      x = refConv2d({ ...x, data: operand(rc, x.data) }, rc ? w.map(rc) : w, W(`${l.name}.bias`), o);
    } else if (l.type === 'lrn') {
      x = refLrn(x, l);
    } else if (l.type === 'maxpool') {
      x = refMaxPool2d(x, { kernel: pair(l.kernel), stride: pair(l.stride ?? l.kernel), padding: pair(l.padding, 0), ceilMode: l.ceilMode === true });
    } else if (l.type === 'relu') {
      x = { ...x, data: x.data.map((v) => (v > 0 ? v : 0)) };
    } else if (l.type === 'dropout') {
      // the identity at inference
    } else if (l.type === 'spp') {
      flat = refSpp([x], { levels: l.levels, pool: l.pool ?? 'max', bins: l.bins ?? 'adaptive' });
    } else if (l.type === 'fc') {
      const w = W(`${l.name}.weight`);
      flat = refLinear(operand(rl, flat), 1, flat.length, rl ? w.map(rl) : w, l.out, W(`${l.name}.bias`), l.relu === true);
    } else {
      throw new Error(`modelForward: layer type ${l.type} not handled`);
    }
  }
  return flat;
}

module.exports = { modelForward, toTf32, toBf16, ROUNDING };
