//! Motion families: each maps time to a body pose (joint angles), a contact rule and a heading.
//!
//! Poses are described by a few interpretable angles (thigh flexion, knee flexion, torso lean,
//! arm raise, ...) that [`Pose::rotations`] turns into SMPL joint rotations; the root trajectory
//! is not scripted but solved from ground contact in [`super::generate`] (the supporting foot
//! stays where it is, the lowest foot touches the floor), so feet do not slide or float.

use std::f32::consts::{FRAC_PI_2, PI, TAU};

use smpl::rotation::mat3;

use super::skeleton::{LegDims, NUM_ROTATIONS, canonical_to_world, j};

/// Frames per second of the reference data.
pub const FPS: f32 = 20.0;

/// The motion families of the synthetic set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Walk forward in a straight line.
    WalkForward,
    /// Walk backward in a straight line.
    WalkBackward,
    /// Walk in a circle, clockwise seen from above.
    WalkCircleClockwise,
    /// Walk in a circle, counter-clockwise seen from above.
    WalkCircleCounterClockwise,
    /// Run forward.
    Run,
    /// Jump up and down on the spot.
    JumpInPlace,
    /// Jump forward with both feet.
    JumpForward,
    /// Squat down and stand up.
    Squat,
    /// Wave the left hand.
    WaveLeftHand,
    /// Wave the right hand.
    WaveRightHand,
    /// Kick forward with one leg.
    Kick,
    /// Turn around on the spot (180 degrees).
    TurnAround,
    /// Sit down (on an invisible seat) and stay seated.
    SitDown,
    /// Raise both arms above the head and lower them.
    RaiseBothArms,
}

impl Family {
    /// Every family, in a fixed order.
    pub const ALL: [Family; 14] = [
        Family::WalkForward,
        Family::WalkBackward,
        Family::WalkCircleClockwise,
        Family::WalkCircleCounterClockwise,
        Family::Run,
        Family::JumpInPlace,
        Family::JumpForward,
        Family::Squat,
        Family::WaveLeftHand,
        Family::WaveRightHand,
        Family::Kick,
        Family::TurnAround,
        Family::SitDown,
        Family::RaiseBothArms,
    ];

    /// A snake-case name (`walk_forward`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Family::WalkForward => "walk_forward",
            Family::WalkBackward => "walk_backward",
            Family::WalkCircleClockwise => "walk_circle_cw",
            Family::WalkCircleCounterClockwise => "walk_circle_ccw",
            Family::Run => "run",
            Family::JumpInPlace => "jump_in_place",
            Family::JumpForward => "jump_forward",
            Family::Squat => "squat",
            Family::WaveLeftHand => "wave_left_hand",
            Family::WaveRightHand => "wave_right_hand",
            Family::Kick => "kick",
            Family::TurnAround => "turn_around",
            Family::SitDown => "sit_down",
            Family::RaiseBothArms => "raise_both_arms",
        }
    }

    /// Parses [`Family::name`].
    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Left or right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The body's left.
    Left,
    /// The body's right.
    Right,
}

/// Parameters of one synthetic motion.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionParams {
    /// The family.
    pub family: Family,
    /// Number of frames at 20 fps (40..=196 for 2-9.8 s).
    pub frames: usize,
    /// Tempo multiplier (1 = typical; walking speed, cadence, wave frequency...).
    pub speed: f32,
    /// Amplitude multiplier (1 = typical; stride, squat depth, jump height...).
    pub amplitude: f32,
    /// Initial facing direction in the world XY plane (radians, 0 = facing +X).
    pub direction: f32,
    /// Initial pelvis position in the world XY plane (metres).
    pub start: [f32; 2],
    /// Kicking leg; turning direction (left = counter-clockwise).
    pub side: Side,
    /// Circle radius for the circle walks (metres).
    pub radius: f32,
}

/// One leg: angles in radians in the sagittal plane of the body.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Leg {
    /// Thigh flexion relative to the vertical of the world (forward positive).
    pub thigh: f32,
    /// Abduction (away from the body's midline positive).
    pub abduct: f32,
    /// Knee flexion (positive).
    pub knee: f32,
    /// Foot pitch relative to the floor (toes up positive).
    pub toes_up: f32,
}

