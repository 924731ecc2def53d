// PyTorch checkpoints read directly: the zip format torch.save has written since PyTorch 1.6
// (ARCHIVE/data.pkl, a pickle of the state_dict, and ARCHIVE/data/KEY, the raw bytes of each
// storage). The pickle is read by a safe unpickler (lib/io/pickle.ts) that knows only the globals a
// state_dict of tensors needs; the storages are read one positional read each, never the whole
// file. Every tensor comes back as float32 (float32, float64, float16 and bfloat16 converted, as
// safetensors' are; int64 ones, such as batch norm's num_batches_tracked, when exact in float32),
// laid out contiguously whatever its view's offset and strides.
import { promises as fsp } from 'fs';
import { describe, fail, MAX_ELEMENTS, SppnetError } from '../core/errors';
import { PyDict, PyGlobal, unpickle } from './pickle';
import { decode, HostTensor, LITTLE_ENDIAN_HOST, SafetensorsFile } from './safetensors-format';
import { looksLikeZip, openZip, ZipArchive } from './zip';

/** PyTorch's storage classes and the dtype of their elements (safetensors' names). */
const STORAGES: Record<string, { dtype: 'F32' | 'F64' | 'F16' | 'BF16' | 'I64'; bytes: number }> = {
  FloatStorage: { dtype: 'F32', bytes: 4 },
  DoubleStorage: { dtype: 'F64', bytes: 8 },
  HalfStorage: { dtype: 'F16', bytes: 2 },
  BFloat16Storage: { dtype: 'BF16', bytes: 2 },
  LongStorage: { dtype: 'I64', bytes: 8 },
};

/** Most floats read from one checkpoint: 2^30 (4 GiB), as a model may hold. */
const MAX_PTH_FLOATS = 2 ** 30;
/**
 * Views may read a storage more than once (tied weights share one; a stride-0 view repeats an
 * element), but the tensors may hold at most this many times the elements the storages hold, plus
 * 2^20: a file of a few hundred bytes must not expand into gigabytes.
 */
const MAX_VIEW_EXPANSION = 8;

interface StorageRef { kind: 'storage'; type: string; key: string; numel: number }
interface TensorRef { kind: 'tensor'; storage: StorageRef; offset: number; shape: number[]; stride: number[] }

const isTensor = (v: unknown): v is TensorRef => typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
const ints = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0);

/** A dict key as a message shows it: short, and never a walk over what the pickle built. */
const keyText = (k: unknown) => (typeof k === 'string' ? JSON.stringify(k.length > 60 ? `${k.slice(0, 60)}...` : k) : describe(k));

/** The globals a state_dict's pickle may name, and what each builds. */
function allowed(bad: (why: string) => never): Map<string, (args: unknown[]) => unknown> {
  const m = new Map<string, (args: unknown[]) => unknown>();
  m.set('collections.OrderedDict', (args) => (args.length === 0 ? new Map() : bad('collections.OrderedDict is called with arguments')));
  m.set('torch._utils._rebuild_tensor_v2', (args) => {
    const [storage, offset, shape, stride] = args;
    if (typeof storage !== 'object' || storage === null || (storage as StorageRef).kind !== 'storage' || !Number.isSafeInteger(offset) || (offset as number) < 0 || !ints(shape) || !ints(stride) || shape.length !== stride.length)
      bad('a tensor is rebuilt from arguments that are not (storage, offset, size, stride)');
    return { kind: 'tensor', storage, offset, shape, stride } as TensorRef;
  });
  m.set('torch._utils._rebuild_parameter', (args) => (isTensor(args[0]) ? args[0] : bad('a Parameter is rebuilt from something that is not a tensor')));
  for (const t of Object.keys(STORAGES)) m.set(`torch.${t}`, () => bad(`torch.${t} is called instead of being named`));
  return m;
}

/** What a global outside the list says about the file. */
function hint(q: string): string | undefined {
  if (/^(__main__|torch\.nn|torchvision|timm)\./.test(q))
    return 'This looks like a whole pickled model (torch.save(model)): save its weights instead, with torch.save(model.state_dict(), PATH)';
  return undefined;
}

