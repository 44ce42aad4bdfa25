#!/usr/bin/env node
// End-to-end test of the browser demo in headless Chromium (playwright-core, software WebGL):
//
//   node web/test/e2e.mjs [--dist web/dist] [--caption TEXT] [--seconds S] [--seed N]
//       [--native NNN.features.npy] [--tol 1e-3] [--screenshots DIR] [--report FILE.json]
//       [--chromium /usr/bin/chromium] [--timeout SECONDS]
//
// It serves <dist> with serve.mjs on a free port, waits for the model to load, generates a
// motion from the form, checks from two screenshots that the body is drawn and that it
// moves, reloads with the network off and the server stopped and generates again (from the
// service worker's cache), and reads the features .npy of the motion from the page's
// download link. With --native it compares those features with the native `generate`
// example's NNN.features.npy for the same caption, seconds and seed.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.dirname(here);

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // WebGL on the CPU (SwiftShader through ANGLE).
  '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
];
const VIEWPORT = { width: 1100, height: 760 };
// A pixel "clearly differs" when one channel differs by more than this (the ground grid is
// drawn in low contrast, below it; the body is well above it).
const CLEAR_DIFF = 64;
const MIN_BODY_FRACTION = 0.002;   // of the canvas area
const MIN_MOVED_FRACTION = 0.001;

// ---------------------------------------------------------------- options

function usage(message) {
  if (message) console.error(`e2e: ${message}`);
  console.error('usage: node web/test/e2e.mjs [--dist DIR] [--caption TEXT] [--seconds S] [--seed N] ' +
    '[--native FILE.npy] [--tol X] [--screenshots DIR] [--report FILE] [--chromium PATH] [--timeout SECONDS]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    dist: path.join(webDir, 'dist'), caption: 'a person walks forward', seconds: 4, seed: 0,
    native: null, tol: 1e-3, screenshots: null, report: null, chromium: '/usr/bin/chromium', timeout: 600,
  };
  const numeric = new Set(['seconds', 'seed', 'tol', 'timeout']);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') usage();
    if (!arg.startsWith('--')) usage(`unexpected argument ${arg}`);
    const key = arg.slice(2);
    if (!(key in o)) usage(`unknown option ${arg}`);
    const value = argv[++i];
    if (value === undefined) usage(`${arg} needs a value`);
    o[key] = numeric.has(key) ? Number(value) : value;
    if (numeric.has(key) && !Number.isFinite(o[key])) usage(`${arg} needs a number`);
  }
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) usage('--seed must be an integer in 0..4294967295');
  if (!(o.seconds > 0)) usage('--seconds must be positive');
  o.dist = path.resolve(o.dist);
  return o;
}

// ---------------------------------------------------------------- results

const results = [];
function record(name, ok, detail = '') {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  return ok;
}

// ---------------------------------------------------------------- server

