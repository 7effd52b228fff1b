//! A pool of candidates: N answers per prompt sampled from the policy, each scored once by the
//! energy model (through [`Scorer`], the one discrete scorer) and, for synth prompts, by the
//! gold reward. Shared by best-of-N search, the rank-vs-refine comparison and every
//! fine-tuning round; written to and read from Parquet through `datasets::table`.
use std::path::Path;

use datasets::table::{read_parquet, strings, write_parquet};
use datasets::DatasetError;
use polars::prelude::{Column, DataFrame, DataType, PolarsError};
use tracing::instrument;

use crate::error::Result;
use crate::sample::{sample, SampleConfig};
use crate::score::Scorer;
use crate::Policy;

/// One sampled answer with its scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    scorer: &dyn Scorer,
    prompts: &[String],
    cfg: &SampleConfig,
    score_batch: usize,
) -> Result<Vec<Candidate>> {
    let samples = sample(policy, prompts, cfg)?;
    let texts: Vec<String> = samples
        .iter()
        .map(|s| prompts[s.prompt_id].clone())
        .collect();
    let answers: Vec<String> = samples.iter().map(|s| s.answer.clone()).collect();
    let energies = scorer.energies(&texts, &answers, score_batch)?;
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

/// Indices of the samples sorted by energy, lowest first; equal energies keep index order.
pub fn ranking(energies: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..energies.len()).collect();
    order.sort_by(|&a, &b| energies[a].total_cmp(&energies[b]).then(a.cmp(&b)));
    order
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
    crate::io::check_finite(path, "energy", cands.iter().map(|c| c.energy))?;
    crate::io::check_finite(path, "logprob_sum", cands.iter().map(|c| c.logprob_sum))?;
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
    let mut df = DataFrame::new(cands.len(), cols).map_err(|e| DatasetError::table(path, e))?;
    Ok(write_parquet(path, &mut df)?)
}

/// Column `name` of `df` (read from `path`) cast to `dtype`.
fn column(
    df: &DataFrame,
    path: &Path,
    name: &str,
    dtype: DataType,
) -> Result<Column, DatasetError> {
    let col = df.column(name).map_err(|_| DatasetError::MissingColumn {
        path: path.to_path_buf(),
        column: name.into(),
    })?;
    col.cast(&dtype).map_err(|_| DatasetError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found: col.dtype().to_string(),
        expected: dtype.to_string(),
    })
}

/// Reads a table written by [`write_candidates`] (without the token ids).
pub fn read_candidates(path: &Path) -> Result<Vec<Candidate>> {
    let df = read_parquet(path)?;
    let col = |name: &str, dtype: DataType| column(&df, path, name, dtype);
    let bad = |e: PolarsError| DatasetError::table(path, e);
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
    let gold: Vec<Option<f32>> = match df.column("gold") {
        Ok(_) => col("gold", DataType::Float32)?
            .f32()
            .map_err(bad)?
            .iter()
            .collect(),
        Err(_) => vec![None; df.height()],
    };
    let iter = ids
        .u32()
        .map_err(bad)?
        .iter()
        .zip(ks.u32().map_err(bad)?.iter())
        .zip((prompts.str().map_err(bad)?.iter()).zip(answers.str().map_err(bad)?.iter()));
    let scores = (energy.f32().map_err(bad)?.iter()).zip(logprob.f32().map_err(bad)?.iter());
    Ok(iter
        .zip(scores)
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

/// Reads (prompt, answer) pairs from the text columns `prompt_col` and `answer_col`.
pub fn read_answers(
    path: &Path,
    prompt_col: &str,
    answer_col: &str,
) -> Result<Vec<(String, String)>> {
    let df = read_parquet(path)?;
    let prompts = strings(&df, path, prompt_col)?;
    Ok(prompts
        .into_iter()
        .zip(strings(&df, path, answer_col)?)
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
        assert_eq!(ranking(&[0.5, 0.2, 0.2, 0.1]), vec![3, 1, 2, 0]);
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
        let pairs = read_answers(&path, "prompt", "answer").unwrap();
        assert_eq!(
            pairs,
            vec![("p0".into(), "a".into()), ("p0".into(), "b".into())]
        );
        let err = read_answers(&path, "prompt", "final_answer").unwrap_err();
        assert!(
            err.to_string().contains("missing column `final_answer`"),
            "{err}"
        );
    }
}
