//! Caption paraphrases per motion family, in the style of HumanML3D ("a person ...").

use rand::Rng;
use rand::seq::SliceRandom;

use super::families::{Family, MotionParams, Side};

fn times(n: usize) -> &'static str {
    match n {
        1 => "once",
        2 => "twice",
        3 => "three times",
        _ => "four times",
    }
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
    }
}

fn pace(speed: f32) -> Option<&'static str> {
    if speed < 0.85 {
        Some("slowly")
    } else if speed > 1.15 {
        Some("quickly")
    } else {
        None
    }
}

/// Every paraphrase of the motion's family, with its parameters filled in (`count` = how
/// many times the action repeats).
pub fn paraphrases(m: &MotionParams, count: usize) -> Vec<String> {
    let adv = pace(m.speed);
    let with_pace = |s: &str| match adv {
        Some(a) => format!("{s} {a}"),
        None => s.to_string(),
    };
    let n = times(count);
    let mut out: Vec<String> = match m.family {
        Family::WalkForward => vec![
            with_pace("a person walks forward"),
            "someone walks straight ahead".into(),
            "a man walks forward in a straight line".into(),
            "the person takes several steps forward".into(),
            with_pace("a person is walking forward"),
        ],
        Family::WalkBackward => vec![
            with_pace("a person walks backward"),
            "someone walks backwards in a straight line".into(),
            "the person takes several steps back".into(),
            "a man steps backward".into(),
            "a person is walking backwards".into(),
        ],
        Family::WalkCircleClockwise => vec![
            "a person walks in a circle clockwise".into(),
            "someone walks around in a clockwise circle".into(),
            "a man walks in a circle turning to the right".into(),
            with_pace("the person walks clockwise in a circle"),
        ],
        Family::WalkCircleCounterClockwise => vec![
            "a person walks in a circle counterclockwise".into(),
            "someone walks around in a counter-clockwise circle".into(),
            "a man walks in a circle turning to the left".into(),
            with_pace("the person walks anticlockwise in a circle"),
        ],
        Family::Run => vec![
            "a person runs forward".into(),
            "someone is running straight ahead".into(),
            "a man jogs forward".into(),
            "the person runs in a straight line".into(),
        ],
        Family::JumpInPlace => vec![
            format!("a person jumps up and down {n}"),
            format!("someone jumps in place {n}"),
            "a man jumps on the spot".into(),
            "the person jumps straight up with both feet".into(),
        ],
        Family::JumpForward => vec![
            format!("a person jumps forward {n}"),
            "someone does a standing long jump".into(),
            "a man jumps forward with both feet".into(),
            "the person leaps forward".into(),
        ],
        Family::Squat => vec![
            format!("a person squats down and stands back up {n}"),
            format!("someone does squats {n}"),
            "a man bends his knees and squats".into(),
            "the person performs a squat".into(),
        ],
        Family::WaveLeftHand => vec![
            "a person waves with the left hand".into(),
            "someone raises the left arm and waves".into(),
            "a man waves hello with his left hand".into(),
            "the person waves their left hand".into(),
        ],
        Family::WaveRightHand => vec![
            "a person waves with the right hand".into(),
            "someone raises the right arm and waves".into(),
            "a man waves hello with his right hand".into(),
            "the person waves their right hand".into(),
        ],
        Family::Kick => {
            let s = side(m.side);
            vec![
                format!("a person kicks with the {s} leg"),
                format!("someone kicks forward with their {s} foot"),
                format!("a man kicks {n} with his {s} leg"),
                "the person does a front kick".into(),
            ]
        }
        Family::TurnAround => {
            let s = side(m.side);
            vec![
                "a person turns around".into(),
                format!("someone turns around to the {s}"),
                "a man turns 180 degrees on the spot".into(),
                format!("the person turns {s} and faces the other way"),
            ]
        }
        Family::SitDown => vec![
            "a person sits down".into(),
            "someone sits down on a chair".into(),
            "a man lowers himself into a seat".into(),
            "the person goes from standing to sitting".into(),
        ],
        Family::RaiseBothArms => vec![
            format!("a person raises both arms above the head {n}"),
            "someone lifts both arms up and lowers them".into(),
            "a man raises his arms over his head".into(),
            "the person puts both hands up in the air".into(),
        ],
    };
    out.dedup();
    out
}

/// Three distinct captions (or all, if fewer) drawn from [`paraphrases`] with `rng`.
pub fn pick_captions(m: &MotionParams, count: usize, rng: &mut impl Rng) -> Vec<String> {
    let mut all = paraphrases(m, count);
    all.shuffle(rng);
    all.truncate(3);
    all
}
