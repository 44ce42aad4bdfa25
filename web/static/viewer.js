// three.js viewer for the skinned, animated .glb files the model writes (glTF 2.0, Y up,
// metres, one animation, one skinned body mesh).

import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

const BACKGROUND = 0xe4e7eb;
const BODY_COLOR = 0x5b7fa8;
// Frame rate assumed when a clip's keyframe spacing cannot tell it (the model writes 20 fps).
const DEFAULT_FPS = 20;

/**
 * A ground grid of 1 m cells, `size` metres wide, in low contrast against the background.
 * Each line is made of 1 m segments: a line that runs far behind the camera is then never
 * clipped as one piece (some software renderers drop such lines).
 */
function groundGrid(size) {
  const half = Math.floor(size / 2);
  const positions = [];
  const colors = [];
  const axis = new THREE.Color(0xb2b8c0);
  const line = new THREE.Color(0xcbd0d6);
  for (let i = -half; i <= half; i++) {
    const color = i === 0 ? axis : line;
    for (let j = -half; j < half; j++) {
      positions.push(i, 0, j, i, 0, j + 1, j, 0, i, j + 1, 0, i);
      for (let k = 0; k < 4; k++) colors.push(color.r, color.g, color.b);
    }
  }
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.Float32BufferAttribute(positions, 3));
  geometry.setAttribute('color', new THREE.Float32BufferAttribute(colors, 3));
  return new THREE.LineSegments(geometry, new THREE.LineBasicMaterial({ vertexColors: true }));
}

