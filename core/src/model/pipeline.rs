//! The configurable deal pipeline: an ordered list of stage names, each
//! open, won or lost, with the probability a deal in it counts at in a
//! forecast.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Ordered deal stages. The default is lead → qualified → proposal →
/// negotiation → won / lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    stages: Vec<String>,
    /// What the organisation configuration says of a stage beyond its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    settings: BTreeMap<String, StageSettings>,
}

/// A stage's outcome and probability when set rather than derived, and
/// whether it is retired (kept for the deals in it, offered to none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StageOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<i64>,
    #[serde(default)]
    pub retired: bool,
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
            settings: BTreeMap::new(),
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
        Ok(Pipeline {
            stages,
            settings: BTreeMap::new(),
        })
    }

    /// These stages in this order, each with its settings (the
    /// organisation configuration's pipeline).
    pub(crate) fn with_settings(stages: Vec<(String, StageSettings)>) -> Self {
        let settings = stages
            .iter()
            .filter(|(_, s)| *s != StageSettings::default())
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        Pipeline {
            stages: stages.into_iter().map(|(n, _)| n).collect(),
            settings,
        }
    }

    /// Every stage, retired ones included (deals may still be in them).
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// The stages a deal can be moved to: those not retired.
    pub fn active_stages(&self) -> impl Iterator<Item = &String> {
        self.stages.iter().filter(|s| !self.is_retired(s))
    }

    /// What the configuration says of `stage` beyond its name.
    pub fn settings(&self, stage: &str) -> Option<&StageSettings> {
        self.settings.get(stage)
    }

    pub fn is_retired(&self, stage: &str) -> bool {
        self.settings.get(stage).is_some_and(|s| s.retired)
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
    /// The configuration may set it for a stage instead.
    pub fn outcome(&self, stage: &str) -> StageOutcome {
        if let Some(outcome) = self.settings.get(stage).and_then(|s| s.outcome) {
            return outcome;
        }
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
    /// longer in the pipeline counts at 0. The configuration may set it
    /// for a stage instead.
    pub fn probability(&self, stage: &str) -> i64 {
        if let Some(p) = self.settings.get(stage).and_then(|s| s.probability) {
            return p;
        }
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
