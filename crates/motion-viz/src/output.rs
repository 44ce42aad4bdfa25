//! Writing frames: PNG images and animated GIFs, both written atomically (a temporary file in
//! the target directory, renamed over the target once complete).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, VizError, invalid};

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VizError + '_ {
    move |source| VizError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `write` into a temporary file next to `path`, then renames it over `path`.
fn atomic_write(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
        write(&mut w)?;
        w.flush().map_err(io_err(&tmp))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist; the original error is what matters.
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// Writes frames as a looping animated GIF at `fps` frames per second (GIF stores delays in
/// 1/100 s, so the rate is rounded to that grid). Each frame gets its own 256-colour palette
/// (NeuQuant quantisation).
///
/// Errors on an empty sequence, frames of different sizes, frames larger than 65535 pixels a
/// side, or a non-positive `fps`.
pub fn write_gif(path: impl AsRef<Path>, frames: &[image::RgbImage], fps: f32) -> Result<()> {
    let path = path.as_ref();
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
    let (w16, h16) = match (u16::try_from(w), u16::try_from(h)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return Err(invalid(
                "frames",
                format!("{w}x{h} exceeds GIF's 65535 limit"),
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
    atomic_write(path, |out| {
        let mut enc = gif::Encoder::new(out, w16, h16, &[]).map_err(gif_err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
        for img in frames {
            let mut frame = gif::Frame::from_rgb_speed(w16, h16, img.as_raw(), 10);
            frame.delay = delay;
            enc.write_frame(&frame).map_err(gif_err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
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
