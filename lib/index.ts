// sppnet: Spatial Pyramid Pooling networks for Node.js.
export { backend, measureCpuPeak } from './core/backend';
export { memory } from './core/memory';
export type { BackendInfo, CpuPeak, CpuSettings, Device, DevicePolicy } from './core/backend';
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
export { BF16Matrix, toBF16 } from './ops/bf16';
export { relu, reluBackward, softmax, flatten, dropout, dropoutBackward } from './ops/elementwise';
export type { DropoutOptions } from './ops/elementwise';
export { concat, concatBackward } from './ops/concat';
export { batchNormTrain, batchNormBackward } from './ops/batchnorm';
export type { BatchNormParams, BatchNormTrainOptions, BatchNormSaved } from './ops/batchnorm';
export type { ConcatOptions } from './ops/concat';
export { softmaxCrossEntropy } from './ops/loss';
export { nms, batchedNms } from './ops/nms';
export type { NmsOptions } from './ops/nms';
export { cropResize, MAX_CROP_SIZE } from './ops/crop';
export type { CropResizeOptions, CropAlign } from './ops/crop';
export { sgdStep, adamStep } from './ops/update';
export type { SgdOptions, AdamOptions } from './ops/update';
import './ops/tensorcore'; // hands lib/core/math.ts the tensor-core check's probe
export { getMath, setMath, tensorCoreCheck, MATH_MODES, MATH_TOLERANCE } from './core/math';
export type { MathMode, MathDefaults, TensorCoreCheck, TensorCoreModeCheck } from './core/math';
import { loadModel, LoadModelFileOptions } from './nn/load';
import { Arch, ARCHS } from './nn/archs';
import { Model } from './nn/model';
export { Model } from './nn/model';
export type { Prediction } from './nn/model';
export { buildModel, loadModel } from './nn/load';
export type { LoadModelOptions, LoadModelFileOptions } from './nn/load';
export { archSpec, ARCHS, PAPER_ARCHS } from './nn/archs';
export type { Arch } from './nn/archs';
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
export { drawDetections, drawDetectionsToFile } from './io/draw';
export type { DrawnBox, DrawOptions, DrawFileOptions } from './io/draw';
export { classify } from './serve/classify';
export type { ClassifyOptions, Classification } from './serve/classify';
type BuiltinOptions = Omit<LoadModelFileOptions, 'arch' | 'spec'>;
/** sp.models.zf5(options), sp.models.vgg16(options), ...: sp.loadModel({ ...options, arch }) for each built-in arch. */
export const models = Object.freeze(Object.fromEntries(ARCHS.map((arch) => [arch, (opts: BuiltinOptions = {}) => loadModel({ ...opts, arch })]))) as
  Readonly<Record<Arch, (opts?: BuiltinOptions) => Promise<Model>>>;
export { BatchingRunner, batching } from './serve/batching';
export type { BatchingOptions, RequestOptions, BatchingStats } from './serve/batching';
export type { ServerOptions } from './serve/server';
/**
 * The HTTP service (lib/serve/server.ts). Loaded on first call: fastify, its plugins and
 * prom-client take ~150 ms to load, which a process that never serves should not pay (a CLI
 * command, each worker_thread that loads sppnet).
 */
export const createServer: typeof import('./serve/server').createServer = (opts) =>
  (require('./serve/server') as typeof import('./serve/server')).createServer(opts);
export { synthetic, imageFolder, SYNTHETIC_CLASSES, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR } from './train/data';
import { data as trainData } from './train/data';
import { voc } from './detect/voc-data';
/** Datasets and transforms: sp.data.synthetic, imageFolder, idx, fashionMnist, voc, resize, crop, flip, view. */
export const data = { ...trainData, voc };
export type { Dataset, Sample, SyntheticOptions, ImageFolderOptions, ImageFolderDataset, InputMode, IdxOptions, IdxDataset, FashionMnistOptions } from './train/data';
export { IDX_MAX_BYTES } from './io/idx';
export { Optimizer, learningRate } from './nn/optim';
export type { OptimizerOptions, OptimizerType, ScheduleOptions, StepResult } from './nn/optim';
export { fit, evaluate, writeCheckpoint } from './train/fit';
export type { FitOptions, FitResult, EpochStats, EvalInput, EvalResult, SizePolicy } from './train/fit';
export { ablation, ablationTable, ablationSpec, ablationTrunk } from './train/ablation';
export type { AblationOptions, AblationResult, AblationRow } from './train/ablation';
export { fashionAblation, fashionTable, fashionSummary, fashionSpec, FASHION_ARMS } from './train/fashion';
export type { FashionAblationOptions, FashionAblationResult, FashionRun, FashionArm } from './train/fashion';
export type { VocDataset, VocImage, VocBox, VocOptions } from './detect/voc-data';
export { VOC_CLASSES, parseVocAnnotation, formatVocAnnotation } from './io/voc';
export type { VocAnnotation, VocObject, VocParseOptions } from './io/voc';
export { vocEval, vocAp, vocIou } from './detect/eval';
export type { Detection, GroundTruth, VocEvalOptions, VocEvalResult, ClassEval } from './detect/eval';
export { makeDetectionData, detectionClasses } from './detect/generate';
export type { DetectionDataOptions, DetectionDataResult } from './detect/generate';
export { FASHION_CLASSES } from './detect/fashion-items';
export { proposals } from './detect/proposals';
export type { ProposalOptions, Proposals, ProposalImage } from './detect/proposals';
export { Detector } from './detect/detector';
export type { DetectorConfig, DetectOptions, DetectedBox, DetectTiming, DetectResult } from './detect/detector';
export { trainDetector, detectionSpec } from './detect/train-detector';
export type { TrainDetectorOptions } from './detect/train-detector';
export { saveDetector, loadDetector } from './detect/detector-file';
export { evaluateDetector } from './detect/evaluate';
export type { DetectorEvaluation } from './detect/evaluate';
export { trunkStride, chooseScales, mapWindow, scaleBox } from './detect/windows';
export type { WindowMapping, MappingOptions } from './detect/windows';
export { boxDeltas, applyDeltas } from './detect/boxes';
