//! Procedural synthetic motions: the default data for tests, examples and the demo model.
//!
//! Fourteen families (walk forward / backward, walk in a circle clockwise / counter-clockwise,
//! run, jump in place, jump forward, squat, wave the left / right hand, kick, turn around,
//! sit down, raise both arms), each with parameters (tempo, amplitude, direction, length
//! 2-9.8 s at 20 fps, side) and several caption paraphrases. A family gives joint angles over
//! time ([`families`]); the generator turns them into SMPL joint rotations, runs forward
//! kinematics on an anthropometric SMPL-H-like skeleton ([`skeleton`]) in the Z-up world of
//! the reference data, and solves the root trajectory from ground contact: the lowest foot
//! touches the floor, and the supporting foot (or both feet) stays where it is, so walking
//! feet do not slide. Joints `[T, 24, 3]` and rotations `[T, 22, 3, 3]` are encoded into
//! SMPL-RIFKE features with [`motion_repr::rifke::encode`] (DESIGN §4.1; Petrovich et al.,
//! TMR, ICCV 2023). Everything is deterministic from a seed, per motion.
//!
//! [`synthesize_folder`] writes a set in the reference folder layout (split files 80/10/10,
//! `smpl_rifke/<id>.npy`, `caption_raw/<id>.txt`). It cannot write `caption_clip/`: CLIP text
//! features need the CLIP model, which this library never downloads.

pub mod captions;
pub mod families;
pub mod skeleton;

use std::path::Path;

use candle::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use families::{Contact, FPS, Family, MotionParams, Pose, Side};
pub use skeleton::{LegDims, NUM_JOINTS, NUM_ROTATIONS, SynthSkeleton};

use crate::error::{DataError, Result};
use crate::folder::{write_sample, write_split};
use crate::source::{FEATURE_DIM, MotionSample, Split};
use skeleton::j;

/// Shortest motion (2 s at 20 fps).
pub const MIN_FRAMES: usize = 40;
/// Longest motion (9.8 s at 20 fps, as in the reference data).
pub const MAX_FRAMES: usize = 196;

/// A generated motion.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthMotion {
    /// The parameters it was generated from.
    pub params: MotionParams,
    /// Joint positions per frame (Z-up world, metres).
    pub joints: Vec<[[f32; 3]; NUM_JOINTS]>,
    /// Rotations per frame: `[0]` global root orientation, `[1..22]` local, row-major.
    pub rotations: Vec<[[f32; 9]; NUM_ROTATIONS]>,
    /// Caption paraphrases (three, distinct).
    pub captions: Vec<String>,
}

impl SynthMotion {
    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.joints.len()
    }

    /// Joints as a tensor `[T, 24, 3]`.
    pub fn joints_tensor(&self, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = self.joints.iter().flatten().flatten().copied().collect();
        Ok(Tensor::from_vec(
            data,
            (self.frames(), NUM_JOINTS, 3),
            device,
        )?)
    }

    /// Rotations as a tensor `[T, 22, 3, 3]`.
    pub fn rotations_tensor(&self, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = self.rotations.iter().flatten().flatten().copied().collect();
        Ok(Tensor::from_vec(
            data,
            (self.frames(), NUM_ROTATIONS, 3, 3),
            device,
        )?)
    }

    /// SMPL-RIFKE features `[T, 205]` (reference behaviour: yaw not unwrapped).
    pub fn features(&self) -> Result<Tensor> {
        let dev = Device::Cpu;
        Ok(motion_repr::rifke::encode(
            &self.joints_tensor(&dev)?,
            &self.rotations_tensor(&dev)?,
        )?)
    }
}

/// Floor height implied by one foot (min over its ankle and toe contact points).
fn foot_floor(p: &[[f32; 3]; NUM_JOINTS], ankle: usize, toe: usize, c: [f32; 2]) -> f32 {
    (p[ankle][2] - c[0]).min(p[toe][2] - c[1])
}

