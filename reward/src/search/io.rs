//! Starting answers from the policy, and the Parquet tables of refinement and of the
//! comparison (written through `datasets::table`).
use std::path::Path;

use datasets::table::write_parquet;
use datasets::DatasetError;
use polars::prelude::{Column, DataFrame, NamedFrom, Series};
use policy::sample::{greedy, sample, SampleConfig};
use policy::Policy;
use serde::{Deserialize, Serialize};

use super::compare::Row;
use super::refine::StepTrace;
use crate::error::Result;

/// How the answer refinement starts from is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The policy's greedy answer.
    Greedy,
    /// One sample from the policy.
    Sample,
}

/// `greedy` or `sample`.
impl std::str::FromStr for Init {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "greedy" => Ok(Self::Greedy),
            "sample" => Ok(Self::Sample),
            other => Err(format!("unknown init {other:?}: expected greedy or sample")),
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Greedy => "greedy",
            Self::Sample => "sample",
        })
    }
}

/// A start answer: its text and its ids (end-of-answer removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub answer: String,
    pub ids: Vec<i64>,
}

/// One start answer per prompt, cut to `max_len` tokens.
pub fn starts(
    policy: &Policy,
    prompts: &[String],
    init: Init,
    sampling: &SampleConfig,
    max_len: usize,
) -> Result<Vec<Start>> {
    let samples = match init {
        Init::Greedy => greedy(policy, prompts, sampling.max_new_tokens, sampling.batch),
        Init::Sample => sample(
            policy,
            prompts,
            &SampleConfig {
                n: 1,
                ..sampling.clone()
            },
        ),
    }?;
    let eos = policy.tokenizer.eos_id();
    Ok(samples
        .into_iter()
        .map(|s| {
            let ids: Vec<i64> = s
                .answer_ids
                .iter()
                .copied()
                .take_while(|&t| t != eos)
                .take(max_len)
                .collect();
            Start {
                answer: policy.tokenizer.decode(&ids),
                ids,
            }
        })
        .collect())
}

/// One refined prompt: a row of `refined.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RefinedRow {
    pub prompt: String,
    pub start_answer: String,
    pub final_answer: String,
    pub start_energy: f32,
    pub best_energy: f32,
    pub steps: usize,
    pub start_gold: Option<f32>,
    pub gold: Option<f32>,
    pub start_logprob: f32,
    pub final_logprob: f32,
    pub energy_fwd: f64,
    pub policy_fwd: f64,
    pub wall_s: f64,
}

/// Writes `cols` (of `height` rows) as a Parquet table.
fn write(path: &Path, height: usize, cols: Vec<Column>) -> Result<()> {
    let mut df = DataFrame::new(height, cols).map_err(|e| DatasetError::table(path, e))?;
    Ok(write_parquet(path, &mut df)?)
}

fn col<T, I>(name: &str, values: I) -> Column
where
    I: IntoIterator<Item = T>,
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::new(name.into(), values.into_iter().collect::<Vec<T>>())
}

/// Writes `refined.parquet`.
pub fn write_refined(path: &Path, rows: &[RefinedRow]) -> Result<()> {
    let cols = vec![
        col("prompt", rows.iter().map(|r| r.prompt.as_str())),
        col("start_answer", rows.iter().map(|r| r.start_answer.as_str())),
        col("final_answer", rows.iter().map(|r| r.final_answer.as_str())),
        col("start_energy", rows.iter().map(|r| r.start_energy)),
        col("best_energy", rows.iter().map(|r| r.best_energy)),
        col("steps", rows.iter().map(|r| r.steps as u32)),
        col("start_gold", rows.iter().map(|r| r.start_gold)),
        col("gold", rows.iter().map(|r| r.gold)),
        col("start_logprob", rows.iter().map(|r| r.start_logprob)),
        col("final_logprob", rows.iter().map(|r| r.final_logprob)),
        col("energy_fwd", rows.iter().map(|r| r.energy_fwd)),
        col("policy_fwd", rows.iter().map(|r| r.policy_fwd)),
        col("wall_s", rows.iter().map(|r| r.wall_s)),
    ];
    write(path, rows.len(), cols)
}

/// Writes `traces.parquet`: one row per (prompt, step); relaxed values are diagnostics only.
pub fn write_traces(path: &Path, traces: &[(usize, Vec<StepTrace>)]) -> Result<()> {
    let flat: Vec<(usize, &StepTrace)> = traces
        .iter()
        .flat_map(|(p, t)| t.iter().map(move |s| (*p, s)))
        .collect();
    let cols = vec![
        col("prompt_id", flat.iter().map(|f| f.0 as u32)),
        col("step", flat.iter().map(|f| f.1.step as u32)),
        col("tau", flat.iter().map(|f| f.1.tau)),
        col("relaxed_energy", flat.iter().map(|f| f.1.relaxed_energy)),
        col("kl", flat.iter().map(|f| f.1.kl)),
        col("objective", flat.iter().map(|f| f.1.objective)),
        col("discrete_energy", flat.iter().map(|f| f.1.discrete_energy)),
        col("accepted", flat.iter().map(|f| f.1.accepted)),
        col("best_energy", flat.iter().map(|f| f.1.best_energy)),
        col("best_gold", flat.iter().map(|f| f.1.best_gold)),
        col("energy_fwd", flat.iter().map(|f| f.1.energy_fwd)),
        col("wall_s", flat.iter().map(|f| f.1.wall_s)),
    ];
    write(path, flat.len(), cols)
}

/// Writes `compare.parquet`: one row per (prompt, method, budget, seed).
pub fn write_rows(path: &Path, rows: &[Row]) -> Result<()> {
    let cols = vec![
        col("prompt_id", rows.iter().map(|r| r.prompt_id as u32)),
        col("prompt", rows.iter().map(|r| r.prompt.as_str())),
        col("method", rows.iter().map(|r| r.method.as_str())),
        col("budget", rows.iter().map(|r| r.budget as u32)),
        col("seed", rows.iter().map(|r| r.seed)),
        col("answer", rows.iter().map(|r| r.answer.as_str())),
        col("energy", rows.iter().map(|r| r.energy)),
        col("gold", rows.iter().map(|r| r.gold)),
        col("kl", rows.iter().map(|r| r.kl)),
        col("energy_fwd", rows.iter().map(|r| r.energy_fwd)),
        col("policy_fwd", rows.iter().map(|r| r.policy_fwd)),
        col("wall_s", rows.iter().map(|r| r.wall_s)),
        col("steps", rows.iter().map(|r| r.steps as u32)),
    ];
    write(path, rows.len(), cols)
}
