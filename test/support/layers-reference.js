'use strict';
// Plain float64 references for the layers, written from PyTorch's definitions.

/** x: {data, C, H, W}; w: Float32Array [out, in/g, kh, kw]; returns {data, C, H, W}. */
function refConv2d(x, w, b, { cout, kh, kw, stride = [1, 1], padding = [0, 0], dilation = [1, 1], groups = 1, relu = false }) {
  const [sh, sw] = stride, [ph, pw] = padding, [dh, dw] = dilation;
  const Ho = Math.floor((x.H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1, Wo = Math.floor((x.W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  const cinG = x.C / groups, coutG = cout / groups;
  const y = new Float64Array(cout * Ho * Wo);
  for (let co = 0; co < cout; co++) {
    const g = Math.floor(co / coutG);
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        let s = b ? b[co] : 0;
        for (let ci = 0; ci < cinG; ci++)
          for (let i = 0; i < kh; i++)
            for (let j = 0; j < kw; j++) {
              const yy = oy * sh - ph + i * dh, xx = ox * sw - pw + j * dw;
              if (yy < 0 || yy >= x.H || xx < 0 || xx >= x.W) continue;
              s += x.data[((g * cinG + ci) * x.H + yy) * x.W + xx] * w[((co * cinG + ci) * kh + i) * kw + j];
            }
        y[(co * Ho + oy) * Wo + ox] = relu ? (s > 0 || Number.isNaN(s) ? s : 0) : s;
      }
  }
  return { data: y, C: cout, H: Ho, W: Wo };
}

function refMaxPool2d(x, { kernel, stride = kernel, padding = [0, 0], ceilMode = false }) {
  const [kh, kw] = kernel, [sh, sw] = stride, [ph, pw] = padding;
  const size = (a, k, s, p) => {
    let n = (ceilMode ? Math.ceil((a + 2 * p - k) / s) : Math.floor((a + 2 * p - k) / s)) + 1;
    if (ceilMode && (n - 1) * s >= a + p) n--;
    return n;
  };
  const Ho = size(x.H, kh, sh, ph), Wo = size(x.W, kw, sw, pw);
  const y = new Float64Array(x.C * Ho * Wo);
  for (let c = 0; c < x.C; c++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        let m = -Infinity;
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const yy = oy * sh - ph + i, xx = ox * sw - pw + j;
            if (yy < 0 || yy >= x.H || xx < 0 || xx >= x.W) continue;
            const v = x.data[(c * x.H + yy) * x.W + xx];
            m = Number.isNaN(v) || Number.isNaN(m) ? NaN : Math.max(m, v);
          }
        y[(c * Ho + oy) * Wo + ox] = m;
      }
  return { data: y, C: x.C, H: Ho, W: Wo };
}

function refLrn(x, { size, alpha = 1e-4, beta = 0.75, k = 1 }) {
  const HW = x.H * x.W;
  const y = new Float64Array(x.C * HW);
  for (let c = 0; c < x.C; c++)
    for (let p = 0; p < HW; p++) {
      let s = 0;
      for (let cc = c - Math.floor(size / 2); cc <= c + Math.floor((size - 1) / 2); cc++)
        if (cc >= 0 && cc < x.C) s += x.data[cc * HW + p] ** 2;
      y[c * HW + p] = x.data[c * HW + p] / (k + (alpha / size) * s) ** beta;
    }
  return { data: y, C: x.C, H: x.H, W: x.W };
}

function refLinear(x, rows, inF, w, outF, b, relu = false) {
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
      y[r * outF + o] = relu ? (s > 0 || Number.isNaN(s) ? s : 0) : s;
    }
  return y;
}

function refSoftmax(x, rows, cols) {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, x[r * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x[r * cols + j] - m);
    for (let j = 0; j < cols; j++) y[r * cols + j] = Math.exp(x[r * cols + j] - m) / s;
  }
  return y;
}

module.exports = { refConv2d, refMaxPool2d, refLrn, refLinear, refSoftmax };
