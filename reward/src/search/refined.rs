//! Refinement of one answer per prompt, as `ember refine` runs it: a start answer from the
//! policy (greedy or sampled), one refinement each on [`PromptEnergy`] with its own noise
//! stream, then the start and final answers' log-probs under the policy; and the headline
//! numbers of the result.
use policy::sample::SampleConfig;
use policy::Policy;
use tracing::instrument;

use super::compute::Compute;
use super::energy::{max_answer_positions, PromptEnergy};
use super::io::{starts, Init, RefinedRow};
use super::refine::{refine, RefineConfig, StepTrace};
use crate::error::Result;
use crate::EnergyScorer;

/// Log-probs (answer + EOS) of `answers` under the policy.
pub fn answer_logprobs(
    policy: &Policy,
    prompts: &[String],
    answers: &[String],
    batch: usize,
) -> Result<Vec<f32>> {
    let lp = policy::score::answer_logprobs(policy, prompts, answers, batch)?;
    Ok(lp.into_iter().map(|(_, sum)| sum).collect())
}

/// The refined prompts and each one's step traces (by prompt index).
pub struct Refined {
    pub rows: Vec<RefinedRow>,
    pub traces: Vec<(usize, Vec<StepTrace>)>,
}

/// Refines one start answer per prompt: starts drawn with `sampling` (`init`), prompt `i`'s
/// noise from the `refine-noise` stream `i` of `seed`; log-probs scored `sampling.batch` at a
/// time. The caller seeds torch's generator and freezes both models.
#[instrument(skip_all, fields(prompts = prompts.len()))]
pub fn refine_prompts(
    policy: &Policy,
    scorer: &EnergyScorer,
    prompts: &[String],
    init: Init,
    sampling: &SampleConfig,
    optimiser: &RefineConfig,
    seed: u64,
) -> Result<Refined> {
    let extra = optimiser.extra_positions.max(1);
    let max_len = max_answer_positions(scorer, policy).saturating_sub(extra);
    let mut start_ledger = Compute::default();
    let starts = start_ledger.timed(|_| starts(policy, prompts, init, sampling, max_len))?;
    // Under a process group the ranks share the prompts (policy::dist::map_chunks); each
    // prompt's refinement depends only on its own noise stream, so the rows are the same.
    let refined = policy::dist::try_map_chunks(
        policy::dist::group(),
        prompts.len(),
        "refine",
        |i| {
            let (prompt, start) = (&prompts[i], &starts[i]);
            tch::manual_seed(policy::rng::torch_seed(seed, "refine-noise", i as u64));
            let energy = PromptEnergy::new(scorer, policy, prompt, start.ids.len() + extra)?;
            let mut ledger = Compute::default();
            ledger.policy_generate(1, start.ids.len() + 1);
            let mut out = refine(&energy, &start.ids, None, optimiser, None, &mut ledger)?;
            for step in &mut out.trace {
                let answer = scorer.tokenizer.decode(&step.best);
                step.best_gold = policy::pool::gold_of(prompt, &answer);
            }
            let final_answer = scorer.tokenizer.decode(&out.best);
            let row = RefinedRow {
                prompt: prompt.clone(),
                start_answer: start.answer.clone(),
                start_gold: policy::pool::gold_of(prompt, &start.answer),
                gold: policy::pool::gold_of(prompt, &final_answer),
                final_answer,
                start_energy: out.start_energy,
                best_energy: out.best_energy,
                steps: out.steps,
                start_logprob: 0.0,
                final_logprob: 0.0,
                energy_fwd: ledger.energy_fwd,
                policy_fwd: ledger.policy_fwd,
                wall_s: ledger.wall_s + start_ledger.wall_s / prompts.len() as f64,
            };
            tracing::trace!(target: "progress", task = "refine", step = i as u64 + 1, total = prompts.len() as u64);
            Ok::<_, crate::RewardError>((row, out.trace))
        },
    )?;
    let (mut rows, mut traces) = (Vec::new(), Vec::new());
    for (i, (row, trace)) in refined.into_iter().enumerate() {
        rows.push(row);
        traces.push((i, trace));
    }
    let starts_text: Vec<String> = rows.iter().map(|r| r.start_answer.clone()).collect();
    let finals: Vec<String> = rows.iter().map(|r| r.final_answer.clone()).collect();
    let start_lp = answer_logprobs(policy, prompts, &starts_text, sampling.batch)?;
    let final_lp = answer_logprobs(policy, prompts, &finals, sampling.batch)?;
    for ((r, s), f) in rows.iter_mut().zip(start_lp).zip(final_lp) {
        (r.start_logprob, r.final_logprob) = (s, f);
    }
    Ok(Refined { rows, traces })
}

/// How the steps went, over every step of every prompt: the share that lowered the best
/// discrete energy so far (the start's before the first step), and the Pearson correlation of
/// the relaxed energy before a step with the discrete energy after it (near 1: the relaxation
/// tracks the real objective). `traces` are by index into `rows`.
pub fn step_diagnostics(
    rows: &[RefinedRow],
    traces: &[(usize, Vec<StepTrace>)],
) -> serde_json::Value {
    let mut lowered = 0usize;
    for (i, t) in traces {
        let mut before = rows[*i].start_energy;
        for s in t {
            lowered += usize::from(s.best_energy < before);
            before = s.best_energy;
        }
    }
    let steps: Vec<&StepTrace> = traces.iter().flat_map(|(_, t)| t).collect();
    let x: Vec<f64> = steps.iter().map(|s| s.relaxed_energy).collect();
    let y: Vec<f64> = steps.iter().map(|s| f64::from(s.discrete_energy)).collect();
    serde_json::json!({
        "steps_total": steps.len(),
        "steps_lowering_share": (!steps.is_empty()).then(|| lowered as f64 / steps.len() as f64),
        "relaxed_discrete_corr": pearson(&x, &y),
    })
}

/// Pearson's r of two equal-length samples; `None` with fewer than two points or no spread.
fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// Headline numbers: mean start and best energies, share improved, gold before and after.
pub fn summary(rows: &[RefinedRow]) -> serde_json::Value {
    let n = rows.len().max(1) as f64;
    let avg = |f: &dyn Fn(&RefinedRow) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let golds: Vec<(f32, f32)> = rows
        .iter()
        .filter_map(|r| Some((r.start_gold?, r.gold?)))
        .collect();
    let gold = |f: fn(&(f32, f32)) -> f32| {
        (!golds.is_empty())
            .then(|| golds.iter().map(|g| f(g) as f64).sum::<f64>() / golds.len() as f64)
    };
    serde_json::json!({
        "prompts": rows.len(),
        "start_energy": avg(&|r| r.start_energy as f64),
        "best_energy": avg(&|r| r.best_energy as f64),
        "improved": avg(&|r| f64::from(u8::from(r.best_energy < r.start_energy))),
        "changed": avg(&|r| f64::from(u8::from(r.final_answer != r.start_answer))),
        "start_gold": gold(|g| g.0),
        "gold": gold(|g| g.1),
        "kl_estimate": avg(&|r| (r.start_logprob - r.final_logprob) as f64),
        "steps": avg(&|r| r.steps as f64),
        "energy_fwd": avg(&|r| r.energy_fwd),
        "policy_fwd": avg(&|r| r.policy_fwd),
        "wall_s": avg(&|r| r.wall_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_hand_values() {
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]), Some(1.0));
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(pearson(&[1.0, 1.0], &[0.0, 5.0]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }
}
