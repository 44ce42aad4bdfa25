//! numpy object arrays (the reference `caption_clip/seq/<id>.npy`) written by numpy itself.
//! The fixtures come from `data-scripts/make_object_array_fixture.py`; their values follow the
//! closed formula stated there, recomputed here.

use std::path::PathBuf;

use motion_data::npy::{NpyContent, read_npy};

const LENGTHS: [usize; 3] = [3, 5, 2];
const WIDTH: usize = 512;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/object_arrays")
}

/// `float32((c + 1) + l * 0.01 + k * 1e-4)` computed in f64 then rounded, as the script does.
fn expected(c: usize, l: usize, k: usize) -> f32 {
    ((c + 1) as f64 + l as f64 * 0.01 + k as f64 * 1e-4) as f32
}

fn check(name: &str) {
    let path = dir().join(name);
    let items = match read_npy(&path) {
        Ok(NpyContent::Objects(items)) => items,
        other => panic!("{name}: expected an object array, got {other:?}"),
    };
    assert_eq!(items.len(), LENGTHS.len(), "{name}: number of captions");
    for (c, (item, &len)) in items.iter().zip(&LENGTHS).enumerate() {
        assert_eq!(item.shape, vec![len, WIDTH], "{name}: shape of caption {c}");
        for l in 0..len {
            for k in 0..WIDTH {
                assert_eq!(
                    item.data[l * WIDTH + k],
                    expected(c, l, k),
                    "{name}: caption {c} token {l} channel {k}"
                );
            }
        }
    }
}

#[test]
fn numpy_default_protocol_object_array_is_read() {
    check("seq_numpy_default.npy");
}

#[test]
fn protocol2_object_array_with_codecs_bytes_is_read() {
    check("seq_protocol2.npy");
}

#[test]
fn float64_items_are_converted_to_f32() {
    check("seq_float64.npy");
}

#[test]
fn fortran_order_items_are_reordered() {
    check("seq_fortran.npy");
}

#[test]
fn plain_float_array_is_read() {
    match read_npy(&dir().join("plain_float32.npy")) {
        Ok(NpyContent::Float(a)) => {
            assert_eq!(a.shape, vec![3, WIDTH]);
            assert_eq!(a.data[WIDTH + 7], expected(0, 1, 7));
        }
        other => panic!("expected a float array, got {other:?}"),
    }
}

#[test]
fn corrupted_object_array_is_a_typed_error() {
    let mut bytes = std::fs::read(dir().join("seq_numpy_default.npy")).expect("read");
    let n = bytes.len();
    bytes.truncate(n - 100);
    let err = motion_data::npy::parse_npy(&bytes, std::path::Path::new("cut.npy"))
        .expect_err("truncated pickle must fail");
    assert!(err.to_string().contains("cut.npy"), "{err}");
}