/// Horizontal contact point of one foot (midpoint of ankle and toe base).
fn foot_xy(p: &[[f32; 3]; NUM_JOINTS], ankle: usize, toe: usize) -> [f32; 2] {
    [
        0.5 * (p[ankle][0] + p[toe][0]),
        0.5 * (p[ankle][1] + p[toe][1]),
    ]
}

/// Generates the motion described by `params` on `skeleton` (captions drawn with `rng`).
pub fn generate(
    params: &MotionParams,
    skeleton: &SynthSkeleton,
    rng: &mut impl Rng,
) -> SynthMotion {
    let n = params.frames.max(2);
    let dur = n as f32 / FPS;
    // Facing direction `d` (0 = +X) is yaw `d + pi/2` (the canonical body faces -Y at yaw 0).
    let mut yaw = params.direction + std::f32::consts::FRAC_PI_2;
    let mut root = [params.start[0], params.start[1]];
    let mut prev_local: Option<[[f32; 3]; NUM_JOINTS]> = None;
    let mut velocity = [0.0f32; 2]; // last horizontal root displacement per frame
    let dims = skeleton.leg_dims();
    let clearance = [skeleton.ankle_clearance(), skeleton.toe_clearance()];
    let mut joints = Vec::with_capacity(n);
    let mut rotations = Vec::with_capacity(n);
    for f in 0..n {
        let t = f as f32 / FPS;
        let spec = families::frame_spec(&dims, params, t, dur);
        if f > 0 {
            yaw += spec.yaw_rate / FPS;
        }
        let rots = spec.pose.rotations(yaw);
        let local = skeleton.forward([0.0; 3], &rots);
        let floors = [
            foot_floor(&local, j::L_ANKLE, j::L_FOOT, clearance),
            foot_floor(&local, j::R_ANKLE, j::R_FOOT, clearance),
        ];
        let root_z = -floors[0].min(floors[1]) + spec.lift;
        if let Some(prev) = prev_local {
            let anchor = |p: &[[f32; 3]; NUM_JOINTS], which: Option<usize>| -> [f32; 2] {
                let l = foot_xy(p, j::L_ANKLE, j::L_FOOT);
                let r = foot_xy(p, j::R_ANKLE, j::R_FOOT);
                match which {
                    Some(0) => l,
                    Some(_) => r,
                    None => [0.5 * (l[0] + r[0]), 0.5 * (l[1] + r[1])],
                }
            };
            let which = match spec.contact {
                Contact::LowerFoot => Some(if floors[0] <= floors[1] { 0 } else { 1 }),
                Contact::Foot(Side::Left) => Some(0),
                Contact::Foot(Side::Right) => Some(1),
                Contact::BothFeet | Contact::Flight(_) | Contact::Ballistic => None,
            };
            velocity = match spec.contact {
                Contact::Flight(v) => {
                    let d = yaw - std::f32::consts::FRAC_PI_2;
                    let (s, c) = d.sin_cos();
                    [(v[0] * c - v[1] * s) / FPS, (v[0] * s + v[1] * c) / FPS]
                }
                Contact::Ballistic => velocity,
                _ => {
                    // Keep the supporting point where it was: root + local stays fixed.
                    let a0 = anchor(&prev, which);
                    let a1 = anchor(&local, which);
                    [a0[0] - a1[0], a0[1] - a1[1]]
                }
            };
            root[0] += velocity[0];
            root[1] += velocity[1];
        }
        prev_local = Some(local);
        let mut world = local;
        for p in world.iter_mut() {
            p[0] += root[0];
            p[1] += root[1];
            p[2] += root_z;
        }
        joints.push(world);
        rotations.push(rots);
    }
    let count = families::action_count(params, dur);
    SynthMotion {
        params: params.clone(),
        joints,
        rotations,
        captions: captions::pick_captions(params, count, rng),
    }
}

/// Draws the parameters of a motion of `family` (length, tempo, amplitude, direction, side).
pub fn sample_params(family: Family, rng: &mut impl Rng) -> MotionParams {
    MotionParams {
        family,
        frames: rng.random_range(MIN_FRAMES..=MAX_FRAMES),
        speed: rng.random_range(0.75..1.25),
        amplitude: rng.random_range(0.8..1.2),
        direction: rng.random_range(-std::f32::consts::PI..std::f32::consts::PI),
        start: [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)],
        side: if rng.random_bool(0.5) {
            Side::Left
        } else {
            Side::Right
        },
        radius: rng.random_range(1.0..2.5),
    }
}

