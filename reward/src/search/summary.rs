//! The best-of-n table: for n = 1, 2, 4, …, N, per-prompt unbiased estimates ([`super::bon`])
//! aggregated over prompts with Polars (mean and standard error), with the Beirami et al. 2024
//! bounds beside the empirical values.
use polars::prelude::{
    col, len, Column, DataFrame, DataType, IntoLazy, LazyFrame, PolarsResult, SortMultipleOptions,
};
use policy::pool::{by_prompt, Candidate};
use serde::{Deserialize, Serialize};

use super::bon;
use crate::error::{Result, RewardError};

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub n: usize,
    /// Prompts with at least n samples.
    pub prompts: usize,
    /// Mean over prompts of E[energy of the best of n] and its standard error.
    pub energy: f64,
    pub energy_se: f64,
    /// Mean gold of the energy-selected answer (synth prompts only) and its standard error.
    pub gold: Option<f64>,
    pub gold_se: Option<f64>,
    /// Win rate (by energy, ties ½) of best-of-n against one independent sample; n < N only.
    pub win_rate: Option<f64>,
    /// The bound n/(n+1).
    pub win_rate_bound: f64,
    /// KL of best-of-n over each prompt's empirical answer distribution, mean over prompts.
    pub kl_empirical: f64,
    /// The usual formula log n − (n−1)/n, an upper bound.
    pub kl_bound: f64,
}

/// Per-prompt estimates for every n of [`bon::table_ns`], as a long table
/// (`n`, `prompt_id`, `energy`, `gold`, `win_rate`, `kl_empirical`).
pub fn per_prompt(cands: &[Candidate], big_n: usize) -> PolarsResult<DataFrame> {
    let (mut ns, mut ids, mut energy, mut gold, mut win, mut kl) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for group in by_prompt(cands) {
        let e: Vec<f32> = group.iter().map(|c| c.energy).collect();
        let g: Option<Vec<f32>> = group.iter().map(|c| c.gold).collect();
        let answers: Vec<&str> = group.iter().map(|c| c.answer.as_str()).collect();
        for n in bon::table_ns(big_n)
            .into_iter()
            .filter(|&n| n <= group.len())
        {
            ns.push(n as u32);
            ids.push(group[0].prompt_id as u32);
            energy.push(bon::expected_best(&e, &e, n));
            gold.push(g.as_ref().map(|g| bon::expected_best(&e, g, n)));
            win.push(bon::win_rate(&e, n));
            kl.push(bon::kl_empirical(&e, &answers, n));
        }
    }
    let cols = vec![
        Column::new("n".into(), ns),
        Column::new("prompt_id".into(), ids),
        Column::new("energy".into(), energy),
        Column::new("gold".into(), gold),
        Column::new("win_rate".into(), win),
        Column::new("kl_empirical".into(), kl),
    ];
    let height = cols[0].len();
    DataFrame::new(height, cols)
}

/// Mean, standard deviation and non-null count per n.
fn aggregate(per_prompt: LazyFrame) -> LazyFrame {
    per_prompt
        .group_by([col("n")])
        .agg([
            len().alias("prompts"),
            col("energy").mean().alias("energy"),
            col("energy").std(1).alias("energy_sd"),
            col("gold").mean().alias("gold"),
            col("gold").std(1).alias("gold_sd"),
            col("gold").count().alias("gold_count"),
            col("win_rate").mean().alias("win_rate"),
            col("kl_empirical").mean().alias("kl_empirical"),
        ])
        .sort(["n"], SortMultipleOptions::default())
}

