//! Batches on the hand-built 3-sample folder: shapes, masks, normalisation, caption choice,
//! token padding, determinism.

use candle::Device;
use motion_data::{
    BatchConfig, BatchMode, Batcher, FEATURE_DIM, FolderDataset, FolderOptions, MAX_TEXT_TOKENS,
    Split, TEXT_DIM,
};

use crate::util::{SAMPLES, Scratch, feat, tok, write_three};

/// (ids, crop starts, caption indices, flattened motion) of one batch.
type Summary = (Vec<String>, Vec<usize>, Vec<usize>, Vec<f32>);

fn open(with_text: bool) -> (Scratch, FolderDataset) {
    let dir = Scratch::new("batches");
    write_three(dir.path(), with_text);
    let data =
        FolderDataset::open(dir.path(), Split::Train, &FolderOptions::default()).expect("open");
    (dir, data)
}

#[test]
fn eval_batch_crops_pads_masks_and_normalises() -> anyhow::Result<()> {
    let (_dir, data) = open(true);
    let f = 6;
    let mean: Vec<f32> = (0..FEATURE_DIM).map(|j| j as f32).collect();
    let std: Vec<f32> = (0..FEATURE_DIM).map(|j| 1.0 + (j % 4) as f32).collect();
    let batcher = Batcher::new(&data, BatchConfig::eval(8, f), Device::Cpu)?
        .with_stats(mean.clone(), std.clone())?;
    let batches: Vec<_> = batcher.epoch(0).collect::<Result<_, _>>()?;
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.ids, vec!["a000", "b001", "c002"]);
    assert_eq!(b.motion.dims(), &[3, f, FEATURE_DIM]);
    assert_eq!(b.frame_mask.dims(), &[3, f]);
    // 10, 4 and 7 frames -> valid lengths 6, 4, 6.
    assert_eq!(b.lengths, vec![6, 4, 6]);
    let mask = b.frame_mask.to_vec2::<f32>()?;
    for (s, &len) in b.lengths.iter().enumerate() {
        for t in 0..f {
            assert_eq!(mask[s][t], if t < len { 1.0 } else { 0.0 }, "mask {s} {t}");
        }
    }
    let motion = b.motion.to_vec3::<f32>()?;
    for s in 0..3 {
        for t in 0..f {
            for j in 0..FEATURE_DIM {
                let want = if t < b.lengths[s] {
                    (feat(s, t, j) - mean[j]) / std[j]
                } else {
                    0.0
                };
                assert_eq!(motion[s][t][j], want, "motion {s} {t} {j}");
            }
        }
    }
    // Evaluation: first caption, crop from frame 0.
    assert_eq!(b.caption_indices, vec![0, 0, 0]);
    assert_eq!(b.crop_starts, vec![0, 0, 0]);
    assert_eq!(b.captions[2], "a man sits down");
    let text = b.text.as_ref().expect("text features");
    assert_eq!(text.tokens.dims(), &[3, MAX_TEXT_TOKENS, TEXT_DIM]);
    assert_eq!(text.token_lengths, vec![5, 4, 6]);
    let tm = text.token_mask.to_vec2::<f32>()?;
    let tokens = text.tokens.to_vec3::<f32>()?;
    for s in 0..3 {
        let l = text.token_lengths[s];
        assert_eq!(tm[s].iter().sum::<f32>(), l as f32);
        assert!(tm[s][..l].iter().all(|&v| v == 1.0));
        assert_eq!(tokens[s][l - 1][3], tok(s, 0, l - 1, 3));
        assert!(tokens[s][l..].iter().flatten().all(|&v| v == 0.0));
    }
    let pooled = text.pooled.to_vec2::<f32>()?;
    assert_eq!(pooled[1][9], -tok(1, 0, 0, 9));
    Ok(())
}

