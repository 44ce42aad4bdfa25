//! Simple, hand-checkable descriptors of a motion's joints: how far the body travels along its
//! facing direction, how high the pelvis rises, how far each wrist moves. They turn "does the
//! motion follow the caption?" into numbers a test can check ("a person walks forward" must
//! carry the pelvis forward, "a person squats" must lower it) without a learned evaluator.
//!
//! Joints are `[F, J, 3]` in metres with Z up (the SMPL-RIFKE world of
//! [`crate::Motion::joints`]), in the SMPL joint order: 0 pelvis, 1 left hip, 2 right hip,
//! 20 left wrist, 21 right wrist.

use candle::Tensor;

use crate::error::{PipelineError, Result};

/// SMPL joint index of the pelvis.
pub const PELVIS: usize = 0;
/// SMPL joint index of the left hip.
pub const LEFT_HIP: usize = 1;
/// SMPL joint index of the right hip.
pub const RIGHT_HIP: usize = 2;
/// SMPL joint index of the left wrist.
pub const LEFT_WRIST: usize = 20;
/// SMPL joint index of the right wrist.
pub const RIGHT_WRIST: usize = 21;

/// Joint positions of one motion, frame-major, read once from a `[F, J, 3]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Joints {
    frames: usize,
    joints: usize,
    xyz: Vec<[f32; 3]>,
}

impl Joints {
    /// Reads `[F, J, 3]` joints (F >= 1, J > 21: the SMPL body joints at least).
    pub fn from_tensor(joints: &Tensor) -> Result<Self> {
        let bad = |reason: String| PipelineError::Option {
            name: "joints".into(),
            reason,
        };
        let (frames, count, three) = joints
            .dims3()
            .map_err(|_| bad(format!("expected [F, J, 3], got {:?}", joints.dims())))?;
        if three != 3 || frames == 0 || count <= RIGHT_WRIST {
            return Err(bad(format!(
                "expected [F >= 1, J > {RIGHT_WRIST}, 3], got {:?}",
                joints.dims()
            )));
        }
        let flat = joints
            .to_dtype(candle::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "non-finite coordinate at frame {}, joint {}",
                i / (count * 3),
                (i / 3) % count
            )));
        }
        let xyz = flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        Ok(Self {
            frames,
            joints: count,
            xyz,
        })
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Position of joint `j` at frame `f`.
    pub fn at(&self, f: usize, j: usize) -> [f32; 3] {
        self.xyz[f * self.joints + j]
    }

    /// Unit horizontal facing direction at frame `f`, from the hips: the body's left is
    /// `left hip - right hip`, and forward is left x up (Z up, right-handed).
    pub fn facing(&self, f: usize) -> [f32; 2] {
        let l = self.at(f, LEFT_HIP);
        let r = self.at(f, RIGHT_HIP);
        let (lx, ly) = (l[0] - r[0], l[1] - r[1]);
        // left x up = (ly, -lx, 0)
        let (fx, fy) = (ly, -lx);
        let n = (fx * fx + fy * fy).sqrt().max(1e-9);
        [fx / n, fy / n]
    }

    /// Pelvis travel from the first to the last frame along the facing direction of the
    /// first frame (metres; negative = backwards).
    pub fn forward_travel(&self) -> f32 {
        let a = self.at(0, PELVIS);
        let b = self.at(self.frames - 1, PELVIS);
        let d = self.facing(0);
        (b[0] - a[0]) * d[0] + (b[1] - a[1]) * d[1]
    }

    /// Largest horizontal distance of the pelvis from where it starts (metres).
    pub fn max_horizontal_travel(&self) -> f32 {
        let a = self.at(0, PELVIS);
        (0..self.frames)
            .map(|f| {
                let p = self.at(f, PELVIS);
                ((p[0] - a[0]).powi(2) + (p[1] - a[1]).powi(2)).sqrt()
            })
            .fold(0.0, f32::max)
    }

    /// Heights of the pelvis over the frames (metres).
    pub fn pelvis_heights(&self) -> Vec<f32> {
        (0..self.frames).map(|f| self.at(f, PELVIS)[2]).collect()
    }

    /// How far the pelvis rises above its median height (metres): a jump lifts it, standing
    /// keeps it near 0.
    pub fn pelvis_lift(&self) -> f32 {
        let h = self.pelvis_heights();
        let max = h.iter().copied().fold(f32::MIN, f32::max);
        max - median(h)
    }

    /// How far the pelvis drops below its highest point (metres): a squat or sitting down
    /// lowers it, walking keeps it within a few centimetres.
    pub fn pelvis_drop(&self) -> f32 {
        let h = self.pelvis_heights();
        let max = h.iter().copied().fold(f32::MIN, f32::max);
        let min = h.iter().copied().fold(f32::MAX, f32::min);
        max - min
    }

    /// Path length of joint `j` relative to the pelvis, summed over frames (metres): arm
    /// motion without the travel of the whole body.
    pub fn path_length_from_pelvis(&self, j: usize) -> f32 {
        let rel = |f: usize| {
            let p = self.at(f, j);
            let o = self.at(f, PELVIS);
            [p[0] - o[0], p[1] - o[1], p[2] - o[2]]
        };
        (1..self.frames)
            .map(|f| {
                let (a, b) = (rel(f - 1), rel(f));
                ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2) + (b[2] - a[2]).powi(2)).sqrt()
            })
            .sum()
    }
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A caption family whose expected motion [`Expectation::check`] can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// The pelvis moves more than 1 m along the initial facing direction.
    WalkForward,
    /// The pelvis rises more than 15 cm above its median height, with less than 0.5 m of
    /// horizontal travel.
    JumpInPlace,
    /// The right wrist moves more than twice as far as the left (relative to the pelvis).
    WaveRightHand,
    /// The pelvis drops by more than 25 cm.
    Squat,
}