/// The best-of-n table from a pool with N samples per prompt.
pub fn summarize(cands: &[Candidate], big_n: usize) -> Result<Vec<SummaryRow>> {
    let table = |source| RewardError::Polars {
        context: "aggregating best-of-n",
        source,
    };
    let df = per_prompt(cands, big_n)
        .and_then(|df| aggregate(df.lazy()).collect())
        .map_err(table)?;
    let f64s = |name: &str| -> Result<Vec<Option<f64>>> {
        let col = df.column(name).and_then(|c| c.cast(&DataType::Float64));
        Ok(col.map_err(table)?.f64().map_err(table)?.iter().collect())
    };
    let (ns, prompts) = (f64s("n")?, f64s("prompts")?);
    let (energy, energy_sd) = (f64s("energy")?, f64s("energy_sd")?);
    let (gold, gold_sd, gold_count) = (f64s("gold")?, f64s("gold_sd")?, f64s("gold_count")?);
    let (win, kl) = (f64s("win_rate")?, f64s("kl_empirical")?);
    let se = |sd: Option<f64>, count: f64| sd.map(|sd| sd / count.max(1.0).sqrt());
    Ok((0..df.height())
        .map(|i| {
            let n = ns[i].unwrap_or(0.0) as usize;
            let count = prompts[i].unwrap_or(0.0);
            let gold_n = gold_count[i].unwrap_or(0.0);
            SummaryRow {
                n,
                prompts: count as usize,
                energy: energy[i].unwrap_or(f64::NAN),
                energy_se: se(energy_sd[i], count).unwrap_or(0.0),
                gold: gold[i].filter(|_| gold_n > 0.0),
                gold_se: se(gold_sd[i], gold_n).filter(|_| gold_n > 0.0),
                win_rate: win[i],
                win_rate_bound: bon::win_rate_bound(n),
                kl_empirical: kl[i].unwrap_or(0.0),
                kl_bound: bon::kl_bound(n),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Vec<Candidate> {
        // Two prompts, 4 samples each; gold 1 for the lowest energy, 0 otherwise.
        let rows = [
            (0, "a", 0.1, 1.0),
            (0, "b", 0.4, 0.0),
            (0, "b", 0.4, 0.0),
            (0, "c", 0.9, 0.0),
            (1, "x", 2.0, 0.0),
            (1, "y", 1.0, 1.0),
            (1, "z", 3.0, 0.0),
            (1, "w", 4.0, 0.0),
        ];
        rows.iter()
            .enumerate()
            .map(|(i, &(p, a, e, g))| Candidate {
                prompt_id: p,
                k: i % 4,
                prompt: format!("p{p}"),
                answer: a.into(),
                energy: e,
                logprob_sum: 0.0,
                gold: Some(g),
                answer_ids: vec![],
            })
            .collect()
    }

    #[test]
    fn table_means_the_per_prompt_estimates() {
        let cands = pool();
        let rows = summarize(&cands, 4).unwrap();
        assert_eq!(rows.iter().map(|r| r.n).collect::<Vec<_>>(), [1, 2, 4]);
        // n = 1: plain means; prompt 0 mean 0.45, prompt 1 mean 2.5 → 1.475.
        assert!((rows[0].energy - 1.475).abs() < 1e-6);
        // n = 4: the best answer of each prompt: (0.1 + 1.0)/2 and gold 1.
        assert!((rows[2].energy - 0.55).abs() < 1e-6);
        assert_eq!(rows[2].gold, Some(1.0));
        assert_eq!(rows[2].win_rate, None);
        // n = 2 by hand: weights 1/2, 1/3, 1/6, 0 → gold of the best = ½ for both prompts.
        assert!((rows[1].gold.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(rows[1].gold_se, Some(0.0));
        assert!((rows[0].win_rate.unwrap() - 0.5).abs() < 1e-9);
        assert!(rows
            .iter()
            .all(|r| r.prompts == 2 && r.kl_empirical <= r.kl_bound + 1e-12));
        // Energy and gold improve with n.
        assert!(rows
            .windows(2)
            .all(|w| w[1].energy < w[0].energy && w[1].gold > w[0].gold));
    }

    #[test]
    fn prompts_without_gold_leave_gold_empty() {
        let mut cands = pool();
        cands.iter_mut().for_each(|c| c.gold = None);
        let rows = summarize(&cands, 4).unwrap();
        assert!(rows.iter().all(|r| r.gold.is_none() && r.gold_se.is_none()));
    }
}
