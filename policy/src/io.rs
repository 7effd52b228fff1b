//! Parquet tables the policy commands write: samples (`ember sample`) and answer log-probs
//! (`ember logprob`), written through `datasets::table`.
use std::path::Path;

use polars::prelude::*;

use crate::error::{PolicyError, Result};
use crate::sample::Sample;
use crate::Tokenizer;

fn table_err(path: &Path, e: PolarsError) -> PolicyError {
    PolicyError::Data {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn list_i64(name: &str, rows: impl Iterator<Item = Vec<i64>>) -> Column {
    let lists: Vec<Series> = rows.map(|v| Series::new("".into(), v)).collect();
    Series::new(name.into(), lists).into()
}

fn list_f32(name: &str, rows: impl Iterator<Item = Vec<f32>>) -> Column {
    let lists: Vec<Series> = rows.map(|v| Series::new("".into(), v)).collect();
    Series::new(name.into(), lists).into()
}

/// Refuses to write a table whose `what` column holds a NaN or infinity (Parquet would keep it,
/// and every number computed from it downstream would be NaN): names the first such row.
pub fn check_finite(path: &Path, what: &str, values: impl IntoIterator<Item = f32>) -> Result<()> {
    match values.into_iter().enumerate().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((row, v)) => Err(PolicyError::NonFiniteOutput {
            path: path.to_path_buf(),
            message: format!("row {}: {what} is {v}", row + 1),
        }),
    }
}

fn write(path: &Path, height: usize, cols: Vec<Column>) -> Result<()> {
    let mut df = DataFrame::new(height, cols).map_err(|e| table_err(path, e))?;
    Ok(datasets::table::write_parquet(path, &mut df)?)
}

/// `prompt_id, k, prompt, answer, prompt_ids, answer_ids, answer_logprobs, logprob_sum`.
pub fn write_samples(
    path: &Path,
    prompts: &[String],
    tokenizer: &Tokenizer,
    samples: &[Sample],
) -> Result<()> {
    if samples.is_empty() {
        return Err(PolicyError::Invalid(format!(
            "no samples to write to {}",
            path.display()
        )));
    }
    check_finite(path, "logprob_sum", samples.iter().map(|s| s.logprob_sum))?;
    let prompt_ids: Vec<Vec<i64>> = prompts.iter().map(|p| tokenizer.encode_prompt(p)).collect();
    let cols = vec![
        Column::new(
            "prompt_id".into(),
            samples
                .iter()
                .map(|s| s.prompt_id as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "k".into(),
            samples.iter().map(|s| s.k as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "prompt".into(),
            samples
                .iter()
                .map(|s| prompts[s.prompt_id].clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "answer".into(),
            samples.iter().map(|s| s.answer.clone()).collect::<Vec<_>>(),
        ),
        list_i64(
            "prompt_ids",
            samples.iter().map(|s| prompt_ids[s.prompt_id].clone()),
        ),
        list_i64("answer_ids", samples.iter().map(|s| s.answer_ids.clone())),
        list_f32(
            "answer_logprobs",
            samples.iter().map(|s| s.answer_logprobs.clone()),
        ),
        Column::new(
            "logprob_sum".into(),
            samples.iter().map(|s| s.logprob_sum).collect::<Vec<_>>(),
        ),
    ];
    write(path, samples.len(), cols)
}

/// `prompt, answer, answer_logprobs, logprob_sum, n_tokens`.
pub fn write_logprobs(
    path: &Path,
    rows: &[(String, String)],
    scores: &[(Vec<f32>, f32)],
) -> Result<()> {
    if rows.is_empty() {
        return Err(PolicyError::Invalid(format!(
            "no rows to write to {}",
            path.display()
        )));
    }
    check_finite(path, "logprob_sum", scores.iter().map(|s| s.1))?;
    let cols = vec![
        Column::new(
            "prompt".into(),
            rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "answer".into(),
            rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        ),
        list_f32("answer_logprobs", scores.iter().map(|s| s.0.clone())),
        Column::new(
            "logprob_sum".into(),
            scores.iter().map(|s| s.1).collect::<Vec<_>>(),
        ),
        Column::new(
            "n_tokens".into(),
            scores.iter().map(|s| s.0.len() as u32).collect::<Vec<_>>(),
        ),
    ];
    write(path, rows.len(), cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_sample_table_with_list_columns() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::char_level(["12+="]).unwrap();
        let s = Sample {
            prompt_id: 0,
            k: 1,
            answer: "3".into(),
            answer_ids: vec![5, 2],
            answer_logprobs: vec![-0.5, -0.25],
            logprob_sum: -0.75,
        };
        let path = dir.path().join("s.parquet");
        write_samples(&path, &["1+2=".to_string()], &tok, &[s]).unwrap();
        let df = datasets::table::read_parquet(&path).unwrap();
        assert_eq!(df.height(), 1);
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "prompt_id",
                "k",
                "prompt",
                "answer",
                "prompt_ids",
                "answer_ids",
                "answer_logprobs",
                "logprob_sum"
            ]
        );
        assert!(write_samples(&path, &[], &tok, &[]).is_err());
    }
}
