// PASCAL VOC annotations: a small strict XML parser for the subset VOC files use (elements, text,
// attributes, comments, CDATA, the five predefined entities and character references; no DOCTYPE,
// so no entity expansion), the annotation record read from it, and the writer of such files.
// Boxes are kept as VOC writes them: 1-based, inclusive pixel coordinates.
import { describe, fail, SppnetError } from '../core/errors';

/** The 20 PASCAL VOC classes, in the devkit's order (label i is VOC_CLASSES[i]). */
export const VOC_CLASSES = Object.freeze([
  'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
]);

/** An XML element: its name, attributes, child elements and text (the concatenated character data). */
export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  text: string;
  line: number;
}

export interface XmlLimits {
  /** At most this many elements in the document (default 100,000). */
  maxElements?: number;
  /** Elements nested at most this deep (default 64). */
  maxDepth?: number;
}

const NAME = /[A-Za-z_:][A-Za-z0-9_:.-]*/y;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/**
 * Parses an XML document into its root element. `where` names the document in errors (the call and
 * the file: 'sp.data.voc: /data/Annotations/0001.xml'), each of which gives the line.
 */
export function parseXml(text: string, where: string, limits: XmlLimits = {}): XmlElement {
  const maxElements = limits.maxElements ?? 100_000, maxDepth = limits.maxDepth ?? 64;
  let pos = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1, lineAt = 0; // line of `pos`, counted lazily up to `lineAt`
  const lineOf = (p: number) => {
    for (; lineAt < p; lineAt++) if (text.charCodeAt(lineAt) === 10) line++;
    return line;
  };
  const err = (msg: string, p = pos): never => {
    // Lines before p (counted from the start: errors are rare).
    const l = text.slice(0, p).split('\n').length;
    throw new SppnetError(`${where}: line ${l}: ${msg}`, 'SPPNET_INVALID_ARGUMENT');
  };
  const decode = (s: string, at: number): string =>
    s.indexOf('&') < 0 ? s : s.replace(/&([^;&\s]{0,16});?/g, (m, name: string) => {
      if (!m.endsWith(';')) err(`a bare '&' (write &amp;)`, at);
      if (name.startsWith('#')) {
        const code = /^#x[0-9a-fA-F]{1,6}$/.test(name) ? parseInt(name.slice(2), 16) : /^#[0-9]{1,7}$/.test(name) ? Number(name.slice(1)) : NaN;
        if (!(code >= 1 && code <= 0x10ffff) || (code >= 0xd800 && code <= 0xdfff)) err(`an invalid character reference &${name};`, at);
        return String.fromCodePoint(code);
      }
      if (!(name in ENTITIES)) err(`an unknown entity &${name}; (only &lt; &gt; &amp; &quot; &apos; and &#N; are allowed)`, at);
      return ENTITIES[name];
    });
  const skipSpace = () => {
    while (pos < text.length && /\s/.test(text[pos])) pos++;
  };
  // Comments and processing instructions between elements; DOCTYPE is refused.
  const skipMisc = (allowDecl: boolean): void => {
    for (;;) {
      skipSpace();
      if (text.startsWith('<!--', pos)) {
        const end = text.indexOf('-->', pos + 4);
        if (end < 0) err('a comment that is never closed');
        pos = end + 3;
      } else if (text.startsWith('<?', pos)) {
        if (!allowDecl && text.startsWith('<?xml', pos)) err('an XML declaration that is not at the start');
        const end = text.indexOf('?>', pos + 2);
        if (end < 0) err('a processing instruction that is never closed');
        pos = end + 2;
      } else if (text.startsWith('<!DOCTYPE', pos) || text.startsWith('<!ENTITY', pos)) err('a DOCTYPE (not allowed: no DTDs or entity definitions)');
      else return;
      allowDecl = false;
    }
  };
  const readName = (what: string): string => {
    NAME.lastIndex = pos;
    const m = NAME.exec(text);
    if (!m) err(`expected ${what}, found ${JSON.stringify(text.slice(pos, pos + 12))}`);
    pos += m![0].length;
    return m![0];
  };
  let elements = 0;
  const stack: XmlElement[] = [];
  const texts: string[][] = [];
  skipMisc(true);
  if (text[pos] !== '<') err(pos >= text.length ? 'the document is empty' : 'text before the root element');
  let root: XmlElement | undefined;
  while (pos < text.length) {
    if (text.startsWith('<!--', pos)) {
      const end = text.indexOf('-->', pos + 4);
      if (end < 0) err('a comment that is never closed');
      pos = end + 3;
    } else if (text.startsWith('<![CDATA[', pos)) {
      if (!stack.length) err('CDATA outside the root element');
      const end = text.indexOf(']]>', pos + 9);
      if (end < 0) err('a CDATA section that is never closed');
      texts[texts.length - 1].push(text.slice(pos + 9, end));
      pos = end + 3;
    } else if (text.startsWith('<!', pos)) err('a DOCTYPE or declaration inside the document (not allowed)');
    else if (text.startsWith('<?', pos)) {
      const end = text.indexOf('?>', pos + 2);
      if (end < 0) err('a processing instruction that is never closed');
      pos = end + 2;
    } else if (text.startsWith('</', pos)) {
      const at = pos;
      pos += 2;
      const name = readName('an element name after </');
      skipSpace();
      if (text[pos] !== '>') err(`expected '>' to close </${name}`);
      pos++;
      const open = stack.pop();
      if (!open) err(`a closing tag </${name}> with no element open`, at);
      if (open!.name !== name) err(`</${name}> closes <${open!.name}> (opened on line ${open!.line})`, at);
      open!.text = texts.pop()!.join('');
      if (!stack.length) {
        root = open;
        break;
      }
    } else if (text[pos] === '<') {
      const at = pos;
      pos++;
      const name = readName('an element name after <');
      if (stack.length === 0 && root) err('a second root element', at);
      if (++elements > maxElements) throw new SppnetError(`${where}: more than ${maxElements} elements (the limit)`, 'SPPNET_TOO_LARGE');
      if (stack.length >= maxDepth) throw new SppnetError(`${where}: line ${lineOf(at)}: elements nested deeper than ${maxDepth} (the limit)`, 'SPPNET_TOO_LARGE');
      const el: XmlElement = { name, attributes: {}, children: [], text: '', line: lineOf(at) };
      let empty = false;
      for (;;) {
        const before = pos;
        skipSpace();
        if (text.startsWith('/>', pos)) {
          pos += 2;
          empty = true;
          break;
        }
        if (text[pos] === '>') {
          pos++;
          break;
        }
        if (pos >= text.length) err(`<${name}> is never closed`, at);
        if (pos === before) err(`expected whitespace, '>' or '/>' in <${name}>`);
        const attr = readName(`an attribute name in <${name}>`);
        skipSpace();
        if (text[pos] !== '=') err(`expected '=' after the attribute ${attr} in <${name}>`);
        pos++;
        skipSpace();
        const q = text[pos];
        if (q !== '"' && q !== "'") err(`the value of the attribute ${attr} in <${name}> must be quoted`);
        const end = text.indexOf(q, pos + 1);
        if (end < 0) err(`the value of the attribute ${attr} in <${name}> is never closed`);
        const raw = text.slice(pos + 1, end);
        if (raw.includes('<')) err(`a '<' in the value of the attribute ${attr} in <${name}>`);
        if (attr in el.attributes) err(`the attribute ${attr} appears twice in <${name}>`);
        el.attributes[attr] = decode(raw, pos);
        pos = end + 1;
      }
      if (stack.length) stack[stack.length - 1].children.push(el);
      if (empty) {
        if (!stack.length) {
          root = el;
          break;
        }
      } else {
        stack.push(el);
        texts.push([]);
      }
    } else {
      const end = text.indexOf('<', pos);
      const raw = text.slice(pos, end < 0 ? text.length : end);
      if (raw.includes(']]>')) err(`']]>' in text`);
      texts[texts.length - 1].push(decode(raw, pos));
      pos += raw.length;
    }
  }
  if (stack.length) err(`<${stack[stack.length - 1].name}> (line ${stack[stack.length - 1].line}) is never closed`, text.length);
  if (!root) err('no root element');
  skipMisc(false);
  if (pos < text.length) err(text[pos] === '<' ? 'content after the root element' : 'text after the root element');
  return root!;
}

