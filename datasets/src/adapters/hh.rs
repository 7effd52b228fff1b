//! Anthropic HH-RLHF (Bai et al. 2022, arXiv:2204.05862): `{chosen, rejected}` are full
//! transcripts. The prompt is their longest common prefix cut just after its last
//! `"\n\nAssistant:"`; the rest of each transcript is the response, kept exactly. Responses may
//! themselves contain role markers, so each string's own last marker is never used.
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

/// `(prompt, chosen response, rejected response)`, or `None` when the common prefix holds no
/// `"\n\nAssistant:"`.
pub fn split_transcripts<'a>(
    chosen: &'a str,
    rejected: &'a str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let mut lcp = chosen
        .bytes()
        .zip(rejected.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !chosen.is_char_boundary(lcp) {
        lcp -= 1;
    }
    let cut = chosen[..lcp].rfind(ASSISTANT)? + ASSISTANT.len();
    Some((&chosen[..cut], &chosen[cut..], &rejected[cut..]))
}

/// The completed turns of a prompt, split only on the exact `"\n\nHuman: "` /
/// `"\n\nAssistant: "` separators; the open `"\n\nAssistant:"` that ends the prompt is not a
/// turn. Text before the first separator (normally none) becomes a `text` turn.
pub fn parse_turns(prompt: &str) -> Vec<Turn> {
    let body = prompt.strip_suffix(ASSISTANT).unwrap_or(prompt);
    let mut turns = Vec::new();
    let mut role = "text";
    let mut rest = body;
    loop {
        let next = SEPARATORS
            .iter()
            .filter_map(|(sep, r)| rest.find(sep).map(|i| (i, *sep, *r)))
            .min_by_key(|(i, _, _)| *i);
        let end = next.map_or(rest.len(), |(i, _, _)| i);
        if role != "text" || end > 0 {
            turns.push(Turn {
                role: role.to_string(),
                text: rest[..end].to_string(),
            });
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
