//! The synthetic tasks and their gold scorer. Prompts and answers are short on purpose: they
//! feed a character-level tokenizer and a tiny GPT. Add: `"482+37="` → `"519"` (and
//! subtraction with a non-negative result, `"482-37="` → `"445"`); sort: `"sort 5 2 9 ->"` →
//! `"2 5 9"`.
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which task `synth` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Multi-digit addition and subtraction.
    Add,
    /// Sorting a short list of digits.
    Sort,
    /// Half add, half sort.
    Mix,
}

impl FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "add" => Ok(Task::Add),
            "sort" => Ok(Task::Sort),
            "mix" => Ok(Task::Mix),
            other => Err(format!(
                "unknown task `{other}` (expected add, sort or mix)"
            )),
        }
    }
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Add => "add",
            Task::Sort => "sort",
            Task::Mix => "mix",
        }
    }
}

/// Sizes of the generated problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemSize {
    /// Operands have 1..=max_digits digits.
    pub max_digits: u32,
    /// Lists to sort have min_items..=max_items digits.
    pub min_items: usize,
    pub max_items: usize,
}

impl Default for ProblemSize {
    fn default() -> Self {
        Self {
            max_digits: 3,
            min_items: 3,
            max_items: 4,
        }
    }
}

/// A parsed problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Arith { a: u64, b: u64, minus: bool },
    Sort(Vec<u8>),
}

impl Problem {
    /// Draws a problem of `task` (for `Mix`, add or sort with equal odds).
    pub fn sample(task: Task, size: &ProblemSize, rng: &mut impl Rng) -> Self {
        let task = match task {
            Task::Mix if rng.random_bool(0.5) => Task::Add,
            Task::Mix => Task::Sort,
            t => t,
        };
        if task == Task::Add {
            let (x, y) = (operand(size.max_digits, rng), operand(size.max_digits, rng));
            let minus = rng.random_bool(0.5);
            let (a, b) = if minus { (x.max(y), x.min(y)) } else { (x, y) };
            Problem::Arith { a, b, minus }
        } else {
            let n =
                rng.random_range(size.min_items.max(1)..=size.max_items.max(size.min_items.max(1)));
            Problem::Sort((0..n).map(|_| rng.random_range(0..10u8)).collect())
        }
    }

    pub fn prompt(&self) -> String {
        match self {
            Problem::Arith { a, b, minus } => format!("{a}{}{b}=", if *minus { '-' } else { '+' }),
            Problem::Sort(xs) => format!("sort {} ->", join_digits(xs)),
        }
    }

    /// Parses a prompt written by [`Problem::prompt`].
    pub fn parse(prompt: &str) -> Option<Self> {
        if let Some(list) = prompt
            .strip_prefix("sort ")
            .and_then(|p| p.strip_suffix(" ->"))
        {
            return parse_digit_list(list)
                .filter(|xs| !xs.is_empty())
                .map(Problem::Sort);
        }
        let body = prompt.strip_suffix('=')?;
        let op = body
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')?
            .0;
        let (a, b) = (parse_number(&body[..op])?, parse_number(&body[op + 1..])?);
        let minus = &body[op..op + 1] == "-";
        Some(Problem::Arith { a, b, minus })
    }

    /// The exactly right answer.
    pub fn solve(&self) -> String {
        match self {
            Problem::Arith { a, b, minus: false } => (*a as i128 + *b as i128).to_string(),
            Problem::Arith { a, b, minus: true } => (*a as i128 - *b as i128).to_string(),
            Problem::Sort(xs) => {
                let mut s = xs.clone();
                s.sort_unstable();
                join_digits(&s)
            }
        }
    }
}

/// A number with 1..=max_digits digits (the digit count uniform, then the value).
fn operand(max_digits: u32, rng: &mut impl Rng) -> u64 {
    let digits = rng.random_range(1..=max_digits.clamp(1, 9));
    let lo = if digits == 1 {
        0
    } else {
        10u64.pow(digits - 1)
    };
    rng.random_range(lo..10u64.pow(digits))
}

fn parse_number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())?
}

/// `"2 5 9"` → `[2, 5, 9]`; exactly one space between single digits, else `None`.
pub fn parse_digit_list(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(' ')
        .map(|t| match t.as_bytes() {
            [d] if d.is_ascii_digit() => Some(d - b'0'),
            _ => None,
        })
        .collect()
}