/** One object of a VOC annotation. `box` is [xmin, ymin, xmax, ymax], 1-based and inclusive, as in the file. */
export interface VocObject {
  name: string;
  box: [number, number, number, number];
  difficult: boolean;
  truncated: boolean;
  /** The <pose> text ('Unspecified' when absent). */
  pose: string;
}

export interface VocAnnotation {
  /** The <filename> text ('' when absent). */
  filename: string;
  width: number;
  height: number;
  depth: number;
  objects: VocObject[];
}

export interface VocParseOptions {
  /** Annotation files larger than this are refused (default 1 MiB; VOC's largest is a few KiB). */
  maxBytes?: number;
  /** An annotation with more objects is refused (default 1,000; VOC's most is 56). */
  maxObjects?: number;
}

export const VOC_DEFAULT_MAX_BYTES = 2 ** 20;
export const VOC_DEFAULT_MAX_OBJECTS = 1000;

/**
 * A VOC annotation from the bytes of its XML file. `where` names the call and the file in errors.
 * Required: <annotation> with <size> (<width>, <height>: positive integers) and, per <object>,
 * <name> and <bndbox> (<xmin> <= <xmax>, <ymin> <= <ymax>, numbers); <difficult> and <truncated>
 * are 0 or 1 (0 when absent). Other elements (<source>, <part>, <pose>, ...) are allowed.
 */