impl Expectation {
    /// The thresholds of a 5-second motion, as the default model's acceptance test uses them.
    /// Returns whether `joints` meets them, and the measured value(s) for a report.
    pub fn check(self, joints: &Joints) -> (bool, String) {
        match self {
            Expectation::WalkForward => {
                let d = joints.forward_travel();
                (d > 1.0, format!("forward travel {d:.2} m"))
            }
            Expectation::JumpInPlace => {
                let lift = joints.pelvis_lift();
                let travel = joints.max_horizontal_travel();
                (
                    lift > 0.15 && travel < 0.5,
                    format!("pelvis lift {lift:.2} m, horizontal travel {travel:.2} m"),
                )
            }
            Expectation::WaveRightHand => {
                let r = joints.path_length_from_pelvis(RIGHT_WRIST);
                let l = joints.path_length_from_pelvis(LEFT_WRIST);
                (
                    r > 2.0 * l,
                    format!("right wrist {r:.2} m, left wrist {l:.2} m"),
                )
            }
            Expectation::Squat => {
                let d = joints.pelvis_drop();
                (d > 0.25, format!("pelvis drop {d:.2} m"))
            }
        }
    }
}

/// How many of `motions` meet an expectation, with one report line per motion
/// (`seed N: ok|FAIL <measured values>`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Motions that pass.
    pub passed: usize,
    /// One line per motion, in order.
    pub lines: Vec<String>,
}