#[test]
fn train_batches_are_reproducible_and_per_sample() -> anyhow::Result<()> {
    let (_dir, data) = open(true);
    let cfg = BatchConfig {
        drop_last: false,
        ..BatchConfig::train(2, 5, 42)
    };
    let run = |cfg: &BatchConfig, epoch| -> anyhow::Result<Vec<Summary>> {
        let batcher = Batcher::new(&data, cfg.clone(), Device::Cpu)?;
        batcher
            .epoch(epoch)
            .map(|b| {
                let b = b?;
                Ok((
                    b.ids,
                    b.crop_starts,
                    b.caption_indices,
                    b.motion.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    };
    let first = run(&cfg, 3)?;
    assert_eq!(first, run(&cfg, 3)?, "same seed and epoch, same batches");
    assert_eq!(first.len(), 2, "3 samples in batches of 2 -> 2 batches");
    // Crops stay inside each motion and the copied frames are the source frames.
    for (ids, starts, caps, motion) in &first {
        for (row, id) in ids.iter().enumerate() {
            let s = SAMPLES.iter().position(|x| x.0 == id).expect("known id");
            let frames = SAMPLES[s].1;
            assert!(starts[row] + 5.min(frames) <= frames);
            assert!(caps[row] < SAMPLES[s].2.len());
            assert_eq!(motion[row * 5 * FEATURE_DIM + 7], feat(s, starts[row], 7));
        }
    }
    // Over several epochs, the shuffled order, crops and captions do change.
    let epochs: Vec<_> = (0..8).map(|e| run(&cfg, e)).collect::<Result<_, _>>()?;
    assert!(
        epochs.iter().any(|e| e[0].0 != epochs[0][0].0),
        "order never changes"
    );
    assert!(
        epochs
            .iter()
            .any(|e| e.iter().any(|b| b.1.iter().any(|&s| s > 0))),
        "crop start never moves"
    );
    // A sample's choices do not depend on its batch neighbours.
    let batcher = Batcher::new(&data, cfg.clone(), Device::Cpu)?;
    let alone = batcher.batch(&[2], 5)?;
    let mixed = batcher.batch(&[0, 2, 1], 5)?;
    assert_eq!(alone.crop_starts[0], mixed.crop_starts[1]);
    assert_eq!(alone.caption_indices[0], mixed.caption_indices[1]);
    Ok(())
}

#[test]
fn bad_statistics_and_configs_are_rejected() {
    let (_dir, data) = open(false);
    assert!(Batcher::new(&data, BatchConfig::eval(0, 4), Device::Cpu).is_err());
    let b = Batcher::new(&data, BatchConfig::eval(2, 4), Device::Cpu).expect("batcher");
    let mut std = vec![1.0f32; FEATURE_DIM];
    std[17] = 0.0;
    let err = b
        .with_stats(vec![0.0; FEATURE_DIM], std)
        .expect_err("zero std");
    assert!(err.to_string().contains("std[17]"), "{err}");
    let b = Batcher::new(&data, BatchConfig::eval(2, 4), Device::Cpu).expect("batcher");
    assert!(b.with_stats(vec![0.0; 3], vec![1.0; 3]).is_err());
}

#[test]
fn folder_without_clip_gives_no_text_batch() -> anyhow::Result<()> {
    let (_dir, data) = open(false);
    let cfg = BatchConfig {
        mode: BatchMode::Eval,
        ..BatchConfig::eval(3, 12)
    };
    let b = Batcher::new(&data, cfg, Device::Cpu)?.batch(&[0, 1, 2], 0)?;
    assert!(b.text.is_none());
    assert_eq!(b.lengths, vec![10, 4, 7]);
    Ok(())
}

#[test]
fn normalizer_matches_its_own_tensor_normalisation() -> anyhow::Result<()> {
    let (_dir, data) = open(false);
    let mean: Vec<f32> = (0..FEATURE_DIM).map(|j| 0.5 * j as f32).collect();
    let std: Vec<f32> = (0..FEATURE_DIM).map(|j| 0.25 + (j % 7) as f32).collect();
    let n = motion_repr::Normalizer::new(
        candle::Tensor::new(mean.as_slice(), &Device::Cpu)?,
        candle::Tensor::new(std.as_slice(), &Device::Cpu)?,
    )?;
    let b = Batcher::new(&data, BatchConfig::eval(3, 4), Device::Cpu)?
        .with_normalizer(&n)?
        .batch(&[0, 1, 2], 0)?;
    let raw = Batcher::new(&data, BatchConfig::eval(3, 4), Device::Cpu)?.batch(&[0, 1, 2], 0)?;
    let want = n.normalize(&raw.motion)?;
    let diff = (b.motion - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "same float32 formula (x - mean) / std");
    Ok(())
}
