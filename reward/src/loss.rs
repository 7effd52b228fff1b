//! Contrastive losses on energies, following LeCun, Chopra, Hadsell, Ranzato & Huang (2006),
//! "A Tutorial on Energy-Based Learning", section 2.2 (table 1).
//!
//! Every function takes the energies of the chosen answers `e_pos` (`E⁺`, shape `[B]`) and of
//! the rejected ones `e_neg` (`E⁻`, `[B]`), the per-pair data margin `m_i` (`[B]`, 0 when the
//! `margin` column is null) and returns the per-pair loss `[B]`; [`batch_loss`] reduces them,
//! adds the tie term and the zero-anchor term. Each loss is small and pure so that it can be
//! checked against hand-computed numbers.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which loss `--loss` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Bradley–Terry / log loss: softplus(E⁺ − E⁻ + mᵢ).
    Log,
    /// Hinge: max(0, m + mᵢ + E⁺ − E⁻).
    Hinge,
    /// Square-square: E⁺² + max(0, m + mᵢ − E⁻)².
    SquareSquare,
    /// Square-exponential: E⁺² + γ·exp(−E⁻).
    SquareExp,
    /// Negative log-likelihood (InfoNCE) over the positive and K negatives:
    /// E⁺ + (1/β)·log Σₖ exp(−β·Eₖ).
    Nll,
}

impl LossKind {
    /// The config and CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Hinge => "hinge",
            Self::SquareSquare => "square-square",
            Self::SquareExp => "square-exp",
            Self::Nll => "nll",
        }
    }

    /// True for the losses that only fix energy differences (so a zero anchor is meaningful).
    pub fn difference_only(self) -> bool {
        matches!(self, Self::Log | Self::Hinge | Self::Nll)
    }
}

/// `log` (or `bt`), `hinge`, `square-square`, `square-exp`, `nll` (or `infonce`).
impl std::str::FromStr for LossKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" | "bt" => Ok(Self::Log),
            "hinge" => Ok(Self::Hinge),
            "square-square" => Ok(Self::SquareSquare),
            "square-exp" => Ok(Self::SquareExp),
            "nll" | "infonce" => Ok(Self::Nll),
            other => Err(format!(
                "unknown loss {other:?}: expected log, hinge, square-square, square-exp or nll"
            )),
        }
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with tie rows (`tie = true` from ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TieMode {
    /// Tie rows are removed before training (and counted).
    Skip,
    /// Tie rows are trained towards equal energy: (E_a − E_b)².
    Equal,
}

impl std::str::FromStr for TieMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "equal" => Ok(Self::Equal),
            other => Err(format!(
                "unknown tie mode {other:?}: expected skip or equal"
            )),
        }
    }
}

impl std::fmt::Display for TieMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Skip => "skip",
            Self::Equal => "equal",
        })
    }
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// The loss: log (Bradley–Terry), hinge, square-square, square-exp or nll (InfoNCE).
    #[cfg_attr(feature = "clap", arg(long = "loss", value_name = "LOSS", default_value_t = LossConfig::default().kind))]
    pub kind: LossKind,
    /// Margin m of the hinge and square-square losses.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = LossConfig::default().margin))]
    pub margin: f64,
    /// γ of the square-exponential loss.
    #[cfg_attr(feature = "clap", arg(skip = LossConfig::default().gamma))]
    pub gamma: f64,
    /// Inverse temperature β of the nll loss.
    #[cfg_attr(feature = "clap", arg(skip = LossConfig::default().beta))]
    pub beta: f64,
    /// Weight λ of the zero-anchor term λ·mean(E⁺²) (0 disables it).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = LossConfig::default().anchor))]
    pub anchor: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Log,
            margin: 1.0,
            gamma: 1.0,
            beta: 1.0,
            anchor: 0.0,
        }
    }
}

/// Bradley–Terry: softplus(E⁺ − E⁻ + mᵢ) = −log σ(E⁻ − E⁺ − mᵢ).  `[B]`
pub fn log_loss(e_pos: &Tensor, e_neg: &Tensor, m_i: &Tensor) -> Tensor {
    (e_pos - e_neg + m_i).softplus()
}

/// Hinge: max(0, m + mᵢ + E⁺ − E⁻).  `[B]`
pub fn hinge_loss(e_pos: &Tensor, e_neg: &Tensor, m_i: &Tensor, m: f64) -> Tensor {
    (e_pos - e_neg + m_i + m).relu()
}

