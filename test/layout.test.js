'use strict';
// The shape of lib/ (issue 13): no import cycles; each folder imports only the folders below it
// (core <- ops, io <- nn <- train <- detect <- serve); no file over 400 lines; every folder says what it holds.
const { expect } = require('chai');
const fs = require('fs');
const path = require('path');

const lib = path.join(__dirname, '..', 'lib');
// What each folder of lib/ may import (besides itself).
const MAY_IMPORT = {
  core: [],
  ops: ['core'],
  io: ['core'],
  nn: ['core', 'ops', 'io'],
  train: ['core', 'ops', 'io', 'nn'],
  serve: ['core', 'ops', 'io', 'nn', 'detect'],
  detect: ['core', 'ops', 'io', 'nn', 'train'],
  '.': ['core', 'ops', 'io', 'nn', 'train', 'serve', 'detect'],
};

function files(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a .ts file (static, type-only and require), as files under lib/. */
function importsOf(file) {
  const src = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, ''); // code, not comments
  const specs = [...src.matchAll(/(?:from|import|require)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
  return specs.map((s) => path.resolve(path.dirname(file), s) + '.ts');
}

describe('the layout of lib/', function () {
  const all = files(lib);
  const rel = (f) => path.relative(lib, f);
  const folder = (f) => (path.dirname(rel(f)) === '.' ? '.' : rel(f).split(path.sep)[0]);

  it('has no import cycles', function () {
    const graph = new Map(all.map((f) => [f, importsOf(f)]));
    const state = new Map(); // 1: on the stack, 2: done
    const cycles = [];
    const visit = (f, stack) => {
      state.set(f, 1);
      for (const g of graph.get(f) ?? []) {
        if (!graph.has(g)) throw new Error(`${rel(f)} imports ${rel(g)}, which does not exist`);
        if (state.get(g) === 1) cycles.push([...stack.slice(stack.indexOf(g)), g].map(rel).join(' -> '));
        else if (!state.get(g)) visit(g, [...stack, g]);
      }
      state.set(f, 2);
    };
    for (const f of all) if (!state.get(f)) visit(f, [f]);
    expect(cycles).to.deep.equal([]);
  });

  it('imports only downwards: core <- ops, io <- nn <- train <- detect <- serve', function () {
    const wrong = [];
    for (const f of all) {
      const from = folder(f);
      for (const g of importsOf(f)) {
        const to = folder(g);
        if (to !== from && !MAY_IMPORT[from].includes(to)) wrong.push(`${rel(f)} imports ${rel(g)}`);
      }
    }
    expect(wrong).to.deep.equal([]);
  });

  it('has no file over 400 lines', function () {
    const long = all.map((f) => [rel(f), fs.readFileSync(f, 'utf8').split('\n').length - 1]).filter(([, n]) => n > 400);
    expect(long).to.deep.equal([]);
  });

  it('opens every folder with a README saying what lives there and what it may import', function () {
    for (const dir of Object.keys(MAY_IMPORT).filter((d) => d !== '.')) {
      const readme = path.join(lib, dir, 'README.md');
      expect(fs.existsSync(readme), readme).to.equal(true);
      expect(fs.readFileSync(readme, 'utf8')).to.match(/may import/i);
    }
  });
});
