//! Pairwise formats with an explicit label: LLMBar (Zeng et al. 2023, arXiv:2310.07641),
//! PandaLM (Wang et al. 2023, arXiv:2306.05087, three annotators and a majority vote),
//! AlpacaEval's judge annotations (Dubois et al. 2024, arXiv:2404.04475) and the `generic`
//! column map.
use super::{
    field, num_field, opt_num_field, str_field, wrong_type, ColumnMap, Object, Pair, Reason,
    Rejection,
};

pub(super) fn llmbar(obj: &Object) -> Result<Pair, Rejection> {
    let input = str_field(obj, "input")?;
    let o1 = str_field(obj, "output_1")?;
    let o2 = str_field(obj, "output_2")?;
    let label = num_field(obj, "label")?;
    let (chosen, rejected) = match label {
        1.0 => (o1, o2),
        2.0 => (o2, o1),
        _ => return Err(wrong_type("label", field(obj, "label")?, "1 or 2")),
    };
    Ok(Pair::new(input.into(), chosen.into(), rejected.into()))
}

/// The PandaLM prompt: the instruction, then the input (if any) after a blank line.
pub(super) fn pandalm(obj: &Object) -> Result<Pair, Rejection> {
    let instruction = str_field(obj, "instruction")?;
    let input = match obj.get("input") {
        None | Some(serde_json::Value::Null) => "",
        Some(_) => str_field(obj, "input")?,
    };
    let r1 = str_field(obj, "response1")?;
    let r2 = str_field(obj, "response2")?;
    let mut votes = Vec::new();
    for key in ["annotator1", "annotator2", "annotator3"] {
        if let Some(v) = opt_num_field(obj, key)? {
            if ![0.0, 1.0, 2.0].contains(&v) {
                return Err(wrong_type(key, field(obj, key)?, "0 (tie), 1 or 2"));
            }
            votes.push(v as u8);
        }
    }
    if votes.is_empty() {
        return Err(Rejection::new(
            Reason::MissingField,
            "field `annotator1` is missing",
        ));
    }
    let prompt = if input.trim().is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    // margin = the share of annotators who voted for the winner.
    let pair = match majority(&votes) {
        Some(w @ (1 | 2)) => {
            let (c, r) = if w == 1 { (r1, r2) } else { (r2, r1) };
            let mut p = Pair::new(prompt, c.into(), r.into());
            p.margin = Some(votes.iter().filter(|&&v| v == w).count() as f32 / votes.len() as f32);
            p
        }
        _ => {
            let mut p = Pair::new(prompt, r1.into(), r2.into());
            p.tie = true;
            p
        }
    };
    Ok(pair)
}

/// The option with more than half of the votes, if any.
fn majority(votes: &[u8]) -> Option<u8> {
    (0..=2u8).find(|o| 2 * votes.iter().filter(|&&v| v == *o).count() > votes.len())
}

/// One AlpacaEval judgment. `preference` 1 means output_1 won, 2 output_2; the weighted judges
/// give the probability that output_2 won, plus 1 (1.83). The margin is the judge's
/// confidence, 2·|preference − 1.5| ∈ [0, 1]: 1 for a hard label. 1.5 is a tie; 0 means the
/// judge gave no decision and is quarantined as a tie.
pub(super) fn alpaca_eval(obj: &Object) -> Result<Pair, Rejection> {
    let instruction = str_field(obj, "instruction")?;
    let o1 = str_field(obj, "output_1")?;
    let o2 = str_field(obj, "output_2")?;
    let pref = num_field(obj, "preference")?;
    if pref == 0.0 {
        return Err(Rejection::new(
            Reason::Tie,
            "preference 0: the judge gave no decision",
        ));
    }
    if !(1.0..=2.0).contains(&pref) {
        return Err(wrong_type(
            "preference",
            field(obj, "preference")?,
            "a number in [1, 2]",
        ));
    }
    let (chosen, rejected) = if pref > 1.5 { (o2, o1) } else { (o1, o2) };
    let mut p = Pair::new(instruction.into(), chosen.into(), rejected.into());
    p.margin = Some((2.0 * (pref - 1.5).abs()) as f32);
    p.tie = pref == 1.5;
    Ok(p)
}

