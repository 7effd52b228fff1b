//! A pool of candidates: N answers per prompt sampled from the policy, each scored once by the
//! energy model (`reward::EnergyScorer::score`, the one discrete scorer) and, for synth prompts,
//! by the gold reward. Shared by `ember rank` and every `ember finetune` round.
use std::fs::File;
use std::path::Path;

use anyhow::{Context as _, Result};
use polars::prelude::{Column, DataFrame, DataType, ParquetReader, ParquetWriter, SerReader};
use policy::sample::{sample, SampleConfig};
use policy::Policy;
use reward::EnergyScorer;
use tracing::instrument;

use super::bon::ranking;

/// One sampled answer with its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub prompt_id: usize,
    pub k: usize,
    pub prompt: String,
    pub answer: String,
    /// Energy under the reward model (lower is better).
    pub energy: f32,
    /// Sum of the answer tokens' log-probs (EOS included) under the sampling policy.
    pub logprob_sum: f32,
    /// Gold reward in [0, 1] when the prompt is a synth prompt.
    pub gold: Option<f32>,
    /// The generated token ids (EOS included when generated); not written to Parquet.
    pub answer_ids: Vec<i64>,
}

/// The gold reward of an answer when `prompt` is a synth prompt, `None` otherwise.
pub fn gold_of(prompt: &str, answer: &str) -> Option<f32> {
    datasets::synth::Problem::parse(prompt).map(|_| datasets::synth::gold(prompt, answer))
}

/// `cfg.n` samples per prompt, energies scored in batches of `score_batch`; ordered by
/// (prompt_id, k).
#[instrument(skip_all, fields(prompts = prompts.len(), n = cfg.n))]
pub fn draw(
    policy: &Policy,
    scorer: &EnergyScorer,
    prompts: &[String],
    cfg: &SampleConfig,
    score_batch: usize,
) -> Result<Vec<Candidate>> {
    let samples = sample(policy, prompts, cfg).context("sampling answers")?;
    let texts: Vec<String> = samples
        .iter()
        .map(|s| prompts[s.prompt_id].clone())
        .collect();
    let answers: Vec<String> = samples.iter().map(|s| s.answer.clone()).collect();
    let energies = scorer
        .score(&texts, &answers, score_batch)
        .context("scoring energies")?;
    Ok(samples
        .into_iter()
        .zip(energies)
        .map(|(s, energy)| {
            let prompt = &prompts[s.prompt_id];
            Candidate {
                prompt_id: s.prompt_id,
                k: s.k,
                gold: gold_of(prompt, &s.answer),
                prompt: prompt.clone(),
                answer: s.answer,
                answer_ids: s.answer_ids,
                energy,
                logprob_sum: s.logprob_sum,
            }
        })
        .collect())
}

/// Consecutive runs of candidates with the same prompt.
pub fn by_prompt(cands: &[Candidate]) -> Vec<&[Candidate]> {
    cands.chunk_by(|a, b| a.prompt_id == b.prompt_id).collect()
}

/// The lowest-energy candidate of each prompt (ties: lowest k).
pub fn best_per_prompt(cands: &[Candidate]) -> Vec<Candidate> {
    by_prompt(cands)
        .into_iter()
        .map(|group| {
            let energies: Vec<f32> = group.iter().map(|c| c.energy).collect();
            group[ranking(&energies)[0]].clone()
        })
        .collect()
}

