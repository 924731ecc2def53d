#!/usr/bin/env node
// Prints the node_modules folders (relative to the repo root) that a run needs: the dependency
// closure of the packages named on the command line, or with --scan of every package that the
// files a GPU run loads require. Used by gpu-bundle.sh to carry what the runs load, nothing else.
//
//   node scripts/dep-closure.js --scan [--list]   # --list: the scanned files and package names, to stderr
//   node scripts/dep-closure.js mocha chai ...
//
// --scan reads these entry files (ENTRIES below) and follows, from each file it reads, every
// relative require() and every string literal naming a .js file of the repo's script folders
// (tests spawn bin/sppnet.js and bench/load.js by path, load.js forks load_client.js); the
// package names of its bare require()s (not Node's built-ins) are the roots of the closure.
'use strict';
const fs = require('fs');
const path = require('path');
const { builtinModules } = require('module');

const root = path.resolve(__dirname, '..');
// What a GPU run executes: the library, the tests and their helpers, the CLI, the GPU benchmarks
// and the GPU scripts. Anything these reach is scanned too.
const ENTRIES = ['dist', 'test', 'bin', 'bench/gpu_spp.js', 'bench/gpu_zf5.js', 'bench/zf5_layers.js', 'bench/detect.js', 'scripts/gpu-touch.js'];
// Where a bare 'name.js' literal is looked for.
const SCRIPT_DIRS = ['bench', 'bin', 'test', 'scripts', 'examples'];

function jsFiles(p) {
  const abs = path.join(root, p);
  if (!fs.existsSync(abs)) return [];
  if (fs.statSync(abs).isFile()) return [abs];
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? jsFiles(path.join(p, d.name)) : /\.(c?js)$/.test(d.name) ? [path.join(abs, d.name)] : []);
}

function resolveLocal(from, spec) {
  const base = path.resolve(path.dirname(from), spec);
  for (const cand of [base, `${base}.js`, path.join(base, 'index.js')]) if (fs.existsSync(cand) && fs.statSync(cand).isFile()) return cand;
  const pj = path.join(base, 'package.json');
  if (fs.existsSync(pj)) {
    const main = JSON.parse(fs.readFileSync(pj, 'utf8')).main || 'index.js';
    return resolveLocal(path.join(base, 'x'), `./${main}`);
  }
  return null;
}

function byBasename(name) {
  return SCRIPT_DIRS.flatMap((d) => jsFiles(d)).filter((f) => path.basename(f) === name);
}

/** Package names required by the entry files and the local files they reach. */
function scan(list) {
  const files = new Set(), pkgs = new Set();
  const queue = ENTRIES.flatMap(jsFiles);
  while (queue.length) {
    const f = queue.pop();
    if (files.has(f)) continue;
    files.add(f);
    const src = fs.readFileSync(f, 'utf8');
    for (const m of src.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1];
      if (spec.startsWith('.')) {
        const r = resolveLocal(f, spec);
        if (r && !r.endsWith('.json')) queue.push(r);
        continue;
      }
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      if (spec.startsWith('node:') || builtinModules.includes(name)) continue;
      pkgs.add(name);
    }
    for (const m of src.matchAll(/['"]([A-Za-z0-9_-]+\.js)['"]/g)) queue.push(...byBasename(m[1]));
  }
  if (list) {
    console.error(`scanned ${files.size} files:\n  ${[...files].map((f) => path.relative(root, f)).sort().join('\n  ')}`);
    console.error(`packages required: ${[...pkgs].sort().join(' ')}`);
  }
  return [...pkgs].sort();
}

const seen = new Set();
function pkgDir(name, from) {
  for (let d = from; ; d = path.dirname(d)) {
    const cand = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(cand, 'package.json'))) return cand;
    if (d === path.dirname(d) || d === root) return null;
  }
}
function walk(name, from, required) {
  const dir = pkgDir(name, from);
  if (!dir) {
    if (required) throw new Error(`${name} is required but not installed (npm install)`);
    return; // an optional dependency for another platform, or an absent peer
  }
  if (seen.has(dir)) return;
  seen.add(dir);
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys(pj.dependencies || {})) walk(dep, dir, true);
  for (const dep of Object.keys({ ...pj.optionalDependencies, ...pj.peerDependencies })) walk(dep, dir, false);
}

const args = process.argv.slice(2);
const roots = args.includes('--scan') ? scan(args.includes('--list')) : args.filter((a) => !a.startsWith('--'));
for (const n of roots) walk(n, root, true);
// A package folder copies its nested node_modules too: list only the outermost folders.
const dirs = [...seen].sort();
for (const d of dirs) if (!dirs.some((o) => o !== d && d.startsWith(o + path.sep))) console.log(path.relative(root, d));
