//! Packed shards: the pack reads back identically to the folder, and batches agree.

use candle::Device;
use motion_data::{
    BatchConfig, Batcher, FolderDataset, FolderOptions, MotionSource, PackedDataset, Split,
    pack_folder,
};

use crate::util::{Scratch, write_three};

#[test]
fn pack_round_trips_features_captions_and_text() -> anyhow::Result<()> {
    let dir = Scratch::new("pack");
    let root = dir.path().join("folder");
    let out = dir.path().join("packed");
    write_three(&root, true);
    let written = pack_folder(&root, &out)?;
    assert_eq!(written.len(), 1, "only the train split file exists");
    let folder = FolderDataset::open(&root, Split::Train, &FolderOptions::default())?;
    let packed = PackedDataset::open(&out, Split::Train)?;
    assert_eq!(packed.len(), folder.len());
    assert!(packed.has_text());
    for i in 0..folder.len() {
        assert_eq!(packed.id(i), folder.id(i));
        assert_eq!(packed.frames(i), folder.frames(i));
        assert_eq!(packed.captions(i), folder.captions(i));
        let mut a = vec![0.0; folder.frames(i) * 205];
        let mut b = a.clone();
        folder.copy_frames(i, 0, &mut a)?;
        packed.copy_frames(i, 0, &mut b)?;
        assert_eq!(a, b, "features of {}", folder.id(i));
        for c in 0..folder.captions(i).len() {
            let (mut ta, mut tb) = (Vec::new(), Vec::new());
            assert_eq!(
                folder.text_tokens(i, c, &mut ta)?,
                packed.text_tokens(i, c, &mut tb)?
            );
            assert_eq!(ta, tb);
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            folder.text_pooled(i, c, &mut pa)?;
            packed.text_pooled(i, c, &mut pb)?;
            assert_eq!(pa, pb);
        }
    }
    let cfg = BatchConfig {
        drop_last: false,
        ..BatchConfig::train(2, 6, 9)
    };
    let bf = Batcher::new(&folder, cfg.clone(), Device::Cpu)?;
    let bp = Batcher::new(&packed, cfg, Device::Cpu)?;
    for (x, y) in bf.epoch(1).zip(bp.epoch(1)) {
        let (x, y) = (x?, y?);
        assert_eq!(x.ids, y.ids);
        assert_eq!(x.captions, y.captions);
        let d = (x.motion - y.motion)?
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
    }
    Ok(())
}

#[test]
fn damaged_side_file_is_a_typed_error() -> anyhow::Result<()> {
    let dir = Scratch::new("packbad");
    let root = dir.path().join("folder");
    let out = dir.path().join("packed");
    write_three(&root, false);
    pack_folder(&root, &out)?;
    let json = out.join("train.json");
    let text = std::fs::read_to_string(&json)?;
    // Drop one id: the offsets no longer match the ids.
    let mut index: serde_json::Value = serde_json::from_str(&text)?;
    index["ids"].as_array_mut().expect("ids").pop();
    index["captions"].as_array_mut().expect("captions").pop();
    std::fs::write(&json, serde_json::to_string(&index)?)?;
    let err = PackedDataset::open(&out, Split::Train).expect_err("inconsistent pack");
    assert!(err.to_string().contains("frame_offsets"), "{err}");
    std::fs::write(&json, "{not json")?;
    assert!(PackedDataset::open(&out, Split::Train).is_err());
    Ok(())
}
