//! Formats where the preference comes from ratings or a winner field: UltraFeedback (Cui et al.
//! 2023, arXiv:2310.01377: best completion vs each lower-rated one, margin = rating
//! difference), Stanford SHP (Ethayarajh et al. 2022: margin = log ratio of the scores) and
//! Chatbot Arena (Zheng et al. 2023, arXiv:2306.05685: winner model_a / model_b / tie).
use serde_json::Value;

use super::{
    field, num_field, opt_num_field, str_field, wrong_type, Adapted, Object, Pair, Reason,
    Rejection, Turn,
};

const RATING_KEYS: [&str; 4] = ["overall_score", "fine-grained_score", "rating", "score"];

pub(super) fn ultrafeedback(obj: &Object) -> Adapted {
    match ultrafeedback_completions(obj) {
        Err(e) => vec![Err(e)],
        Ok((prompt, completions)) => {
            let best = (0..completions.len())
                .max_by(|&a, &b| {
                    completions[a]
                        .1
                        .total_cmp(&completions[b].1)
                        .then(b.cmp(&a))
                })
                .unwrap_or(0);
            let (best_text, best_rating) = &completions[best];
            completions
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != best)
                .map(|(_, (text, rating))| {
                    let mut p = Pair::new(prompt.clone(), best_text.clone(), text.clone());
                    p.margin = Some((best_rating - rating) as f32);
                    p.tie = best_rating == rating;
                    Ok(p)
                })
                .collect()
        }
    }
}

