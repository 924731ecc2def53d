// A detector on disk: one safetensors file with the network's state_dict (PyTorch names), the box
// regressor as bbox_pred.weight [4 * classes, features] and bbox_pred.bias, and in the metadata
// the network's spec and the detector's configuration (classes, scales, window side, mapping).
import { Device } from '../core/backend';
import { describe, fail, SppnetError } from '../core/errors';
import { tensor } from '../core/tensor';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { loadModel } from '../nn/load';
import { checkConfig, Detector, DetectorConfig } from './detector';

/** Writes a detector (atomically, as Model.save). */
export async function saveDetector(det: Detector, file: string): Promise<void> {
  if (!(det instanceof Detector)) fail(`sp.saveDetector: detector must be a Detector, got ${describe(det)}`);
  if (typeof file !== 'string' || file === '') fail(`sp.saveDetector: file must be a path, got ${describe(file)}`);
  const sd = await det.model.stateDict();
  const r = det.regressorTensors();
  if (r) {
    sd.set('bbox_pred.weight', { shape: [...r.weight.shape], data: await r.weight.data() });
    sd.set('bbox_pred.bias', { shape: [...r.bias.shape], data: await r.bias.data() });
  }
  const svm = det.svmTensors();
  if (svm) {
    sd.set('svm.weight', { shape: [...svm.weight.shape], data: await svm.weight.data() });
    sd.set('svm.bias', { shape: [...svm.bias.shape], data: await svm.bias.data() });
  }
  const m = det.model;
  await writeSafetensors(file, sd, { arch: m.spec.name, classes: String(m.classes), spec: JSON.stringify(m.spec), detector: JSON.stringify(det.config), labels: JSON.stringify(det.config.classes) });
}

/** Reads a detector written by saveDetector (or `sppnet train-detector --out`). */
export async function loadDetector(source: string | Uint8Array, opts: { device?: Device } = {}): Promise<Detector> {
  const fn = 'sp.loadDetector';
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) fail(`${fn}: source must be a file path or the file's bytes, got ${describe(source)}`);
  const file = await readSafetensors(source);
  const where = typeof source === 'string' ? source : 'the file';
  if (!file.metadata.detector) throw new SppnetError(`${fn}: ${where} holds no detector configuration (a model file? detectors come from sp.trainDetector / sppnet train-detector)`, 'SPPNET_INVALID_ARGUMENT');
  let config: DetectorConfig;
  try {
    config = JSON.parse(file.metadata.detector) as DetectorConfig;
  } catch {
    throw new SppnetError(`${fn}: the detector configuration in ${where} is not valid JSON`, 'SPPNET_INVALID_ARGUMENT');
  }
  checkConfig(fn, config);
  const weights = new Map(file.tensors);
  weights.delete('bbox_pred.weight');
  weights.delete('bbox_pred.bias');
  weights.delete('svm.weight');
  weights.delete('svm.bias');
  const model = await loadModel({ weights, spec: JSON.parse(file.metadata.spec ?? 'null') ?? undefined, device: opts.device, weightsName: where } as Parameters<typeof loadModel>[0]);
  try {
    const w = file.tensors.get('bbox_pred.weight'), b = file.tensors.get('bbox_pred.bias');
    const C = config.classes.length, D = model.pooledFeatures;
    let reg = null;
    if (w && b) {
      if (w.shape.join() !== [4 * C, D].join() || b.shape.join() !== String(4 * C))
        throw new SppnetError(`${fn}: bbox_pred in ${where} is [${w.shape}] / [${b.shape}], expected [${4 * C}, ${D}] / [${4 * C}]`, 'SPPNET_INVALID_ARGUMENT');
      reg = { weight: tensor(w.data, w.shape, { device: model.device }), bias: tensor(b.data, b.shape, { device: model.device }) };
    }
    const det = new Detector(model, config, reg);
    const sw = file.tensors.get('svm.weight'), sb = file.tensors.get('svm.bias');
    if (sw && sb && config.svmLayer) {
      if (sw.shape.length !== 2 || sw.shape[0] !== C || sb.shape.join() !== String(C))
        throw new SppnetError(`${fn}: svm in ${where} is [${sw.shape}] / [${sb.shape}], expected [${C}, F] / [${C}]`, 'SPPNET_INVALID_ARGUMENT');
      det.setSvm({ weight: tensor(sw.data, sw.shape, { device: model.device }), bias: tensor(sb.data, sb.shape, { device: model.device }) }, config.svmLayer);
    }
    return det;
  } catch (e) {
    model.dispose();
    throw e;
  }
}
