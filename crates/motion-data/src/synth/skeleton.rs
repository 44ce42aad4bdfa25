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

/// Floor contact: with the foot flat, the ankle joint sits `ANKLE_CLEARANCE` metres above the
/// floor and the toe-base joint [`TOE_CLEARANCE`] above it (rest sole at y = -1.190 in the frame
/// of [`REST_JOINTS`]).
pub const ANKLE_CLEARANCE: f32 = 0.098;
/// See [`ANKLE_CLEARANCE`].
pub const TOE_CLEARANCE: f32 = 0.037;

/// The rotation taking the SMPL canonical frame (Y up, facing +Z) into the Z-up world with
/// zero yaw: `Rx(+90 deg)`; the body then faces -Y, and yaw `a` turns it to face
/// `(sin a, -cos a)`.
pub fn canonical_to_world() -> [f32; 9] {
    mat3::rot_x(std::f32::consts::FRAC_PI_2)
}

/// A skeleton: rest joints and parents.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSkeleton {
    /// Rest joint positions (canonical frame, metres).
    pub rest: [[f32; 3]; NUM_JOINTS],
}

impl Default for SynthSkeleton {
    fn default() -> Self {
        SynthSkeleton { rest: REST_JOINTS }
    }
}

impl SynthSkeleton {
    /// A skeleton with other rest joints (e.g. `(J_regressor @ v_template)` of a body model,
    /// SMPL-H joints 0..21, 22, 37), in the canonical frame.
    pub fn from_rest_joints(rest: [[f32; 3]; NUM_JOINTS]) -> Self {
        SynthSkeleton { rest }
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