export function parseVocAnnotation(bytes: Uint8Array | string, where: string, opts: VocParseOptions = {}): VocAnnotation {
  const maxBytes = opts.maxBytes ?? VOC_DEFAULT_MAX_BYTES, maxObjects = opts.maxObjects ?? VOC_DEFAULT_MAX_OBJECTS;
  const n = typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
  if (n > maxBytes) throw new SppnetError(`${where}: the file has ${n} bytes, more than options.maxBytes ${maxBytes}`, 'SPPNET_TOO_LARGE');
  let text: string;
  if (typeof bytes === 'string') text = bytes;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return fail(`${where}: not valid UTF-8 text`);
    }
  }
  // A VOC object is about 10 elements, up to ~60 with VOC2012's parts and actions: the element cap follows the object cap.
  const root = parseXml(text, where, { maxElements: 64 + 128 * maxObjects, maxDepth: 32 });
  if (root.name !== 'annotation') fail(`${where}: the root element is <${root.name}>, expected <annotation>`);
  const child = (el: XmlElement, name: string, required: boolean): XmlElement | undefined => {
    const found = el.children.filter((c) => c.name === name);
    if (found.length > 1) fail(`${where}: line ${found[1].line}: <${el.name}> has ${found.length} <${name}> elements, expected one`);
    if (!found.length && required) fail(`${where}: line ${el.line}: <${el.name}> has no <${name}>`);
    return found[0];
  };
  const number = (el: XmlElement, name: string, integer: boolean): number => {
    const c = child(el, name, true)!;
    const s = c.text.trim();
    const v = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(s) ? Number(s) : NaN;
    if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) fail(`${where}: line ${c.line}: <${name}> must be ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(c.text)}`);
    return v;
  };
  const flag = (el: XmlElement, name: string): boolean => {
    const c = child(el, name, false);
    if (!c) return false;
    const s = c.text.trim();
    if (s !== '0' && s !== '1') fail(`${where}: line ${c.line}: <${name}> must be 0 or 1, got ${JSON.stringify(c.text)}`);
    return s === '1';
  };
  const size = child(root, 'size', true)!;
  const width = number(size, 'width', true), height = number(size, 'height', true);
  if (width < 1 || height < 1) fail(`${where}: line ${size.line}: the image size must be positive, got width ${width}, height ${height}`);
  const depthEl = child(size, 'depth', false);
  const depth = depthEl ? number(size, 'depth', true) : 3;
  const objectEls = root.children.filter((c) => c.name === 'object');
  if (objectEls.length > maxObjects) throw new SppnetError(`${where}: ${objectEls.length} objects, more than options.maxObjects ${maxObjects}`, 'SPPNET_TOO_LARGE');
  const objects = objectEls.map((o): VocObject => {
    const nameEl = child(o, 'name', true)!;
    const name = nameEl.text.trim();
    if (!name) fail(`${where}: line ${nameEl.line}: an empty <name>`);
    const bb = child(o, 'bndbox', true)!;
    const box: [number, number, number, number] = [number(bb, 'xmin', false), number(bb, 'ymin', false), number(bb, 'xmax', false), number(bb, 'ymax', false)];
    if (box[2] < box[0] || box[3] < box[1]) fail(`${where}: line ${bb.line}: the box of ${name} has xmax < xmin or ymax < ymin: [${box.join(', ')}]`);
    const poseEl = child(o, 'pose', false);
    return { name, box, difficult: flag(o, 'difficult'), truncated: flag(o, 'truncated'), pose: poseEl ? poseEl.text.trim() : 'Unspecified' };
  });
  const fileEl = child(root, 'filename', false);
  return { filename: fileEl ? fileEl.text.trim() : '', width, height, depth, objects };
}

const escapeXml = (s: string) => s.replace(/[<>&"']/g, (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', '"': 'quot', "'": 'apos' }[c]};`);

/** The XML of a VOC annotation, laid out as the VOC files are (tabs, one element a line). */
export function formatVocAnnotation(a: VocAnnotation, folder = 'VOC', source = 'sppnet'): string {
  for (const o of a.objects) if (!o.box.every(Number.isFinite)) fail(`formatVocAnnotation: object ${o.name} has a box with a non-finite coordinate: ${describe(o.box)}`);
  const objects = a.objects.map((o) => [
    '\t<object>', `\t\t<name>${escapeXml(o.name)}</name>`, `\t\t<pose>${escapeXml(o.pose)}</pose>`,
    `\t\t<truncated>${o.truncated ? 1 : 0}</truncated>`, `\t\t<difficult>${o.difficult ? 1 : 0}</difficult>`, '\t\t<bndbox>',
    ...['xmin', 'ymin', 'xmax', 'ymax'].map((k, i) => `\t\t\t<${k}>${o.box[i]}</${k}>`), '\t\t</bndbox>', '\t</object>',
  ].join('\n'));
  return [
    '<annotation>', `\t<folder>${escapeXml(folder)}</folder>`, `\t<filename>${escapeXml(a.filename)}</filename>`,
    `\t<source>\n\t\t<database>${escapeXml(source)}</database>\n\t</source>`,
    `\t<size>\n\t\t<width>${a.width}</width>\n\t\t<height>${a.height}</height>\n\t\t<depth>${a.depth}</depth>\n\t</size>`,
    '\t<segmented>0</segmented>', ...objects, '</annotation>', '',
  ].join('\n');
}
