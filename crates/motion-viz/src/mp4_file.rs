//! MP4 (H.264) output without ffmpeg: frames are encoded with Cisco's OpenH264 (the `openh264`
//! crate, which compiles the bundled C++ sources; the `mp4` cargo feature, on by default) and
//! muxed by a small ISO base media file writer (ISO/IEC 14496-12 boxes, the `avc1` sample entry
//! and `avcC` record of ISO/IEC 14496-15).
//!
//! The file is "fast start": `ftyp`, then `moov` (all sample tables), then one `mdat` holding the
//! samples as one chunk, so players and browsers can start before the whole file arrives. Frames
//! are converted to YUV 4:2:0 with OpenH264's BT.601 limited-range matrix and the stream says so
//! in its VUI. Rate control is off (constant QP 26; ~36.5 dB PSNR on rendered motions). H.264
//! needs even sizes: an odd width or height is padded by repeating the last
//! column or row, and so is a side under 16 pixels (OpenH264's minimum) up to 16; the track
//! reports the padded size.

use std::path::Path;

use crate::error::{Result, VizError, invalid};

/// Encodes `frames` as an H.264 MP4 at `fps` frames per second and writes it atomically
/// (temporary file + rename: no partial file on error).
///
/// Frames are RGB, all of one size, at most 3840 x 2160 (either way round); odd sides and sides
/// under 16 pixels are padded by repeating the last column / row. `fps` is in `(0, 1000]`.
///
/// Errors on an empty sequence, frames of different sizes or out of range, a bad `fps`, an
/// encoder failure, or when motion-viz was built without its `mp4` feature
/// ([`VizError::FeatureDisabled`]).
pub fn write_mp4(path: impl AsRef<Path>, frames: &[image::RgbImage], fps: f32) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_mp4(frames, fps)?;
    crate::output::atomic_write(path, |w| {
        use std::io::Write;
        w.write_all(&bytes).map_err(|source| VizError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// [`write_mp4`] into memory: the bytes of the MP4 file.
pub fn encode_mp4(frames: &[image::RgbImage], fps: f32) -> Result<Vec<u8>> {
    let (w, h) = check_frames(frames, fps)?;
    encode(frames, w, h, fps)
}

fn check_frames(frames: &[image::RgbImage], fps: f32) -> Result<(u32, u32)> {
    let (w, h) = crate::output::frame_size(frames)?;
    // OpenH264 supports H.264 up to level 5.2: at most 3840 x 2160 either way round.
    if w == 0 || h == 0 || w.max(h) > 3840 || w.min(h) > 2160 {
        return Err(invalid(
            "frames",
            format!("{w}x{h}: MP4 output supports 1x1 up to 3840x2160 (or 2160x3840)"),
        ));
    }
    if !(fps > 0.0 && fps <= 1000.0) {
        return Err(invalid("fps", format!("{fps} must be in (0, 1000]")));
    }
    Ok((w, h))
}

#[cfg(not(feature = "mp4"))]
fn encode(_: &[image::RgbImage], _: u32, _: u32, _: f32) -> Result<Vec<u8>> {
    Err(VizError::FeatureDisabled {
        what: "MP4 output",
        feature: "mp4",
        hint: "it is a default feature; depend on motion-viz with default features, or add \
               `features = [\"mp4\"]` (command line: `--features motion-viz/mp4`)",
    })
}

#[cfg(feature = "mp4")]
fn encode(frames: &[image::RgbImage], w: u32, h: u32, fps: f32) -> Result<Vec<u8>> {
    use openh264::OpenH264API;
    use openh264::encoder::{
        BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
        VuiConfig,
    };
    use openh264::formats::{RgbSliceU8, YUVBuffer};

    let venc = |e: openh264::Error| VizError::Video {
        detail: format!("OpenH264: {e}"),
    };
    let (ew, eh) = (padded_side(w), padded_side(h));
    // Rate control off: every frame at OpenH264's layer QP (26), no frame is ever skipped, and
    // the encoder prints nothing (with rate control on and skipping off it warns on stderr).
    // The walk at 480 x 480 decodes at ~36.5 dB PSNR, ~1 Mbit/s at 20 fps. The bit rate
    // below only sizes the encoder's buffers (~0.25 bit per pixel).
    let bps = (ew as f32 * eh as f32 * fps * 0.25).clamp(300_000.0, 60_000_000.0) as u32;
    // A key frame every 2 s, for seeking.
    let keyint = (2.0 * fps).round().max(1.0) as u32;
    let config = EncoderConfig::new()
        .skip_frames(false)
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(fps))
        .rate_control_mode(RateControlMode::Off)
        .complexity(Complexity::High)
        .intra_frame_period(IntraFramePeriod::from_num_frames(keyint))
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(venc)?;

    let timing = mux::Timing::for_fps(fps);
    let mut params = mux::ParameterSets::default();
    let mut samples: Vec<mux::Sample> = Vec::with_capacity(frames.len());
    let mut padded = Vec::new();
    for (i, img) in frames.iter().enumerate() {
        let rgb: &[u8] = if (ew, eh) == (w, h) {
            img.as_raw()
        } else {
            pad(img, ew, eh, &mut padded);
            &padded
        };
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (ew as usize, eh as usize)));
        let ms = (i as f64 * 1000.0 / fps as f64).round() as u64;
        let bs = encoder
            .encode_at(&yuv, openh264::Timestamp::from_millis(ms))
            .map_err(venc)?;
        let mut sample = mux::Sample {
            data: Vec::new(),
            sync: false,
            duration: timing.delta,
        };
        for l in 0..bs.num_layers() {
            let Some(layer) = bs.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                if let Some(nal) = layer.nal_unit(n) {
                    mux::add_annex_b_nal(nal, &mut sample, &mut params);
                }
            }
        }
        if sample.data.is_empty() {
            // A skipped frame: the previous picture stays up one frame longer.
            match samples.last_mut() {
                Some(prev) => prev.duration += timing.delta,
                None => {
                    return Err(VizError::Video {
                        detail: "OpenH264 produced no picture for frame 0".into(),
                    });
                }
            }
        } else {
            samples.push(sample);
        }
    }
    mux::mp4_bytes(ew, eh, &params, &samples, timing.timescale)
}