export class Viewer {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onTime?: (v: Viewer) => void}} [options] onTime runs after each rendered frame
   *   whose animation time changed (to update a slider and a time label).
   */
  constructor(canvas, { onTime } = {}) {
    this.canvas = canvas;
    this.onTime = onTime ?? (() => {});

    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;

    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(BACKGROUND);

    // A sky/ground fill plus a key light from the upper front so the body reads as a solid.
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x8a8f96, 1.6));
    const key = new THREE.DirectionalLight(0xffffff, 2.2);
    key.position.set(2.5, 5, 4);
    this.scene.add(key);

    this.grid = groundGrid(30);
    this.scene.add(this.grid);

    this.camera = new THREE.PerspectiveCamera(40, 1, 0.05, 200);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;

    this.model = null;   // the loaded glTF scene
    this.mixer = null;
    this.action = null;
    this.duration = 0;   // seconds, time of the last keyframe
    this.fps = DEFAULT_FPS;
    this.frames = 0;
    this.playing = true;
    this.follow = true;  // move the camera along with the body over the ground
    this.root = null;    // the bone whose ground position the camera follows
    this.followed = new THREE.Vector3();
    this.lastTime = -1;  // animation time reported to onTime
    this.timer = new THREE.Timer();

    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    // Until a motion is loaded: a person-sized box at the origin.
    this.frameBox(new THREE.Box3(new THREE.Vector3(-0.4, 0, -0.4), new THREE.Vector3(0.4, 1.8, 0.4)));
    this.renderer.setAnimationLoop((timestamp) => this.tick(timestamp));
  }

  resize() {
    const { clientWidth: w, clientHeight: h } = this.canvas;
    if (w === 0 || h === 0) return;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  tick(timestamp) {
    this.timer.update(timestamp);
    const dt = this.timer.getDelta();
    if (this.mixer && this.playing) this.mixer.update(dt);
    if (this.model && this.follow) {
      // Shift camera and orbit target by the body's move over the ground since last frame.
      const now = this.groundPosition();
      const delta = now.clone().sub(this.followed);
      this.camera.position.add(delta);
      this.controls.target.add(delta);
      this.followed.copy(now);
    }
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
    const t = this.time;
    if (t !== this.lastTime) {
      this.lastTime = t;
      this.onTime(this);
    }
  }

  /** Loads a .glb file (ArrayBuffer) and starts playing its animation; replaces any previous one. */
  async load(buffer) {
    const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, Math.min(4, buffer.byteLength)));
    if (magic !== 'glTF') throw new Error('not a binary glTF (.glb) file');
    const gltf = await new Promise((resolve, reject) => {
      new GLTFLoader().parse(buffer, '', resolve, (err) =>
        reject(new Error(`could not read the .glb file: ${err?.message ?? err}`)));
    });
    const clip = gltf.animations[0];
    if (!clip) throw new Error('the .glb file has no animation');

    this.clear();
    const hasMaterials = (gltf.parser.json.materials ?? []).length > 0;
    gltf.scene.traverse((obj) => {
      if (!obj.isMesh) return;
      // The body moves far from its bind pose: its bind-pose bounds must not cull it.
      obj.frustumCulled = false;
      // Files without materials get glTF's default (fully metallic, which renders dark
      // without an environment map): use a matte body material instead.
      if (!hasMaterials) {
        obj.material.dispose();
        obj.material = new THREE.MeshStandardMaterial({ color: BODY_COLOR, roughness: 0.65, metalness: 0 });
      }
    });
    this.model = gltf.scene;
    this.scene.add(this.model);
    let skinned = null;
    this.model.traverse((obj) => { if (obj.isSkinnedMesh && !skinned) skinned = obj; });
    this.root = skinned?.skeleton.bones[0] ?? this.model;

    this.mixer = new THREE.AnimationMixer(this.model);
    this.action = this.mixer.clipAction(clip);
    this.action.play();
    this.duration = clip.duration;
    const keys = Math.max(...clip.tracks.map((track) => track.times.length));
    this.fps = keys > 1 && this.duration > 0 ? Math.round((keys - 1) / this.duration) : DEFAULT_FPS;
    this.frames = Math.max(1, Math.round(this.duration * this.fps) + 1);

    const bounds = this.bodyBounds();
    this.seek(0);
    this.followed.copy(this.groundPosition());
    this.frameBox(bounds.translate(this.followed));
    this.playing = true;
    this.timer.reset();
  }

  /** Removes the current model and frees its GPU resources. */
  clear() {
    if (!this.model) return;
    this.mixer.stopAllAction();
    this.scene.remove(this.model);
    this.model.traverse((obj) => {
      if (obj.isMesh) {
        obj.geometry.dispose();
        obj.material.dispose();
      }
    });
    this.model = this.mixer = this.action = null;
    this.duration = 0;
    this.frames = 0;
  }

  /** Where the root bone is, projected on the ground (y = 0). */
  groundPosition() {
    this.model.updateMatrixWorld(true);
    const p = this.root.getWorldPosition(new THREE.Vector3());
    p.y = 0;
    return p;
  }

  /** Bounds of the skinned body over the whole clip (sampled), relative to its ground
   *  position at each time, so the framed camera sees every pose as it follows the body. */
  bodyBounds() {
    const box = new THREE.Box3();
    const samples = 12;
    for (let i = 0; i <= samples; i++) {
      this.mixer.setTime((this.duration * i) / samples);
      const ground = this.groundPosition();
      box.union(new THREE.Box3().setFromObject(this.model, true).translate(ground.negate()));
    }
    return box;
  }

  /** Turns following the body on or off (off: the camera stays where it is). */
  setFollow(follow) {
    this.follow = follow;
    if (follow && this.model) this.followed.copy(this.groundPosition());
  }

  /** Points the camera at a box from the front-right, a little above, at the distance where
   *  the whole box just fits in the view. */
  frameBox(box) {
    const center = box.getCenter(new THREE.Vector3());
    const back = new THREE.Vector3(0.55, 0.35, 1).normalize();   // from the centre to the camera
    const right = new THREE.Vector3(0, 1, 0).cross(back).normalize();
    const up = new THREE.Vector3().crossVectors(back, right);
    const tanV = Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2);
    const tanH = tanV * this.camera.aspect;
    // For each corner q (relative to the centre): distance >= q·back + |q·right| / tanH, and
    // the same vertically.
    let distance = 1;
    const q = new THREE.Vector3();
    for (let i = 0; i < 8; i++) {
      q.set(i & 1 ? box.max.x : box.min.x, i & 2 ? box.max.y : box.min.y, i & 4 ? box.max.z : box.min.z).sub(center);
      const depth = q.dot(back);
      distance = Math.max(distance, depth + Math.abs(q.dot(right)) / tanH, depth + Math.abs(q.dot(up)) / tanV);
    }
    distance *= 1.15; // margin
    this.camera.position.copy(center).addScaledVector(back, distance);
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.copy(center);
    this.controls.update();
  }

  get time() {
    return this.action ? this.action.time : 0;
  }

  get frame() {
    return Math.min(this.frames - 1, Math.round(this.time * this.fps));
  }

  play() {
    if (!this.mixer) return;
    this.playing = true;
    this.timer.reset();
  }

  pause() {
    this.playing = false;
  }

  /** Jumps to a time in seconds (clamped to the clip). */
  seek(seconds) {
    if (!this.mixer) return;
    // A looping action wraps at exactly `duration`: stop just short of it for the last frame.
    const end = Math.max(this.duration - 1e-4, 0);
    this.mixer.setTime(Math.min(Math.max(seconds, 0), end));
  }

  seekFrame(frame) {
    this.seek(frame / this.fps);
  }

  /** Resolves once the current state has been drawn (after the next animation frame). */
  rendered() {
    return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  }
}
