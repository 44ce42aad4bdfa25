//! The synthetic skeleton: 24 SMPL-RIFKE joints of an anthropometric adult and forward
//! kinematics into the Z-up world of the reference data (DESIGN §4.1).

use smpl::rotation::mat3;
use smpl::skeleton::SMPL_PARENTS;

/// Number of joints of the SMPL-RIFKE input (SMPL-H 0..21 plus the two index-finger bases).
pub const NUM_JOINTS: usize = 24;
/// Number of rotated joints (root + 21 body joints).
pub const NUM_ROTATIONS: usize = 22;

/// Joint indices used by the generator.
#[allow(missing_docs)]
pub mod j {
    pub const PELVIS: usize = 0;
    pub const L_HIP: usize = 1;
    pub const R_HIP: usize = 2;
    pub const SPINE1: usize = 3;
    pub const L_KNEE: usize = 4;
    pub const R_KNEE: usize = 5;
    pub const SPINE2: usize = 6;
    pub const L_ANKLE: usize = 7;
    pub const R_ANKLE: usize = 8;
    pub const SPINE3: usize = 9;
    pub const L_FOOT: usize = 10;
    pub const R_FOOT: usize = 11;
    pub const NECK: usize = 12;
    pub const L_COLLAR: usize = 13;
    pub const R_COLLAR: usize = 14;
    pub const HEAD: usize = 15;
    pub const L_SHOULDER: usize = 16;
    pub const R_SHOULDER: usize = 17;
    pub const L_ELBOW: usize = 18;
    pub const R_ELBOW: usize = 19;
    pub const L_WRIST: usize = 20;
    pub const R_WRIST: usize = 21;
}

/// Rest joint positions in the SMPL canonical frame (Y up, facing +Z, left = +X), metres.
///
/// An anthropometric adult of about 1.70 m whose proportions follow the SMPL neutral template's
/// joint locations (values rounded to millimetres and made left/right symmetric; derived by
/// hand, not read from a licensed model). Joints 22/23 are the index-finger bases.
pub const REST_JOINTS: [[f32; 3]; NUM_JOINTS] = [
    [0.0, -0.223, 0.028],     // pelvis
    [0.069, -0.315, 0.024],   // left hip
    [-0.069, -0.315, 0.024],  // right hip
    [0.0, -0.110, 0.003],     // spine1
    [0.106, -0.698, 0.014],   // left knee
    [-0.106, -0.698, 0.014],  // right knee
    [0.0, 0.025, 0.003],      // spine2
    [0.090, -1.092, -0.022],  // left ankle
    [-0.090, -1.092, -0.022], // right ankle
    [0.0, 0.078, 0.029],      // spine3
    [0.115, -1.153, 0.099],   // left foot (toe base)
    [-0.115, -1.153, 0.099],  // right foot
    [0.0, 0.294, -0.003],     // neck
    [0.077, 0.218, -0.013],   // left collar
    [-0.077, 0.218, -0.013],  // right collar
    [0.0, 0.385, 0.046],      // head
    [0.159, 0.251, -0.020],   // left shoulder
    [-0.159, 0.251, -0.020],  // right shoulder
    [0.406, 0.236, -0.045],   // left elbow
    [-0.406, 0.236, -0.045],  // right elbow
    [0.659, 0.244, -0.041],   // left wrist
    [-0.659, 0.244, -0.041],  // right wrist
    [0.746, 0.237, -0.054],   // left index1
    [-0.746, 0.237, -0.054],  // right index1
];

/// Height of the soles in the frame of [`REST_JOINTS`] (y, metres): with the foot flat, the
/// ankle joint sits 0.098 m and the toe-base joint 0.037 m above the floor.
pub const REST_SOLE_Y: f32 = -1.190;

/// Leg dimensions used by the gait model (metres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegDims {
    /// Hip to knee.
    pub thigh: f32,
    /// Knee to ankle.
    pub shank: f32,
    /// Horizontal distance from the ankle to the toe base.
    pub toe_lever: f32,
}

/// The rotation taking the SMPL canonical frame (Y up, facing +Z) into the Z-up world with
/// zero yaw: `Rx(+90 deg)`; the body then faces -Y, and yaw `a` turns it to face
/// `(sin a, -cos a)`.
pub fn canonical_to_world() -> [f32; 9] {
    mat3::rot_x(std::f32::consts::FRAC_PI_2)
}

