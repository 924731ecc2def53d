'use strict';
// Plain float64 references for the backward passes, the loss and the optimizers, written from
// the definitions (scatter form: each output adds its contribution to what it read), sharing no
// code with the kernels (which gather, or use im2col + GEMM).

const convOut = (a, k, s, p, d) => Math.floor((a + 2 * p - d * (k - 1) - 1) / s) + 1;

/**
 * x: {data, C, H, W}; w: [cout, C/groups, kh, kw]; gy: [cout, Ho, Wo] of this map.
 * Returns { dx: Float64Array [C, H, W], dw: Float64Array, db: Float64Array [cout] } for this map alone.
 */
function refConv2dBackward(x, w, gy, { cout, kh, kw, stride = [1, 1], padding = [0, 0], dilation = [1, 1], groups = 1 }) {
  const [sh, sw] = stride, [ph, pw] = padding, [dh, dw] = dilation;
  const Ho = convOut(x.H, kh, sh, ph, dh), Wo = convOut(x.W, kw, sw, pw, dw);
  const cinG = x.C / groups, coutG = cout / groups;
  const dx = new Float64Array(x.C * x.H * x.W), dW = new Float64Array(cout * cinG * kh * kw), db = new Float64Array(cout);
  for (let co = 0; co < cout; co++) {
    const g = Math.floor(co / coutG);
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        const gv = gy[(co * Ho + oy) * Wo + ox];
        db[co] += gv;
        for (let ci = 0; ci < cinG; ci++)
          for (let i = 0; i < kh; i++)
            for (let j = 0; j < kw; j++) {
              const yy = oy * sh - ph + i * dh, xx = ox * sw - pw + j * dw;
              if (yy < 0 || yy >= x.H || xx < 0 || xx >= x.W) continue;
              const xi = ((g * cinG + ci) * x.H + yy) * x.W + xx, wi = ((co * cinG + ci) * kh + i) * kw + j;
              dx[xi] += gv * w[wi];
              dW[wi] += gv * x.data[xi];
            }
      }
  }
  return { dx, dw: dW, db, H: Ho, W: Wo };
}

/** PyTorch's routing: per window, the first strict maximum in row-major order; any NaN takes over (so the last NaN). */
function refMaxPool2dBackward(x, gy, { kernel, stride = kernel, padding = [0, 0], ceilMode = false }) {
  const [kh, kw] = kernel, [sh, sw] = stride, [ph, pw] = padding;
  const size = (a, k, s, p) => {
    let n = (ceilMode ? Math.ceil((a + 2 * p - k) / s) : Math.floor((a + 2 * p - k) / s)) + 1;
    if (ceilMode && (n - 1) * s >= a + p) n--;
    return n;
  };
  const Ho = size(x.H, kh, sh, ph), Wo = size(x.W, kw, sw, pw);
  const dx = new Float64Array(x.C * x.H * x.W);
  for (let c = 0; c < x.C; c++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        let best = -1, bv = -Infinity;
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const yy = oy * sh - ph + i, xx = ox * sw - pw + j;
            if (yy < 0 || yy >= x.H || xx < 0 || xx >= x.W) continue;
            const idx = (c * x.H + yy) * x.W + xx;
            const v = x.data[idx];
            if (best < 0) best = idx; // the window's first element when nothing beats -Infinity
            if (v > bv || Number.isNaN(v)) {
              bv = v;
              best = idx;
            }
          }
        dx[best] += gy[(c * Ho + oy) * Wo + ox];
      }
  return { dx, H: Ho, W: Wo };
}

