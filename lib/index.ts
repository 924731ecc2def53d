// sppnet: Spatial Pyramid Pooling networks for Node.js.
export { backend, measureCpuPeak, memory } from './backend';
export type { BackendInfo, CpuPeak, Device, DevicePolicy, MemoryInfo } from './backend';
export { SppnetError } from './errors';
export type { ErrorCode } from './errors';
export { Tensor, tensor, zeros, full } from './tensor';
export type { DType, TensorOptions } from './tensor';
export { RaggedBatch, ragged } from './ragged';
export { spp, sppBackward, sppFeatures, DEFAULT_LEVELS, MAX_LEVELS } from './spp';
export type { SppOptions, SppBackwardOptions, BinRule, PoolKind } from './spp';
export { conv2d, maxPool2d, localResponseNorm, lrnMaxPool2d, linear, relu, softmax, flatten } from './layers';
export type { Conv2dOptions, MaxPool2dOptions, LrnOptions, LrnMaxPool2dOptions, LinearOptions } from './layers';
export { getMath, setMath, tensorCoreCheck, MATH_MODES, MATH_TOLERANCE } from './math';
export type { MathMode, MathDefaults, TensorCoreCheck, TensorCoreModeCheck } from './math';
export {
  conv2dBackward, maxPool2dBackward, localResponseNormBackward, linearBackward, reluBackward, dropout, dropoutBackward,
  softmaxCrossEntropy, sgdStep, adamStep,
} from './grad';
export type { Conv2dBackwardOptions, ParamGrads, DropoutOptions, SgdOptions, AdamOptions } from './grad';
import { loadModel } from './model';
export { Model, buildModel, loadModel, archSpec, checkSpec, minimumSize } from './model';
export type { ModelSpec, LayerSpec, LoadModelOptions, LoadModelFileOptions, ActivationOptions, Prediction, ParamInfo } from './model';
export { readSafetensors, readSafetensorsMetadata, parseSafetensors, encodeSafetensors, writeSafetensors, checkStateDict } from './safetensors';
export type { HostTensor, SafetensorsFile } from './safetensors';
export { readImage, readImages, IMAGENET_MEAN, IMAGENET_STD } from './images';
export type { ImageOptions } from './images';
export { classify } from './classify';
export type { ClassifyOptions, Classification } from './classify';
export const models = {
  zf5: (opts: Omit<import('./model').LoadModelFileOptions, 'arch' | 'spec'> = {}) => loadModel({ ...opts, arch: 'zf5' }),
  convnet5: (opts: Omit<import('./model').LoadModelFileOptions, 'arch' | 'spec'> = {}) => loadModel({ ...opts, arch: 'convnet5' }),
  overfeat5: (opts: Omit<import('./model').LoadModelFileOptions, 'arch' | 'spec'> = {}) => loadModel({ ...opts, arch: 'overfeat5' }),
  overfeat7: (opts: Omit<import('./model').LoadModelFileOptions, 'arch' | 'spec'> = {}) => loadModel({ ...opts, arch: 'overfeat7' }),
};
export { BatchingRunner, batching } from './batching';
export type { BatchingOptions, RequestOptions, BatchingStats } from './batching';
export { createServer } from './server';
export type { ServerOptions } from './server';
export { data, synthetic, imageFolder, SYNTHETIC_CLASSES } from './data';
export type { Dataset, Sample, SyntheticOptions, ImageFolderOptions, ImageFolderDataset, InputMode } from './data';
export { Optimizer, learningRate } from './train';
export type { OptimizerOptions, OptimizerType, ScheduleOptions, StepResult } from './train';
export { fit, evaluate, writeCheckpoint } from './trainer';
export type { FitOptions, FitResult, EpochStats, EvalInput, EvalResult, SizePolicy } from './trainer';
export { ablation, ablationTable, ablationSpec, ablationTrunk } from './ablation';
export type { AblationOptions, AblationResult, AblationRow } from './ablation';
