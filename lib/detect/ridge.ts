// Ridge regression, as R-CNN's box regressors are trained (its code: bbox regression on pool5
// features with lambda 1000, features rescaled to a mean norm of 20): W minimises
// |X W - Y|^2 + lambda |W|^2 for X [n, d] (with a column of ones for the bias, regularised as the
// rest) and Y [n, k]. Solved in whichever of the primal (d + 1 unknowns per target) or the dual
// (n unknowns: W = X^T (X X^T + lambda I)^-1 Y) is smaller; the Gram matrix through sp.linear.
import { SppnetError } from '../core/errors';
import { Tensor, tensor } from '../core/tensor';
import { linear } from '../ops/linear';

/** Solves A x = b in place for a symmetric positive definite A [m, m] (Cholesky); b [m, k] becomes x. */
export function choleskySolve(A: Float64Array, m: number, b: Float64Array, k: number): void {
  for (let j = 0; j < m; j++) {
    let d = A[j * m + j];
    for (let p = 0; p < j; p++) d -= A[j * m + p] * A[j * m + p];
    if (!(d > 0)) throw new SppnetError(`ridge: the system is not positive definite (pivot ${j}: ${d})`, 'SPPNET_NONFINITE');
    const l = Math.sqrt(d);
    A[j * m + j] = l;
    for (let i = j + 1; i < m; i++) {
      let s = A[i * m + j];
      for (let p = 0; p < j; p++) s -= A[i * m + p] * A[j * m + p];
      A[i * m + j] = s / l;
    }
  }
  for (let c = 0; c < k; c++) {
    for (let i = 0; i < m; i++) {
      let s = b[i * k + c];
      for (let p = 0; p < i; p++) s -= A[i * m + p] * b[p * k + c];
      b[i * k + c] = s / A[i * m + i];
    }
    for (let i = m - 1; i >= 0; i--) {
      let s = b[i * k + c];
      for (let p = i + 1; p < m; p++) s -= A[p * m + i] * b[p * k + c];
      b[i * k + c] = s / A[i * m + i];
    }
  }
}

/** X Y^T of row-major X [n, d] and Y [r, d] through the native GEMM, as float64. */
async function gram(X: Float32Array, n: number, Y: Float32Array, r: number, d: number): Promise<Float64Array> {
  const x = tensor(X, [n, d], { device: 'cpu' }), y = tensor(Y, [r, d], { device: 'cpu' });
  let g: Tensor | undefined;
  try {
    g = await linear(x, y);
    return Float64Array.from(await g.data());
  } finally {
    x.dispose();
    y.dispose();
    g?.dispose();
  }
}

/**
 * Ridge regression of Y [n, k] on X [n, d] plus a bias: weight [k, d] (row-major, one row per
 * target) and bias [k].
 */
export async function ridge(X: Float32Array, n: number, d: number, Y: Float32Array, k: number, lambda: number): Promise<{ weight: Float32Array; bias: Float32Array }> {
  if (X.length !== n * d || Y.length !== n * k) throw new SppnetError(`ridge: X has ${X.length} values for [${n}, ${d}], Y ${Y.length} for [${n}, ${k}]`, 'SPPNET_INTERNAL');
  const weight = new Float32Array(k * d), bias = new Float32Array(k);
  if (n === 0) return { weight, bias };
  if (n <= d + 1) {
    // Dual: (X1 X1^T + lambda I) alpha = Y, W = X1^T alpha (X1: X with the ones column).
    const G = await gram(X, n, X, n, d);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) G[i * n + j] += 1;
      G[i * n + i] += lambda;
    }
    const alpha = Float64Array.from(Y);
    choleskySolve(G, n, alpha, k);
    for (let i = 0; i < n; i++)
      for (let c = 0; c < k; c++) {
        const a = alpha[i * k + c];
        bias[c] += a;
        for (let j = 0; j < d; j++) weight[c * d + j] += a * X[i * d + j];
      }
    return { weight, bias };
  }
  // Primal: (X1^T X1 + lambda I) W1 = X1^T Y, with X1^T X1 from the GEMM of the transposed X.
  const m = d + 1;
  const Xt = new Float32Array(d * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) Xt[j * n + i] = X[i * d + j];
  const XtX = await gram(Xt, d, Xt, d, n);
  const A = new Float64Array(m * m), B = new Float64Array(m * k);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) A[i * m + j] = XtX[i * d + j];
  for (let j = 0; j < d; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += X[i * d + j];
    A[j * m + d] = A[d * m + j] = s;
  }
  A[d * m + d] = n;
  for (let j = 0; j < m; j++) A[j * m + j] += lambda;
  for (let i = 0; i < n; i++)
    for (let c = 0; c < k; c++) {
      const y = Y[i * k + c];
      for (let j = 0; j < d; j++) B[j * k + c] += X[i * d + j] * y;
      B[d * k + c] += y;
    }
  choleskySolve(A, m, B, k);
  for (let c = 0; c < k; c++) {
    for (let j = 0; j < d; j++) weight[c * d + j] = B[j * k + c];
    bias[c] = B[d * k + c];
  }
  return { weight, bias };
}
