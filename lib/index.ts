// sppnet: Spatial Pyramid Pooling networks for Node.js.
export { backend, measureCpuPeak } from './core/backend';
export { memory } from './core/memory';
export type { BackendInfo, CpuPeak, Device, DevicePolicy } from './core/backend';
export type { MemoryInfo } from './core/memory';
export { SppnetError } from './core/errors';
export type { ErrorCode } from './core/errors';
export { Tensor, tensor, zeros, full } from './core/tensor';
export type { DType, TensorOptions } from './core/tensor';
export { RaggedBatch, ragged } from './core/ragged';
export { spp, sppBackward, sppFeatures, DEFAULT_LEVELS, MAX_LEVELS } from './ops/spp';
export type { SppOptions, SppBackwardOptions, BinRule, PoolKind } from './ops/spp';
export { conv2d, conv2dBackward } from './ops/conv2d';
export type { Conv2dOptions, Conv2dBackwardOptions, ParamGrads } from './ops/conv2d';
export { maxPool2d, maxPool2dBackward, lrnMaxPool2d } from './ops/pool';
export type { MaxPool2dOptions, LrnMaxPool2dOptions } from './ops/pool';
export { localResponseNorm, localResponseNormBackward } from './ops/lrn';
export type { LrnOptions } from './ops/lrn';
export { linear, linearBackward } from './ops/linear';
export type { LinearOptions } from './ops/linear';
export { relu, reluBackward, softmax, flatten, dropout, dropoutBackward } from './ops/elementwise';
export type { DropoutOptions } from './ops/elementwise';
export { concat, concatBackward } from './ops/concat';
export { batchNormTrain, batchNormBackward } from './ops/batchnorm';
export type { BatchNormParams, BatchNormTrainOptions, BatchNormSaved } from './ops/batchnorm';
export type { ConcatOptions } from './ops/concat';
export { softmaxCrossEntropy } from './ops/loss';
export { sgdStep, adamStep } from './ops/update';
export type { SgdOptions, AdamOptions } from './ops/update';
import './ops/tensorcore'; // hands lib/core/math.ts the tensor-core check's probe
export { getMath, setMath, tensorCoreCheck, MATH_MODES, MATH_TOLERANCE } from './core/math';
export type { MathMode, MathDefaults, TensorCoreCheck, TensorCoreModeCheck } from './core/math';
import { loadModel, LoadModelFileOptions } from './nn/load';
export { Model } from './nn/model';
export type { Prediction } from './nn/model';
export { buildModel, loadModel } from './nn/load';
export type { LoadModelOptions, LoadModelFileOptions } from './nn/load';
export { archSpec } from './nn/archs';
export { torchvisionSpec, TORCHVISION_ARCHS } from './nn/torchvision';
export type { TorchvisionOptions } from './nn/torchvision';
export { checkSpec, minimumSize } from './nn/spec';
export type { ModelSpec, ParamInfo } from './nn/spec';
export type { LayerSpec } from './nn/layers';
export type { ActivationOptions } from './nn/memory';
export { readSafetensors, readSafetensorsMetadata, parseSafetensors, encodeSafetensors, writeSafetensors, checkStateDict } from './io/safetensors';
export type { HostTensor, SafetensorsFile } from './io/safetensors';
export { readPth } from './io/pth';
export { readImage, readImages, IMAGENET_MEAN, IMAGENET_STD } from './io/images';
export type { ImageOptions } from './io/images';
export { classify } from './serve/classify';
export type { ClassifyOptions, Classification } from './serve/classify';
type BuiltinOptions = Omit<LoadModelFileOptions, 'arch' | 'spec'>;
export const models = {
  zf5: (opts: BuiltinOptions = {}) => loadModel({ ...opts, arch: 'zf5' }),
  convnet5: (opts: BuiltinOptions = {}) => loadModel({ ...opts, arch: 'convnet5' }),
  overfeat5: (opts: BuiltinOptions = {}) => loadModel({ ...opts, arch: 'overfeat5' }),
  overfeat7: (opts: BuiltinOptions = {}) => loadModel({ ...opts, arch: 'overfeat7' }),
};
export { BatchingRunner, batching } from './serve/batching';
export type { BatchingOptions, RequestOptions, BatchingStats } from './serve/batching';
export { createServer } from './serve/server';
export type { ServerOptions } from './serve/server';
export { data, synthetic, imageFolder, SYNTHETIC_CLASSES } from './train/data';
export type { Dataset, Sample, SyntheticOptions, ImageFolderOptions, ImageFolderDataset, InputMode } from './train/data';
export { Optimizer, learningRate } from './nn/optim';
export type { OptimizerOptions, OptimizerType, ScheduleOptions, StepResult } from './nn/optim';
export { fit, evaluate, writeCheckpoint } from './train/fit';
export type { FitOptions, FitResult, EpochStats, EvalInput, EvalResult, SizePolicy } from './train/fit';
export { ablation, ablationTable, ablationSpec, ablationTrunk } from './train/ablation';
export type { AblationOptions, AblationResult, AblationRow } from './train/ablation';