impl Expectation {
    /// Checks every motion's joints ([`Expectation::check`]).
    pub fn check_motions(self, motions: &[crate::Motion]) -> Result<CheckReport> {
        let mut report = CheckReport {
            passed: 0,
            lines: Vec::with_capacity(motions.len()),
        };
        for m in motions {
            let (ok, what) = self.check(&Joints::from_tensor(&m.joints)?);
            report.passed += ok as usize;
            let verdict = if ok { "ok" } else { "FAIL" };
            report
                .lines
                .push(format!("seed {}: {verdict} {what}", m.seed));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    type R = std::result::Result<(), Box<dyn std::error::Error>>;

    /// A body facing +X (left hip at +Y) whose pelvis follows `pelvis(f)` and whose right
    /// wrist moves by `wrist(f)` metres along Z.
    fn body(
        frames: usize,
        pelvis: impl Fn(usize) -> [f32; 3],
        wrist: impl Fn(usize) -> f32,
    ) -> Result<Joints> {
        let mut v = Vec::new();
        for f in 0..frames {
            let p = pelvis(f);
            for j in 0..24 {
                let mut q = p;
                match j {
                    LEFT_HIP => q[1] += 0.1,
                    RIGHT_HIP => q[1] -= 0.1,
                    RIGHT_WRIST => q[2] += wrist(f),
                    _ => {}
                }
                v.extend_from_slice(&q);
            }
        }
        let t = Tensor::from_vec(v, (frames, 24, 3), &Device::Cpu)?;
        Joints::from_tensor(&t)
    }

    #[test]
    fn facing_comes_from_the_hips() -> R {
        let j = body(2, |_| [0.0, 0.0, 0.9], |_| 0.0)?;
        let d = j.facing(0);
        assert!((d[0] - 1.0).abs() < 1e-6 && d[1].abs() < 1e-6, "{d:?}");
        Ok(())
    }

    #[test]
    fn walking_forward_and_backward() -> R {
        let fwd = body(100, |f| [0.02 * f as f32, 0.0, 0.9], |_| 0.0)?;
        assert!((fwd.forward_travel() - 1.98).abs() < 1e-5);
        assert!(Expectation::WalkForward.check(&fwd).0);
        let back = body(100, |f| [-0.02 * f as f32, 0.0, 0.9], |_| 0.0)?;
        assert!(back.forward_travel() < 0.0);
        assert!(!Expectation::WalkForward.check(&back).0);
        Ok(())
    }

    #[test]
    fn jump_and_squat_heights() -> R {
        // Standing at 0.9 m with one 0.3 m hop in the middle (frames 40..50).
        let hop = |f: usize| if (40..50).contains(&f) { 1.2 } else { 0.9 };
        let j = body(100, |f| [0.0, 0.0, hop(f)], |_| 0.0)?;
        assert!((j.pelvis_lift() - 0.3).abs() < 1e-6);
        assert!(Expectation::JumpInPlace.check(&j).0);
        // The same hop while drifting 1 m sideways fails the in-place condition.
        let drift = body(100, |f| [0.0, 0.01 * f as f32, hop(f)], |_| 0.0)?;
        assert!(!Expectation::JumpInPlace.check(&drift).0);
        let squat = body(100, |f| [0.0, 0.0, 0.9 - 0.004 * f.min(50) as f32], |_| 0.0)?;
        assert!((squat.pelvis_drop() - 0.2).abs() < 1e-5);
        assert!(!Expectation::Squat.check(&squat).0);
        Ok(())
    }

    #[test]
    fn wrist_path_is_relative_to_the_pelvis() -> R {
        // Walking moves every joint with the pelvis: no wrist motion relative to it.
        let walk = body(50, |f| [0.02 * f as f32, 0.0, 0.9], |_| 0.0)?;
        assert!(walk.path_length_from_pelvis(RIGHT_WRIST) < 1e-5);
        // Right wrist up and down by 0.1 m every frame: 49 * 0.1 m of path.
        let wave = body(50, |_| [0.0, 0.0, 0.9], |f| 0.1 * (f % 2) as f32)?;
        assert!((wave.path_length_from_pelvis(RIGHT_WRIST) - 4.9).abs() < 1e-4);
        assert!(Expectation::WaveRightHand.check(&wave).0);
        Ok(())
    }

    #[test]
    fn bad_joints_are_rejected() -> R {
        let t = Tensor::zeros((10, 5, 3), candle::DType::F32, &Device::Cpu)?;
        assert!(Joints::from_tensor(&t).is_err());
        let nan = Tensor::full(f32::NAN, (2, 24, 3), &Device::Cpu)?;
        let e = Joints::from_tensor(&nan)
            .err()
            .ok_or("expected an error")?
            .to_string();
        assert!(e.contains("frame 0"), "{e}");
        Ok(())
    }
}
