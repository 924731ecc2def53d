// The compiled addon, typed. Only lib/ talks to it; users never see these shapes.
/* eslint-disable @typescript-eslint/no-var-requires */

export interface NativeDeviceBuffer {
  readonly length: number;
  readonly freed: boolean;
  free(): void;
}

export interface NativeCudaInfo {
  built: boolean;
  deviceCount: number;
  runtimeVersion: number;
  driverVersion: number;
  error: string;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  archs: string;
}

export interface NativeInfo {
  cuda: NativeCudaInfo;
  cpu: { isa: string; threads: number };
}

export type NativeFloats = Float32Array | NativeDeviceBuffer;

export interface NativeSppArgs {
  input: NativeFloats;
  inputOffset: number;
  offsets: Float64Array;
  heights: Int32Array;
  widths: Int32Array;
  channels: number;
  total: number;
  regions: Int32Array;
  levels: Int32Array;
  rule: number;
  pool: number;
  output: NativeFloats;
  outputOffset: number;
  gradOutput?: NativeFloats;
  gradOutputOffset?: number;
}

export interface Native {
  DeviceBuffer: new (length: number) => NativeDeviceBuffer;
  info(): NativeInfo;
  cpuPeak(threads: number, seconds: number, out: Float64Array): Promise<void>;
  memoryStats(): { deviceBuffers: number; deviceBytes: number; deviceFree?: number; deviceTotal?: number; devicePoolReserved?: number; devicePoolUsed?: number };
  trimDeviceMemory(): void;
  cudaUpload(dst: NativeDeviceBuffer, dstOffset: number, src: Float32Array): void;
  cudaDownload(src: NativeDeviceBuffer, srcOffset: number, dst: Float32Array): Promise<void>;
  cudaCopy(dst: NativeDeviceBuffer, dstOffset: number, src: NativeDeviceBuffer, srcOffset: number, n: number): void;
  /** Copies inputs[i] to output at offsets[i], on a libuv thread. */
  gatherFloats(args: { output: Float32Array; inputs: Float32Array[]; offsets: Float64Array }): Promise<void>;
  /** output[c][y][x] = input[y][x][c] * scale[c] + bias[c], on a libuv thread. */
  /** Zeroed host memory freed by hostFree (at once) or when the ArrayBuffer is collected. */
  hostAlloc(bytes: number): ArrayBuffer;
  hostFree(buffer: ArrayBuffer): void;
  /** Gives the C library's free heap memory back to the system (glibc), off the event loop. */
  trimHostMemory(): Promise<void>;
  pixelsToPlanar(args: { input: Uint8Array; height: number; width: number; channels: number; scale: Float32Array; bias: Float32Array; output: Float32Array }): Promise<void>;
  binCheck(rule: number, n: number, a: number): number;
  sppForward(args: NativeSppArgs): Promise<void>;
  conv2d(args: Record<string, unknown>): Promise<void>;
  winogradCacheFloats(args: Record<string, unknown>): number;
  maxPool2d(args: Record<string, unknown>): Promise<void>;
  lrn(args: Record<string, unknown>): Promise<void>;
  lrnMaxPool2d(args: Record<string, unknown>): Promise<void>;
  linear(args: Record<string, unknown>): Promise<void>;
  elementwise(args: Record<string, unknown>): Promise<void>;
  sppBackward(args: NativeSppArgs): Promise<void>;
  conv2dBackward(args: Record<string, unknown>): Promise<void>;
  maxPool2dBackward(args: Record<string, unknown>): Promise<void>;
  lrnBackward(args: Record<string, unknown>): Promise<void>;
  linearBackward(args: Record<string, unknown>): Promise<void>;
  pointwise(args: Record<string, unknown>): Promise<void>;
  dropout(args: Record<string, unknown>): Promise<void>;
  softmaxCrossEntropy(args: Record<string, unknown>): Promise<void>;
  sgdStep(args: Record<string, unknown>): Promise<void>;
  adamStep(args: Record<string, unknown>): Promise<void>;
}

const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => unknown;
const path = require('path') as typeof import('path');

// SPPNET_CUDA_EMULATOR=1 loads sppnet_emu.node instead: the same binding with cuda/*.cu compiled
// for the CPU against tools/emu's model of the CUDA runtime, whose one "device" runs every CUDA
// kernel on the CPU (slowly, one fiber per CUDA thread). For tests of the CUDA path without a GPU.
const addon = process.env.SPPNET_CUDA_EMULATOR === '1' ? 'sppnet_emu' : 'sppnet';
export const native = bindings({ bindings: addon, module_root: path.resolve(__dirname, '..') }) as Native;
