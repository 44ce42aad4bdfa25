//! The named layout of the 205-d SMPL-RIFKE feature vector (no magic offsets elsewhere).
//!
//! SMPL-RIFKE ("root-invariant features + local kinematics") is the representation of
//! Petrovich et al., "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human Motion
//! Synthesis", ICCV 2023, used by the diffusion-transformer text-to-motion reference.

use std::ops::Range;

/// Named ranges of the per-frame feature vector. [`FeatureLayout::SMPL_RIFKE`] is the 205-d one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureLayout {
    /// Pelvis height z (1).
    pub root_z: Range<usize>,
    /// Pelvis xy velocity in the heading frame; frame 0 holds the absolute xy (2).
    pub vel_root_xy_local: Range<usize>,
    /// Heading (yaw) angular velocity; frame 0 holds the absolute yaw (1).
    pub vel_angles: Range<usize>,
    /// 22 joint rotations as 6D, joint-major (132): joint 0 = root without yaw.
    pub poses_6d_local: Range<usize>,
    /// Joints 1..23 minus the pelvis, xy in the heading frame, joint-major xyz (69).
    pub joints_local: Range<usize>,
    /// Number of skeleton joints encoded (24, pelvis included).
    pub num_joints: usize,
    /// Number of joint rotations encoded (22).
    pub num_rotations: usize,
}

impl FeatureLayout {
    /// The 205-d SMPL-RIFKE layout of the reference (`rifke.json` `layout_205`).
    pub const SMPL_RIFKE: FeatureLayout = FeatureLayout {
        root_z: 0..1,
        vel_root_xy_local: 1..3,
        vel_angles: 3..4,
        poses_6d_local: 4..136,
        joints_local: 136..205,
        num_joints: 24,
        num_rotations: 22,
    };

    /// Total width (205).
    pub const fn dim(&self) -> usize {
        self.joints_local.end
    }

    /// The 6D slot of rotation `joint` (0 = root without yaw).
    pub fn pose_6d(&self, joint: usize) -> Range<usize> {
        let s = self.poses_6d_local.start + 6 * joint;
        s..s + 6
    }

    /// The xyz slot of skeleton joint `joint` (1..num_joints; joint 0, the pelvis, is implicit).
    pub fn joint_local(&self, joint: usize) -> Range<usize> {
        let s = self.joints_local.start + 3 * (joint - 1);
        s..s + 3
    }

    /// Every range with its reference name, in order.
    pub fn named_ranges(&self) -> [(&'static str, Range<usize>); 5] {
        [
            ("root_z", self.root_z.clone()),
            ("vel_root_xy_local", self.vel_root_xy_local.clone()),
            ("vel_angles", self.vel_angles.clone()),
            ("poses_6d_local", self.poses_6d_local.clone()),
            ("joints_local", self.joints_local.clone()),
        ]
    }
}

impl Default for FeatureLayout {
    fn default() -> Self {
        Self::SMPL_RIFKE
    }
}
