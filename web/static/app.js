// The page: form, status, timings, downloads and playback controls. The model runs in
// worker.js; the 3D view is viewer.js.
//
// For tests, <body> carries data-state (loading | ready | generating | shown | error),
// data-motions (generated motions shown so far) and data-offline ("ready" once every file
// the page needs is in the service worker's cache).

import { Viewer } from './viewer.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('generate-form'), caption: $('caption'), seconds: $('seconds'), seed: $('seed'),
  generate: $('generate'), canvas: $('view'), stage: $('stage'), dropHint: $('drop-hint'),
  play: $('play'), scrub: $('scrub'), time: $('time'), follow: $('follow'), openGlb: $('open-glb'),
  glb: $('download-glb'), bvh: $('download-bvh'), npy: $('download-npy'),
  status: $('status'), progress: $('progress'), notice: $('update-notice'),
  firstMotionMs: $('first-motion-ms'), motionMs: $('motion-ms'),
  textMs: $('motion-text-ms'), samplingMs: $('motion-sampling-ms'), decodeMs: $('motion-decode-ms'),
};

const app = {
  worker: null,
  modelReady: false,
  modelFailed: false,
  maxSeconds: Infinity,
  request: null,        // the generate request in flight: {id, caption, seconds, seed, sentAt}
  nextId: 1,
  motions: 0,
  edited: new Set(),    // inputs the user changed (not to be overwritten by the manifest's example)
};

// ---------------------------------------------------------------- status and state

let stateBeforeError = 'loading';

function setState(state) {
  const current = document.body.dataset.state;
  if (state === 'error' && current !== 'error') stateBeforeError = current;
  document.body.dataset.state = state;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(context, err) {
  const message = err instanceof Error ? err.message : String(err);
  console.error(`${context}:`, err);
  setState('error');
  setStatus(`${context}: ${message}`);
}

const formatBytes = (n) => `${(n / 1e6).toFixed(1)} MB`;
const ms = (x) => (Number.isFinite(x) ? String(Math.round(x)) : '');

// ---------------------------------------------------------------- viewer and playback

let viewer = null;
try {
  viewer = new Viewer(ui.canvas, { onTime: updateTime });
  viewer.setFollow(ui.follow.checked);
} catch (err) {
  showError('WebGL is not available, motions cannot be shown (downloads still work)', err);
}

function updateTime(v) {
  if (!v.model) return;
  const frame = v.frame;
  if (document.activeElement !== ui.scrub) ui.scrub.value = String(frame);
  ui.time.textContent =
    `frame ${frame + 1} / ${v.frames} · ${v.time.toFixed(2)} s / ${v.duration.toFixed(2)} s`;
}

function setPlaying(playing) {
  if (!viewer?.model) return;
  if (playing) viewer.play();
  else viewer.pause();
  ui.play.textContent = playing ? 'Pause' : 'Play';
}

/** Shows a .glb file in the viewer and resets the playback controls. */
async function showGlb(buffer) {
  if (!viewer) return;
  await viewer.load(buffer);
  ui.scrub.max = String(viewer.frames - 1);
  ui.scrub.disabled = false;
  ui.play.disabled = false;
  setPlaying(true);
  updateTime(viewer);
  await viewer.rendered();
}

ui.play.addEventListener('click', () => setPlaying(!viewer.playing));
ui.follow.addEventListener('change', () => viewer?.setFollow(ui.follow.checked));
ui.scrub.addEventListener('input', () => {
  setPlaying(false);
  viewer.seekFrame(Number(ui.scrub.value));
});
document.addEventListener('keydown', (event) => {
  if (event.code === 'Space' && !(event.target instanceof HTMLInputElement) && viewer?.model) {
    event.preventDefault();
    setPlaying(!viewer.playing);
  }
});

// ---------------------------------------------------------------- downloads

function setDownload(link, blob, filename) {
  if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
  if (blob) {
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    link.setAttribute('aria-disabled', 'false');
  } else {
    link.removeAttribute('href');
    link.removeAttribute('download');
    link.setAttribute('aria-disabled', 'true');
  }
}

/** A file name stem from a caption and seed: "a-person-walks-forward-seed0". */
function fileStem(caption, seed) {
  const slug = caption.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 48);
  return `${slug || 'motion'}-seed${seed}`;
}

