//! The configurable deal pipeline: an ordered list of stage names.

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
}
