//! Bitmap text for captions and labels: the public-domain 8x8 font of the `font8x8` crate
//! (IBM PC BIOS glyphs), scaled by any factor and anti-aliased by 4 x 4 supersampling of the
//! glyph cells, plus greedy word wrapping with an ellipsis when the text does not fit.

use font8x8::UnicodeFonts;

use crate::canvas::Rgb;

/// Glyph cell size of the font in font pixels.
pub(crate) const CELL: f32 = 8.0;

/// What replaces the cut-off end of a caption.
const ELLIPSIS: &str = "...";

/// The 8 rows of a glyph (bit `i` of a row = column `i`, left to right); `?` for characters the
/// font lacks, a blank for control characters.
fn glyph(c: char) -> [u8; 8] {
    if c.is_control() {
        return [0; 8];
    }
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::GREEK_FONTS.get(c))
        .or_else(|| font8x8::BOX_FONTS.get(c))
        .or_else(|| font8x8::MISC_FONTS.get(c))
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Width in pixels of `text` at `scale` (every glyph advances one cell).
pub(crate) fn text_width(text: &str, scale: f32) -> f32 {
    text.chars().count() as f32 * CELL * scale
}

/// Greedy word wrap into at most `max_lines` lines of at most `max_chars` characters. Words
/// longer than a line are split; when the text needs more lines, the last line is shortened and
/// ends with `...`. Runs of whitespace collapse to one space.
pub(crate) fn wrap(text: &str, max_chars: usize, max_lines: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    if max_lines == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for word in text.split_whitespace() {
        let mut chars: Vec<char> = word.chars().collect();
        // Split words that cannot fit on any line.
        while chars.len() > max_chars {
            if cur_len > 0 {
                lines.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
            let rest = chars.split_off(max_chars);
            lines.push(chars.into_iter().collect());
            chars = rest;
        }
        let n = chars.len();
        if n == 0 {
            continue;
        }
        if cur_len > 0 && cur_len + 1 + n > max_chars {
            lines.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if cur_len > 0 {
            cur.push(' ');
            cur_len += 1;
        }
        cur.extend(chars);
        cur_len += n;
    }
    if cur_len > 0 {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            let keep = max_chars.saturating_sub(ELLIPSIS.len());
            let mut cut: String = last.chars().take(keep).collect();
            // Prefer cutting at a word boundary when that keeps most of the line.
            if let Some(sp) = cut.rfind(' ')
                && sp * 3 >= keep * 2
            {
                cut.truncate(sp);
            }
            let cut = cut.trim_end().to_string();
            *last = if keep == 0 {
                ELLIPSIS.chars().take(max_chars).collect()
            } else {
                cut + ELLIPSIS
            };
        }
    }
    lines
}

/// Draws `text` with its top-left corner at `(x, y)` (pixels), each font pixel `scale` image
/// pixels, blending `color` over the image by coverage; clipped to the image.
pub(crate) fn draw_text(
    img: &mut image::RgbImage,
    text: &str,
    x: f32,
    y: f32,
    scale: f32,
    color: Rgb,
) {
    if !(scale > 0.0 && scale.is_finite()) {
        return;
    }
    const SUB: usize = 4;
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let cell = CELL * scale;
    for (k, c) in text.chars().enumerate() {
        let g = glyph(c);
        if g.iter().all(|&r| r == 0) {
            continue;
        }
        let gx = x + k as f32 * cell;
        let x0 = (gx.floor() as i64).max(0);
        let x1 = ((gx + cell).ceil() as i64).min(iw);
        let y0 = (y.floor() as i64).max(0);
        let y1 = ((y + cell).ceil() as i64).min(ih);
        for py in y0..y1 {
            for px in x0..x1 {
                let mut hits = 0u32;
                for sy in 0..SUB {
                    let fy = ((py as f32 + (sy as f32 + 0.5) / SUB as f32) - y) / scale;
                    if !(0.0..CELL).contains(&fy) {
                        continue;
                    }
                    let row = g[fy as usize];
                    for sx in 0..SUB {
                        let fx = ((px as f32 + (sx as f32 + 0.5) / SUB as f32) - gx) / scale;
                        if (0.0..CELL).contains(&fx) && row & (1 << fx as u32) != 0 {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    let a = hits as f32 / (SUB * SUB) as f32;
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    p.0 = blend(p.0, color, a);
                }
            }
        }
    }
}

/// `dst * (1 - a) + src * a`, rounded.
pub(crate) fn blend(dst: Rgb, src: Rgb, a: f32) -> Rgb {
    let a = a.clamp(0.0, 1.0);
    // Non-negative: `+ 0.5` and truncation round to nearest (cheaper than `f32::round`).
    [0, 1, 2].map(|k| (dst[k] as f32 + (src[k] as f32 - dst[k] as f32) * a + 0.5) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_words_and_cuts_with_an_ellipsis() {
        assert_eq!(
            wrap("a person walks   forward", 12, 3),
            vec!["a person", "walks", "forward"]
        );
        assert_eq!(wrap("walks forward", 20, 2), vec!["walks forward"]);
        let cut = wrap("one two three four five six seven", 9, 2);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0], "one two");
        assert!(
            cut[1].ends_with("...") && cut[1].chars().count() <= 9,
            "{cut:?}"
        );
        // A word longer than a line is split.
        assert_eq!(wrap("abcdefghij", 4, 5), vec!["abcd", "efgh", "ij"]);
        assert!(wrap("", 10, 2).is_empty());
        assert!(wrap("x", 10, 0).is_empty());
    }

    #[test]
    fn text_paints_only_inside_its_cells() {
        let mut img = image::RgbImage::from_pixel(40, 20, image::Rgb([0, 0, 0]));
        draw_text(&mut img, "Hi", 2.0, 2.0, 2.0, [255, 255, 255]);
        let lit: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 != [0, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(lit.len() > 20, "too few text pixels: {}", lit.len());
        // Two 16-pixel cells starting at x = 2, y = 2.
        assert!(
            lit.iter()
                .all(|&(x, y)| (2..34).contains(&x) && (2..18).contains(&y))
        );
        assert_eq!(text_width("Hi", 2.0), 32.0);
        assert_eq!(glyph('\u{1F600}'), glyph('?'));
    }
}