/** The state_dict in what the pickle built: itself, or a checkpoint's 'state_dict' / 'model' entry. */
function stateDictOf(root: unknown, bad: (why: string) => never): Map<string, TensorRef> {
  const all = (d: unknown): d is PyDict => d instanceof Map && [...d].every(([k, v]) => typeof k === 'string' && isTensor(v));
  if (all(root)) return root as Map<string, TensorRef>;
  if (root instanceof Map) for (const key of ['state_dict', 'model']) if (all(root.get(key))) return root.get(key) as Map<string, TensorRef>;
  const keys = () => {
    const some: string[] = [];
    for (const k of (root as PyDict).keys()) if (some.push(keyText(k)) >= 8) break;
    return some.join(', ');
  };
  return bad(`it holds ${root instanceof Map ? `a dict with keys ${keys()}` : describe(root)}, not a state_dict of tensors (save one with torch.save(model.state_dict(), PATH))`);
}

/** The view is the row-major layout of its shape (strides of size-1 axes do not matter). */
function contiguous(t: TensorRef): boolean {
  let want = 1;
  for (let a = t.shape.length - 1; a >= 0; a--) {
    if (t.shape[a] !== 1 && t.stride[a] !== want) return false;
    want *= t.shape[a];
  }
  return true;
}

/** A tensor as contiguous float32, from its storage's elements (already float32) and its view. */
function gather(name: string, t: TensorRef, elements: Float32Array, bad: (why: string) => never): HostTensor {
  const n = t.shape.reduce((a, b) => a * b, 1); // within MAX_ELEMENTS (readPth checked)
  let last = t.offset;
  t.shape.forEach((d, i) => (last += d > 0 ? (d - 1) * t.stride[i] : 0));
  if (n > 0 && (t.offset < 0 || last >= elements.length)) bad(`tensor ${name} reads past its storage (${elements.length} elements)`);
  const out = new Float32Array(n);
  // Row-major walk over the view; contiguous runs of the last axis copy at once.
  const rank = t.shape.length;
  const inner = rank ? t.shape[rank - 1] : 1, innerStride = rank ? t.stride[rank - 1] : 1;
  const idx = new Array(Math.max(0, rank - 1)).fill(0);
  for (let o = 0; o < n; o += inner) {
    let src = t.offset;
    for (let a = 0; a < rank - 1; a++) src += idx[a] * t.stride[a];
    if (innerStride === 1) out.set(elements.subarray(src, src + inner), o);
    else for (let j = 0; j < inner; j++) out[o + j] = elements[src + j * innerStride];
    for (let a = rank - 2; a >= 0; a--) {
      if (++idx[a] < t.shape[a]) break;
      idx[a] = 0;
    }
  }
  return { dtype: 'float32', shape: [...t.shape], data: out };
}

/** A storage's elements as float32 (int64 only where exact). */
function elementsOf(name: string, type: string, bytes: Buffer, numel: number, bad: (why: string) => never): Float32Array {
  const s = STORAGES[type];
  if (s.dtype !== 'I64') return decode(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, numel, s.dtype);
  const out = new Float32Array(numel);
  for (let i = 0; i < numel; i++) {
    const v = bytes.readBigInt64LE(8 * i);
    if (v > 16777216n || v < -16777216n) bad(`tensor ${name} (int64) holds ${v}, which float32 cannot hold exactly`);
    out[i] = Number(v);
  }
  return out;
}

