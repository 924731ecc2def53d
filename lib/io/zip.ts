// Reading entries of a zip archive from a file without loading the file: the central directory is
// read from the end (zip64 included), and each entry's bytes with one positional read when asked
// for. Only what PyTorch's checkpoints use: stored (uncompressed) entries; deflated ones are refused.
import { promises as fsp } from 'fs';
import { SppnetError } from '../core/errors';

export interface ZipEntry {
  name: string;
  /** Offset of the entry's local header in the file (its data follows the header, read when first used). */
  local: number;
  size: number;
}

export interface ZipArchive {
  entries: Map<string, ZipEntry>;
  /** The bytes of one entry (stored entries only). */
  read(entry: ZipEntry): Promise<Buffer>;
  /** Bytes [from, from + target.length) of one entry, into `target` (no copy in between). */
  readInto(entry: ZipEntry, from: number, target: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

const EOCD = 0x06054b50, EOCD64 = 0x06064b50, EOCD64_LOCATOR = 0x07064b50, CENTRAL = 0x02014b50, LOCAL = 0x04034b50;
const MAX_COMMENT = 0xffff;
/** Most entries an archive may list (2^20; a checkpoint has one per storage, and a few more). */
export const MAX_ZIP_ENTRIES = 2 ** 20;

const bad = (fn: string, file: string, why: string) => new SppnetError(`${fn}: ${file} is not a zip archive sppnet can read: ${why}`, 'SPPNET_INVALID_ARGUMENT');

/** True when the bytes start like a zip archive (a local file header). */
export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

/** Opens `file` and reads its central directory. `fn` names the public call in errors. */
export async function openZip(fn: string, file: string): Promise<ZipArchive> {
  const fd = await fsp.open(file, 'r');
  try {
    const size = (await fd.stat()).size;
    const fill = async (pos: number, b: Uint8Array): Promise<void> => {
      const n = b.length;
      if (pos < 0 || pos + n > size) throw bad(fn, file, `a record points outside the file (${pos} + ${n} > ${size} bytes)`);
      let done = 0;
      while (done < n) {
        const { bytesRead } = await fd.read(b, done, n - done, pos + done);
        if (bytesRead === 0) throw bad(fn, file, 'the file ended early');
        done += bytesRead;
      }
    };
    const readAt = async (pos: number, n: number): Promise<Buffer> => {
      // Checked before allocating: a record may claim gigabytes a small file does not have.
      if (!(n >= 0) || pos < 0 || pos + n > size) throw bad(fn, file, `a record points outside the file (${pos} + ${n} > ${size} bytes)`);
      const b = Buffer.allocUnsafe(n);
      await fill(pos, b);
      return b;
    };
    // The end of central directory record: within the last 22 + 65535 bytes.
    const tailLen = Math.min(size, 22 + MAX_COMMENT);
    const tail = await readAt(size - tailLen, tailLen);
    let at = -1;
    for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === EOCD) { at = i; break; }
    if (at < 0) throw bad(fn, file, 'no end of central directory record');
    let count = tail.readUInt16LE(at + 10);
    let cdSize = tail.readUInt32LE(at + 12);
    let cdOffset = tail.readUInt32LE(at + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // zip64: the locator sits just before the end record.
      const locPos = size - tailLen + at - 20;
      const loc = await readAt(locPos, 20);
      if (loc.readUInt32LE(0) !== EOCD64_LOCATOR) throw bad(fn, file, 'a zip64 archive without its locator');
      const rec = await readAt(Number(loc.readBigUInt64LE(8)), 56);
      if (rec.readUInt32LE(0) !== EOCD64) throw bad(fn, file, 'a zip64 archive without its end record');
      count = Number(rec.readBigUInt64LE(32));
      cdSize = Number(rec.readBigUInt64LE(40));
      cdOffset = Number(rec.readBigUInt64LE(48));
    }
    if (count > MAX_ZIP_ENTRIES) throw bad(fn, file, `it lists ${count} entries, more than the ${MAX_ZIP_ENTRIES} sppnet reads`);
    const cd = await readAt(cdOffset, cdSize);
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL) throw bad(fn, file, `central directory entry ${i} is malformed`);
      const method = cd.readUInt16LE(p + 10);
      let compressed = cd.readUInt32LE(p + 20), plain = cd.readUInt32LE(p + 24), local = cd.readUInt32LE(p + 42);
      const nameLen = cd.readUInt16LE(p + 28), extraLen = cd.readUInt16LE(p + 30), commentLen = cd.readUInt16LE(p + 32);
      if (p + 46 + nameLen + extraLen + commentLen > cd.length) throw bad(fn, file, `central directory entry ${i} runs past the directory`);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
      // zip64 sizes and offset, in that order, for the fields that overflowed.
      let e = p + 46 + nameLen;
      const extraEnd = e + extraLen;
      while (e + 4 <= extraEnd) {
        const id = cd.readUInt16LE(e), len = cd.readUInt16LE(e + 2);
        if (e + 4 + len > extraEnd) throw bad(fn, file, `entry ${name} has a malformed extra field`);
        if (id === 0x0001) {
          let q = e + 4;
          if (plain === 0xffffffff) (plain = Number(cd.readBigUInt64LE(q))), (q += 8);
          if (compressed === 0xffffffff) (compressed = Number(cd.readBigUInt64LE(q))), (q += 8);
          if (local === 0xffffffff) local = Number(cd.readBigUInt64LE(q));
        }
        e += 4 + len;
      }
      if (method !== 0) throw bad(fn, file, `entry ${name} is compressed (method ${method}); PyTorch stores its entries uncompressed`);
      if (compressed !== plain) throw bad(fn, file, `entry ${name} is stored with two sizes (${compressed} and ${plain})`);
      if (local + 30 + plain > size) throw bad(fn, file, `entry ${name} runs past the end of the file`);
      if (entries.has(name)) throw bad(fn, file, `entry ${name} is listed twice`);
      entries.set(name, { name, local, size: plain });
      p = extraEnd + commentLen;
    }
    // An entry's data offset, from its local header, read when the entry is first used (one read
    // per entry listed would make an archive of many entries slow to open).
    const offsets = new Map<ZipEntry, number>();
    const dataOffset = async (entry: ZipEntry): Promise<number> => {
      let at = offsets.get(entry);
      if (at === undefined) {
        const lh = await readAt(entry.local, 30);
        if (lh.readUInt32LE(0) !== LOCAL) throw bad(fn, file, `entry ${entry.name} has no local header`);
        at = entry.local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
        if (at + entry.size > size) throw bad(fn, file, `entry ${entry.name} runs past the end of the file`);
        offsets.set(entry, at);
      }
      return at;
    };
    const readInto = async (entry: ZipEntry, from: number, target: Uint8Array) => {
      if (from < 0 || from + target.length > entry.size) throw bad(fn, file, `a read of ${target.length} bytes at ${from} runs past entry ${entry.name}`);
      await fill((await dataOffset(entry)) + from, target);
    };
    const read = async (entry: ZipEntry) => readAt(await dataOffset(entry), entry.size);
    return { entries, read, readInto, close: () => fd.close() };
  } catch (e) {
    await fd.close();
    // A read past a record's end that the checks above did not foresee: still a malformed file.
    if (e instanceof RangeError) throw bad(fn, file, `a record is malformed (${e.message})`);
    throw e;
  }
}