/** d/dx of PyTorch's local_response_norm, scattered from each output channel to the inputs it read. */
function refLrnBackward(x, gy, { size, alpha = 1e-4, beta = 0.75, k = 1 }) {
  const HW = x.H * x.W;
  const dx = new Float64Array(x.C * HW);
  const lo = Math.floor(size / 2), hi = Math.floor((size - 1) / 2);
  for (let p = 0; p < HW; p++)
    for (let c = 0; c < x.C; c++) {
      let s = 0;
      for (let cc = c - lo; cc <= c + hi; cc++) if (cc >= 0 && cc < x.C) s += x.data[cc * HW + p] ** 2;
      const D = k + (alpha / size) * s;
      const g = gy[c * HW + p], xc = x.data[c * HW + p];
      dx[c * HW + p] += g * D ** -beta;
      // d y_c / d x_j for j in the window: x_c * (-beta) * D^(-beta-1) * (alpha/size) * 2 x_j
      for (let j = c - lo; j <= c + hi; j++)
        if (j >= 0 && j < x.C) dx[j * HW + p] += g * xc * -beta * D ** (-beta - 1) * (alpha / size) * 2 * x.data[j * HW + p];
    }
  return dx;
}

function refLinearBackward(x, rows, inF, w, outF, gy) {
  const dx = new Float64Array(rows * inF), dw = new Float64Array(outF * inF), db = new Float64Array(outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      const g = gy[r * outF + o];
      db[o] += g;
      for (let i = 0; i < inF; i++) {
        dx[r * inF + i] += g * w[o * inF + i];
        dw[o * inF + i] += g * x[r * inF + i];
      }
    }
  return { dx, dw, db };
}

/** Mean cross-entropy, gradient and correct count; argmax = the first maximum, NaN counting as the maximum. */
function refSoftmaxCrossEntropy(logits, rows, cols, labels) {
  let loss = 0, correct = 0;
  const grad = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(logits.subarray(r * cols, (r + 1) * cols));
    let am = 0;
    for (let j = 1; j < cols; j++) {
      if (Number.isNaN(row[am])) break;
      if (Number.isNaN(row[j]) || row[j] > row[am]) am = j;
    }
    const m = Math.max(...row);
    const z = row.reduce((a, v) => a + Math.exp(v - m), 0);
    loss += Math.log(z) + m - row[labels[r]];
    if (am === labels[r]) correct++;
    for (let j = 0; j < cols; j++) grad[r * cols + j] = (Math.exp(row[j] - m) / z - (j === labels[r] ? 1 : 0)) / rows;
  }
  return { loss: loss / rows, grad, correct };
}

/** torch.optim.SGD, one step over arrays (float64): state.buf is null before the first step. */
function refSgdStep(param, grad, state, { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false }) {
  for (let i = 0; i < param.length; i++) {
    let d = grad[i] + weightDecay * param[i];
    if (momentum !== 0) {
      if (!state.buf) state.buf = new Float64Array(param.length), (state.first = true);
      state.buf[i] = state.first ? d : momentum * state.buf[i] + (1 - dampening) * d;
      d = nesterov ? d + momentum * state.buf[i] : state.buf[i];
    }
    param[i] -= lr * d;
  }
  state.first = false;
}

/** torch.optim.Adam / AdamW, one step (float64); state = { m, v, step }. */
function refAdamStep(param, grad, state, { lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0, decoupled = false }) {
  if (!state.m) Object.assign(state, { m: new Float64Array(param.length), v: new Float64Array(param.length), step: 0 });
  state.step += 1;
  const bc1 = 1 - beta1 ** state.step, bc2 = 1 - beta2 ** state.step;
  for (let i = 0; i < param.length; i++) {
    let g = grad[i];
    if (decoupled) param[i] *= 1 - lr * weightDecay;
    else g += weightDecay * param[i];
    state.m[i] = beta1 * state.m[i] + (1 - beta1) * g;
    state.v[i] = beta2 * state.v[i] + (1 - beta2) * g * g;
    const mhat = state.m[i] / bc1, vhat = state.v[i] / bc2;
    param[i] -= (lr * mhat) / (Math.sqrt(vhat) + eps);
  }
}

module.exports = { refConv2dBackward, refMaxPool2dBackward, refLrnBackward, refLinearBackward, refSoftmaxCrossEntropy, refSgdStep, refAdamStep };