/// The prompt and `(response, rating)` of each completion.
fn ultrafeedback_completions(obj: &Object) -> Result<(String, Vec<(String, f64)>), Rejection> {
    let prompt = str_field(obj, "instruction")?.to_string();
    let list = field(obj, "completions")?;
    let items = list
        .as_array()
        .ok_or_else(|| wrong_type("completions", list, "an array"))?;
    if items.len() < 2 {
        return Err(Rejection::new(
            Reason::MissingField,
            "fewer than two completions",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let c = item
            .as_object()
            .ok_or_else(|| wrong_type(&format!("completions[{i}]"), item, "an object"))?;
        let text = str_field(c, "response")?.to_string();
        let key = RATING_KEYS
            .iter()
            .find(|k| !matches!(c.get(**k), None | Some(Value::Null)));
        let Some(key) = key else {
            return Err(Rejection::new(
                Reason::MissingField,
                format!("completions[{i}] has no rating (overall_score, rating or score)"),
            ));
        };
        out.push((text, num_field(c, key)?));
    }
    Ok((prompt, out))
}

pub(super) fn shp(obj: &Object) -> Result<Pair, Rejection> {
    let prompt = str_field(obj, "history")?;
    let a = str_field(obj, "human_ref_A")?;
    let b = str_field(obj, "human_ref_B")?;
    let sa = num_field(obj, "score_A")?;
    let sb = num_field(obj, "score_B")?;
    let a_wins = match opt_num_field(obj, "labels")? {
        Some(1.0) => Some(true),
        Some(0.0) => Some(false),
        Some(_) => return Err(wrong_type("labels", field(obj, "labels")?, "0 or 1")),
        None if sa == sb => None,
        None => Some(sa > sb),
    };
    let Some(a_wins) = a_wins else {
        let mut p = Pair::new(prompt.into(), a.into(), b.into());
        p.tie = true;
        p.margin = Some(0.0);
        return Ok(p);
    };
    let ((c, sc), (r, sr)) = if a_wins {
        ((a, sa), (b, sb))
    } else {
        ((b, sb), (a, sa))
    };
    let mut p = Pair::new(prompt.into(), c.into(), r.into());
    p.margin = (sc > 0.0 && sr > 0.0).then(|| (sc / sr).ln() as f32);
    Ok(p)
}

pub(super) fn arena(obj: &Object) -> Result<Pair, Rejection> {
    let (prompt, a, b, turns) = if obj.contains_key("conversation_a") {
        let (prompt, a, turns) = conversation(obj, "conversation_a")?;
        let (_, b, _) = conversation(obj, "conversation_b")?;
        (prompt, a, b, Some(turns))
    } else {
        let p = str_field(obj, "prompt")?.to_string();
        (
            p,
            str_field(obj, "response_a")?.to_string(),
            str_field(obj, "response_b")?.to_string(),
            None,
        )
    };
    let winner = str_field(obj, "winner")?;
    let mut pair = match winner {
        "model_a" => Pair::new(prompt, a, b),
        "model_b" => Pair::new(prompt, b, a),
        w if w.starts_with("tie") => {
            let mut p = Pair::new(prompt, a, b);
            p.tie = true;
            p
        }
        _ => {
            return Err(wrong_type(
                "winner",
                field(obj, "winner")?,
                "model_a, model_b or tie",
            ))
        }
    };
    pair.turns = turns;
    Ok(pair)
}

/// A `[{role, content}]` conversation → (prompt, last assistant answer, prompt turns). A
/// single user turn is the prompt itself; longer histories are rendered as a transcript.
fn conversation(obj: &Object, key: &str) -> Result<(String, String, Vec<Turn>), Rejection> {
    let v = field(obj, key)?;
    let items = v
        .as_array()
        .ok_or_else(|| wrong_type(key, v, "an array of turns"))?;
    let mut turns = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let t = item
            .as_object()
            .ok_or_else(|| wrong_type(&format!("{key}[{i}]"), item, "an object"))?;
        let role = match str_field(t, "role")? {
            "user" | "human" => "human",
            "assistant" | "gpt" | "model" => "assistant",
            other => other,
        };
        turns.push(Turn {
            role: role.to_string(),
            text: str_field(t, "content")?.to_string(),
        });
    }
    let last = turns
        .iter()
        .rposition(|t| t.role == "assistant")
        .ok_or_else(|| {
            Rejection::new(
                Reason::NoAssistantTurn,
                format!("`{key}` has no assistant turn"),
            )
        })?;
    let answer = turns[last].text.clone();
    turns.truncate(last);
    let prompt = match turns.as_slice() {
        [t] if t.role == "human" => t.text.clone(),
        _ => turns
            .iter()
            .map(|t| {
                format!(
                    "\n\n{}: {}",
                    if t.role == "human" {
                        "Human"
                    } else {
                        "Assistant"
                    },
                    t.text
                )
            })
            .chain(std::iter::once("\n\nAssistant:".to_string()))
            .collect(),
    };
    Ok((prompt, answer, turns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ultrafeedback_best_vs_each_lower_rated() {
        let o = obj(json!({"instruction": "q", "completions": [
            {"response": "a", "overall_score": 6.0},
            {"response": "b", "overall_score": 8.5},
            {"response": "c", "overall_score": 8.5},
            {"response": "d", "overall_score": 2}]}));
        let pairs: Vec<Pair> = ultrafeedback(&o).into_iter().map(Result::unwrap).collect();
        let got: Vec<(&str, &str, f32, bool)> = pairs
            .iter()
            .map(|p| {
                (
                    p.chosen.as_str(),
                    p.rejected.as_str(),
                    p.margin.unwrap(),
                    p.tie,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", "a", 2.5, false),
                ("b", "c", 0.0, true),
                ("b", "d", 6.5, false)
            ]
        );
        let bad = obj(
            json!({"instruction": "q", "completions": [{"response": "a"}, {"response": "b", "rating": 1}]}),
        );
        assert_eq!(
            ultrafeedback(&bad)[0].clone().unwrap_err().reason,
            Reason::MissingField
        );
    }

    #[test]
    fn shp_margin_is_log_score_ratio() {
        let o = obj(
            json!({"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 0, "score_A": 2, "score_B": 8}),
        );
        let p = shp(&o).unwrap();
        assert_eq!(p.chosen, "b");
        assert!((p.margin.unwrap() - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn arena_winner_and_conversations() {
        let o = obj(json!({"winner": "model_b",
            "conversation_a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A"}],
            "conversation_b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "B"}]}));
        let p = arena(&o).unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.chosen.as_str(), p.rejected.as_str()),
            ("hi", "B", "A")
        );
        let t = arena(&obj(
            json!({"prompt": "q", "response_a": "x", "response_b": "y", "winner": "tie (bothbad)"}),
        ));
        assert!(t.unwrap().tie);
        let e = arena(&obj(
            json!({"prompt": "q", "response_a": "x", "response_b": "y", "winner": "nobody"}),
        ));
        assert_eq!(e.unwrap_err().reason, Reason::WrongType);
    }
}