/// Square-square: E⁺² + max(0, m + mᵢ − E⁻)².  `[B]`
pub fn square_square_loss(e_pos: &Tensor, e_neg: &Tensor, m_i: &Tensor, m: f64) -> Tensor {
    e_pos.square() + (m_i - e_neg + m).relu().square()
}

/// Square-exponential: E⁺² + γ·exp(−E⁻).  `[B]`
pub fn square_exp_loss(e_pos: &Tensor, e_neg: &Tensor, gamma: f64) -> Tensor {
    e_pos.square() + e_neg.neg().exp() * gamma
}

/// NLL / InfoNCE: E⁺ + (1/β)·log Σₖ exp(−β·Eₖ), the sum running over the positive and its
/// negatives `negs` (`[B, K]`: the rejected answer, other prompts' answers, sampled answers).
/// Always ≥ 0; equals (1/β)·log(K+1) when all energies are equal.  `[B]`
pub fn nll_loss(e_pos: &Tensor, negs: &Tensor, beta: f64) -> Tensor {
    let all = Tensor::cat(&[e_pos.unsqueeze(1), negs.shallow_clone()], 1); // [B, K+1]
    e_pos + (all * -beta).logsumexp([1], false) / beta
}

/// Tie term: trains both answers of a tie row towards equal energy, (E_a − E_b)².  `[B]`
pub fn tie_loss(e_a: &Tensor, e_b: &Tensor) -> Tensor {
    (e_a - e_b).square()
}

/// Per-pair loss of `cfg.kind` (`[B]`). `negs` (`[B, K]`) is used by `nll` only; when absent,
/// `nll` uses the rejected answer as its single negative.
pub fn pair_loss(
    cfg: &LossConfig,
    e_pos: &Tensor,
    e_neg: &Tensor,
    m_i: &Tensor,
    negs: Option<&Tensor>,
) -> Tensor {
    match cfg.kind {
        LossKind::Log => log_loss(e_pos, e_neg, m_i),
        LossKind::Hinge => hinge_loss(e_pos, e_neg, m_i, cfg.margin),
        LossKind::SquareSquare => square_square_loss(e_pos, e_neg, m_i, cfg.margin),
        LossKind::SquareExp => square_exp_loss(e_pos, e_neg, cfg.gamma),
        LossKind::Nll => match negs {
            Some(n) => nll_loss(e_pos, n, cfg.beta),
            None => nll_loss(e_pos, &e_neg.unsqueeze(1), cfg.beta),
        },
    }
}

/// The scalar training loss of a batch: mean pair loss over the preference rows, plus the tie
/// term over the tie rows (`tie` is a `[B]` float mask, 1 for a tie row; tie rows get no pair
/// loss), plus λ·mean(E⁺²) over the preference rows.
pub fn batch_loss(
    cfg: &LossConfig,
    e_pos: &Tensor,
    e_neg: &Tensor,
    m_i: &Tensor,
    tie: &Tensor,
    negs: Option<&Tensor>,
) -> Tensor {
    batch_loss_over(cfg, e_pos, e_neg, m_i, tie, negs, &loss_counts(tie))
}

/// The rows [`batch_loss`] averages over: `[preferred pairs, ties]` of the batch (float).
/// Data-parallel training replaces them by the whole global batch's
/// ([`policy::train::global_counts`]).
pub fn loss_counts(tie: &Tensor) -> Tensor {
    let n_tie = tie.sum(Kind::Float);
    let n_pref = -&n_tie + tie.size()[0] as f64;
    Tensor::stack(&[n_pref, n_tie], 0)
}