/// The encoded size of a side: even and at least 16.
#[cfg(feature = "mp4")]
fn padded_side(n: u32) -> u32 {
    (n + (n & 1)).max(16)
}

/// Copies `img` into `out` at `ew x eh` (not smaller), repeating the last column and row.
#[cfg(feature = "mp4")]
fn pad(img: &image::RgbImage, ew: u32, eh: u32, out: &mut Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ew, eh) = (ew as usize, eh as usize);
    out.clear();
    out.reserve(ew * eh * 3);
    let raw = img.as_raw();
    for y in 0..eh {
        let r = y.min(h - 1);
        let row = &raw[r * w * 3..(r + 1) * w * 3];
        out.extend_from_slice(row);
        for _ in w..ew {
            out.extend_from_slice(&row[(w - 1) * 3..]);
        }
    }
}

/// The ISO BMFF writer: just the boxes a single H.264 video track needs.
#[cfg(feature = "mp4")]
pub(crate) mod mux {
    use crate::error::{Result, VizError};

    /// One access unit: length-prefixed NAL units (4-byte big-endian lengths).
    #[derive(Debug, Clone)]
    pub struct Sample {
        pub data: Vec<u8>,
        /// Contains an IDR picture.
        pub sync: bool,
        /// Duration in media timescale units.
        pub duration: u32,
    }

    /// The first sequence and picture parameter sets seen in the stream.
    #[derive(Debug, Clone, Default)]
    pub struct ParameterSets {
        pub sps: Option<Vec<u8>>,
        pub pps: Option<Vec<u8>>,
    }

    /// Media timescale and per-frame delta: `timescale / delta = fps` to 1/1000 frame.
    #[derive(Debug, Clone, Copy)]
    pub struct Timing {
        pub timescale: u32,
        pub delta: u32,
    }

    impl Timing {
        pub fn for_fps(fps: f32) -> Self {
            Self {
                timescale: (f64::from(fps) * 1000.0).round().max(1.0) as u32,
                delta: 1000,
            }
        }
    }

