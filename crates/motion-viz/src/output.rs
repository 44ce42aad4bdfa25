//! Writing frames: PNG images and animated GIFs, both written atomically (a temporary file in
//! the target directory, renamed over the target once complete).
//!
//! GIF colour quantisation: one global 256-colour palette for the whole animation, learned by
//! NeuQuant (A. Dekker, "Kohonen neural networks for optimal colour quantization", Network:
//! Computation in Neural Systems 5, 1994; the `color_quant` crate) from pixels sampled across all
//! frames; pixels map to it through a lookup table over 6-bit-per-channel colour cells filled on
//! demand from the cells' centres (so the mapping is deterministic). Frames are quantised and
//! LZW-compressed in parallel (rayon), then written in order; each frame after the first holds
//! only the rectangle that changed, unchanged pixels transparent (disposal "keep").

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Result, VizError, invalid};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VizError + '_ {
    move |source| VizError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `write` into a temporary file next to `path`, then renames it over `path`
/// ([`tensor_io::atomic::write_with`]).
pub(crate) fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    tensor_io::atomic::write_with(path, write).map_err(|e| e.into_error(io_err(path)))
}

/// Writes an RGB image as a PNG file.
pub fn write_png(path: impl AsRef<Path>, image: &image::RgbImage) -> Result<()> {
    let path = path.as_ref();
    atomic_write(path, |w| {
        image
            .write_to(w, image::ImageFormat::Png)
            .map_err(|source| VizError::Png {
                path: path.to_path_buf(),
                source,
            })
    })
}

/// The common size of a non-empty frame sequence; errors name the first frame that differs.
pub(crate) fn frame_size(frames: &[image::RgbImage]) -> Result<(u32, u32)> {
    let first = frames
        .first()
        .ok_or_else(|| invalid("frames", "no frames to write"))?;
    let (w, h) = first.dimensions();
    if let Some((i, f)) = frames
        .iter()
        .enumerate()
        .find(|(_, f)| f.dimensions() != (w, h))
    {
        return Err(invalid(
            "frames",
            format!("frame {i} is {:?}, frame 0 is {w}x{h}", f.dimensions()),
        ));
    }
    Ok((w, h))
}

/// Writes frames as a looping animated GIF at `fps` frames per second (GIF stores delays in
/// 1/100 s, so the rate is rounded to that grid). All frames share one 255-colour palette learned
/// from the whole sequence (NeuQuant); after the first, each frame stores only the rectangle
/// that changed, with unchanged pixels transparent over the previous frame. Quantisation and
/// compression run in parallel.
///
/// Errors on an empty sequence, frames of different sizes, frames larger than 65535 pixels a
/// side, or a non-positive `fps`.
pub fn write_gif(path: impl AsRef<Path>, frames: &[image::RgbImage], fps: f32) -> Result<()> {
    let path = path.as_ref();
    let (w, h) = frame_size(frames)?;
    let (w16, h16) = match (u16::try_from(w), u16::try_from(h)) {
        (Ok(a), Ok(b)) if a > 0 && b > 0 => (a, b),
        _ => {
            return Err(invalid(
                "frames",
                format!("{w}x{h}: GIF sides must be in 1..=65535"),
            ));
        }
    };
    if !(fps > 0.0 && fps.is_finite()) {
        return Err(invalid("fps", format!("{fps} must be > 0")));
    }
    let delay = (100.0 / fps).round().clamp(1.0, 65535.0) as u16;
    let gif_err = |source| VizError::Gif {
        path: path.to_path_buf(),
        source,
    };
    let quant = Palette::learn(frames);
    let indexed: Vec<Vec<u8>> = frames
        .par_iter()
        .map_init(
            || vec![UNSET; 1 << 18],
            |lut, img| img.pixels().map(|p| quant.index(lut, p.0)).collect(),
        )
        .collect();
    let (wu, hu) = (usize::from(w16), usize::from(h16));
    let encoded: Vec<gif::Frame<'static>> = (0..indexed.len())
        .into_par_iter()
        .map(|k| {
            let mut frame = match k.checked_sub(1).map(|j| &indexed[j]) {
                None => gif::Frame::from_indexed_pixels(w16, h16, indexed[0].clone(), None),
                Some(prev) => changed_part(prev, &indexed[k], wu, hu),
            };
            frame.delay = delay;
            frame.dispose = gif::DisposalMethod::Keep;
            frame.make_lzw_pre_encoded();
            frame
        })
        .collect();
    atomic_write(path, |out| {
        let mut enc = gif::Encoder::new(out, w16, h16, &quant.rgb).map_err(gif_err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
        for frame in &encoded {
            enc.write_lzw_pre_encoded_frame(frame).map_err(gif_err)?;
        }
        Ok(())
    })
}

/// Palette index that marks "unchanged, keep the previous frame's pixel" (the palette has 255
/// colours, so it is free).
const TRANSPARENT: u8 = 255;

/// The part of `cur` that differs from `prev` (both `w x h` palette indices): the bounding
/// rectangle of the changed pixels, with unchanged pixels inside it transparent. An unchanged
/// frame becomes one transparent pixel (the frame is still needed for its delay).
fn changed_part(prev: &[u8], cur: &[u8], w: usize, h: usize) -> gif::Frame<'static> {
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        let (a, b) = (&prev[y * w..(y + 1) * w], &cur[y * w..(y + 1) * w]);
        if let Some(first) = a.iter().zip(b).position(|(p, q)| p != q) {
            let last = w
                - 1
                - a.iter()
                    .rev()
                    .zip(b.iter().rev())
                    .position(|(p, q)| p != q)
                    .unwrap_or(0);
            x0 = x0.min(first);
            x1 = x1.max(last + 1);
            y0 = y0.min(y);
            y1 = y + 1;
        }
    }
    if x1 <= x0 {
        return gif::Frame::from_indexed_pixels(1, 1, vec![TRANSPARENT], Some(TRANSPARENT));
    }
    let mut buf = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        let (a, b) = (&prev[y * w + x0..y * w + x1], &cur[y * w + x0..y * w + x1]);
        buf.extend(
            a.iter()
                .zip(b)
                .map(|(p, q)| if p == q { TRANSPARENT } else { *q }),
        );
    }
    // Sides fit in u16: they are at most the frame's.
    let mut frame =
        gif::Frame::from_indexed_pixels((x1 - x0) as u16, (y1 - y0) as u16, buf, Some(TRANSPARENT));
    frame.left = x0 as u16;
    frame.top = y0 as u16;
    frame
}

