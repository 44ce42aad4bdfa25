//! `.npy` export: read back with `npyz`, header version 1.0, C order.

use anyhow::{Result, bail};
use candle::{Device, Tensor};
use motion_export::{ExportError, write_npy_f32, write_tensor_npy};

use crate::common::{files_in, temp_dir};

fn read(path: &std::path::Path) -> Result<(Vec<u64>, Vec<f32>, Vec<u8>)> {
    let bytes = std::fs::read(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    assert_eq!(npy.order(), npyz::Order::C);
    let shape = npy.shape().to_vec();
    let data = npy.into_vec::<f32>()?;
    Ok((shape, data, bytes))
}

#[test]
fn npy_round_trip_keeps_shape_values_and_writes_format_1_0_float32() -> Result<()> {
    let dir = temp_dir("npy")?;
    let path = dir.join("a.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_npy_f32(&path, &data, &[2, 3, 4])?;
    let (shape, back, bytes) = read(&path)?;
    assert_eq!(shape, [2, 3, 4]);
    assert_eq!(back, data);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header = String::from_utf8_lossy(&bytes[10..]);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert_eq!(files_in(&dir)?, ["a.npy"]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn tensor_npy_writes_the_logical_c_order_of_a_strided_tensor() -> Result<()> {
    let dir = temp_dir("tensor-npy")?;
    let path = dir.join("t.npy");
    let t = Tensor::arange(0f32, 6.0, &Device::Cpu)?
        .reshape((2, 3))?
        .t()?;
    write_tensor_npy(&path, &t)?;
    let (shape, back, _) = read(&path)?;
    assert_eq!(shape, [3, 2]);
    assert_eq!(back, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // Other dtypes are converted to float32.
    let ints = Tensor::new(&[1u32, 2, 3], &Device::Cpu)?;
    write_tensor_npy(&path, &ints)?;
    assert_eq!(read(&path)?.1, [1.0, 2.0, 3.0]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn npy_refuses_data_that_does_not_fill_the_shape_and_writes_nothing() -> Result<()> {
    let dir = temp_dir("npy-bad")?;
    match write_npy_f32(dir.join("x.npy"), &[1.0, 2.0, 3.0], &[2, 2]) {
        Err(ExportError::Shape { got, .. }) => assert_eq!(got, [3]),
        other => bail!("expected a shape error, got {other:?}"),
    }
    assert!(files_in(&dir)?.is_empty());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