pub(super) fn generic(obj: &Object, map: &ColumnMap) -> Result<Pair, Rejection> {
    let mut pair = Pair::new(
        str_field(obj, &map.prompt)?.into(),
        str_field(obj, &map.chosen)?.into(),
        str_field(obj, &map.rejected)?.into(),
    );
    if let Some(col) = &map.margin {
        pair.margin = opt_num_field(obj, col)?.map(|m| m as f32);
    }
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn llmbar_label_picks_the_chosen_output() {
        let p = llmbar(&obj(
            json!({"input": "q", "output_1": "a", "output_2": "b", "label": 2}),
        ))
        .unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.chosen.as_str(), p.rejected.as_str()),
            ("q", "b", "a")
        );
        let e = llmbar(&obj(
            json!({"input": "q", "output_1": "a", "output_2": "b", "label": 3}),
        ));
        assert_eq!(e.unwrap_err().reason, Reason::WrongType);
        let e = llmbar(&obj(json!({"input": "q", "output_1": "a", "label": 1})));
        assert_eq!(e.unwrap_err().detail, "field `output_2` is missing");
        let e = llmbar(&obj(
            json!({"input": 5, "output_1": "a", "output_2": "b", "label": 1}),
        ));
        assert_eq!(
            e.unwrap_err().detail,
            "field `input` is a number, expected a string"
        );
    }

    #[test]
    fn pandalm_majority_vote_and_ties() {
        let base = json!({"instruction": "do", "input": "x", "response1": "r1", "response2": "r2"});
        let with = |a: u8, b: u8, c: u8| {
            let mut o = obj(base.clone());
            o.insert("annotator1".into(), json!(a));
            o.insert("annotator2".into(), json!(b));
            o.insert("annotator3".into(), json!(c));
            pandalm(&o).unwrap()
        };
        let p = with(2, 2, 1);
        assert_eq!((p.chosen.as_str(), p.tie), ("r2", false));
        assert_eq!(p.prompt, "do\n\nx");
        assert!((p.margin.unwrap() - 2.0 / 3.0).abs() < 1e-6);
        assert!(with(1, 2, 0).tie, "no majority is a tie");
        assert!(with(0, 0, 1).tie, "a majority for tie is a tie");
        assert_eq!(with(1, 1, 1).margin, Some(1.0));
    }

    #[test]
    fn alpaca_eval_preference_picks_the_winner_and_sets_the_confidence() {
        let with = |pref: serde_json::Value| {
            alpaca_eval(&obj(
                json!({"instruction": "q", "output_1": "ref", "output_2": "cand",
                "preference": pref, "annotator": "j", "generator_2": "m"}),
            ))
        };
        let p = with(json!(2)).unwrap();
        assert_eq!(
            (p.chosen.as_str(), p.margin, p.tie),
            ("cand", Some(1.0), false)
        );
        let p = with(json!(1.0)).unwrap();
        assert_eq!((p.chosen.as_str(), p.rejected.as_str()), ("ref", "cand"));
        let p = with(json!(1.83)).unwrap();
        assert_eq!(p.chosen, "cand");
        assert!((p.margin.unwrap() - 0.66).abs() < 1e-6);
        let p = with(json!(1.25)).unwrap();
        assert_eq!((p.chosen.as_str(), p.margin), ("ref", Some(0.5)));
        assert!(with(json!(1.5)).unwrap().tie);
        let e = with(json!(0)).unwrap_err();
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Reason::Tie, "preference 0: the judge gave no decision")
        );
        assert_eq!(with(json!(2.5)).unwrap_err().reason, Reason::WrongType);
        assert_eq!(with(json!("lots")).unwrap_err().reason, Reason::WrongType);
    }

    #[test]
    fn generic_column_map_and_margin() {
        let map: ColumnMap = "prompt=q,chosen=good,rejected=bad,margin=m"
            .parse()
            .unwrap();
        let p = generic(
            &obj(json!({"q": "x", "good": "g", "bad": "b", "m": 1.5})),
            &map,
        )
        .unwrap();
        assert_eq!((p.chosen.as_str(), p.margin), ("g", Some(1.5)));
        let e = generic(
            &obj(json!({"q": "x", "good": "g", "bad": "b", "m": "lots"})),
            &map,
        );
        assert_eq!(e.unwrap_err().reason, Reason::WrongType);
        assert!("prompt=a,foo=b".parse::<ColumnMap>().is_err());
    }
}