    /// Adds one Annex B NAL unit (with or without its start code) to `sample`, moving SPS / PPS
    /// into `params` (they go in the `avcC` record, not the samples).
    pub fn add_annex_b_nal(nal: &[u8], sample: &mut Sample, params: &mut ParameterSets) {
        let body = strip_start_code(nal);
        let Some(&head) = body.first() else { return };
        match head & 0x1f {
            7 => {
                params.sps.get_or_insert_with(|| body.to_vec());
            }
            8 => {
                params.pps.get_or_insert_with(|| body.to_vec());
            }
            // Access unit delimiters and filler data carry nothing a player needs.
            9 | 12 => {}
            t => {
                if t == 5 {
                    sample.sync = true;
                }
                sample
                    .data
                    .extend_from_slice(&(body.len() as u32).to_be_bytes());
                sample.data.extend_from_slice(body);
            }
        }
    }

    fn strip_start_code(nal: &[u8]) -> &[u8] {
        if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
            rest
        } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
            rest
        } else {
            nal
        }
    }

    /// Appends a box: 32-bit size, type, then whatever `body` writes.
    fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(kind);
        body(out);
        let size = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// A full box: a box whose body starts with version (8 bits) and flags (24 bits).
    fn full(
        out: &mut Vec<u8>,
        kind: &[u8; 4],
        version: u8,
        flags: u32,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        bx(out, kind, |o| {
            o.extend_from_slice(&((u32::from(version) << 24) | (flags & 0xff_ffff)).to_be_bytes());
            body(o);
        });
    }

    fn u16be(o: &mut Vec<u8>, v: u16) {
        o.extend_from_slice(&v.to_be_bytes());
    }

    fn u32be(o: &mut Vec<u8>, v: u32) {
        o.extend_from_slice(&v.to_be_bytes());
    }

    fn u64be(o: &mut Vec<u8>, v: u64) {
        o.extend_from_slice(&v.to_be_bytes());
    }

    /// The unity transformation matrix of `mvhd` / `tkhd` (16.16 and 2.30 fixed point).
    fn matrix(o: &mut Vec<u8>) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            u32be(o, v);
        }
    }

    /// The whole file: `ftyp`, `moov`, `mdat`.
    pub fn mp4_bytes(
        width: u32,
        height: u32,
        params: &ParameterSets,
        samples: &[Sample],
        timescale: u32,
    ) -> Result<Vec<u8>> {
        let (Some(sps), Some(pps)) = (&params.sps, &params.pps) else {
            return Err(VizError::Video {
                detail: "the H.264 stream has no SPS/PPS".into(),
            });
        };
        if sps.len() < 4 {
            return Err(VizError::Video {
                detail: format!("SPS of {} bytes is too short", sps.len()),
            });
        }
        let media_duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        // Movie timescale: milliseconds.
        let movie_duration =
            (media_duration * 1000 + u64::from(timescale) / 2) / u64::from(timescale);
        let payload: u64 = samples.iter().map(|s| s.data.len() as u64).sum();

        let mut ftyp = Vec::new();
        bx(&mut ftyp, b"ftyp", |o| {
            o.extend_from_slice(b"isom");
            u32be(o, 0x200);
            for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
                o.extend_from_slice(brand);
            }
        });
        // moov's size does not depend on the chunk offset's value, only on its width.
        let large = payload + 16 + ftyp.len() as u64 + 1_000_000 > u64::from(u32::MAX);
        let mdat_header: u64 = if large { 16 } else { 8 };
        let probe = moov(
            width,
            height,
            sps,
            pps,
            samples,
            timescale,
            media_duration,
            movie_duration,
            0,
            large,
        );
        let offset = ftyp.len() as u64 + probe.len() as u64 + mdat_header;
        let moov = moov(
            width,
            height,
            sps,
            pps,
            samples,
            timescale,
            media_duration,
            movie_duration,
            offset,
            large,
        );

        let mut out = Vec::with_capacity(offset as usize + payload as usize);
        out.extend_from_slice(&ftyp);
        out.extend_from_slice(&moov);
        if large {
            u32be(&mut out, 1);
            out.extend_from_slice(b"mdat");
            u64be(&mut out, payload + 16);
        } else {
            u32be(&mut out, (payload + 8) as u32);
            out.extend_from_slice(b"mdat");
        }
        for s in samples {
            out.extend_from_slice(&s.data);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn moov(
        width: u32,
        height: u32,
        sps: &[u8],
        pps: &[u8],
        samples: &[Sample],
        timescale: u32,
        media_duration: u64,
        movie_duration: u64,
        chunk_offset: u64,
        large: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        bx(&mut out, b"moov", |o| {
            full(o, b"mvhd", 1, 0, |o| {
                u64be(o, 0); // creation time
                u64be(o, 0); // modification time
                u32be(o, 1000); // timescale: ms
                u64be(o, movie_duration);
                u32be(o, 0x0001_0000); // rate 1.0
                u16be(o, 0x0100); // volume 1.0
                o.extend_from_slice(&[0; 10]); // reserved
                matrix(o);
                o.extend_from_slice(&[0; 24]); // pre_defined
                u32be(o, 2); // next track id
            });
            bx(o, b"trak", |o| {
                // Flags: enabled, in movie, in preview.
                full(o, b"tkhd", 1, 0x7, |o| {
                    u64be(o, 0);
                    u64be(o, 0);
                    u32be(o, 1); // track id
                    u32be(o, 0); // reserved
                    u64be(o, movie_duration);
                    o.extend_from_slice(&[0; 8]); // reserved
                    u16be(o, 0); // layer
                    u16be(o, 0); // alternate group
                    u16be(o, 0); // volume (video: 0)
                    u16be(o, 0); // reserved
                    matrix(o);
                    u32be(o, width << 16);
                    u32be(o, height << 16);
                });
                bx(o, b"mdia", |o| {
                    full(o, b"mdhd", 1, 0, |o| {
                        u64be(o, 0);
                        u64be(o, 0);
                        u32be(o, timescale);
                        u64be(o, media_duration);
                        u16be(o, 0x55c4); // language "und"
                        u16be(o, 0);
                    });
                    full(o, b"hdlr", 0, 0, |o| {
                        u32be(o, 0);
                        o.extend_from_slice(b"vide");
                        o.extend_from_slice(&[0; 12]);
                        o.extend_from_slice(b"VideoHandler\0");
                    });
                    bx(o, b"minf", |o| {
                        full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                        bx(o, b"dinf", |o| {
                            full(o, b"dref", 0, 0, |o| {
                                u32be(o, 1);
                                // Flag 1: the media is in this file.
                                full(o, b"url ", 0, 1, |_| {});
                            });
                        });
                        stbl(o, width, height, sps, pps, samples, chunk_offset, large);
                    });
                });
            });
        });
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn stbl(
        o: &mut Vec<u8>,
        width: u32,
        height: u32,
        sps: &[u8],
        pps: &[u8],
        samples: &[Sample],
        chunk_offset: u64,
        large: bool,
    ) {
        bx(o, b"stbl", |o| {
            full(o, b"stsd", 0, 0, |o| {
                u32be(o, 1);
                bx(o, b"avc1", |o| {
                    o.extend_from_slice(&[0; 6]); // reserved
                    u16be(o, 1); // data reference index
                    o.extend_from_slice(&[0; 16]); // pre_defined + reserved
                    u16be(o, width as u16);
                    u16be(o, height as u16);
                    u32be(o, 0x0048_0000); // 72 dpi
                    u32be(o, 0x0048_0000);
                    u32be(o, 0); // reserved
                    u16be(o, 1); // frames per sample
                    let mut name = [0u8; 32];
                    let label = b"motion-viz OpenH264";
                    name[0] = label.len() as u8;
                    name[1..=label.len()].copy_from_slice(label);
                    o.extend_from_slice(&name);
                    u16be(o, 0x0018); // depth: colour, no alpha
                    o.extend_from_slice(&[0xff, 0xff]); // pre_defined = -1
                    bx(o, b"avcC", |o| {
                        o.push(1); // configurationVersion
                        o.extend_from_slice(&sps[1..4]); // profile, compatibility, level
                        o.push(0xfc | 3); // 4-byte NAL lengths
                        o.push(0xe0 | 1); // one SPS
                        u16be(o, sps.len() as u16);
                        o.extend_from_slice(sps);
                        o.push(1); // one PPS
                        u16be(o, pps.len() as u16);
                        o.extend_from_slice(pps);
                        if matches!(sps[1], 100 | 110 | 122 | 144) {
                            // High profiles: 4:2:0, 8-bit, no SPS extensions.
                            o.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
                        }
                    });
                });
            });
            // Decoding times: run-length coded durations.
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for s in samples {
                match runs.last_mut() {
                    Some((n, d)) if *d == s.duration => *n += 1,
                    _ => runs.push((1, s.duration)),
                }
            }
            full(o, b"stts", 0, 0, |o| {
                u32be(o, runs.len() as u32);
                for (n, d) in &runs {
                    u32be(o, *n);
                    u32be(o, *d);
                }
            });
            let sync: Vec<u32> = samples
                .iter()
                .enumerate()
                .filter(|(_, s)| s.sync)
                .map(|(i, _)| i as u32 + 1)
                .collect();
            if sync.len() != samples.len() {
                full(o, b"stss", 0, 0, |o| {
                    u32be(o, sync.len() as u32);
                    for k in &sync {
                        u32be(o, *k);
                    }
                });
            }
            // Every sample in one chunk.
            full(o, b"stsc", 0, 0, |o| {
                u32be(o, 1);
                u32be(o, 1);
                u32be(o, samples.len() as u32);
                u32be(o, 1);
            });
            full(o, b"stsz", 0, 0, |o| {
                u32be(o, 0);
                u32be(o, samples.len() as u32);
                for s in samples {
                    u32be(o, s.data.len() as u32);
                }
            });
            if large {
                full(o, b"co64", 0, 0, |o| {
                    u32be(o, 1);
                    u64be(o, chunk_offset);
                });
            } else {
                full(o, b"stco", 0, 0, |o| {
                    u32be(o, 1);
                    u32be(o, chunk_offset as u32);
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, w: u32, h: u32) -> Vec<image::RgbImage> {
        (0..n)
            .map(|k| {
                image::RgbImage::from_fn(w, h, |x, y| {
                    let s = (x + y + 2 * k as u32) % 64;
                    image::Rgb([180 + (s / 4) as u8, 90, 60 + s as u8])
                })
            })
            .collect()
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            encode_mp4(&[], 20.0),
            Err(VizError::InvalidInput { what: "frames", .. })
        ));
        let mixed = [image::RgbImage::new(4, 4), image::RgbImage::new(6, 4)];
        assert!(encode_mp4(&mixed, 20.0).is_err());
        assert!(encode_mp4(&frames(1, 4, 4), 0.0).is_err());
        assert!(encode_mp4(&frames(1, 4, 4), f32::NAN).is_err());
        let huge = [image::RgbImage::new(3842, 16)];
        assert!(matches!(
            encode_mp4(&huge, 20.0),
            Err(VizError::InvalidInput { what: "frames", .. })
        ));
    }

    #[cfg(not(feature = "mp4"))]
    #[test]
    fn without_the_feature_mp4_says_how_to_enable_it() {
        let err = encode_mp4(&frames(2, 8, 8), 20.0).expect_err("feature is off");
        assert!(err.to_string().contains("`mp4` cargo feature"), "{err}");
    }

    #[cfg(feature = "mp4")]
    mod with_encoder {
        use super::*;

        /// `(type, payload)` of the top-level boxes.
        fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
            let mut out = Vec::new();
            while b.len() >= 8 {
                let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let kind = [b[4], b[5], b[6], b[7]];
                assert!(size >= 8 && size <= b.len(), "bad box size {size}");
                out.push((kind, &b[8..size]));
                b = &b[size..];
            }
            assert!(b.is_empty(), "trailing bytes");
            out
        }

        #[test]
        fn mp4_is_faststart_with_every_frame_and_the_right_duration()
        -> std::result::Result<(), Box<dyn std::error::Error>> {
            let n = 25;
            let bytes = encode_mp4(&frames(n, 64, 48), 20.0)?;
            let top = boxes(&bytes);
            let kinds: Vec<&[u8; 4]> = top.iter().map(|(k, _)| k).collect();
            assert_eq!(kinds, [b"ftyp", b"moov", b"mdat"]);
            assert_eq!(&top[0].1[..4], b"isom");

            // An independent reader (the `mp4` crate) agrees on the track.
            let size = bytes.len() as u64;
            let reader = ::mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), size)?;
            assert_eq!(reader.duration(), std::time::Duration::from_millis(1250));
            let track = reader.tracks().get(&1).ok_or("no track 1")?;
            assert_eq!(track.media_type()?, ::mp4::MediaType::H264);
            assert_eq!(track.sample_count(), n as u32);
            assert_eq!((track.width(), track.height()), (64, 48));
            assert!((track.frame_rate() - 20.0).abs() < 1e-6);
            Ok(())
        }

        #[test]
        fn first_frame_decodes_back_to_the_input_colours()
        -> std::result::Result<(), Box<dyn std::error::Error>> {
            use openh264::decoder::Decoder;
            use openh264::formats::YUVSource;

            // Odd size: padded to 34x18 by repeating the edge.
            let input = frames(3, 33, 17);
            let bytes = encode_mp4(&input, 20.0)?;
            let size = bytes.len() as u64;
            let mut reader = ::mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), size)?;
            let (sps, pps, (w, h)) = {
                let track = reader.tracks().get(&1).ok_or("no track 1")?;
                (
                    track.sequence_parameter_set()?.to_vec(),
                    track.picture_parameter_set()?.to_vec(),
                    (track.width(), track.height()),
                )
            };
            assert_eq!((w, h), (34, 18));
            let sample = reader.read_sample(1, 1)?.ok_or("no sample 1")?;
            // Back to Annex B: parameter sets, then each length-prefixed NAL with a start code.
            let mut annex_b = Vec::new();
            for p in [&sps, &pps] {
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(p);
            }
            let mut s: &[u8] = &sample.bytes;
            while s.len() >= 4 {
                let n = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(&s[4..4 + n]);
                s = &s[4 + n..];
            }
            let config = openh264::decoder::DecoderConfig::new().debug(false);
            let mut dec = Decoder::with_api_config(openh264::OpenH264API::from_source(), config)?;
            let yuv = dec.decode(&annex_b)?.ok_or("no picture")?;
            assert_eq!(yuv.dimensions(), (34, 18));
            let mut rgb = vec![0u8; 34 * 18 * 3];
            yuv.write_rgb8(&mut rgb);
            let mean = |px: &mut dyn Iterator<Item = [u8; 3]>| {
                let (mut acc, mut n) = ([0f64; 3], 0f64);
                for p in px {
                    for k in 0..3 {
                        acc[k] += f64::from(p[k]);
                    }
                    n += 1.0;
                }
                acc.map(|a| a / n)
            };
            let want = mean(&mut input[0].pixels().map(|p| p.0));
            let got = mean(&mut (0..17).flat_map(|y| {
                let rgb = &rgb;
                (0..33).map(move |x| {
                    let k = (y * 34 + x) * 3;
                    [rgb[k], rgb[k + 1], rgb[k + 2]]
                })
            }));
            for k in 0..3 {
                assert!((want[k] - got[k]).abs() < 6.0, "mean {got:?} vs {want:?}");
            }
            Ok(())
        }

        #[test]
        fn write_mp4_is_atomic() -> std::result::Result<(), Box<dyn std::error::Error>> {
            let dir = std::env::temp_dir().join(format!("motion-viz-mp4-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("clip.mp4");
            // 6x4: padded to OpenH264's 16-pixel minimum.
            write_mp4(&path, &frames(4, 6, 4), 10.0)?;
            assert_eq!(&std::fs::read(&path)?[4..8], b"ftyp");
            // Bad input: the existing file is untouched and no temporary file is left.
            let before = std::fs::read(&path)?;
            assert!(write_mp4(&path, &[], 10.0).is_err());
            assert_eq!(std::fs::read(&path)?, before);
            let missing = dir.join("no/such/dir/clip.mp4");
            assert!(matches!(
                write_mp4(&missing, &frames(2, 16, 16), 10.0),
                Err(VizError::Io { .. })
            ));
            let names: Vec<_> = std::fs::read_dir(&dir)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::result::Result<_, _>>()?;
            assert_eq!(names, [std::ffi::OsString::from("clip.mp4")]);
            std::fs::remove_dir_all(&dir)?;
            Ok(())
        }
    }
}
