//! Skeleton tables of SMPL (24 joints) and SMPL-H (52 joints): joint names and parents.
//!
//! SMPL: Loper et al., "SMPL: A Skinned Multi-Person Linear Model", SIGGRAPH Asia 2015.
//! SMPL-H: Romero et al., "Embodied Hands: Modeling and Capturing Hands and Bodies Together",
//! SIGGRAPH Asia 2017. Names follow the `smplx` package's `JOINT_NAMES`; parents are the
//! official `kintree_table` row 0 (`-1` for the root). SMPL-H shares the first 22 joints with
//! SMPL and replaces SMPL's two hand joints by 15 finger joints per hand.

/// Which skeleton a body model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skeleton {
    /// SMPL: 24 joints.
    Smpl,
    /// SMPL-H: 52 joints (22 body + 2 x 15 finger joints).
    SmplH,
}

impl Skeleton {
    /// The skeleton with `n` joints, if any.
    pub fn from_num_joints(n: usize) -> Option<Self> {
        match n {
            24 => Some(Self::Smpl),
            52 => Some(Self::SmplH),
            _ => None,
        }
    }

    /// Number of joints.
    pub fn num_joints(self) -> usize {
        self.names().len()
    }

    /// Joint names, in joint order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::Smpl => &SMPL_JOINT_NAMES,
            Self::SmplH => &SMPLH_JOINT_NAMES,
        }
    }

    /// Parent of each joint (`-1` for the root).
    pub fn parents(self) -> &'static [i32] {
        match self {
            Self::Smpl => &SMPL_PARENTS,
            Self::SmplH => &SMPLH_PARENTS,
        }
    }

    /// Index of the joint called `name`.
    pub fn index_of(self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| *n == name)
    }
}

/// Number of body joints shared by SMPL and SMPL-H (pelvis .. right wrist).
pub const NUM_BODY_JOINTS: usize = 22;

/// SMPL joint names.
pub const SMPL_JOINT_NAMES: [&str; 24] = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
];

/// SMPL parents (`-1` for the root).
pub const SMPL_PARENTS: [i32; 24] = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
];

/// SMPL-H joint names.
pub const SMPLH_JOINT_NAMES: [&str; 52] = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_index1",
    "left_index2",
    "left_index3",
    "left_middle1",
    "left_middle2",
    "left_middle3",
    "left_pinky1",
    "left_pinky2",
    "left_pinky3",
    "left_ring1",
    "left_ring2",
    "left_ring3",
    "left_thumb1",
    "left_thumb2",
    "left_thumb3",
    "right_index1",
    "right_index2",
    "right_index3",
    "right_middle1",
    "right_middle2",
    "right_middle3",
    "right_pinky1",
    "right_pinky2",
    "right_pinky3",
    "right_ring1",
    "right_ring2",
    "right_ring3",
    "right_thumb1",
    "right_thumb2",
    "right_thumb3",
];

/// SMPL-H parents (`-1` for the root).
pub const SMPLH_PARENTS: [i32; 52] = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 22, 23, 20, 25,
    26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 21, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49,
    50,
];

/// The 24 joints of the SMPL-RIFKE representation, as SMPL-H joint indices: SMPL-H joints
/// 0..21, then 22 (`left_index1`) and 37 (`right_index1`) standing in for SMPL's hand joints.
pub const RIFKE_JOINTS_FROM_SMPLH: [usize; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 37,
];

/// The 21 extra "vertex joints" that `smplx` appends to the SMPL-H joints, in its order
/// (nose, right eye, left eye, right ear, left ear, left big toe, left small toe, left heel,
/// right big toe, right small toe, right heel, left thumb/index/middle/ring/pinky tips,
/// right thumb/index/middle/ring/pinky tips). Vertex ids of the 6890-vertex SMPL(-H) mesh.
pub const SMPLH_EXTRA_VERTEX_IDS: [usize; 21] = [
    332, 6260, 2800, 4071, 583, 3216, 3226, 3387, 6617, 6624, 6787, 2746, 2319, 2445, 2556, 2673,
    6191, 5782, 5905, 6016, 6133,
];

/// Names of [`SMPLH_EXTRA_VERTEX_IDS`].
pub const SMPLH_EXTRA_VERTEX_NAMES: [&str; 21] = [
    "nose",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
    "left_thumb",
    "left_index",
    "left_middle",
    "left_ring",
    "left_pinky",
    "right_thumb",
    "right_index",
    "right_middle",
    "right_ring",
    "right_pinky",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_precede_children_and_tables_agree() {
        for sk in [Skeleton::Smpl, Skeleton::SmplH] {
            assert_eq!(sk.names().len(), sk.parents().len());
            assert_eq!(sk.parents()[0], -1);
            for (j, &p) in sk.parents().iter().enumerate().skip(1) {
                assert!(p >= 0 && (p as usize) < j, "{sk:?} joint {j} parent {p}");
            }
        }
        // SMPL and SMPL-H share the 22 body joints.
        assert_eq!(
            SMPL_PARENTS[..NUM_BODY_JOINTS],
            SMPLH_PARENTS[..NUM_BODY_JOINTS]
        );
        assert_eq!(
            SMPL_JOINT_NAMES[..NUM_BODY_JOINTS],
            SMPLH_JOINT_NAMES[..NUM_BODY_JOINTS]
        );
        assert_eq!(Skeleton::SmplH.index_of("right_index1"), Some(37));
        assert_eq!(Skeleton::from_num_joints(52), Some(Skeleton::SmplH));
    }
}
