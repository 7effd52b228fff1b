//! Anthropic HH-RLHF (Bai et al. 2022, arXiv:2204.05862): `{chosen, rejected}` are full
//! transcripts. The prompt is their longest common prefix cut just after its last
//! `"\n\nAssistant:"`; the rest of each transcript is the response, kept exactly. Responses may
//! themselves contain role markers, so each string's own last marker is never used.
use std::borrow::Cow;

use serde::Deserialize;

use super::{str_field, Object, Pair, Reason, Rejection, Turn};

const ASSISTANT: &str = "\n\nAssistant:";
const SEPARATORS: [(&str, &str); 2] = [("\n\nHuman: ", "human"), ("\n\nAssistant: ", "assistant")];

pub(super) fn adapt(obj: &Object) -> Result<Pair, Rejection> {
    let chosen = str_field(obj, "chosen")?;
    let rejected = str_field(obj, "rejected")?;
    let (prompt, c, r) = split_transcripts(chosen, rejected).ok_or_else(|| {
        Rejection::new(
            Reason::NoAssistantTurn,
            "the common prefix has no \"\\n\\nAssistant:\"",
        )
    })?;
    let mut pair = Pair::new(prompt.to_string(), c.to_string(), r.to_string());
    pair.turns = Some(parse_turns(prompt));
    Ok(pair)
}

/// A JSON Lines record of exactly `{chosen, rejected}` strings, parsed without building a
/// `serde_json::Value` (its strings borrowed where they hold no escape). `None` for anything
/// else (another shape, a duplicate or extra key, bad JSON), which [`adapt`] then judges: a
/// record this accepts adapts exactly as [`adapt`] would adapt it.
pub fn parse_line(text: &str) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line<'a> {
        #[serde(borrow)]
        chosen: Cow<'a, str>,
        #[serde(borrow)]
        rejected: Cow<'a, str>,
    }
    // Serde would also read `[chosen, rejected]` into the struct; only objects are records.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let line: Line = serde_json::from_str(text).ok()?;
    Some((line.chosen, line.rejected))
}

/// `(prompt, chosen response, rejected response)`, or `None` when the common prefix holds no
/// `"\n\nAssistant:"`.
pub fn split_transcripts<'a>(
    chosen: &'a str,
    rejected: &'a str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let mut lcp = common_prefix(chosen.as_bytes(), rejected.as_bytes());
    while !chosen.is_char_boundary(lcp) {
        lcp -= 1;
    }
    let cut = last_marker(&chosen[..lcp])? + ASSISTANT.len();
    Some((&chosen[..cut], &chosen[cut..], &rejected[cut..]))
}

