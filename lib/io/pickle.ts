// A safe unpickler for the subset of Python's pickle that torch.save(model.state_dict()) writes.
// It never runs anything: a GLOBAL (a module.name the pickle wants called) resolves only through
// the caller's allow-list, to a JS function that builds a plain value; any other global, and any
// opcode outside the subset, stops the read with an error that names it.
import { SppnetError } from '../core/errors';

/** A global the pickle names: a module and a name, e.g. collections.OrderedDict. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string, readonly call: (args: unknown[]) => unknown) {}
}

/** Python's None. */
const PY_NONE = null;

export interface UnpickleOptions {
  /** fn and the file, for messages. */
  fn: string;
  source: string;
  /** The globals the pickle may name, by 'module.name'; their builders. */
  globals: ReadonlyMap<string, (args: unknown[]) => unknown>;
  /** What a global outside the list means (a hint for the message), if anything. */
  unknownGlobal?(qualified: string): string | undefined;
  /** Resolves a persistent id (BINPERSID): PyTorch's storages. */
  persistentLoad(pid: unknown): unknown;
}


/** A dict as pickled: an ordered Map from keys to values (state_dicts are OrderedDicts). */
export type PyDict = Map<unknown, unknown>;

/**
 * Most values a pickle may push (2^20): a state_dict's pickle pushes about 15 per tensor, so this
 * is room for ~70,000 tensors, and a hostile pickle of a few megabytes of EMPTY_DICTs cannot make
 * gigabytes of objects.
 */
export const MAX_PICKLE_VALUES = 2 ** 20;

/** Reads one pickle from `data`; returns the object it builds. */
export function unpickle(data: Uint8Array, o: UnpickleOptions): unknown {
  const fail = (why: string): never => {
    throw new SppnetError(`${o.fn}: ${o.source}: ${why}`, 'SPPNET_INVALID_ARGUMENT');
  };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  let pushed = 0;
  const push = (v: unknown) => {
    if (++pushed > MAX_PICKLE_VALUES) fail(`the pickle makes more than ${MAX_PICKLE_VALUES} values, more than a state_dict's (byte ${p})`);
    stack.push(v);
  };
  const need = (n: number) => {
    if (p + n > data.length) fail(`the pickle ends in the middle of an opcode (byte ${p})`);
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), (p += 2), view.getUint16(p - 2, true));
  const u32 = () => (need(4), (p += 4), view.getUint32(p - 4, true));
  const i32 = () => (need(4), (p += 4), view.getInt32(p - 4, true));
  const bytes = (n: number) => (need(n), (p += n), data.subarray(p - n, p));
  const text = (n: number) => Buffer.from(bytes(n)).toString('utf8');
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) fail('a GLOBAL opcode without its newline');
    const s = Buffer.from(data.subarray(p, end)).toString('utf8');
    p = end + 1;
    return s;
  };
  const pop = () => (stack.length === 0 ? fail(`the pickle pops an empty stack (byte ${p})`) : stack.pop());
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail(`the pickle closes a MARK it never opened (byte ${p})`);
    return stack.splice(m as number);
  };
  const global = (module: string, name: string) => {
    const q = `${module}.${name}`;
    const build = o.globals.get(q);
    if (!build) {
      const hint = o.unknownGlobal?.(q);
      fail(`it names the Python global ${q}, which sppnet does not load (a state_dict of tensors needs only ${[...o.globals.keys()].join(', ')}); nothing in the file was run${hint ? `. ${hint}` : ''}`);
    }
    return new PyGlobal(module, name, build as (args: unknown[]) => unknown);
  };
  const list = (): unknown[] => {
    const l = stack[stack.length - 1];
    return Array.isArray(l) ? l : fail('APPEND on something that is not a list');
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) fail('SETITEMS on something that is not a dict');
    for (let i = 0; i + 1 < kv.length; i += 2) (d as PyDict).set(kv[i], kv[i + 1]);
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO
      case 0x95: bytes(8); break; // FRAME
      case 0x2e: return pop(); // STOP
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x7d: push(new Map()); break; // EMPTY_DICT
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x29: push([]); break; // EMPTY_TUPLE
      case 0x74: push(popMark()); break; // TUPLE
      case 0x85: push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(); push([pop(), b]); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(); push([pop(), b, c]); break; } // TUPLE3
      case 0x4e: push(PY_NONE); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x4a: push(i32()); break; // BININT
      case 0x8a: { // LONG1: a little-endian two's complement integer of n bytes
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: need(8); push(view.getFloat64(p, false)); p += 8; break; // BINFLOAT (big-endian)
      case 0x58: push(text(u32())); break; // BINUNICODE
      case 0x8c: push(text(u8())); break; // SHORT_BINUNICODE
      case 0x8d: { need(8); const n = Number(view.getBigUint64(p, true)); p += 8; push(text(n)); break; } // BINUNICODE8
      case 0x42: push(bytes(u32())); break; // BINBYTES
      case 0x43: push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x71: memo.set(u8(), stack[stack.length - 1]); break; // BINPUT
      case 0x72: memo.set(u32(), stack[stack.length - 1]); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, stack[stack.length - 1]); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const k = op === 0x68 ? u8() : u32();
        if (!memo.has(k)) fail(`the pickle reads memo ${k} before writing it`);
        push(memo.get(k));
        break;
      }
      case 0x63: { const module = line(); push(global(module, line())); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(`STACK_GLOBAL of something that is not a module and a name (byte ${p - 1})`);
        push(global(module as string, name as string));
        break;
      }
      case 0x51: push(o.persistentLoad(pop())); break; // BINPERSID
      case 0x52: { // REDUCE: an allow-listed builder, never a Python callable
        const args = pop(), f = pop();
        if (!(f instanceof PyGlobal)) fail('REDUCE on something that is not an allowed global');
        if (!Array.isArray(args)) fail(`REDUCE of ${(f as PyGlobal).module}.${(f as PyGlobal).name} without an argument tuple`);
        push((f as PyGlobal).call(args as unknown[]));
        break;
      }
      case 0x62: pop(); break; // BUILD: the state of an OrderedDict (its _metadata); not needed
      case 0x73: { const v = pop(), k = pop(); setItems(stack[stack.length - 1], [k, v]); break; } // SETITEM
      case 0x75: { const kv = popMark(); setItems(stack[stack.length - 1], kv); break; } // SETITEMS
      case 0x61: { const v = pop(); list().push(v); break; } // APPEND
      case 0x65: { const vs = popMark(), l = list(); for (const v of vs) l.push(v); break; } // APPENDS (no spread: a mark may hold 10^5 values)
      default:
        fail(`the pickle uses opcode 0x${op.toString(16).padStart(2, '0')} at byte ${p - 1}, outside what a state_dict needs; nothing in the file was run`);
    }
  }
}
