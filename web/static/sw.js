// Service worker: keeps the page, its scripts, three.js, the WebAssembly module and every model
// file in Cache Storage and serves them cache-first, so the demo works offline once loaded.
//
// assemble.mjs fills in BUILD_ID (a hash of the assembled files: a new build gets a new cache
// and this file changes, which makes browsers install the new version) and SHELL.

const BUILD_ID = 'dev';
const SHELL = ['./', 'index.html', 'app.js', 'viewer.js', 'worker.js', 'style.css'];

const CACHE_PREFIX = 'motion-web-';
const CACHE = CACHE_PREFIX + BUILD_ID;
const MANIFEST = 'assets/manifest.json';

// Cache writes still in progress, by URL (a large model file is written as it streams).
const writing = new Map();

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // Bypass the HTTP cache so a new build never mixes with files of an old one.
    await cache.addAll([...SHELL, MANIFEST].map((url) => new Request(url, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

/** Cache-first; whatever comes from the network (the model files, as the page's worker
 *  downloads them) is stored for next time. */
async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(request, { ignoreSearch: request.mode === 'navigate' });
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok && response.type === 'basic' && !writing.has(request.url)) {
    // Store a copy while the original streams to the page.
    const put = cache.put(request, response.clone())
      .catch((err) => console.warn(`not cached: ${request.url}: ${err}`))
      .finally(() => writing.delete(request.url));
    writing.set(request.url, put);
  }
  return response;
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  const response = cacheFirst(request);
  event.respondWith(response);
  // Keep this service worker alive until the copy is in the cache.
  event.waitUntil(response.then(() => writing.get(request.url)).catch(() => {}));
});

/** Stores every file of the model manifest that is not cached yet (normally none: the page's
 *  worker downloaded them through this service worker). Answers {cached, fetched}. */
async function precacheModel() {
  await Promise.all(writing.values());
  const cache = await caches.open(CACHE);
  let manifestResponse = await cache.match(MANIFEST);
  if (!manifestResponse) {
    manifestResponse = await fetch(MANIFEST, { cache: 'reload' });
    if (!manifestResponse.ok) throw new Error(`${MANIFEST}: HTTP ${manifestResponse.status}`);
    await cache.put(MANIFEST, manifestResponse.clone());
  }
  const manifest = await manifestResponse.json();
  const base = new URL(MANIFEST, self.registration.scope);
  let fetched = 0;
  for (const file of manifest.files) {
    const url = new URL(file.name, base).href;
    if (await cache.match(url)) continue;
    await cache.add(new Request(url, { cache: 'reload' }));
    fetched += 1;
  }
  return { cached: manifest.files.length, fetched };
}

self.addEventListener('message', (event) => {
  if (event.data?.type !== 'precache-model') return;
  const reply = (message) => event.ports[0]?.postMessage(message);
  event.waitUntil(precacheModel()
    .then((result) => reply({ ok: true, ...result }))
    .catch((err) => reply({ ok: false, message: String(err?.message ?? err) })));
});