/** The first n bytes of a file (fewer if it is shorter). */
async function fileHead(file: string, n: number): Promise<Buffer> {
  const fd = await fsp.open(file, 'r');
  try {
    const head = Buffer.alloc(n);
    const { bytesRead } = await fd.read(head, 0, n, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await fd.close();
  }
}

/**
 * A legacy (before 1.6) checkpoint starts with pickle's PROTO 2 and the LONG1 magic number: bytes
 * no safetensors file can start with (its header length would be 177 MB, over the limit).
 */
const isLegacy = (head: Uint8Array) => head.length >= 4 && head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a;

/** True when the file is a PyTorch checkpoint: a zip archive (1.6 and newer), or the legacy format (refused by readPth with how to re-save). */
export async function isPthFile(file: string): Promise<boolean> {
  const head = await fileHead(file, 4);
  return looksLikeZip(head) || isLegacy(head);
}

/** Reads the state_dict of a PyTorch checkpoint (torch.save(model.state_dict(), file)). */
export async function readPth(file: string, fn = 'sp.readPth'): Promise<SafetensorsFile> {
  if (typeof file !== 'string') fail(`${fn}: file must be a path to a .pth or .pt file, got ${describe(file)}`);
  const bad = (why: string): never => {
    throw new SppnetError(`${fn}: ${file}: ${why}`, 'SPPNET_INVALID_ARGUMENT');
  };
  const head = await fileHead(file, 4).catch((e: Error) => bad(`cannot read it: ${e.message}`));
  if (isLegacy(head)) bad('it is in PyTorch\'s legacy format (before 1.6, not a zip archive): load and save it again with PyTorch 1.6 or newer, torch.save(torch.load(PATH), PATH)');
  const zip: ZipArchive = await openZip(fn, file);
  try {
    const pkls = [...zip.entries.keys()].filter((k) => /^[^/]+\/data\.pkl$/.test(k));
    if (pkls.length !== 1) bad(`it is a zip archive without the one ARCHIVE/data.pkl a PyTorch checkpoint holds (${pkls.length} found)`);
    const prefix = pkls[0].slice(0, -'data.pkl'.length);
    const order = zip.entries.get(`${prefix}byteorder`);
    if (order && (await zip.read(order)).toString() !== 'little') bad('its storages are big-endian');
    const root = unpickle(await zip.read(zip.entries.get(pkls[0])!), {
      fn, source: file, globals: allowed(bad), unknownGlobal: hint,
      persistentLoad(pid) {
        if (!Array.isArray(pid) || pid[0] !== 'storage' || !(pid[1] instanceof PyGlobal) || typeof pid[2] !== 'string' || !Number.isSafeInteger(pid[4]) || pid[4] < 0)
          return bad('a persistent id that is not a storage');
        const g = pid[1] as PyGlobal;
        if (g.module !== 'torch' || !Object.prototype.hasOwnProperty.call(STORAGES, g.name))
          return bad(`a storage of type ${g.module}.${g.name}, which is not one of torch's ${Object.keys(STORAGES).join(', ')}`);
        return { kind: 'storage', type: g.name, key: pid[2], numel: pid[4] } as StorageRef;
      },
    });
    const sd = stateDictOf(root, bad);
    const storages = new Map<string, Float32Array>();
    const tensors = new Map<string, HostTensor>();
    // What the tensors would hold, before any is allocated (a view may repeat its storage), and
    // what the storages hold (each key once, with one type and size).
    let floats = 0, stored = 0;
    const declared = new Map<string, StorageRef>();
    for (const [name, t] of sd) {
      const n = t.shape.reduce((x, y) => x * y, 1);
      if (n > MAX_ELEMENTS) bad(`tensor ${name} [${t.shape.join(', ')}] would hold ${n} elements, more than the 2^31-1 a tensor may hold`);
      floats += n;
      const s = t.storage, seen = declared.get(s.key);
      if (!seen) declared.set(s.key, s), (stored += s.numel);
      else if (seen.type !== s.type || seen.numel !== s.numel) bad(`storage ${s.key} is declared twice, as ${seen.numel} ${seen.type} and as ${s.numel} ${s.type} elements`);
    }
    if (floats > MAX_PTH_FLOATS) bad(`its tensors would hold ${floats} floats, more than the ${MAX_PTH_FLOATS} (4 GiB) sppnet reads from one file`);
    if (floats > MAX_VIEW_EXPANSION * stored + 2 ** 20)
      bad(`its tensors would hold ${floats} floats from ${stored} stored elements, more than ${MAX_VIEW_EXPANSION} times as many plus 2^20 (views that repeat their storages' elements: stride 0 or overlapping)`);
    for (const [name, t] of sd) {
      const { key, type, numel } = t.storage;
      const entry = zip.entries.get(`${prefix}data/${key}`);
      if (!entry) return bad(`tensor ${name}'s storage ${key} is missing from the archive`);
      if (entry.size < numel * STORAGES[type].bytes) bad(`storage ${key} holds ${entry.size} bytes, fewer than its ${numel} ${type} elements`);
      // The common case, float32 and contiguous: read from the file straight into the tensor (each
      // pass over fresh memory costs as much as the read itself).
      if (type === 'FloatStorage' && LITTLE_ENDIAN_HOST && contiguous(t)) {
        const n = t.shape.reduce((a, b) => a * b, 1);
        if (n > 0 && (t.offset < 0 || t.offset + n > numel)) bad(`tensor ${name} reads past its storage (${numel} elements)`);
        const data = new Float32Array(n);
        await zip.readInto(entry, 4 * t.offset, new Uint8Array(data.buffer));
        tensors.set(name, { dtype: 'float32', shape: [...t.shape], data });
        continue;
      }
      let elements = storages.get(key);
      if (!elements) {
        elements = elementsOf(name, type, await zip.read(entry), numel, bad);
        storages.set(key, elements);
      }
      tensors.set(name, gather(name, t, elements, bad));
    }
    return { tensors, metadata: {} };
  } finally {
    await zip.close();
  }
}
