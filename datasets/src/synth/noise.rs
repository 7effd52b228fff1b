//! The noisy answer generator: exactly right answers and the near misses a small model makes
//! (a digit off by one, two digits swapped, a digit too many or too few, a random answer, a
//! malformed one). Each kind is a small pure function of the right answer and an RNG.
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::task::{join_digits, Problem};

/// The kinds of generated answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Correct,
    OffByOne,
    Swapped,
    WrongLength,
    Random,
    Malformed,
}

/// Relative odds of each kind in [`noisy_answer`].
const KINDS: [(AnswerKind, u32); 6] = [
    (AnswerKind::Correct, 30),
    (AnswerKind::OffByOne, 20),
    (AnswerKind::Swapped, 15),
    (AnswerKind::WrongLength, 15),
    (AnswerKind::Random, 10),
    (AnswerKind::Malformed, 10),
];

/// The symbols of an answer: characters for arithmetic, digits for sorting.
fn symbols(problem: &Problem) -> Vec<u8> {
    match problem {
        Problem::Arith { .. } => problem.solve().into_bytes(),
        Problem::Sort(xs) => {
            let mut s = xs.clone();
            s.sort_unstable();
            s
        }
    }
}

fn render(problem: &Problem, syms: &[u8]) -> String {
    match problem {
        Problem::Arith { .. } => String::from_utf8_lossy(syms).into_owned(),
        Problem::Sort(_) => join_digits(syms),
    }
}

/// A digit symbol (ASCII for arithmetic, 0–9 for sorting) moved by ±1 (mod 10).
fn bump(problem: &Problem, s: u8, up: bool) -> u8 {
    let (base, v) = match problem {
        Problem::Arith { .. } if s.is_ascii_digit() => (b'0', s - b'0'),
        Problem::Arith { .. } => return s,
        Problem::Sort(_) => (0, s),
    };
    base + if up { (v + 1) % 10 } else { (v + 9) % 10 }
}

fn random_digit(problem: &Problem, rng: &mut impl Rng) -> u8 {
    let d = rng.random_range(0..10u8);
    if matches!(problem, Problem::Arith { .. }) {
        b'0' + d
    } else {
        d
    }
}

/// One answer of the given kind (it may equal the right answer by chance, e.g. swapping two
/// equal digits).
pub fn answer_of_kind(problem: &Problem, kind: AnswerKind, rng: &mut impl Rng) -> String {
    let mut s = symbols(problem);
    let n = s.len();
    match kind {
        AnswerKind::Correct => {}
        AnswerKind::OffByOne => {
            let digit_positions: Vec<usize> = (0..n)
                .filter(|&i| bump(problem, s[i], true) != s[i])
                .collect();
            if let Some(&i) = digit_positions.get(rng.random_range(0..digit_positions.len().max(1)))
            {
                s[i] = bump(problem, s[i], rng.random_bool(0.5));
            }
        }
        AnswerKind::Swapped if n >= 2 => {
            let i = rng.random_range(0..n - 1);
            s.swap(i, i + 1);
        }
        AnswerKind::Swapped => s[0] = bump(problem, s[0], true),
        AnswerKind::WrongLength if n >= 2 && rng.random_bool(0.5) => {
            s.remove(rng.random_range(0..n));
        }
        AnswerKind::WrongLength => {
            let d = random_digit(problem, rng);
            s.insert(rng.random_range(0..=n), d);
        }
        AnswerKind::Random => {
            let len = rng.random_range(1..=n.clamp(1, 4) + 1);
            s = (0..len).map(|_| random_digit(problem, rng)).collect();
            if let Problem::Sort(xs) = problem {
                if rng.random_bool(0.5) {
                    s = xs.clone();
                    s.shuffle(rng);
                }
            }
        }
        AnswerKind::Malformed => return malformed(&render(problem, &s), rng),
    }
    render(problem, &s)
}