/// [`batch_loss`] averaging over `counts` (`[preferred, ties]`, each clamped to at least 1)
/// instead of the batch's own.
pub fn batch_loss_over(
    cfg: &LossConfig,
    e_pos: &Tensor,
    e_neg: &Tensor,
    m_i: &Tensor,
    tie: &Tensor,
    negs: Option<&Tensor>,
    counts: &Tensor,
) -> Tensor {
    let pref = tie.ones_like() - tie; // [B]
    let n_pref = counts.get(0).clamp_min(1.0);
    let n_tie = counts.get(1).clamp_min(1.0);
    let pairs = (pair_loss(cfg, e_pos, e_neg, m_i, negs) * &pref).sum(Kind::Float) / &n_pref;
    let ties = (tie_loss(e_pos, e_neg) * tie).sum(Kind::Float) / n_tie;
    let mut loss = pairs + ties;
    if cfg.anchor > 0.0 {
        loss += (e_pos.square() * &pref).sum(Kind::Float) / n_pref * cfg.anchor;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn vals(x: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(x.to_kind(Kind::Float).reshape([-1])).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn log_loss_matches_hand_computed() {
        // softplus(1-3+0)=ln(1+e^-2)=0.126928; softplus(2-1+0.5)=ln(1+e^1.5)=1.701413
        let l = log_loss(&t(&[1.0, 2.0]), &t(&[3.0, 1.0]), &t(&[0.0, 0.5]));
        close(&vals(&l), &[0.126_928, 1.701_413]);
    }

    #[test]
    fn hinge_loss_matches_hand_computed() {
        // m=1: max(0,1+0+1-3)=0; max(0,1+0.5+2-1)=2.5
        let l = hinge_loss(&t(&[1.0, 2.0]), &t(&[3.0, 1.0]), &t(&[0.0, 0.5]), 1.0);
        close(&vals(&l), &[0.0, 2.5]);
    }

    #[test]
    fn square_square_matches_hand_computed() {
        // m=2: 1 + max(0,2-3)^2 = 1; 4 + max(0,2+0.5-1)^2 = 4+2.25 = 6.25
        let l = square_square_loss(&t(&[1.0, 2.0]), &t(&[3.0, 1.0]), &t(&[0.0, 0.5]), 2.0);
        close(&vals(&l), &[1.0, 6.25]);
    }

    #[test]
    fn square_exp_matches_hand_computed() {
        // γ=2: 1 + 2e^-3 = 1.0995741; 4 + 2e^-1 = 4.7357589
        let l = square_exp_loss(&t(&[1.0, 2.0]), &t(&[3.0, 1.0]), 2.0);
        close(&vals(&l), &[1.099_574, 4.735_759]);
    }

    #[test]
    fn nll_matches_hand_computed() {
        // β=1, E⁺=1, negs {2,3}: 1 + ln(e^-1+e^-2+e^-3) = 1 + ln(0.553001) = 0.407606
        // equal energies {0.5,0.5,0.5}, β=2: 0.5 + ln(3 e^-1)/2 = ln(3)/2 = 0.549306
        let l = nll_loss(
            &t(&[1.0, 0.5]),
            &Tensor::from_slice2(&[[2.0f32, 3.0], [0.5, 0.5]]),
            1.0,
        );
        close(&vals(&l)[..1], &[0.407_606]);
        let l = nll_loss(&t(&[0.5]), &Tensor::from_slice2(&[[0.5f32, 0.5]]), 2.0);
        close(&vals(&l), &[0.549_306]);
    }

    #[test]
    fn nll_without_negatives_uses_the_rejected_answer() {
        let cfg = LossConfig {
            kind: LossKind::Nll,
            ..Default::default()
        };
        // 1 + ln(e^-1 + e^-3) = 1 + ln(0.417667) = 0.126928 (= BT loss with β=1)
        let l = pair_loss(&cfg, &t(&[1.0]), &t(&[3.0]), &t(&[0.0]), None);
        close(&vals(&l), &[0.126_928]);
    }

    #[test]
    fn batch_loss_separates_ties_and_adds_anchor() {
        let cfg = LossConfig {
            kind: LossKind::Hinge,
            margin: 1.0,
            anchor: 0.5,
            ..Default::default()
        };
        // rows: pref (E⁺=1,E⁻=1.5): hinge 0.5; pref (2,4): 0; tie (1,3): (1-3)^2 = 4
        // pairs mean = 0.25; ties mean = 4; anchor = 0.5 * (1+4)/2 = 1.25 → 5.5
        let l = batch_loss(
            &cfg,
            &t(&[1.0, 2.0, 1.0]),
            &t(&[1.5, 4.0, 3.0]),
            &t(&[0.0, 0.0, 0.0]),
            &t(&[0.0, 0.0, 1.0]),
            None,
        );
        close(&vals(&l), &[5.5]);
    }

    #[test]
    fn loss_names_parse() {
        assert_eq!("square-exp".parse(), Ok(LossKind::SquareExp));
        assert_eq!("nll".parse(), Ok(LossKind::Nll));
        assert!("nope".parse::<LossKind>().is_err());
        for k in [
            LossKind::Log,
            LossKind::Hinge,
            LossKind::SquareSquare,
            LossKind::SquareExp,
        ] {
            assert_eq!(k.to_string().parse(), Ok(k));
        }
    }
}