pub fn join_digits(xs: &[u8]) -> String {
    xs.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Share of `max(len)` positions where two sequences agree, aligned at the left and at the
/// right; the better alignment counts.
fn aligned_match<T: PartialEq>(a: &[T], b: &[T]) -> f32 {
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    let left = a.iter().zip(b).filter(|(x, y)| x == y).count();
    let right = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .filter(|(x, y)| x == y)
        .count();
    left.max(right) as f32 / n as f32
}

/// Highest score a wrong answer can get; exactly right is 1.
pub const PARTIAL_MAX: f32 = 0.8;

/// The gold reward g(prompt, answer) ∈ [0, 1]: 1 when exactly right, 0 when malformed (or the
/// prompt is not a synth prompt), partial credit in between for near misses. Arithmetic: the
/// share of characters right, aligned at the left or the right (whichever is better). Sorting:
/// half the share of positions right, half the share of the multiset of digits right.
/// Partial credit is scaled to at most [`PARTIAL_MAX`].
pub fn gold(prompt: &str, answer: &str) -> f32 {
    let Some(problem) = Problem::parse(prompt) else {
        return 0.0;
    };
    let expected = problem.solve();
    if answer == expected {
        return 1.0;
    }
    match problem {
        Problem::Arith { .. } => {
            let digits = answer.strip_prefix('-').unwrap_or(answer);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return 0.0;
            }
            PARTIAL_MAX * aligned_match(answer.as_bytes(), expected.as_bytes())
        }
        Problem::Sort(_) => {
            let (Some(got), Some(want)) = (parse_digit_list(answer), parse_digit_list(&expected))
            else {
                return 0.0;
            };
            if got.is_empty() {
                return 0.0;
            }
            let n = got.len().max(want.len()) as f32;
            let positional = got.iter().zip(&want).filter(|(x, y)| x == y).count() as f32 / n;
            let mut counts = [0i32; 10];
            want.iter().for_each(|&d| counts[d as usize] += 1);
            let common = got.iter().filter(|&&d| {
                counts[d as usize] -= 1;
                counts[d as usize] >= 0
            });
            let multiset = common.count() as f32 / n;
            PARTIAL_MAX * 0.5 * (positional + multiset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn prompts_parse_and_solve() {
        assert_eq!(Problem::parse("482+37=").unwrap().solve(), "519");
        assert_eq!(Problem::parse("482-37=").unwrap().solve(), "445");
        assert_eq!(Problem::parse("3-7=").unwrap().solve(), "-4");
        assert_eq!(Problem::parse("sort 5 2 9 ->").unwrap().solve(), "2 5 9");
        for bad in [
            "",
            "=",
            "+3=",
            "48237=",
            "4a+1=",
            "sort ->",
            "sort 5 12 ->",
            "sort 5  2 ->",
        ] {
            assert!(Problem::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn gold_on_hand_cases() {
        assert_eq!(gold("482+37=", "519"), 1.0);
        // one digit off: 2 of 3 right → 0.8 · 2/3
        assert!(close(gold("482+37=", "518"), 0.8 * 2.0 / 3.0));
        // swapped digits 5,9: only the middle right → 0.8 · 1/3
        assert!(close(gold("482+37=", "915"), 0.8 / 3.0));
        // a digit too many, left-aligned 3 of 4 right → 0.8 · 3/4
        assert!(close(gold("482+37=", "5190"), 0.6));
        // a digit short, right-aligned "19" matches → 0.8 · 2/3
        assert!(close(gold("482+37=", "19"), 0.8 * 2.0 / 3.0));
        assert_eq!(gold("482+37=", "5x9"), 0.0);
        assert_eq!(gold("482+37=", ""), 0.0);
        assert_eq!(gold("482+37=", " 519"), 0.0);
        assert_eq!(gold("sort 5 2 9 ->", "2 5 9"), 1.0);
        // right digits, one position right: 0.8 · (1/3 + 1)/2
        assert!(close(
            gold("sort 5 2 9 ->", "5 2 9"),
            0.8 * 0.5 * (1.0 / 3.0 + 1.0)
        ));
        // dropped one: positions 2/3, multiset 2/3
        assert!(close(gold("sort 5 2 9 ->", "2 5"), 0.8 * 2.0 / 3.0));
        // duplicate digits count once per occurrence: want 1 1 2, got 1 1 1
        assert!(close(
            gold("sort 1 2 1 ->", "1 1 1"),
            0.8 * 0.5 * (2.0 / 3.0 + 2.0 / 3.0)
        ));
        assert_eq!(gold("sort 5 2 9 ->", "2,5,9"), 0.0);
        assert_eq!(gold("sort 5 2 9 ->", "259"), 0.0);
        assert_eq!(gold("not a prompt", "1"), 0.0);
    }

    #[test]
    fn sampled_prompts_are_short_and_round_trip() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2000 {
            let p = Problem::sample(Task::Mix, &ProblemSize::default(), &mut rng);
            let prompt = p.prompt();
            assert!(prompt.len() <= 16, "{prompt}");
            assert!(p.solve().len() <= 10);
            assert_eq!(Problem::parse(&prompt), Some(p.clone()));
            assert_eq!(gold(&prompt, &p.solve()), 1.0);
        }
    }
}