fn motion_seed(seed: u64, index: usize) -> u64 {
    // splitmix64 of (seed, index): every motion has its own stream.
    let mut z = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Motion `index` of the synthetic set with seed `seed` (families cycle in
/// [`Family::ALL`] order so every family is equally represented).
pub fn synth_motion(seed: u64, index: usize, skeleton: &SynthSkeleton) -> SynthMotion {
    let mut rng = StdRng::seed_from_u64(motion_seed(seed, index));
    let family = Family::ALL[index % Family::ALL.len()];
    let params = sample_params(family, &mut rng);
    generate(&params, skeleton, &mut rng)
}

/// The sample id of motion `index` (`000000`, `000001`, ...).
pub fn synth_id(index: usize) -> String {
    format!("{index:06}")
}

/// Splits `n` ids 80/10/10 into train / val / test with a seeded shuffle.
pub fn split_ids(n: usize, seed: u64) -> [(Split, Vec<String>); 3] {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(motion_seed(seed, usize::MAX)));
    let n_val = n / 10;
    let n_test = n / 10;
    let n_train = n - n_val - n_test;
    let ids = |r: &[usize]| {
        let mut v: Vec<usize> = r.to_vec();
        v.sort_unstable();
        v.into_iter().map(synth_id).collect::<Vec<_>>()
    };
    [
        (Split::Train, ids(&idx[..n_train])),
        (Split::Val, ids(&idx[n_train..n_train + n_val])),
        (Split::Test, ids(&idx[n_train + n_val..])),
    ]
}

/// The in-memory sample (features + captions) of motion `index`.
pub fn synth_sample(seed: u64, index: usize, skeleton: &SynthSkeleton) -> Result<MotionSample> {
    let m = synth_motion(seed, index, skeleton);
    let feats = m.features()?;
    let frames = feats.dims()[0];
    let features = feats.flatten_all()?.to_vec1::<f32>()?;
    debug_assert_eq!(features.len(), frames * FEATURE_DIM);
    Ok(MotionSample {
        id: synth_id(index),
        features,
        frames,
        captions: m.captions,
        text: None,
    })
}

/// What [`synthesize_folder`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Motions written.
    pub motions: usize,
    /// Total frames written.
    pub frames: usize,
    /// Ids per split.
    pub splits: Vec<(Split, usize)>,
}

/// Writes `motions` synthetic motions with seed `seed` into `out` in the reference folder
/// layout: `humanml3d_{train,val,test}_split.txt` (80/10/10), `smpl_rifke/<id>.npy` (raw
/// `[F, 205]` features) and `caption_raw/<id>.txt` (three captions). No `caption_clip/`
/// (CLIP features need the CLIP model). `progress` is called after each motion.
pub fn synthesize_folder(
    out: &Path,
    motions: usize,
    seed: u64,
    progress: impl FnMut(usize),
) -> Result<SynthSummary> {
    synthesize_folder_with(out, motions, seed, &SynthSkeleton::default(), progress)
}

/// [`synthesize_folder`] on another skeleton (e.g. [`SynthSkeleton::from_body_model`]).
pub fn synthesize_folder_with(
    out: &Path,
    motions: usize,
    seed: u64,
    skeleton: &SynthSkeleton,
    mut progress: impl FnMut(usize),
) -> Result<SynthSummary> {
    if motions == 0 {
        return Err(DataError::Config("motions must be positive".into()));
    }
    let mut frames = 0;
    for i in 0..motions {
        let s = synth_sample(seed, i, skeleton)?;
        frames += s.frames;
        write_sample(out, &s)?;
        progress(i + 1);
    }
    let mut splits = Vec::new();
    for (split, ids) in split_ids(motions, seed) {
        write_split(out, split, &ids)?;
        splits.push((split, ids.len()));
    }
    Ok(SynthSummary {
        motions,
        frames,
        splits,
    })
}