/// One arm.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Arm {
    /// Raise sideways from hanging (0 = along the body, pi/2 = horizontal, pi = overhead).
    pub raise: f32,
    /// Forward swing of the (raised) arm (positive = forward).
    pub forward: f32,
    /// Elbow flexion bringing the forearm forward (when the arm hangs).
    pub elbow: f32,
    /// External rotation of the upper arm about its own axis: at pi/2 with the arm raised
    /// sideways, elbow flexion brings the forearm up instead of forward.
    pub twist: f32,
}

/// A body pose (root orientation apart from the yaw, and joint angles).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pose {
    /// Pelvis forward tilt (positive = forward).
    pub pelvis_pitch: f32,
    /// Pelvis roll (positive = towards the left side).
    pub pelvis_roll: f32,
    /// Forward lean of the chest relative to the world vertical.
    pub torso_lean: f32,
    /// Chest twist about the spine (positive = to the left).
    pub torso_twist: f32,
    /// Head pitch relative to the chest (positive = looking down).
    pub head_pitch: f32,
    /// Left then right leg.
    pub legs: [Leg; 2],
    /// Left then right arm.
    pub arms: [Arm; 2],
}

/// What holds the body in the horizontal plane at a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contact {
    /// The lower foot stays in place.
    LowerFoot,
    /// The midpoint of both feet stays in place.
    BothFeet,
    /// This foot stays in place.
    Foot(Side),
    /// No support: the root moves with this velocity (m/s, heading frame: forward, left).
    Flight([f32; 2]),
    /// No support: the root keeps its last horizontal velocity.
    Ballistic,
}

/// Everything a family says about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSpec {
    /// Body pose.
    pub pose: Pose,
    /// Support rule.
    pub contact: Contact,
    /// Yaw rate (rad/s, positive = counter-clockwise seen from above).
    pub yaw_rate: f32,
    /// Height above the ground-contact height (jumps, running flight), metres.
    pub lift: f32,
}

/// Arms hanging relaxed.
const ARM_REST: Arm = Arm {
    raise: 0.2,
    forward: 0.0,
    elbow: 0.15,
    twist: 0.0,
};

/// The standing pose.
pub fn standing() -> Pose {
    Pose {
        legs: [Leg::default(); 2],
        arms: [ARM_REST; 2],
        ..Pose::default()
    }
}