/// Marks a lookup-table cell not computed yet.
const UNSET: u8 = 0;
/// Lookup-table cells store `palette index + 1`, so 0 can mean "unset".
const LUT_OFFSET: u8 = 1;

/// A global palette and the quantiser that maps colours to it.
struct Palette {
    nq: color_quant::NeuQuant,
    /// `[r, g, b]` per entry, as the GIF global colour table.
    rgb: Vec<u8>,
}

impl Palette {
    /// Pixels sampled for training: about this many in total, from every frame.
    const SAMPLES: usize = 600_000;

    /// Learns up to 255 colours from pixels of all frames (NeuQuant, sampling factor 10).
    fn learn(frames: &[image::RgbImage]) -> Self {
        let total: usize = frames.iter().map(|f| f.pixels().len()).sum();
        let step = total.div_ceil(Self::SAMPLES).max(1);
        let mut rgba = Vec::with_capacity(4 * (total / step + 1));
        for p in frames.iter().flat_map(|f| f.pixels()).step_by(step) {
            rgba.extend_from_slice(&[p.0[0], p.0[1], p.0[2], 255]);
        }
        // 255 colours: the lookup table stores index + 1 in a byte.
        let nq = color_quant::NeuQuant::new(10, 255, &rgba);
        let rgb = nq.color_map_rgb();
        Self { nq, rgb }
    }

    /// The palette index of `c`, through `lut` (`1 << 18` cells of 6 bits per channel).
    fn index(&self, lut: &mut [u8], c: [u8; 3]) -> u8 {
        let key =
            (usize::from(c[0] >> 2) << 12) | (usize::from(c[1] >> 2) << 6) | usize::from(c[2] >> 2);
        let v = lut[key];
        if v != UNSET {
            return v - LUT_OFFSET;
        }
        // The cell's centre decides, so every thread maps a colour the same way.
        let centre = [c[0] & !3 | 2, c[1] & !3 | 2, c[2] & !3 | 2, 255];
        let i = self.nq.index_of(&centre).min(254) as u8;
        lut[key] = i + LUT_OFFSET;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("motion-viz-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir.join(name)
    }

    #[test]
    fn png_round_trips() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut img = image::RgbImage::new(5, 3);
        img.put_pixel(4, 2, image::Rgb([10, 20, 30]));
        let p = scratch("a.png");
        write_png(&p, &img)?;
        let back = image::open(&p)?.to_rgb8();
        assert_eq!(back, img);
        std::fs::remove_file(&p)?;
        Ok(())
    }

