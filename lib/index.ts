// sppnet: Spatial Pyramid Pooling networks for Node.js.
export { backend, memory } from './backend';
export type { BackendInfo, Device, DevicePolicy } from './backend';
export { SppnetError } from './errors';
export type { ErrorCode } from './errors';
export { Tensor, tensor, zeros, full } from './tensor';
export type { DType, TensorOptions } from './tensor';
export { RaggedBatch, ragged } from './ragged';
export { spp, sppBackward, sppFeatures, DEFAULT_LEVELS, MAX_LEVELS } from './spp';
export type { SppOptions, SppBackwardOptions, BinRule, PoolKind } from './spp';
export { conv2d, maxPool2d, localResponseNorm, linear, relu, softmax, flatten } from './layers';
export type { Conv2dOptions, MaxPool2dOptions, LrnOptions } from './layers';
export { Model, buildModel, archSpec, checkSpec, minimumSize } from './model';
export type { ModelSpec, LayerSpec, LoadModelOptions, Prediction, ParamInfo } from './model';
export { readImage, readImages, IMAGENET_MEAN, IMAGENET_STD } from './images';
export type { ImageOptions } from './images';