/// The right answer broken so that the gold scorer gives 0: a stray letter or symbol, commas
/// instead of spaces, or no separators at all.
fn malformed(right: &str, rng: &mut impl Rng) -> String {
    const JUNK: [char; 5] = ['a', 'x', '?', '=', '+'];
    let junk = JUNK[rng.random_range(0..JUNK.len())];
    let chars: Vec<char> = right.chars().collect();
    match rng.random_range(0..3) {
        0 if right.contains(' ') => right.replace(' ', ","),
        1 if right.contains(' ') => right.replace(' ', ""),
        _ => {
            let i = rng.random_range(0..chars.len().max(1));
            let mut out = chars.clone();
            if out.is_empty() || rng.random_bool(0.5) {
                out.insert(i.min(out.len()), junk);
            } else {
                out[i] = junk;
            }
            out.into_iter().collect()
        }
    }
}

/// An answer drawn from the noisy generator, with its kind.
pub fn noisy_answer(problem: &Problem, rng: &mut impl Rng) -> (String, AnswerKind) {
    let total: u32 = KINDS.iter().map(|k| k.1).sum();
    let mut x = rng.random_range(0..total);
    let kind = KINDS
        .iter()
        .find(|(_, w)| {
            let hit = x < *w;
            x = x.saturating_sub(*w);
            hit
        })
        .map_or(AnswerKind::Correct, |k| k.0);
    (answer_of_kind(problem, kind, rng), kind)
}

/// A wrong answer (never the right one): a near miss for demonstrations that are deliberately
/// wrong.
pub fn wrong_answer(problem: &Problem, rng: &mut impl Rng) -> String {
    let right = problem.solve();
    const NEAR: [AnswerKind; 3] = [
        AnswerKind::OffByOne,
        AnswerKind::Swapped,
        AnswerKind::WrongLength,
    ];
    for _ in 0..16 {
        let a = answer_of_kind(problem, NEAR[rng.random_range(0..NEAR.len())], rng);
        if a != right {
            return a;
        }
    }
    // Every near miss coincided with the right answer: one more symbol always differs.
    let mut s = symbols(problem);
    s.push(random_digit(problem, rng));
    render(problem, &s)
}

#[cfg(test)]
mod tests {
    use super::super::task::gold;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn kinds_by_hand() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let p = Problem::parse("482+37=").unwrap();
        for _ in 0..50 {
            let off = answer_of_kind(&p, AnswerKind::OffByOne, &mut rng);
            assert_eq!(off.len(), 3);
            assert_eq!(
                off.chars()
                    .zip("519".chars())
                    .filter(|(a, b)| a != b)
                    .count(),
                1,
                "{off}"
            );
            let sw = answer_of_kind(&p, AnswerKind::Swapped, &mut rng);
            assert!(sw == "159" || sw == "591", "{sw}");
            let wl = answer_of_kind(&p, AnswerKind::WrongLength, &mut rng);
            assert!(wl.len() == 2 || wl.len() == 4, "{wl}");
            let m = answer_of_kind(&p, AnswerKind::Malformed, &mut rng);
            assert_eq!(gold("482+37=", &m), 0.0, "{m}");
        }
        let s = Problem::parse("sort 5 2 9 ->").unwrap();
        for _ in 0..50 {
            let m = answer_of_kind(&s, AnswerKind::Malformed, &mut rng);
            assert_eq!(gold("sort 5 2 9 ->", &m), 0.0, "{m}");
            let sw = answer_of_kind(&s, AnswerKind::Swapped, &mut rng);
            assert!(sw == "5 2 9" || sw == "2 9 5", "{sw}");
        }
    }

    #[test]
    fn wrong_answers_are_never_right_and_answers_stay_short() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for prompt in [
            "0+0=",
            "5-5=",
            "sort 1 1 1 ->",
            "999+999=",
            "sort 9 8 7 6 ->",
        ] {
            let p = Problem::parse(prompt).unwrap();
            for _ in 0..200 {
                let w = wrong_answer(&p, &mut rng);
                assert_ne!(w, p.solve(), "{prompt}");
                assert!(!w.is_empty());
                let (a, _) = noisy_answer(&p, &mut rng);
                assert!(!a.is_empty() && a.len() <= 10, "{prompt} → {a:?}");
            }
        }
    }
}