/// A skeleton: rest joints (SMPL parents) and the height of the soles.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSkeleton {
    /// Rest joint positions (canonical frame, metres).
    pub rest: [[f32; 3]; NUM_JOINTS],
    /// Height (y) of the soles in the rest pose, same frame.
    pub sole_y: f32,
}

impl Default for SynthSkeleton {
    fn default() -> Self {
        SynthSkeleton {
            rest: REST_JOINTS,
            sole_y: REST_SOLE_Y,
        }
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

impl SynthSkeleton {
    /// A skeleton with other rest joints (SMPL-H joints 0..21, 22, 37 in the canonical frame)
    /// and sole height `sole_y` (the lowest rest vertex of the body).
    pub fn from_rest_joints(rest: [[f32; 3]; NUM_JOINTS], sole_y: f32) -> Self {
        SynthSkeleton { rest, sole_y }
    }

    /// The skeleton of a body model (SMPL-H layout, e.g. the open body
    /// `assets/open_body/smplh_open.npz`): its rest joints `J_regressor @ v_template` and the
    /// lowest template vertex as the sole height.
    pub fn from_body_model(body: &smpl::BodyModel) -> crate::Result<Self> {
        let joints = body
            .rest_joints()
            .map_err(|e| crate::DataError::Config(e.to_string()))?;
        let (n, _) = joints.dims2()?;
        let ids = smpl::skeleton::RIFKE_JOINTS_FROM_SMPLH;
        if n <= ids[NUM_JOINTS - 1] {
            return Err(crate::DataError::Shape {
                what: "body model rest joints".into(),
                expected: "an SMPL-H layout with at least 38 joints".into(),
                got: vec![n, 3],
            });
        }
        let j = joints.to_dtype(candle::DType::F32)?.to_vec2::<f32>()?;
        let mut rest = [[0.0f32; 3]; NUM_JOINTS];
        for (r, &i) in rest.iter_mut().zip(ids.iter()) {
            *r = [j[i][0], j[i][1], j[i][2]];
        }
        let v = body.v_template().to_dtype(candle::DType::F32)?;
        let sole_y = v.narrow(1, 1, 1)?.min_all()?.to_scalar::<f32>()?;
        Ok(SynthSkeleton { rest, sole_y })
    }

    /// Height of the ankle joint above the floor with the foot flat (mean of both sides).
    pub fn ankle_clearance(&self) -> f32 {
        0.5 * (self.rest[j::L_ANKLE][1] + self.rest[j::R_ANKLE][1]) - self.sole_y
    }

    /// Height of the toe-base joint above the floor with the foot flat.
    pub fn toe_clearance(&self) -> f32 {
        0.5 * (self.rest[j::L_FOOT][1] + self.rest[j::R_FOOT][1]) - self.sole_y
    }

    /// Leg dimensions (left leg).
    pub fn leg_dims(&self) -> LegDims {
        let r = &self.rest;
        LegDims {
            thigh: dist(r[j::L_HIP], r[j::L_KNEE]),
            shank: dist(r[j::L_KNEE], r[j::L_ANKLE]),
            toe_lever: (r[j::L_FOOT][2] - r[j::L_ANKLE][2]).abs(),
        }
    }

    /// Rest offset of joint `i` from its parent.
    fn offset(&self, i: usize) -> [f32; 3] {
        let p = SMPL_PARENTS[i];
        if p < 0 {
            return [0.0; 3];
        }
        let (a, b) = (self.rest[i], self.rest[p as usize]);
        [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
    }

    /// Forward kinematics. `rotations[0]` is the global root orientation, `rotations[1..22]`
    /// the local joint rotations; `root` the pelvis position. Returns the 24 joint positions.
    pub fn forward(
        &self,
        root: [f32; 3],
        rotations: &[[f32; 9]; NUM_ROTATIONS],
    ) -> [[f32; 3]; NUM_JOINTS] {
        let mut global = [mat3::IDENTITY; NUM_JOINTS];
        let mut pos = [[0.0f32; 3]; NUM_JOINTS];
        pos[0] = root;
        global[0] = rotations[0];
        for i in 1..NUM_JOINTS {
            let p = SMPL_PARENTS[i] as usize;
            let o = mat3::apply(&global[p], &self.offset(i));
            pos[i] = [pos[p][0] + o[0], pos[p][1] + o[1], pos[p][2] + o[2]];
            global[i] = if i < NUM_ROTATIONS {
                mat3::mul(&global[p], &rotations[i])
            } else {
                global[p]
            };
        }
        pos
    }
}