/** Starts serve.mjs on a free port; resolves with {url, stop()}. */
function startServer(dist) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(webDir, 'serve.mjs'), dist, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const timer = setTimeout(() => reject(new Error(`serve.mjs printed no URL in 15 s:\n${output}`)), 15_000);
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(/https?:\/\/\S+/);
      if (match) {
        clearTimeout(timer);
        const exited = new Promise((done) => child.once('exit', done));
        resolve({
          url: match[0],
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
            await exited;
          },
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve.mjs exited (${code}):\n${output}`));
    });
  });
}

// ---------------------------------------------------------------- page helpers

/** Waits until body[data-state] is one of `wanted` (and `extra(body)` holds); throws with the
 *  page's status text if it shows an error instead. */
async function waitForState(page, wanted, timeoutMs, what, minMotions = 0) {
  let handle;
  try {
    handle = await page.waitForFunction(([states, min]) => {
      const { state, motions } = document.body?.dataset ?? {};
      if (state === 'error') return 'error';
      return states.includes(state) && Number(motions ?? 0) >= min ? state : false;
    }, [wanted, minMotions], { timeout: timeoutMs, polling: 250 });
  } catch (err) {
    const state = await page.evaluate(() => document.body?.dataset.state).catch(() => '?');
    const status = await page.textContent('#status').catch(() => '?');
    throw new Error(`${what}: timed out after ${timeoutMs / 1000} s in state "${state}" (status: ${status})`);
  }
  if ((await handle.jsonValue()) === 'error') {
    throw new Error(`${what}: the page shows an error: ${await page.textContent('#status')}`);
  }
}

async function generate(page, o, timeoutMs) {
  const before = Number(await page.evaluate(() => document.body.dataset.motions));
  await page.fill('#caption', o.caption);
  await page.fill('#seconds', String(o.seconds));
  await page.fill('#seed', String(o.seed));
  const t0 = Date.now();
  await page.click('#generate');
  await waitForState(page, ['shown'], timeoutMs, `generating "${o.caption}"`, before + 1);
  return Date.now() - t0;
}

/** Pauses and shows one frame (0-based), then waits until it has been drawn. */
async function showFrame(page, frame) {
  await page.evaluate(async (f) => {
    const play = document.getElementById('play');
    if (play.textContent.trim() === 'Pause') play.click();
    const scrub = document.getElementById('scrub');
    scrub.value = String(f);
    scrub.dispatchEvent(new Event('input', { bubbles: true }));
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  }, frame);
}

async function timings(page) {
  return page.evaluate(() => {
    const num = (id) => {
      const text = document.getElementById(id).textContent.trim();
      return /^\d+$/.test(text) ? Number(text) : null;
    };
    return {
      first_motion_ms: num('first-motion-ms'),
      motion_ms: num('motion-ms'),
      text_ms: num('motion-text-ms'),
      sampling_ms: num('motion-sampling-ms'),
      decode_ms: num('motion-decode-ms'),
    };
  });
}

/** The bytes behind the #download-npy link (a blob URL in the page). */
async function featuresNpy(page) {
  const base64 = await page.evaluate(async () => {
    const link = document.getElementById('download-npy');
    if (!link.href.startsWith('blob:')) throw new Error('#download-npy has no blob URL');
    const bytes = new Uint8Array(await (await fetch(link.href)).arrayBuffer());
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  });
  return Buffer.from(base64, 'base64');
}

// ---------------------------------------------------------------- images

/** The canvas part of a page screenshot as {width, height, data (RGBA)}. */
function cropCanvas(png, box) {
  const x0 = Math.max(0, Math.round(box.x));
  const y0 = Math.max(0, Math.round(box.y));
  const width = Math.min(png.width - x0, Math.round(box.width));
  const height = Math.min(png.height - y0, Math.round(box.height));
  const data = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    png.data.copy(data, y * width * 4, ((y0 + y) * png.width + x0) * 4, ((y0 + y) * png.width + x0 + width) * 4);
  }
  return { width, height, data };
}

const pixel = (img, x, y) => Array.from(img.data.subarray((y * img.width + x) * 4, (y * img.width + x) * 4 + 3));
const maxDiff = (a, b) => Math.max(Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1]), Math.abs(a[2] - b[2]));

/** Background colour: the corner colour (3 px in) that most other corners agree with. */
function backgroundColour(img) {
  const i = 3;
  const corners = [[i, i], [img.width - 1 - i, i], [i, img.height - 1 - i], [img.width - 1 - i, img.height - 1 - i]]
    .map(([x, y]) => pixel(img, x, y));
  let best = corners[0];
  let bestVotes = -1;
  for (const c of corners) {
    const votes = corners.filter((d) => maxDiff(c, d) <= 8).length;
    if (votes > bestVotes) { best = c; bestVotes = votes; }
  }
  return best;
}

/** Pixels of img that clearly differ from `colour` (an [r, g, b]) or, pixel by pixel, from `other`. */
function countDiffering(img, { colour, other }) {
  let n = 0;
  for (let p = 0; p < img.width * img.height; p++) {
    const o = p * 4;
    const ref = other ? [other.data[o], other.data[o + 1], other.data[o + 2]] : colour;
    if (maxDiff([img.data[o], img.data[o + 1], img.data[o + 2]], ref) > CLEAR_DIFF) n++;
  }
  return n;
}

// ---------------------------------------------------------------- .npy

/** Parses a float32 .npy file: {shape, data (Float32Array)}; throws on anything else. */
function parseNpy(buf, what) {
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${what}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = header.match(/'descr':\s*'([^']+)'/)?.[1];
  const fortran = header.match(/'fortran_order':\s*(True|False)/)?.[1];
  const shapeText = header.match(/'shape':\s*\(([^)]*)\)/)?.[1];
  if (descr !== '<f4') throw new Error(`${what}: dtype ${descr}, expected <f4 (float32)`);
  if (fortran !== 'False') throw new Error(`${what}: Fortran order is not supported`);
  if (shapeText === undefined) throw new Error(`${what}: no shape in the header ${header}`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  if (buf.length !== offset + count * 4) {
    throw new Error(`${what}: ${buf.length - offset} data bytes for shape [${shape}] (expected ${count * 4})`);
  }
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + offset, buf.byteOffset + offset + count * 4));
  return { shape, data };
}

function maxAbsDiff(a, b) {
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) {
      if (!(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return Infinity;
    } else if (d > max) max = d;
  }
  return max;
}

// ---------------------------------------------------------------- the test

async function run(o, report) {
  for (const file of ['index.html', 'sw.js', 'pkg/motion_web.js', 'pkg/motion_web_bg.wasm', 'assets/manifest.json']) {
    if (!existsSync(path.join(o.dist, file))) {
      throw new Error(`${path.join(o.dist, file)} is missing: build the demo first (web/build.sh)`);
    }
  }
  if (!existsSync(o.chromium)) throw new Error(`no Chromium at ${o.chromium} (apt-get install chromium)`);
  const timeoutMs = o.timeout * 1000;
  if (o.screenshots) await mkdir(o.screenshots, { recursive: true });

  const server = await startServer(o.dist);
  report.url = server.url;
  const browser = await chromium.launch({ executablePath: o.chromium, headless: true, args: CHROMIUM_ARGS });
  report.chromium = browser.version();
  const pageErrors = [];
  try {
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      // Page errors and warnings, less the software renderer's performance notes.
      if ((msg.type() === 'error' || msg.type() === 'warning') && !msg.text().includes('GL Driver Message')) {
        console.log(`  [page ${msg.type()}] ${msg.text()}`);
      }
    });

    // 1. Load.
    const t0 = Date.now();
    await page.goto(server.url);
    await waitForState(page, ['ready'], timeoutMs, 'loading the model');
    record('model loads', true, `ready after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    report.webgl = await page.evaluate(() => {
      const gl = document.getElementById('view').getContext('webgl2');
      const info = gl?.getExtension('WEBGL_debug_renderer_info');
      return gl ? (info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)) : null;
    });
    if (!record('WebGL context', Boolean(report.webgl), report.webgl ?? 'none')) throw new Error('no WebGL');
    const box = await page.locator('#view').boundingBox();
    const empty = cropCanvas(PNG.sync.read(await page.screenshot()), box);

    // 2. Generate from the form; screenshots of two frames.
    const clickToShown = await generate(page, o, timeoutMs);
    record('generate from the form', true, `shown ${(clickToShown / 1000).toFixed(1)} s after the click`);
    const frames = Number(await page.getAttribute('#scrub', 'max')) + 1;
    await showFrame(page, 0);
    const shotA = await page.screenshot(o.screenshots ? { path: path.join(o.screenshots, 'page-a.png') } : {});
    await showFrame(page, Math.round((frames - 1) * 0.6));
    const shotB = await page.screenshot(o.screenshots ? { path: path.join(o.screenshots, 'page-b.png') } : {});
    const a = cropCanvas(PNG.sync.read(shotA), box);
    const b = cropCanvas(PNG.sync.read(shotB), box);
    const area = a.width * a.height;
    const background = backgroundColour(a);
    const bodyPixels = countDiffering(a, { colour: background });
    const emptyPixels = countDiffering(empty, { colour: backgroundColour(empty) });
    const movedPixels = countDiffering(a, { other: b });
    report.pixels = { canvas: [a.width, a.height], background, body: bodyPixels, before_motion: emptyPixels, moved: movedPixels };
    record('body is drawn', bodyPixels >= MIN_BODY_FRACTION * area && bodyPixels > 3 * emptyPixels,
      `${bodyPixels} px differ from the background rgb(${background}) (${emptyPixels} before any motion; ` +
      `need ${Math.ceil(MIN_BODY_FRACTION * area)})`);
    record('body moves', movedPixels >= MIN_MOVED_FRACTION * area,
      `${movedPixels} px differ between frame 1 and frame ${Math.round((frames - 1) * 0.6) + 1} of ${frames}`);

    // 3. Timings shown on the page.
    const t = await timings(page);
    report.timing = { ...t, click_to_shown_ms: clickToShown };
    record('timings shown', t.first_motion_ms > 0 && t.motion_ms !== null && t.text_ms !== null &&
      t.sampling_ms !== null && t.decode_ms !== null,
    `first motion ${t.first_motion_ms} ms after navigation; generate ${t.motion_ms} ms ` +
      `(text ${t.text_ms}, sampling ${t.sampling_ms}, decode ${t.decode_ms})`);
    const online = parseNpy(await featuresNpy(page), 'features .npy from the page');
    report.features = { shape: online.shape };
    record('features .npy', online.shape.length === 2 && online.shape[0] > 0 && online.data.every(Number.isFinite),
      `float32 [${online.shape}], all finite: ${online.data.every(Number.isFinite)}`);

    // 4. Offline: no network, no server; reload and generate again from the cache.
    await page.waitForFunction(() => document.body.dataset.offline === 'ready', null, { timeout: timeoutMs })
      .catch(() => { throw new Error('the service worker never reported the model cached (body[data-offline])'); });
    await context.setOffline(true);
    await server.stop();
    let offline = null;
    try {
      await page.reload();
      await waitForState(page, ['ready'], timeoutMs, 'offline: loading the model');
      await generate(page, o, timeoutMs);
      offline = parseNpy(await featuresNpy(page), 'features .npy from the page (offline)');
      report.offline = { ok: true, first_motion_ms: (await timings(page)).first_motion_ms };
      record('works offline', true, `reloaded and generated with the network off and the server stopped ` +
        `(first motion ${report.offline.first_motion_ms} ms)`);
    } catch (err) {
      report.offline = { ok: false, error: err.message };
      record('works offline', false, err.message);
    }
    if (offline) {
      const same = offline.shape.join() === online.shape.join() && maxAbsDiff(offline.data, online.data) === 0;
      report.features.repeat_identical = same;
      record('same inputs, same motion', same, same ? 'bit-identical features on the second run'
        : `second run differs: shape [${offline.shape}] vs [${online.shape}]`);
    }

    // 5. Against the native generate.
    if (o.native) {
      const native = parseNpy(await readFile(o.native), o.native);
      const sameShape = native.shape.join() === online.shape.join();
      const diff = sameShape ? maxAbsDiff(native.data, online.data) : Infinity;
      report.features.native = { file: o.native, shape: native.shape, max_abs_diff: diff, tol: o.tol };
      record('matches the native features', sameShape && diff <= o.tol, sameShape
        ? `max abs difference ${diff.toExponential(3)} (tolerance ${o.tol})`
        : `shape [${online.shape}] in the browser, [${native.shape}] native`);
    }

    report.page_errors = pageErrors;
    record('no uncaught page errors', pageErrors.length === 0, pageErrors.join(' | '));
  } catch (err) {
    if (o.screenshots) {
      const pages = browser.contexts().flatMap((c) => c.pages());
      await pages[0]?.screenshot({ path: path.join(o.screenshots, 'page-error.png') }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close().catch(() => {});
    await server.stop().catch(() => {});
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const report = {
    caption: o.caption, seconds: o.seconds, seed: o.seed, dist: path.relative(process.cwd(), o.dist) || '.',
  };
  console.log(`e2e: "${o.caption}", ${o.seconds} s, seed ${o.seed}, ${o.dist}`);
  try {
    await run(o, report);
  } catch (err) {
    record('aborted', false, err.message);
  }
  const failed = results.filter((r) => !r.ok);
  report.ok = failed.length === 0;
  report.checks = results;
  if (o.report) {
    await mkdir(path.dirname(path.resolve(o.report)), { recursive: true });
    await writeFile(o.report, `${JSON.stringify(report, null, 2)}\n`);
  }
  console.log('');
  if (report.timing) {
    console.log(`time to first motion: ${report.timing.first_motion_ms} ms; latest motion: generate ` +
      `${report.timing.motion_ms} ms (text ${report.timing.text_ms}, sampling ${report.timing.sampling_ms}, ` +
      `decode ${report.timing.decode_ms})`);
  }
  if (report.features?.native) console.log(`max abs difference to native: ${report.features.native.max_abs_diff}`);
  for (const r of failed) console.log(`failed: ${r.name}: ${r.detail}`);
  console.log(`e2e: ${results.length - failed.length} passed, ${failed.length} failed`);
  process.exit(failed.length === 0 ? 0 : 1);
}

main();
