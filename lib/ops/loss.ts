// The loss: softmax cross-entropy of logits against integer labels, with its gradient.
import { checkLabels, matrix, settle } from '../core/checks';
import { CallSite, fail } from '../core/errors';
import { native } from '../core/native';
import { allocate, nativeBuf, Tensor } from '../core/tensor';

/**
 * Mean softmax cross-entropy of logits [N, K] against integer labels (PyTorch's cross_entropy with
 * reduction 'mean'), computed stably (max subtracted, float64 sums). gradLogits = (softmax - onehot) / N.
 * correct: rows whose argmax (the first maximum) is the label. NaN or infinite logits give a NaN
 * loss rather than an error.
 */
export async function softmaxCrossEntropy(logits: Tensor, labels: Int32Array | ArrayLike<number>): Promise<{ loss: number; gradLogits: Tensor; correct: number }> {
  const fn = 'sp.softmaxCrossEntropy';
  const site = new CallSite();
  const X = matrix(fn, logits, 'logits');
  const [rows, cols] = X.t.shape;
  if (rows < 1) fail(`${fn}: logits must have at least one row, got shape [${X.t.shape.join(', ')}]`);
  if (cols < 1) fail(`${fn}: logits must have at least one class (axis 1), got shape [${X.t.shape.join(', ')}]`);
  const l = checkLabels(fn, labels, rows, cols, 'logits');
  const grad = allocate([rows, cols], X.s.device, fn);
  const rowLoss = new Float64Array(rows), rowCorrect = new Int32Array(rows);
  await settle(site, fn, [grad], () =>
    native.softmaxCrossEntropy({ rows, cols, ...nativeBuf('logits', X.s), ...nativeBuf('grad', grad.storage(fn, 'gradLogits')), labels: l, rowLoss, rowCorrect }),
  );
  let sum = 0, correct = 0;
  for (let i = 0; i < rows; i++) {
    sum += rowLoss[i];
    correct += rowCorrect[i];
  }
  return { loss: sum / rows, gradLogits: grad, correct };
}
