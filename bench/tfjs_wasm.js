'use strict';
// Starts TensorFlow.js's 'wasm' backend, multi-threaded when asked.
//
// @tensorflow/tfjs-backend-wasm 4.x runs single-threaded under Node: its WASM_HAS_MULTITHREAD_SUPPORT
// flag is hard-wired to false there (tensorflow/tfjs#3830), and its threaded build hands
// Emscripten's pthread workers "blob:" URLs, which Node's worker_threads cannot load. To give
// the peer the same two cores that sppnet uses, we
//   1. set WASM_HAS_MULTITHREAD_SUPPORT = true (selects tfjs-backend-wasm-threaded-simd.wasm),
//   2. stand in for Blob + URL.createObjectURL while the backend starts, writing each blob to a
//      temporary file and handing out its path (Emscripten's worker script already supports
//      Node when given a path): the pthread worker script gets a prelude that resolves our
//      "blobs" to their paths, and the main script (the module factory's source lifted out of
//      tfjs's bundle) gets the bundle's module-level names it refers to (require$$N),
//   3. report twice the CPU count while it starts: tfjs caps its XNNPACK pool at
//      os.cpus().length / 2, assuming 2-way SMT, which would give 1 thread on this 2-core VM.
// All three are undone once the backend is up. If anything fails, tfjs's own single-threaded
// path is what the caller should use (run with --wasm-threads 1).
const fs = require('fs');
const os = require('os');
const path = require('path');

const WORKER_PRELUDE =
  'var __sppC=URL.createObjectURL,__sppR=URL.revokeObjectURL;' +
  'URL.createObjectURL=function(b){return b&&b.__file?b.__file:__sppC(b)};' +
  'URL.revokeObjectURL=function(u){if(typeof u==="string"&&u.charAt(0)==="/")return;return __sppR(u)};\n';
const MAIN_PRELUDE =
  "var require$$0=require('fs'),require$$1=require('path')," +
  "require$$3=require('perf_hooks'),require$$4=require('os'),commonjsGlobal=globalThis;\n";

function patchForThreads() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sppnet-bench-tfjs-wasm-'));
  let count = 0;
  class FileBlob {
    constructor(parts) {
      const text = parts.map(String).join('');
      const isMain = text.startsWith('var WasmBackendModuleThreadedSimd');
      const isWorker = !isMain && text.includes('ENVIRONMENT_IS_PTHREAD');
      this.__file = path.join(dir, `blob${count++}.js`); // own property: survives postMessage
      fs.writeFileSync(this.__file, (isMain ? MAIN_PRELUDE : isWorker ? WORKER_PRELUDE : '') + text);
    }
  }
  const saved = { Blob: globalThis.Blob, createObjectURL: URL.createObjectURL, cpus: os.cpus };
  globalThis.Blob = FileBlob;
  URL.createObjectURL = (b) => (b && b.__file ? b.__file : saved.createObjectURL(b));
  os.cpus = () => [...saved.cpus(), ...saved.cpus()];
  return () => {
    globalThis.Blob = saved.Blob;
    URL.createObjectURL = saved.createObjectURL;
    os.cpus = saved.cpus;
    // The files must outlive start-up (workers may be spawned later); remove them at exit.
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  };
}

/**
 * Registers and initialises the wasm backend with `threads` XNNPACK threads (1 = tfjs's default
 * Node path). Returns { threads: actual count, simd, build }. Leaves the active backend as it was.
 */
async function initWasm(tf, threads) {
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  const before = tf.getBackend();
  let restore = () => {};
  if (threads > 1) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    restore = patchForThreads();
  }
  wasm.setThreadsCount(threads);
  let ok;
  try {
    ok = await tf.setBackend('wasm');
    await tf.ready();
  } finally {
    restore();
  }
  if (!ok) throw new Error(`tfjs wasm backend failed to start with ${threads} thread(s); try --wasm-threads 1`);
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const info = { threads: wasm.getThreadsCount(), simd, build: threads > 1 ? 'threaded-simd' : simd ? 'simd' : 'plain' };
  if (before) await tf.setBackend(before);
  return info;
}

/**
 * tfjs as the benchmarks' peers run it: production mode (what a deployment would use; it also
 * silences the "install tfjs-node" banner), then the wasm backend with `threads` (initWasm).
 */
async function startTfjs(tf, threads) {
  tf.enableProdMode();
  return initWasm(tf, threads);
}

module.exports = { initWasm, startTfjs };
