#!/usr/bin/env node
// Prints the node_modules folders that the named packages need at run time (their dependency
// closure), relative to the repo root: used by gpu-bundle.sh to carry only what a run loads.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.resolve(__dirname, '..');
const seen = new Set();
function pkgDir(name, from) {
  for (let d = from; ; d = path.dirname(d)) {
    const cand = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(cand, 'package.json'))) return cand;
    if (d === path.dirname(d)) return null;
  }
}
function walk(name, from) {
  const dir = pkgDir(name, from);
  if (!dir || seen.has(dir)) return;
  seen.add(dir);
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys({ ...pj.dependencies, ...pj.optionalDependencies })) walk(dep, dir);
}
process.argv.slice(2).forEach((n) => walk(n, root));
// A package folder copies its nested node_modules too: list only the outermost folders.
const dirs = [...seen].sort();
for (const d of dirs) if (!dirs.some((o) => o !== d && d.startsWith(o + path.sep))) console.log(path.relative(root, d));
