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
