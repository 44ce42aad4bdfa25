// Module worker: downloads the model files, loads them into the WebAssembly generator and
// generates motions on request, so that the page stays responsive.
//
// Messages to the page:
//   {type: 'manifest', caption, seconds, total}          example inputs, total download bytes
//   {type: 'progress', loaded, total}                    download progress in bytes
//   {type: 'status', text}                               what the worker is doing
//   {type: 'ready', fps, maxSeconds, loadMs}
//   {type: 'motion', id, frames, fps, glb, bvh, features, timing}
//   {type: 'error', phase: 'load' | 'generate', id?, message}
// Messages from the page:
//   {type: 'generate', id, caption, seconds, seed}

const MANIFEST_URL = new URL('assets/manifest.json', self.location.href);
const PARALLEL_DOWNLOADS = 4;

let generator = null;      // the loaded Generator, once ready
const pending = [];        // generate requests that arrived before the model was ready
let loadFailed = false;

const post = (message, transfer = []) => self.postMessage(message, transfer);

/** Text of anything thrown, by JavaScript or by the WebAssembly side. */
function errorText(err) {
  if (err instanceof Error) {
    const text = err.message || String(err);
    // A Rust panic surfaces as a bare "unreachable" trap.
    return err instanceof WebAssembly.RuntimeError
      ? `${text} (the WebAssembly module crashed; see the browser console for its panic message)`
      : text;
  }
  return typeof err === 'string' ? err : JSON.stringify(err);
}

/** An ArrayBuffer holding exactly the bytes of `view`, transferable without copying again. */
function ownBuffer(view) {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength
    ? view.buffer
    : view.slice().buffer;
}

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`could not fetch ${url.pathname}: ${errorText(err)}`);
  }
  if (!response.ok) throw new Error(`could not fetch ${url.pathname}: HTTP ${response.status} ${response.statusText}`);
  return response;
}

async function readManifest() {
  const manifest = await (await fetchOk(MANIFEST_URL)).json().catch((err) => {
    throw new Error(`assets/manifest.json is not valid JSON: ${errorText(err)}`);
  });
  if (!Array.isArray(manifest.files) || manifest.files.length === 0) {
    throw new Error('assets/manifest.json lists no files');
  }
  for (const file of manifest.files) {
    if (typeof file.name !== 'string' || !Number.isFinite(file.bytes)) {
      throw new Error(`assets/manifest.json: bad entry ${JSON.stringify(file)}`);
    }
  }
  return manifest;
}

/** Downloads one file, calling onBytes(n) as chunks arrive; checks the size the manifest gives. */
async function download(file, onBytes) {
  const response = await fetchOk(new URL(file.name, MANIFEST_URL));
  const bytes = new Uint8Array(file.bytes);
  let offset = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.length > bytes.length) {
      await reader.cancel();
      throw new Error(`${file.name}: larger than the ${file.bytes} bytes the manifest gives`);
    }
    bytes.set(value, offset);
    offset += value.length;
    onBytes(value.length);
  }
  if (offset !== file.bytes) {
    throw new Error(`${file.name}: got ${offset} bytes, the manifest gives ${file.bytes}`);
  }
  return bytes;
}

/** Runs `task` on each item with at most `limit` at a time; results in input order. */
function mapLimited(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  };
  return Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane)).then(() => results);
}

async function load() {
  const t0 = performance.now();
  // Fetch and compile the WebAssembly module while the model files download.
  const wasm = import('./pkg/motion_web.js')
    .catch((err) => {
      throw new Error(`could not load the WebAssembly module (pkg/motion_web.js): ${errorText(err)}`);
    })
    .then(async (mod) => {
      try {
        await mod.default();
      } catch (err) {
        throw new Error(`could not start the WebAssembly module (pkg/motion_web_bg.wasm): ${errorText(err)}`);
      }
      return mod;
    });
  wasm.catch(() => {}); // reported below, after the downloads

  const manifest = await readManifest();
  const total = manifest.files.reduce((sum, file) => sum + file.bytes, 0);
  post({ type: 'manifest', caption: manifest.caption ?? '', seconds: manifest.seconds ?? null, total });

  let loaded = 0;
  let lastPost = 0;
  post({ type: 'status', text: 'Downloading the model' });
  post({ type: 'progress', loaded, total });
  const files = await mapLimited(manifest.files, PARALLEL_DOWNLOADS, (file) =>
    download(file, (n) => {
      loaded += n;
      const now = performance.now();
      if (now - lastPost > 100 || loaded === total) {
        lastPost = now;
        post({ type: 'progress', loaded, total });
      }
    }));
  post({ type: 'progress', loaded: total, total });

  const { Generator } = await wasm;
  post({ type: 'status', text: 'Loading the model' });
  const gen = new Generator();
  try {
    manifest.files.forEach((file, i) => {
      gen.add_file(file.name, files[i]);
      files[i] = null; // the WebAssembly side holds its own copy now
    });
    gen.load();
  } catch (err) {
    gen.free?.();
    throw err;
  }
  generator = gen;
  post({ type: 'ready', fps: gen.fps, maxSeconds: gen.max_seconds, loadMs: performance.now() - t0 });
}

function generate({ id, caption, seconds, seed }) {
  let motion = null;
  try {
    const t0 = performance.now();
    motion = generator.generate(caption, seconds, seed);
    const t1 = performance.now();
    const glb = motion.glb();
    const bvh = motion.bvh();
    const features = motion.features_npy();
    const t2 = performance.now();
    const timing = {
      generate_ms: t1 - t0,          // wall time of generate()
      text_ms: motion.text_ms,
      sampling_ms: motion.sampling_ms,
      decode_ms: motion.decode_ms,
      outputs_ms: t2 - t1,           // copying the files out of WebAssembly memory
    };
    const buffers = [ownBuffer(glb), ownBuffer(features)];
    post({
      type: 'motion', id, frames: motion.frames, fps: motion.fps,
      glb: buffers[0], bvh, features: buffers[1], timing,
    }, buffers);
  } catch (err) {
    post({ type: 'error', phase: 'generate', id, message: errorText(err) });
  } finally {
    motion?.free();
  }
}

self.onmessage = ({ data }) => {
  if (data?.type !== 'generate') return;
  if (generator) generate(data);
  else if (loadFailed) post({ type: 'error', phase: 'generate', id: data.id, message: 'the model is not loaded' });
  else pending.push(data);
};

load()
  .then(() => {
    for (const request of pending.splice(0)) generate(request);
  })
  .catch((err) => {
    loadFailed = true;
    post({ type: 'error', phase: 'load', message: errorText(err) });
    for (const request of pending.splice(0)) {
      post({ type: 'error', phase: 'generate', id: request.id, message: 'the model is not loaded' });
    }
  });