/// Writes candidates as Parquet: `prompt_id`, `k`, `prompt`, `answer`, `energy`,
/// `logprob_sum`, and `gold` when any candidate has one.
pub fn write_candidates(path: &Path, cands: &[Candidate]) -> Result<()> {
    let mut cols = vec![
        Column::new(
            "prompt_id".into(),
            cands.iter().map(|c| c.prompt_id as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "k".into(),
            cands.iter().map(|c| c.k as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "prompt".into(),
            cands.iter().map(|c| c.prompt.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "answer".into(),
            cands.iter().map(|c| c.answer.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "energy".into(),
            cands.iter().map(|c| c.energy).collect::<Vec<_>>(),
        ),
        Column::new(
            "logprob_sum".into(),
            cands.iter().map(|c| c.logprob_sum).collect::<Vec<_>>(),
        ),
    ];
    if cands.iter().any(|c| c.gold.is_some()) {
        cols.push(Column::new(
            "gold".into(),
            cands.iter().map(|c| c.gold).collect::<Vec<_>>(),
        ));
    }
    let mut df = DataFrame::new(cands.len(), cols).context("building the candidates table")?;
    write_parquet(path, &mut df)
}

/// Reads a table written by [`write_candidates`] (without the token ids).
pub fn read_candidates(path: &Path) -> Result<Vec<Candidate>> {
    let df = read_parquet(path)?;
    let col = |name: &str, dtype: DataType| -> Result<Column> {
        df.column(name)
            .with_context(|| format!("{}: no column `{name}`", path.display()))?
            .cast(&dtype)
            .with_context(|| format!("{}: column `{name}` is not {dtype}", path.display()))
    };
    let (ids, ks) = (
        col("prompt_id", DataType::UInt32)?,
        col("k", DataType::UInt32)?,
    );
    let (prompts, answers) = (
        col("prompt", DataType::String)?,
        col("answer", DataType::String)?,
    );
    let (energy, logprob) = (
        col("energy", DataType::Float32)?,
        col("logprob_sum", DataType::Float32)?,
    );
    let gold = df
        .column("gold")
        .ok()
        .map(|c| c.cast(&DataType::Float32))
        .transpose()?;
    let gold: Vec<Option<f32>> = match &gold {
        Some(g) => g.f32()?.iter().collect(),
        None => vec![None; df.height()],
    };
    let iter = ids
        .u32()?
        .iter()
        .zip(ks.u32()?.iter())
        .zip(prompts.str()?.iter().zip(answers.str()?.iter()));
    Ok(iter
        .zip(energy.f32()?.iter().zip(logprob.f32()?.iter()))
        .zip(gold)
        .map(|((((id, k), (p, a)), (e, lp)), gold)| Candidate {
            prompt_id: id.unwrap_or(0) as usize,
            k: k.unwrap_or(0) as usize,
            prompt: p.unwrap_or_default().to_string(),
            answer: a.unwrap_or_default().to_string(),
            energy: e.unwrap_or(f32::NAN),
            logprob_sum: lp.unwrap_or(f32::NAN),
            gold,
            answer_ids: vec![],
        })
        .collect())
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes a DataFrame to a Parquet file.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    ParquetWriter::new(file)
        .finish(df)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads (prompt, answer) pairs from the Parquet columns `prompt_col` and `answer_col`.
pub fn read_pairs(
    path: &Path,
    prompt_col: &str,
    answer_col: &str,
) -> Result<Vec<(String, String)>> {
    let df = read_parquet(path)?;
    let strings = |name: &str| -> Result<Vec<String>> {
        let col = df
            .column(name)
            .with_context(|| format!("{}: no column `{name}`", path.display()))?;
        let ca = col
            .str()
            .with_context(|| format!("{}: column `{name}` is not text", path.display()))?;
        Ok(ca
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    Ok(strings(prompt_col)?
        .into_iter()
        .zip(strings(answer_col)?)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(prompt_id: usize, k: usize, answer: &str, energy: f32) -> Candidate {
        Candidate {
            prompt_id,
            k,
            prompt: format!("p{prompt_id}"),
            answer: answer.into(),
            energy,
            logprob_sum: -1.0,
            gold: None,
            answer_ids: vec![],
        }
    }

    #[test]
    fn best_per_prompt_takes_lowest_energy_first_k_on_ties() {
        let cands = vec![
            cand(0, 0, "a", 0.5),
            cand(0, 1, "b", 0.2),
            cand(0, 2, "c", 0.2),
            cand(1, 0, "d", 1.0),
            cand(1, 1, "e", 3.0),
        ];
        let best = best_per_prompt(&cands);
        assert_eq!(
            best.iter().map(|c| c.answer.as_str()).collect::<Vec<_>>(),
            ["b", "d"]
        );
        assert_eq!(
            by_prompt(&cands)
                .iter()
                .map(|g| g.len())
                .collect::<Vec<_>>(),
            [3, 2]
        );
    }

    #[test]
    fn gold_only_for_synth_prompts() {
        assert_eq!(gold_of("12+5=", "17"), Some(1.0));
        assert_eq!(gold_of("how are you?", "17"), None);
    }

    #[test]
    fn candidates_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        let mut cands = vec![cand(0, 0, "a", 0.5), cand(0, 1, "b", 0.25)];
        cands[1].gold = Some(1.0);
        write_candidates(&path, &cands).unwrap();
        assert_eq!(read_candidates(&path).unwrap(), cands);
        let pairs = read_pairs(&path, "prompt", "answer").unwrap();
        assert_eq!(
            pairs,
            vec![("p0".into(), "a".into()), ("p0".into(), "b".into())]
        );
        let err = read_pairs(&path, "prompt", "final_answer").unwrap_err();
        assert!(
            format!("{err:#}").contains("no column `final_answer`"),
            "{err:#}"
        );
    }
}
