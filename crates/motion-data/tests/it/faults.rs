//! A folder with planted faults yields one report listing each fault; nothing panics.

use motion_data::npy::write_npy_f32;
use motion_data::{
    DataError, FaultPolicy, FolderDataset, FolderOptions, MotionSource, Split, write_split,
};

use crate::util::{Scratch, write_three};

#[test]
fn planted_faults_are_all_reported_with_counts() {
    let dir = Scratch::new("faults");
    let root = dir.path();
    write_three(root, false);
    // 1. missing npy for a000.
    std::fs::remove_file(root.join("smpl_rifke/a000.npy")).expect("rm");
    // 2. wrong width for b001.
    write_npy_f32(&root.join("smpl_rifke/b001.npy"), &[4, 200], &[0.0; 800]).expect("write");
    // 3. empty caption file for c002.
    std::fs::write(root.join("caption_raw/c002.txt"), "\n  \n").expect("write");
    // 4. an id with no file at all; 5. a duplicated id; plus one clean sample.
    let mut good = crate::util::sample(0, false);
    good.id = "d003".into();
    motion_data::write_sample(root, &good).expect("write");
    let ids: Vec<String> = ["a000", "b001", "c002", "zz999", "d003", "d003"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    write_split(root, Split::Train, &ids).expect("split");

    let err = FolderDataset::open(root, Split::Train, &FolderOptions::default())
        .expect_err("faulty folder must not open");
    let DataError::Faults(report) = err else {
        panic!("expected a fault report, got {err}");
    };
    let ids: Vec<(&str, &str)> = report
        .faults
        .iter()
        .map(|f| (f.id(), f.kind_name()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("a000", "missing file"),
            ("b001", "wrong shape"),
            ("c002", "empty captions"),
            ("zz999", "id absent"),
            ("d003", "duplicate id"),
        ]
    );
    let counts = report.counts();
    assert_eq!(counts.values().sum::<usize>(), 5);
    let text = report.to_string();
    assert!(text.starts_with("5 fault(s)"), "{text}");
    for needle in ["a000.npy", "[4, 200]", "c002.txt", "zz999"] {
        assert!(text.contains(needle), "report lacks {needle}: {text}");
    }

    // Skip-and-report keeps the clean sample and the same report.
    let opts = FolderOptions {
        faults: FaultPolicy::SkipAndReport,
        limit: None,
    };
    let data = FolderDataset::open(root, Split::Train, &opts).expect("lenient open");
    assert_eq!(data.len(), 1);
    assert_eq!(data.id(0), "d003");
    assert_eq!(data.faults(), &report);
}

#[test]
fn missing_split_file_is_reported() {
    let dir = Scratch::new("nosplit");
    let err = FolderDataset::open(dir.path(), Split::Val, &FolderOptions::default())
        .expect_err("no split file");
    assert!(err.to_string().contains("humanml3d_val_split.txt"), "{err}");
}

#[test]
fn clip_folder_faults_are_reported() {
    let dir = Scratch::new("clipfaults");
    let root = dir.path();
    write_three(root, true);
    // Token features for one caption fewer than caption lines, and a missing pooled file.
    std::fs::remove_file(root.join("caption_clip/token/b001.npy")).expect("rm");
    let bytes = motion_data::npy::object_array_npy_bytes(&[vec![0.0; 512 * 2]], 512);
    std::fs::write(root.join("caption_clip/seq/c002.npy"), bytes).expect("write");
    let Err(DataError::Faults(report)) =
        FolderDataset::open(root, Split::Train, &FolderOptions::default())
    else {
        panic!("expected a fault report");
    };
    let got: Vec<(&str, &str)> = report
        .faults
        .iter()
        .map(|f| (f.id(), f.kind_name()))
        .collect();
    assert_eq!(
        got,
        vec![("b001", "missing file"), ("c002", "caption count mismatch")]
    );
}

#[test]
fn split_ids_that_are_paths_are_errors_naming_the_line() {
    let dir = Scratch::new("split-paths");
    let root = dir.path();
    write_three(root, false);
    for (bad, line) in [
        ("../../etc/passwd", 2),
        ("/abs/id", 2),
        ("..", 2),
        ("a\\b", 2),
    ] {
        std::fs::write(
            root.join(Split::Train.file_name()),
            format!("a000\n{bad}\n"),
        )
        .expect("write split");
        match motion_data::folder::read_split(root, Split::Train) {
            Err(DataError::Split { line: l, path, .. }) => {
                assert_eq!(l, line, "{bad}");
                assert!(
                    path.ends_with(Split::Train.file_name()),
                    "{}",
                    path.display()
                );
            }
            other => panic!("{bad}: expected a split error, got {other:?}"),
        }
        assert!(
            FolderDataset::open(root, Split::Train, &FolderOptions::default()).is_err(),
            "{bad}"
        );
    }
}
