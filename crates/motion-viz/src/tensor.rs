//! Bridges from candle tensors (what `smpl` and `motion-repr` produce) to the plain arrays the
//! renderer draws.

use candle::{DType, Tensor};

use crate::error::{Result, VizError, invalid};
use crate::math::Vec3;

fn terr(what: &'static str) -> impl FnOnce(candle::Error) -> VizError {
    move |source| VizError::Tensor { what, source }
}

/// `[N, 3]` float tensor (any float dtype, any device) to points.
pub fn points_from_tensor(t: &Tensor) -> Result<Vec<Vec3>> {
    let dims = t.dims();
    if dims.len() != 2 || dims[1] != 3 {
        return Err(invalid(
            "points tensor",
            format!("shape {dims:?}, expected [N, 3]"),
        ));
    }
    let rows: Vec<Vec<f32>> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.to_vec2())
        .map_err(terr("points"))?;
    Ok(rows.into_iter().map(|r| [r[0], r[1], r[2]]).collect())
}

/// `[F, 3]` integer tensor (u8/u32/i64) of vertex indices to faces.
pub fn faces_from_tensor(t: &Tensor) -> Result<Vec<[u32; 3]>> {
    let dims = t.dims();
    if dims.len() != 2 || dims[1] != 3 {
        return Err(invalid(
            "faces tensor",
            format!("shape {dims:?}, expected [F, 3]"),
        ));
    }
    let rows: Vec<Vec<i64>> = t
        .to_dtype(DType::I64)
        .and_then(|t| t.to_vec2())
        .map_err(terr("faces"))?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut out = [0u32; 3];
            for (o, &v) in out.iter_mut().zip(&r) {
                *o = u32::try_from(v)
                    .map_err(|_| invalid("faces tensor", format!("face {i} has index {v}")))?;
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn tensors_convert_and_bad_shapes_fail() -> Result<()> {
        let d = Device::Cpu;
        let p = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &d).map_err(terr("t"))?;
        assert_eq!(points_from_tensor(&p)?, vec![[1., 2., 3.], [4., 5., 6.]]);
        let f = Tensor::new(&[[0u32, 1, 2]], &d).map_err(terr("t"))?;
        assert_eq!(faces_from_tensor(&f)?, vec![[0, 1, 2]]);
        let neg = Tensor::new(&[[0i64, -1, 2]], &d).map_err(terr("t"))?;
        assert!(faces_from_tensor(&neg).is_err());
        let flat = Tensor::new(&[1f32, 2., 3.], &d).map_err(terr("t"))?;
        assert!(points_from_tensor(&flat).is_err());
        Ok(())
    }
}