fn smoothstep(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// 0 before `a`, 1 after `b`, smooth in between.
fn ramp(t: f32, a: f32, b: f32) -> f32 {
    if b <= a {
        return if t >= a { 1.0 } else { 0.0 };
    }
    smoothstep((t - a) / (b - a))
}

/// 1 inside `[a, b]` with smooth `fade`-long edges, 0 outside.
fn window(t: f32, a: f32, b: f32, fade: f32) -> f32 {
    ramp(t, a, a + fade) * (1.0 - ramp(t, b - fade, b))
}

fn lerp(a: f32, b: f32, w: f32) -> f32 {
    a + (b - a) * w
}

fn lerp_leg(a: Leg, b: Leg, w: f32) -> Leg {
    Leg {
        thigh: lerp(a.thigh, b.thigh, w),
        abduct: lerp(a.abduct, b.abduct, w),
        knee: lerp(a.knee, b.knee, w),
        toes_up: lerp(a.toes_up, b.toes_up, w),
    }
}

fn lerp_arm(a: Arm, b: Arm, w: f32) -> Arm {
    Arm {
        raise: lerp(a.raise, b.raise, w),
        forward: lerp(a.forward, b.forward, w),
        elbow: lerp(a.elbow, b.elbow, w),
        twist: lerp(a.twist, b.twist, w),
    }
}

/// Blends two poses (`w = 0` gives `a`).
pub fn lerp_pose(a: &Pose, b: &Pose, w: f32) -> Pose {
    Pose {
        pelvis_pitch: lerp(a.pelvis_pitch, b.pelvis_pitch, w),
        pelvis_roll: lerp(a.pelvis_roll, b.pelvis_roll, w),
        torso_lean: lerp(a.torso_lean, b.torso_lean, w),
        torso_twist: lerp(a.torso_twist, b.torso_twist, w),
        head_pitch: lerp(a.head_pitch, b.head_pitch, w),
        legs: [
            lerp_leg(a.legs[0], b.legs[0], w),
            lerp_leg(a.legs[1], b.legs[1], w),
        ],
        arms: [
            lerp_arm(a.arms[0], b.arms[0], w),
            lerp_arm(a.arms[1], b.arms[1], w),
        ],
    }
}

impl Pose {
    /// Joint rotations: `[0]` the root orientation in the Z-up world for yaw `yaw`, `[1..22]`
    /// local rotations (SMPL canonical axes: X left, Y up, Z forward).
    pub fn rotations(&self, yaw: f32) -> [[f32; 9]; NUM_ROTATIONS] {
        let mut r = [mat3::IDENTITY; NUM_ROTATIONS];
        let p = self.pelvis_pitch;
        r[0] = mat3::mul(
            &mat3::mul(&mat3::rot_z(yaw), &canonical_to_world()),
            &mat3::mul(&mat3::rot_x(p), &mat3::rot_z(-self.pelvis_roll)),
        );
        // Legs: a rotation about +X by a positive angle swings a hanging segment backward.
        for (k, (hip, knee, ankle, sign)) in [
            (j::L_HIP, j::L_KNEE, j::L_ANKLE, 1.0f32),
            (j::R_HIP, j::R_KNEE, j::R_ANKLE, -1.0),
        ]
        .into_iter()
        .enumerate()
        {
            let leg = self.legs[k];
            r[hip] = mat3::mul(
                &mat3::rot_x(-leg.thigh - p),
                &mat3::rot_z(sign * leg.abduct),
            );
            r[knee] = mat3::rot_x(leg.knee);
            // Foot pitch in the world: -thigh + knee + ankle = -toes_up, within the ankle's
            // range (about 20 degrees of dorsiflexion, 45 of plantarflexion): a foot swinging
            // behind a bent knee hangs instead of staying level.
            r[ankle] = mat3::rot_x((leg.thigh - leg.knee - leg.toes_up).clamp(-0.35, 0.8));
        }
        // Spine: the chest's world lean is the pelvis tilt plus the three spine joints.
        let bend = (self.torso_lean - p) / 3.0;
        let twist = self.torso_twist / 3.0;
        for s in [j::SPINE1, j::SPINE2, j::SPINE3] {
            r[s] = mat3::mul(&mat3::rot_x(bend), &mat3::rot_y(twist));
        }
        // Keep the gaze roughly level.
        r[j::NECK] = mat3::rot_x(-0.5 * self.torso_lean + 0.5 * self.head_pitch);
        r[j::HEAD] = mat3::rot_x(0.5 * self.head_pitch);
        // Arms (T-pose: left arm along +X, right along -X).
        for (k, (shoulder, elbow, sign)) in [
            (j::L_SHOULDER, j::L_ELBOW, 1.0f32),
            (j::R_SHOULDER, j::R_ELBOW, -1.0),
        ]
        .into_iter()
        .enumerate()
        {
            let arm = self.arms[k];
            // Forward swing: about the left-right axis for a hanging (or overhead) arm, about
            // the vertical for a horizontal one, blended by the raise angle.
            let (s, c) = arm.raise.sin_cos();
            r[shoulder] = mat3::mul(
                &mat3::mul(
                    &mat3::rot_y(-sign * arm.forward * s),
                    &mat3::rot_x(-arm.forward * c),
                ),
                &mat3::mul(
                    &mat3::rot_z(sign * (arm.raise - FRAC_PI_2)),
                    &mat3::rot_x(-arm.twist),
                ),
            );
            // The elbow is a hinge about the arm's local Y axis.
            r[elbow] = mat3::rot_y(-sign * arm.elbow);
        }
        r
    }
}

/// One leg of a gait cycle at cycle position `s` (in cycles; `[0, beta)` = stance).
///
/// Stance: the thigh angle falls linearly from `+hip` to `-hip`, so the supporting foot moves
/// back at a constant rate and the body at a constant speed; two legs in stance at once move
/// their feet at the same rate, so neither slides. Swing: a cubic Hermite from `-hip` back to
/// `+hip` whose end slopes equal the stance slope, so a foot lands moving back exactly as fast
/// as the supporting one; the knee bends `knee * sin(pi u)` over the swing (`u` in `[0, 1]`).
/// Returns the leg and whether it is in stance.
fn gait_leg(s: f32, hip: f32, knee: f32, stance_knee: f32, beta: f32) -> (Leg, bool) {
    let s = s.rem_euclid(1.0);
    if s < beta {
        // Heel rise (push-off) over the last quarter of the stance.
        let push = smoothstep((s / beta - 0.7) / 0.3);
        let leg = Leg {
            thigh: hip * (1.0 - 2.0 * s / beta),
            abduct: 0.03,
            knee: stance_knee + 0.3 * push * hip,
            toes_up: -1.6 * push * hip,
        };
        return (leg, true);
    }
    let u = (s - beta) / (1.0 - beta);
    let m = -2.0 * hip / beta * (1.0 - beta); // stance slope in units of u
    let (u2, u3) = (u * u, u * u * u);
    let thigh = (2.0 * u3 - 3.0 * u2 + 1.0) * -hip
        + (u3 - 2.0 * u2 + u) * m
        + (-2.0 * u3 + 3.0 * u2) * hip
        + (u3 - u2) * m;
    // Knee flexion peaks early in the swing and is gone before the foot lands.
    let bend = (PI * (u / 0.85).min(1.0)).sin();
    let leg = Leg {
        thigh,
        abduct: 0.03,
        knee: stance_knee + knee * bend,
        toes_up: 0.15 * bend,
    };
    (leg, false)
}

/// Both legs at cycle position `s` of the right leg (the left leg is half a cycle ahead),
/// and the supporting foot (`None` in a flight phase).
fn gait(
    d: &LegDims,
    s: f32,
    hip: f32,
    knee: f32,
    stance_knee: f32,
    beta: f32,
) -> ([Leg; 2], Option<Side>) {
    let (mut right, rs) = gait_leg(s, hip, knee, stance_knee, beta);
    let (mut left, ls) = gait_leg(s + 0.5, hip, knee, stance_knee, beta);
    // A swinging foot must stay above the supporting one until it lands: bend its knee more
    // where the planar leg reach says it would touch the floor early.
    // Reach from hip to floor: thigh and shank, plus the toe lever once the heel rises.
    let reach = |l: &Leg| {
        d.thigh * l.thigh.cos()
            + d.shank * (l.thigh - l.knee).cos()
            + d.toe_lever * (-l.toes_up).sin().max(0.0)
    };
    let clear = |swing: &mut Leg, s_swing: f32, support: &Leg| {
        let u = ((s_swing.rem_euclid(1.0) - beta) / (1.0 - beta)).clamp(0.0, 1.0);
        let target = reach(support) - 0.08 * (PI * u).sin().sqrt();
        let x = ((target - d.thigh * swing.thigh.cos()) / d.shank).clamp(-1.0, 1.0);
        swing.knee = swing.knee.max(swing.thigh + x.acos());
    };
    if rs && !ls {
        clear(&mut left, s + 0.5, &right);
    } else if ls && !rs {
        clear(&mut right, s, &left);
    }
    // In double support, the foot that landed first supports (both move alike anyway).
    let support = match (ls, rs) {
        (true, true) => {
            if (s + 0.5).rem_euclid(1.0) > s.rem_euclid(1.0) {
                Some(Side::Left)
            } else {
                Some(Side::Right)
            }
        }
        (true, false) => Some(Side::Left),
        (false, true) => Some(Side::Right),
        (false, false) => None,
    };
    ([left, right], support)
}

/// Arms swinging against the legs (`legs` = left, right).
fn gait_arms(legs: &[Leg; 2], hip: f32, swing: f32, elbow: f32) -> [Arm; 2] {
    let arm = |opposite: &Leg| {
        let x = if hip > 1e-6 {
            opposite.thigh / hip
        } else {
            0.0
        };
        Arm {
            raise: 0.18,
            forward: swing * x,
            elbow: elbow + 0.3 * swing * (x + 1.0),
            twist: 0.0,
        }
    };
    // The left arm swings with the right leg.
    [arm(&legs[1]), arm(&legs[0])]
}

fn support_contact(support: Option<Side>) -> Contact {
    match support {
        Some(side) => Contact::Foot(side),
        None => Contact::Ballistic,
    }
}

/// Walking frame at time `t` of a motion lasting `dur` seconds.
fn walk(
    d: &LegDims,
    t: f32,
    dur: f32,
    m: &MotionParams,
    backward: bool,
    yaw_rate: f32,
) -> FrameSpec {
    let cadence = 0.9 * m.speed; // gait cycles per second
    let env = ramp(t, 0.0, 0.8) * (1.0 - ramp(t, dur - 0.8, dur));
    let dir = if backward { -1.0 } else { 1.0 };
    let s = dir * cadence * t;
    let hip = 0.36 * m.amplitude * env * if backward { 0.7 } else { 1.0 };
    let (legs, support) = gait(d, s, hip, 1.0 * env, 0.08 * env, 0.6);
    let mut pose = standing();
    pose.legs = legs;
    pose.arms = gait_arms(&legs, hip, 0.35 * env * m.amplitude, 0.25);
    pose.torso_lean = dir * 0.05 * env;
    let wobble = (TAU * s).sin();
    pose.pelvis_roll = 0.04 * env * wobble;
    pose.torso_twist = -0.08 * env * wobble;
    FrameSpec {
        pose,
        contact: support_contact(support),
        yaw_rate: yaw_rate * env,
        lift: 0.0,
    }
}

fn run(d: &LegDims, t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let cadence = 1.35 * m.speed;
    let env = ramp(t, 0.0, 0.8) * (1.0 - ramp(t, dur - 0.8, dur));
    let s = cadence * t;
    // Stance shrinks from walking (0.6) to running (0.38) as the run builds up.
    let beta = lerp(0.6, 0.38, env);
    let hip = 0.55 * m.amplitude * env;
    let (legs, support) = gait(d, s, hip, 1.6 * env, 0.3 * env, beta);
    let mut pose = standing();
    pose.legs = legs;
    pose.arms = gait_arms(&legs, hip, 0.6 * env, 0.2 + 1.2 * env);
    pose.torso_lean = 0.2 * env;
    pose.pelvis_pitch = 0.1 * env;
    pose.torso_twist = -0.15 * env * (TAU * s).sin();
    // Flight: a parabola over the unsupported part `[beta, 0.5)` of each half-cycle.
    let h = s.rem_euclid(0.5);
    let lift = if support.is_none() && beta < 0.5 {
        let u = ((h - beta) / (0.5 - beta)).clamp(0.0, 1.0);
        0.06 * m.amplitude * env * 4.0 * u * (1.0 - u)
    } else {
        0.0
    };
    FrameSpec {
        pose,
        contact: support_contact(support),
        yaw_rate: 0.0,
        lift,
    }
}

/// Number of repetitions of a `period`-long action in `dur` seconds, leaving `margin` seconds.
pub fn repetitions(dur: f32, period: f32, margin: f32) -> usize {
    (((dur - margin) / period).floor() as usize).clamp(1, 4)
}

/// Jump timing: crouch, flight, landing, recover (seconds at speed 1).
const JUMP: [f32; 4] = [0.4, 0.5, 0.3, 0.4];

fn jump_period(m: &MotionParams) -> f32 {
    JUMP.iter().sum::<f32>() / m.speed
}

fn jump(t: f32, dur: f32, m: &MotionParams, forward: bool) -> FrameSpec {
    let period = jump_period(m);
    let n = repetitions(dur, period, 0.6);
    let start = (dur - n as f32 * period) / 2.0;
    let mut spec = FrameSpec {
        pose: standing(),
        contact: Contact::BothFeet,
        yaw_rate: 0.0,
        lift: 0.0,
    };
    let local = t - start;
    if local < 0.0 || local >= n as f32 * period {
        return spec;
    }
    let u = (local % period) * m.speed; // time within this jump at speed 1
    let [c, f, l, _] = JUMP;
    let crouch = {
        let mut p = standing();
        p.legs = [Leg {
            thigh: 0.75 * m.amplitude,
            abduct: 0.05,
            knee: 1.3 * m.amplitude,
            toes_up: 0.0,
        }; 2];
        p.pelvis_pitch = 0.25;
        p.torso_lean = 0.6 * m.amplitude;
        p.arms = [Arm {
            raise: 0.2,
            forward: -0.7,
            elbow: 0.2,
            twist: 0.0,
        }; 2];
        p
    };
    let air = {
        let mut p = standing();
        p.legs = [Leg {
            thigh: 0.1,
            abduct: 0.04,
            knee: 0.25,
            toes_up: -0.5,
        }; 2];
        p.arms = [Arm {
            raise: 0.4,
            forward: 1.6,
            elbow: 0.2,
            twist: 0.0,
        }; 2];
        p.torso_lean = 0.05;
        p
    };
    let height = 0.28 * m.amplitude;
    let dist = if forward { 0.75 * m.amplitude } else { 0.0 };
    if u < c {
        spec.pose = lerp_pose(&standing(), &crouch, smoothstep(u / c));
    } else if u < c + f {
        let s = (u - c) / f;
        spec.pose = lerp_pose(&crouch, &air, smoothstep((s * 3.0).min(1.0)));
        spec.lift = 4.0 * height * s * (1.0 - s);
        spec.contact = Contact::Flight([dist * m.speed / f, 0.0]);
    } else if u < c + f + l {
        let s = (u - c - f) / l;
        let mut landing = crouch;
        landing.arms = [Arm {
            raise: 0.3,
            forward: 0.6,
            elbow: 0.4,
            twist: 0.0,
        }; 2];
        spec.pose = lerp_pose(&air, &landing, smoothstep(s));
    } else {
        let s = (u - c - f - l) / JUMP[3];
        let mut landing = crouch;
        landing.arms = [Arm {
            raise: 0.3,
            forward: 0.6,
            elbow: 0.4,
            twist: 0.0,
        }; 2];
        spec.pose = lerp_pose(&landing, &standing(), smoothstep(s));
    }
    spec
}

fn squat(t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let period = 2.4 / m.speed;
    let n = repetitions(dur, period, 0.6);
    let start = (dur - n as f32 * period) / 2.0;
    let depth = m.amplitude.clamp(0.5, 1.2);
    let mut low = standing();
    low.legs = [Leg {
        thigh: 1.45 * depth,
        abduct: 0.12,
        knee: 1.9 * depth,
        toes_up: 0.0,
    }; 2];
    low.pelvis_pitch = 0.35 * depth;
    low.torso_lean = 0.75 * depth;
    low.head_pitch = -0.3;
    low.arms = [Arm {
        raise: 0.25,
        forward: 1.4,
        elbow: 0.1,
        twist: 0.0,
    }; 2];
    let local = t - start;
    let w = if local < 0.0 || local >= n as f32 * period {
        0.0
    } else {
        // Down, hold briefly, up.
        let u = (local % period) / period;
        window(u, 0.05, 0.95, 0.38)
    };
    FrameSpec {
        pose: lerp_pose(&standing(), &low, w),
        contact: Contact::BothFeet,
        yaw_rate: 0.0,
        lift: 0.0,
    }
}

fn wave(t: f32, dur: f32, m: &MotionParams, side: Side) -> FrameSpec {
    let k = match side {
        Side::Left => 0,
        Side::Right => 1,
    };
    let a = ramp(t, 0.3, 1.1) * (1.0 - ramp(t, dur - 1.0, dur - 0.2));
    let freq = 1.8 * m.speed;
    let mut pose = standing();
    // Upper arm raised sideways and turned out, forearm up; the elbow swings the hand from
    // side to side.
    let raised = Arm {
        raise: 1.65,
        forward: 0.35,
        elbow: 1.3 + 0.4 * m.amplitude * (TAU * freq * t).sin() * ramp(t, 0.9, 1.3),
        twist: 1.45,
    };
    pose.arms[k] = lerp_arm(ARM_REST, raised, a);
    pose.torso_twist = 0.05 * a * if k == 0 { 1.0 } else { -1.0 };
    pose.pelvis_roll = 0.02 * a * if k == 0 { -1.0 } else { 1.0 };
    FrameSpec {
        pose,
        contact: Contact::BothFeet,
        yaw_rate: 0.0,
        lift: 0.0,
    }
}

fn kick(t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let (kl, sl) = match m.side {
        Side::Left => (0, 1),
        Side::Right => (1, 0),
    };
    let period = 1.6 / m.speed;
    let n = repetitions(dur, period, 0.8);
    let start = (dur - n as f32 * period) / 2.0;
    let mut pose = standing();
    let local = t - start;
    let on = if local < 0.0 || local >= n as f32 * period {
        0.0
    } else {
        1.0
    };
    let u = ((local.max(0.0) % period) / period) * on;
    // Key poses of the kicking leg: windup (knee up and back), strike (straight, high), retract.
    let keys: [(f32, Leg); 5] = [
        (0.0, Leg::default()),
        (
            0.3,
            Leg {
                thigh: 0.5,
                abduct: 0.0,
                knee: 1.5,
                toes_up: -0.3,
            },
        ),
        (
            0.5,
            Leg {
                thigh: 1.25 * m.amplitude,
                abduct: 0.0,
                knee: 0.1,
                toes_up: -0.4,
            },
        ),
        (
            0.7,
            Leg {
                thigh: 0.5,
                abduct: 0.0,
                knee: 1.2,
                toes_up: -0.2,
            },
        ),
        (1.0, Leg::default()),
    ];
    let mut leg = Leg::default();
    for w in keys.windows(2) {
        let ((a, la), (b, lb)) = (w[0], w[1]);
        if u >= a && u <= b {
            leg = lerp_leg(la, lb, smoothstep((u - a) / (b - a)));
        }
    }
    let active = window(u, 0.0, 1.0, 0.25) * on;
    pose.legs[kl] = leg;
    pose.legs[sl] = Leg {
        thigh: 0.08 * active,
        abduct: 0.0,
        knee: 0.15 * active,
        toes_up: 0.0,
    };
    pose.torso_lean = -0.15 * active;
    pose.pelvis_roll = 0.05 * active * if kl == 0 { -1.0 } else { 1.0 };
    pose.arms = [Arm {
        raise: 0.2 + 0.5 * active,
        forward: 0.2 * active,
        elbow: 0.5 * active,
        twist: 0.0,
    }; 2];
    let side = if kl == 0 { Side::Right } else { Side::Left };
    FrameSpec {
        pose,
        contact: Contact::Foot(side),
        yaw_rate: 0.0,
        lift: 0.0,
    }
}

fn turn(d: &LegDims, t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let turn_time = (2.0 / m.speed).min(dur - 0.6);
    let start = ((dur - turn_time) / 2.0).max(0.2);
    // Stepping on the spot while the yaw follows a smooth profile over `turn_time` seconds.
    let env = window(t, start - 0.2, start + turn_time + 0.2, 0.4);
    let s = 1.1 * m.speed * (t - start);
    let hip = 0.08 * env;
    let (legs, support) = gait(d, s, hip, 0.7 * env, 0.05 * env, 0.6);
    let mut pose = standing();
    pose.legs = legs;
    pose.arms = gait_arms(&legs, hip, 0.1 * env, 0.3);
    let sign = match m.side {
        Side::Left => 1.0,
        Side::Right => -1.0,
    };
    // d/dt of PI * smoothstep((t - start) / turn_time).
    let s = ((t - start) / turn_time).clamp(0.0, 1.0);
    let rate = if (0.0..1.0).contains(&((t - start) / turn_time)) {
        PI * 6.0 * s * (1.0 - s) / turn_time
    } else {
        0.0
    };
    FrameSpec {
        pose,
        contact: support_contact(support),
        yaw_rate: sign * rate,
        lift: 0.0,
    }
}

fn sit(t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let t0 = (0.2 * dur).min(1.5);
    let down = 1.6 / m.speed;
    let mut seated = standing();
    seated.legs = [Leg {
        thigh: 1.5,
        abduct: 0.08,
        knee: 1.55,
        toes_up: 0.0,
    }; 2];
    seated.pelvis_pitch = -0.1;
    seated.torso_lean = 0.05;
    seated.arms = [Arm {
        raise: 0.25,
        forward: 0.55,
        elbow: 0.9,
        twist: 0.0,
    }; 2];
    let w = ramp(t, t0, t0 + down);
    let mut pose = lerp_pose(&standing(), &seated, w);
    // Lean forward while lowering the body, then sit back.
    pose.torso_lean += 0.55 * m.amplitude * (PI * w).sin();
    FrameSpec {
        pose,
        contact: Contact::BothFeet,
        yaw_rate: 0.0,
        lift: 0.0,
    }
}

fn raise_arms(t: f32, dur: f32, m: &MotionParams) -> FrameSpec {
    let period = 2.6 / m.speed;
    let n = repetitions(dur, period, 0.6);
    let start = (dur - n as f32 * period) / 2.0;
    let local = t - start;
    let w = if local < 0.0 || local >= n as f32 * period {
        0.0
    } else {
        window((local % period) / period, 0.05, 0.95, 0.35)
    };
    let up = Arm {
        raise: 2.6 + 0.3 * (m.amplitude - 1.0),
        forward: 0.15,
        elbow: 0.1,
        twist: 0.0,
    };
    let mut pose = standing();
    pose.arms = [lerp_arm(ARM_REST, up, w); 2];
    pose.head_pitch = -0.15 * w;
    FrameSpec {
        pose,
        contact: Contact::BothFeet,
        yaw_rate: 0.0,
        lift: 0.0,
    }
}

/// The family's specification of the frame at time `t` (seconds) of a motion lasting `dur`.
/// `d` gives the skeleton's leg dimensions.
pub fn frame_spec(d: &LegDims, m: &MotionParams, t: f32, dur: f32) -> FrameSpec {
    // Walking speed ~ 2 * leg * sin(hip) * 2 * cadence: used for the circle's yaw rate.
    let walk_speed = 2.0 * 0.87 * (0.38 * m.amplitude).sin() * 2.0 * 0.9 * m.speed;
    match m.family {
        Family::WalkForward => walk(d, t, dur, m, false, 0.0),
        Family::WalkBackward => walk(d, t, dur, m, true, 0.0),
        Family::WalkCircleClockwise => walk(d, t, dur, m, false, -walk_speed / m.radius),
        Family::WalkCircleCounterClockwise => walk(d, t, dur, m, false, walk_speed / m.radius),
        Family::Run => run(d, t, dur, m),
        Family::JumpInPlace => jump(t, dur, m, false),
        Family::JumpForward => jump(t, dur, m, true),
        Family::Squat => squat(t, dur, m),
        Family::WaveLeftHand => wave(t, dur, m, Side::Left),
        Family::WaveRightHand => wave(t, dur, m, Side::Right),
        Family::Kick => kick(t, dur, m),
        Family::TurnAround => turn(d, t, dur, m),
        Family::SitDown => sit(t, dur, m),
        Family::RaiseBothArms => raise_arms(t, dur, m),
    }
}

/// How many times the family's action repeats in a motion of `dur` seconds (1 for continuous
/// families); used by the captions.
pub fn action_count(m: &MotionParams, dur: f32) -> usize {
    match m.family {
        Family::JumpInPlace | Family::JumpForward => repetitions(dur, jump_period(m), 0.6),
        Family::Squat => repetitions(dur, 2.4 / m.speed, 0.6),
        Family::Kick => repetitions(dur, 1.6 / m.speed, 0.8),
        Family::RaiseBothArms => repetitions(dur, 2.6 / m.speed, 0.6),
        _ => 1,
    }
}
