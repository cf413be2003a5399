//! The configurable deal pipeline: an ordered list of stage names, each
//! open, won or lost, with the probability a deal in it counts at in a
//! forecast.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Ordered deal stages. The default is lead → qualified → proposal →
/// negotiation → won / lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    stages: Vec<String>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            stages: [
                "lead",
                "qualified",
                "proposal",
                "negotiation",
                "won",
                "lost",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Pipeline {
    /// A pipeline of the given stages; names must be non-empty, unique, at
    /// most 64 bytes, and there must be at least one.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(stages: I) -> Result<Self> {
        let stages: Vec<String> = stages.into_iter().map(Into::into).collect();
        if stages.is_empty() {
            return Err(Error::InvalidPipeline("it needs at least one stage".into()));
        }
        for (i, s) in stages.iter().enumerate() {
            if s.trim().is_empty() || s.len() > 64 {
                return Err(Error::InvalidPipeline(format!(
                    "stage {s:?} must be 1 to 64 bytes and not blank"
                )));
            }
            if stages[..i].contains(s) {
                return Err(Error::InvalidPipeline(format!("stage {s:?} appears twice")));
            }
        }
        Ok(Pipeline { stages })
    }

    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    pub fn contains(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }

    /// Position of a stage, for ordering boards and summaries.
    pub fn position(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s == stage)
    }

    /// Whether a deal in `stage` is still open, won or lost. A stage named
    /// "won" or "closed won" wins a deal, "lost" or "closed lost" loses it
    /// (any case); every other stage, and one no longer in the pipeline,
    /// is open.
    pub fn outcome(&self, stage: &str) -> StageOutcome {
        match stage.trim().to_lowercase().as_str() {
            "won" | "closed won" => StageOutcome::Won,
            "lost" | "closed lost" => StageOutcome::Lost,
            _ => StageOutcome::Open,
        }
    }

    /// The probability (percent) a deal in `stage` that sets none of its
    /// own counts at: 100 when won, 0 when lost, and the open stages
    /// spread evenly below 100 in pipeline order (the default pipeline's
    /// lead 20, qualified 40, proposal 60, negotiation 80). A stage no
    /// longer in the pipeline counts at 0.
    pub fn probability(&self, stage: &str) -> i64 {
        match self.outcome(stage) {
            StageOutcome::Won => 100,
            StageOutcome::Lost => 0,
            StageOutcome::Open => {
                let open: Vec<&String> = self
                    .stages
                    .iter()
                    .filter(|s| self.outcome(s) == StageOutcome::Open)
                    .collect();
                match open.iter().position(|s| *s == stage) {
                    Some(i) => 100 * (i as i64 + 1) / (open.len() as i64 + 1),
                    None => 0,
                }
            }
        }
    }
}

/// Where a stage leaves a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageOutcome {
    Open,
    Won,
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_duplicate_and_blank_stages() {
        assert!(Pipeline::new(Vec::<String>::new()).is_err());
        let err = Pipeline::new(["a", "b", "a"]).unwrap_err().to_string();
        assert!(err.contains("\"a\" appears twice"), "{err}");
        assert!(Pipeline::new(["a", " "]).is_err());
        let p = Pipeline::new(["new", "won"]).unwrap();
        assert_eq!(p.position("won"), Some(1));
        assert!(!p.contains("lead"));
    }

    #[test]
    fn won_and_lost_close_a_deal_and_open_stages_spread_their_probability() {
        let p = Pipeline::default();
        assert_eq!(p.outcome("won"), StageOutcome::Won);
        assert_eq!(p.outcome("lost"), StageOutcome::Lost);
        assert_eq!(p.outcome("proposal"), StageOutcome::Open);
        let odds: Vec<i64> = p.stages().iter().map(|s| p.probability(s)).collect();
        assert_eq!(odds, [20, 40, 60, 80, 100, 0]);
        let custom = Pipeline::new(["New", "Closed Won", "Closed Lost"]).unwrap();
        assert_eq!(custom.outcome("Closed Won"), StageOutcome::Won);
        assert_eq!(custom.probability("New"), 50);
        assert_eq!(custom.probability("gone"), 0);
    }
}