    #[test]
    fn gif_has_every_frame() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let frames: Vec<_> = (0..3u8)
            .map(|k| image::RgbImage::from_pixel(6, 4, image::Rgb([k * 100, 0, 0])))
            .collect();
        let p = scratch("a.gif");
        write_gif(&p, &frames, 20.0)?;
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(File::open(&p)?)?;
        let mut n = 0;
        while let Some(f) = dec.read_next_frame()? {
            assert_eq!((f.width, f.height, f.delay), (6, 4, 5));
            n += 1;
        }
        assert_eq!(n, 3);
        std::fs::remove_file(&p)?;
        assert!(write_gif(&p, &[], 20.0).is_err());
        let odd = [frames[0].clone(), image::RgbImage::new(3, 3)];
        assert!(write_gif(&p, &odd, 20.0).is_err());
        Ok(())
    }

    /// Decodes a GIF into full RGB frames, compositing partial frames over the previous one.
    fn decode_composited(
        path: &Path,
    ) -> std::result::Result<Vec<image::RgbImage>, Box<dyn std::error::Error>> {
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(File::open(path)?)?;
        let (w, h) = (u32::from(dec.width()), u32::from(dec.height()));
        let mut canvas = image::RgbImage::new(w, h);
        let mut out = Vec::new();
        while let Some(f) = dec.read_next_frame()? {
            for (i, px) in f.buffer.chunks_exact(4).enumerate() {
                if px[3] != 0 {
                    let x = u32::from(f.left) + i as u32 % u32::from(f.width);
                    let y = u32::from(f.top) + i as u32 / u32::from(f.width);
                    canvas.put_pixel(x, y, image::Rgb([px[0], px[1], px[2]]));
                }
            }
            out.push(canvas.clone());
        }
        Ok(out)
    }

    #[test]
    fn gif_round_trips_smooth_frames_with_partial_updates()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        // What rendered frames hold: a grey background gradient (top half), a Lambert-shaded
        // blue ramp (bottom half), a moving orange square, and a repeated (unchanged) frame.
        let frame = |k: u32| {
            image::RgbImage::from_fn(40, 30, |x, y| {
                if (x + 30 - 2 * k) / 10 == 3 && y / 10 == 1 {
                    image::Rgb([230, 90, 40])
                } else if y < 15 {
                    let g = (200 + 3 * y) as u8;
                    image::Rgb([g, g, g + 8])
                } else {
                    let i = 0.3 + 0.7 * x as f32 / 39.0;
                    image::Rgb([112.0 * i, 150.0 * i, 214.0 * i].map(|c| c as u8))
                }
            })
        };
        let frames = vec![frame(0), frame(1), frame(2), frame(2), frame(3)];
        let p = scratch("smooth.gif");
        write_gif(&p, &frames, 10.0)?;
        let back = decode_composited(&p)?;
        std::fs::remove_file(&p)?;
        assert_eq!(back.len(), frames.len());
        for (k, (a, b)) in frames.iter().zip(&back).enumerate() {
            let diffs: Vec<i32> = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            let max = diffs.iter().copied().max().unwrap_or(0);
            assert!(mean < 3.0 && max <= 16, "frame {k}: mean {mean}, max {max}");
        }
        Ok(())
    }

    #[test]
    fn gif_frames_after_the_first_hold_only_what_changed() {
        let (w, h) = (8, 6);
        let prev = vec![3u8; w * h];
        let mut cur = prev.clone();
        cur[2 * w + 5] = 7;
        cur[4 * w + 3] = 9;
        let f = changed_part(&prev, &cur, w, h);
        assert_eq!((f.left, f.top, f.width, f.height), (3, 2, 3, 3));
        assert_eq!(f.transparent, Some(TRANSPARENT));
        assert_eq!(f.buffer[2], 7);
        assert_eq!(f.buffer[6], 9);
        assert_eq!(f.buffer.iter().filter(|&&i| i == TRANSPARENT).count(), 7);
        let same = changed_part(&prev, &prev, w, h);
        assert_eq!(
            (same.width, same.height, &same.buffer[..]),
            (1, 1, &[TRANSPARENT][..])
        );
    }

    #[test]
    fn missing_directory_names_the_path() {
        let p = scratch("no/such/dir/x.png");
        let err = write_png(&p, &image::RgbImage::new(1, 1));
        match err {
            Err(VizError::Io { path, .. }) => assert!(path.to_string_lossy().contains("no/such")),
            other => panic!("expected an Io error, got {other:?}"),
        }
    }
}