/// The length of the longest common prefix of `a` and `b`, compared 32 bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 32 <= n && a[i..i + 32] == b[i..i + 32] {
        i += 32;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Where the last `"\n\nAssistant:"` of `text` starts (as `text.rfind(ASSISTANT)`, by
/// looking at line breaks only).
fn last_marker(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut end = bytes.len().checked_sub(ASSISTANT.len())? + 1;
    while let Some(i) = bytes[..end].iter().rposition(|&b| b == b'\n') {
        if text[i..].starts_with(ASSISTANT) {
            return Some(i);
        }
        end = i;
    }
    None
}

/// The first separator of `rest`: its offset, text and role (as the least `rest.find(sep)`
/// over [`SEPARATORS`], by looking at line breaks only).
fn next_separator(rest: &str) -> Option<(usize, &'static str, &'static str)> {
    let bytes = rest.as_bytes();
    let mut from = 0;
    while let Some(p) = bytes[from..].iter().position(|&b| b == b'\n') {
        let i = from + p;
        if let Some((sep, role)) = SEPARATORS
            .iter()
            .find(|(sep, _)| rest[i..].starts_with(sep))
        {
            return Some((i, sep, role));
        }
        from = i + 1;
    }
    None
}

/// The completed turns of a prompt, split only on the exact `"\n\nHuman: "` /
/// `"\n\nAssistant: "` separators; the open `"\n\nAssistant:"` that ends the prompt is not a
/// turn. Text before the first separator (normally none) becomes a `text` turn.
pub fn parse_turns(prompt: &str) -> Vec<Turn> {
    turn_spans(prompt)
        .into_iter()
        .map(|(role, text)| Turn {
            role: role.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// [`parse_turns`] as `(role, text)` slices of the prompt.
pub fn turn_spans(prompt: &str) -> Vec<(&'static str, &str)> {
    let body = prompt.strip_suffix(ASSISTANT).unwrap_or(prompt);
    let mut turns = Vec::new();
    let mut role = "text";
    let mut rest = body;
    loop {
        let next = next_separator(rest);
        let end = next.map_or(rest.len(), |(i, _, _)| i);
        if role != "text" || end > 0 {
            turns.push((role, &rest[..end]));
        }
        match next {
            Some((i, sep, r)) => {
                rest = &rest[i + sep.len()..];
                role = r;
            }
            None => return turns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_common_prefix_cut_after_last_assistant_marker() {
        let c = "\n\nHuman: One plus one is\n\nAssistant: Two.";
        let r = "\n\nHuman: One plus one is\n\nAssistant: One";
        let (p, a, b) = split_transcripts(c, r).unwrap();
        assert_eq!(p, "\n\nHuman: One plus one is\n\nAssistant:");
        assert_eq!(a, " Two.");
        assert_eq!(b, " One");
    }

    #[test]
    fn markers_inside_a_response_do_not_move_the_prompt() {
        // The chosen answer goes on into a fake Human turn; the naive split at each string's
        // own last marker would give two different prompts.
        let c = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant: x";
        let r = "\n\nHuman: hi\n\nAssistant: hey";
        let (p, a, b) = split_transcripts(c, r).unwrap();
        assert_eq!(p, "\n\nHuman: hi\n\nAssistant:");
        assert_eq!(a, " hello\n\nHuman: more\n\nAssistant: x");
        assert_eq!(b, " hey");
    }

    #[test]
    fn common_prefix_respects_utf8_boundaries() {
        // ’ (E2 80 99) and ” (E2 80 9D) share two bytes.
        let (p, a, b) = split_transcripts(
            "\n\nHuman: q\n\nAssistant: a’",
            "\n\nHuman: q\n\nAssistant: a”",
        )
        .unwrap();
        assert_eq!((p, a, b), ("\n\nHuman: q\n\nAssistant:", " a’", " a”"));
    }

    #[test]
    fn the_borrowed_parse_takes_exactly_chosen_and_rejected_objects() {
        let (c, r) = parse_line(r#" {"chosen": "a\nb", "rejected": "c"}"#).unwrap();
        assert_eq!((c.as_ref(), r.as_ref()), ("a\nb", "c"));
        assert!(matches!(r, Cow::Borrowed(_)), "no escape, no copy");
        for other in [
            r#"["a", "b"]"#,
            r#"{"chosen": "a", "rejected": "b", "x": 1}"#,
            r#"{"chosen": "a", "rejected": "b", "chosen": "c"}"#,
            r#"{"chosen": "a", "rejected": null}"#,
            r#"{"chosen": "a"}"#,
            r#"{"chosen": "a", "rejected": "b"} x"#,
        ] {
            assert!(parse_line(other).is_none(), "{other}");
        }
    }

    #[test]
    fn the_searches_agree_with_find_and_rfind() {
        let texts = [
            "",
            "\n",
            "\n\nAssistant:",
            "a\n\n\nAssistant: x\n\nHuman: y\n\nAssistant:",
            "\n\nHuman: a\n\nAssistant:\n\nAssistant:b\n\n",
            "x\n\nHuman:y\n\nHuman: z",
        ];
        for t in texts {
            assert_eq!(last_marker(t), t.rfind(ASSISTANT), "{t:?}");
            let naive = SEPARATORS
                .iter()
                .filter_map(|(sep, r)| t.find(sep).map(|i| (i, *sep, *r)))
                .min_by_key(|(i, _, _)| *i);
            assert_eq!(next_separator(t), naive, "{t:?}");
        }
        let long = "ab".repeat(40);
        assert_eq!(common_prefix(long.as_bytes(), long.as_bytes()), 80);
        let other = format!("{}x", &long[..70]);
        assert_eq!(common_prefix(long.as_bytes(), other.as_bytes()), 70);
    }

    #[test]
    fn no_assistant_marker_in_prefix_is_none() {
        assert!(split_transcripts("\n\nHuman: a", "\n\nHuman: b").is_none());
    }

    #[test]
    fn turns_split_on_exact_separators_only() {
        let p = "\n\nHuman: a Human: b\n\nAssistant: c\n\nHuman:  d\n\nAssistant:";
        let t = parse_turns(p);
        let got: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.role.as_str(), t.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![("human", "a Human: b"), ("assistant", "c"), ("human", " d")]
        );
    }
}
