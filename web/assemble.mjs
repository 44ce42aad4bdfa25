#!/usr/bin/env node
// Assembles the static site: node web/assemble.mjs <dist>
//
// Copies web/static/* into <dist>/ and the three.js modules the page imports into
// <dist>/vendor/three/ (three.module.js and, following relative imports, every module
// OrbitControls and GLTFLoader need, nothing else). Then stamps <dist>/sw.js with the list of
// files to precache and a build id hashed from everything in <dist>, so that a new build
// replaces the browsers' offline copy. Run it after <dist>/pkg (the wasm-bindgen output) and
// <dist>/assets (manifest.json and the model files) are in place; it warns if they are not.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const staticDir = path.join(here, 'static');
const threeDir = path.join(here, 'node_modules', 'three');

// Entry points under node_modules/three; their relative imports are followed.
const THREE_ENTRIES = [
  'build/three.module.js',
  'examples/jsm/controls/OrbitControls.js',
  'examples/jsm/loaders/GLTFLoader.js',
];
// Files of the wasm-bindgen output that the browser never loads.
const PKG_SKIP = /(\.d\.ts|package\.json|\.gitignore|README\.md)$/;

function fail(message) {
  console.error(`assemble: ${message}`);
  process.exit(1);
}

/** Relative module specifiers imported or re-exported by a JavaScript module's source. */
function relativeImports(source) {
  const found = new Set();
  const patterns = [
    /\b(?:import|export)\s[^'"]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]/g, // import x from './a.js'
    /\bimport\s*['"](\.{1,2}\/[^'"]+)['"]/g,                          // import './a.js'
    /\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g,                // import('./a.js')
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) found.add(match[1]);
  }
  return [...found];
}

/** The entry files and everything they import, as paths relative to node_modules/three. */
async function threeClosure() {
  const seen = new Set();
  const queue = [...THREE_ENTRIES];
  while (queue.length > 0) {
    const file = queue.pop();
    if (seen.has(file)) continue;
    const full = path.join(threeDir, file);
    if (!existsSync(full)) fail(`three.js file not found: ${full} (run npm install in web/)`);
    seen.add(file);
    const source = await readFile(full, 'utf8');
    for (const spec of relativeImports(source)) {
      queue.push(path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)));
    }
  }
  return [...seen].sort();
}

/** All files under dir, as sorted POSIX paths relative to dir. */
async function listFiles(dir, prefix = '') {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(path.join(dir, entry.name), rel)));
    else if (entry.isFile()) out.push(rel);
  }
  return out.sort();
}

async function main() {
  const distArg = process.argv[2];
  if (!distArg || distArg.startsWith('-')) fail('usage: node web/assemble.mjs <dist>');
  const dist = path.resolve(distArg);
  if (!existsSync(path.join(threeDir, 'package.json'))) {
    fail(`three.js is not installed: run "npm ci" in ${here}`);
  }
  const threeVersion = JSON.parse(await readFile(path.join(threeDir, 'package.json'), 'utf8')).version;

  // 1. The page.
  await mkdir(dist, { recursive: true });
  const staticFiles = await listFiles(staticDir);
  for (const file of staticFiles) await cp(path.join(staticDir, file), path.join(dist, file));

  // 2. three.js: the imported modules only, plus its licence.
  const vendor = path.join(dist, 'vendor', 'three');
  await rm(vendor, { recursive: true, force: true });
  const threeFiles = [...(await threeClosure()), 'LICENSE'];
  for (const file of threeFiles) {
    await mkdir(path.dirname(path.join(vendor, file)), { recursive: true });
    await cp(path.join(threeDir, file), path.join(vendor, file));
  }

  // 3. What the build put in place.
  const pkgDir = path.join(dist, 'pkg');
  const pkgFiles = existsSync(pkgDir) ? (await listFiles(pkgDir)).filter((f) => !PKG_SKIP.test(f)) : [];
  if (!pkgFiles.includes('motion_web.js') || !pkgFiles.includes('motion_web_bg.wasm')) {
    console.warn(`assemble: warning: ${pkgDir} lacks motion_web.js / motion_web_bg.wasm (build the wasm first)`);
  }
  const manifestPath = path.join(dist, 'assets', 'manifest.json');
  if (!existsSync(manifestPath)) {
    console.warn(`assemble: warning: ${manifestPath} is missing (the page cannot load a model without it)`);
  } else {
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
    for (const file of manifest.files ?? []) {
      const full = path.join(dist, 'assets', file.name);
      if (!existsSync(full)) console.warn(`assemble: warning: ${full} is listed in the manifest but missing`);
      else if ((await stat(full)).size !== file.bytes) {
        console.warn(`assemble: warning: ${full} has ${(await stat(full)).size} bytes, the manifest gives ${file.bytes}`);
      }
    }
  }

  // 4. Stamp the service worker: files to precache at install (the model files are cached as
  //    they are first downloaded) and a build id from the content of everything in dist.
  const shell = [
    './',
    ...staticFiles.filter((f) => f !== 'sw.js'),
    ...threeFiles.filter((f) => f.endsWith('.js')).map((f) => `vendor/three/${f}`),
    ...pkgFiles.map((f) => `pkg/${f}`),
  ];
  const hash = createHash('sha256');
  for (const file of await listFiles(dist)) {
    if (file === 'sw.js') continue;
    hash.update(`${file}\0`);
    hash.update(await readFile(path.join(dist, file)));
  }
  const buildId = hash.digest('hex').slice(0, 16);
  const swPath = path.join(dist, 'sw.js');
  let sw = await readFile(swPath, 'utf8');
  const stamped = sw
    .replace(/^const BUILD_ID = .*;$/m, `const BUILD_ID = ${JSON.stringify(buildId)};`)
    .replace(/^const SHELL = \[[^\]]*\];$/m, `const SHELL = ${JSON.stringify(shell, null, 2)};`);
  if (stamped === sw || !stamped.includes(buildId) || !stamped.includes('"vendor/three/')) {
    fail('could not stamp sw.js (its BUILD_ID / SHELL lines changed?)');
  }
  sw = stamped;
  await writeFile(swPath, sw);

  console.log(`assembled ${dist}: ${staticFiles.length} page files, three.js ${threeVersion} ` +
    `(${threeFiles.length} files), ${pkgFiles.length} pkg files, build ${buildId}`);
}

main().catch((err) => fail(err.stack || String(err)));