// ---------------------------------------------------------------- opening .glb files

async function openFile(file) {
  if (!file) return;
  try {
    if (!/\.glb$/i.test(file.name)) throw new Error('only .glb files can be opened');
    await showGlb(await file.arrayBuffer());
    setDownload(ui.glb, file, file.name);
    setDownload(ui.bvh, null);
    setDownload(ui.npy, null);
    // A file error earlier is over; a failed model load is not.
    if (document.body.dataset.state === 'error' && !app.modelFailed) setState(stateBeforeError);
    setStatus(`Opened ${file.name} (${viewer.frames} frames at ${viewer.fps} fps)`);
  } catch (err) {
    showError(`Could not open ${file.name}`, err);
  }
}

ui.openGlb.addEventListener('change', () => {
  openFile(ui.openGlb.files[0]);
  ui.openGlb.value = '';
});

// Drag and drop onto the view.
let dragDepth = 0;
ui.stage.addEventListener('dragenter', (event) => {
  event.preventDefault();
  dragDepth += 1;
  ui.dropHint.hidden = false;
});
ui.stage.addEventListener('dragover', (event) => event.preventDefault());
ui.stage.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropHint.hidden = true;
});
ui.stage.addEventListener('drop', (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.dropHint.hidden = true;
  openFile(event.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- generating

for (const input of [ui.caption, ui.seconds, ui.seed]) {
  input.addEventListener('input', () => app.edited.add(input));
}

/** The form's values, checked; throws an Error that says what is wrong. */
function readForm() {
  const caption = ui.caption.value.trim();
  if (!caption) throw new Error('type a caption first');
  const seconds = Number(ui.seconds.value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('seconds must be a positive number');
  if (seconds > app.maxSeconds) throw new Error(`the model makes at most ${app.maxSeconds} seconds`);
  const seed = Number(ui.seed.value);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new Error('the seed must be a whole number from 0 to 4294967295');
  }
  return { caption, seconds, seed };
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!app.modelReady || app.request) return;
  let inputs;
  try {
    inputs = readForm();
  } catch (err) {
    showError('Cannot generate', err);
    return;
  }
  app.request = { id: app.nextId++, ...inputs, sentAt: performance.now() };
  app.worker.postMessage({ type: 'generate', ...app.request });
  ui.generate.disabled = true;
  setState('generating');
  setStatus(`Generating "${inputs.caption}" (${inputs.seconds} s, seed ${inputs.seed})…`);
});

async function onMotion(message) {
  const request = app.request;
  if (!request || message.id !== request.id) return;
  try {
    const stem = fileStem(request.caption, request.seed);
    const glb = new Blob([message.glb], { type: 'model/gltf-binary' });
    setDownload(ui.glb, glb, `${stem}.glb`);
    setDownload(ui.bvh, new Blob([message.bvh], { type: 'text/plain' }), `${stem}.bvh`);
    setDownload(ui.npy, new Blob([message.features], { type: 'application/octet-stream' }), `${stem}.features.npy`);

    await showGlb(message.glb);
    const shownAt = performance.now();   // milliseconds since navigation start

    const t = message.timing;
    ui.motionMs.textContent = ms(t.generate_ms);
    ui.textMs.textContent = ms(t.text_ms);
    ui.samplingMs.textContent = ms(t.sampling_ms);
    ui.decodeMs.textContent = ms(t.decode_ms);
    ui.motionMs.title = `generate() ${t.generate_ms.toFixed(1)} ms in the worker; ` +
      `click to shown ${(shownAt - request.sentAt).toFixed(0)} ms`;
    if (app.motions === 0) ui.firstMotionMs.textContent = ms(shownAt);

    app.motions += 1;
    document.body.dataset.motions = String(app.motions);
    setStatus(`"${request.caption}": ${message.frames} frames at ${message.fps} fps, seed ${request.seed}`);
    setState('shown');
  } catch (err) {
    showError('Could not show the motion', err);
  } finally {
    app.request = null;
    ui.generate.disabled = false;
  }
}

// ---------------------------------------------------------------- the worker

function onWorkerMessage({ data: message }) {
  switch (message.type) {
    case 'manifest':
      if (message.caption && !app.edited.has(ui.caption) && !ui.caption.value) ui.caption.value = message.caption;
      if (message.seconds && !app.edited.has(ui.seconds)) ui.seconds.value = String(message.seconds);
      break;
    case 'status':
      if (document.body.dataset.state === 'loading') setStatus(`${message.text}…`);
      break;
    case 'progress':
      ui.progress.max = message.total;
      ui.progress.value = message.loaded;
      if (document.body.dataset.state === 'loading') {
        setStatus(`Downloading the model: ${formatBytes(message.loaded)} / ${formatBytes(message.total)}`);
      }
      break;
    case 'ready':
      app.modelReady = true;
      app.maxSeconds = message.maxSeconds;
      ui.seconds.max = String(message.maxSeconds);
      ui.progress.hidden = true;
      ui.generate.disabled = false;
      setState('ready');
      setStatus(`Ready (model loaded in ${(message.loadMs / 1000).toFixed(1)} s, ` +
        `up to ${message.maxSeconds} s at ${message.fps} fps)`);
      precacheForOffline();
      break;
    case 'motion':
      onMotion(message);
      break;
    case 'error':
      if (message.phase === 'load') {
        app.modelFailed = true;
        ui.progress.hidden = true;
        showError('The model could not be loaded', message.message);
      } else {
        if (app.request?.id === message.id) app.request = null;
        ui.generate.disabled = !app.modelReady;
        showError('Generation failed', message.message);
      }
      break;
    default:
      console.warn('unexpected message from the worker', message);
  }
}

function startWorker() {
  app.worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
  app.worker.addEventListener('message', onWorkerMessage);
  app.worker.addEventListener('error', (event) => {
    event.preventDefault();
    app.modelFailed = true;
    showError('The model worker failed',
      event.message || 'it could not start (this page needs a browser with module workers and WebAssembly)');
  });
}

// ---------------------------------------------------------------- offline support

/** Registers the service worker and, on a first visit, waits until it controls the page so
 *  that the model downloads go through it (and are cached once). Never throws. */
async function startServiceWorker() {
  if (!('serviceWorker' in navigator)) return false;
  try {
    if (navigator.serviceWorker.controller) {
      // Already controlled (a return visit): check for a new version in the background, as
      // that check can take long without a network. This page keeps running the version it
      // started with; a new one takes over on the next load.
      navigator.serviceWorker.addEventListener('controllerchange', () => { ui.notice.hidden = false; }, { once: true });
      navigator.serviceWorker.ready
        .then((registration) => registration.update())
        .catch((err) => console.warn('service worker update check:', err));
      return true;
    }
    const registration = await navigator.serviceWorker.register('sw.js');
    const incoming = registration.installing || registration.waiting;
    if (!incoming) return false; // active but not controlling (a forced reload)
    await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true });
      incoming.addEventListener('statechange', () => {
        if (incoming.state === 'redundant') resolve();
      });
      setTimeout(resolve, 60_000); // never hold the page back for long
    });
    return Boolean(navigator.serviceWorker.controller);
  } catch (err) {
    console.warn('offline support unavailable:', err);
    return false;
  }
}

/** Once the model is loaded, makes sure the service worker holds every model file. */
async function precacheForOffline() {
  const registration = await navigator.serviceWorker?.getRegistration();
  const sw = registration?.active;
  if (!sw) return;
  const channel = new MessageChannel();
  const reply = new Promise((resolve) => { channel.port1.onmessage = ({ data }) => resolve(data); });
  sw.postMessage({ type: 'precache-model' }, [channel.port2]);
  const result = await reply;
  if (result.ok) {
    document.body.dataset.offline = 'ready';
    ui.status.title = `Available offline (${result.cached} model files cached)`;
  } else {
    console.warn('could not cache the model for offline use:', result.message);
  }
}

// ---------------------------------------------------------------- start

setStatus('Starting…');
startServiceWorker().then(startWorker);
