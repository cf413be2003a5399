//! Deal figures for dashboards. A store adds its live deals up by stage,
//! currency and close month ([`DealGroups`], one SQL query, or a deal at a
//! time when read as they stood at a past time); everything a dashboard
//! shows is folded from those groups here, once for every store: the
//! pipeline by stage, the open pipeline and its weighted forecast by close
//! month, and what was won and lost in a quarter. Amounts of different
//! currencies are never added together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Pipeline, Record, StageOutcome};
use crate::query::{add_to_summary, empty_summary, StageSummary};

/// What deals in one group add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DealSums {
    pub count: usize,
    /// Minor units.
    pub amount: i64,
    /// Σ amount × probability (minor units × percent) over the deals that
    /// set a probability of their own.
    pub amount_times_own_probability: i128,
    /// Σ amount over the deals that set none: they count at their stage's.
    pub amount_without_probability: i64,
}

impl DealSums {
    fn add(&mut self, other: DealSums) {
        self.count += other.count;
        self.amount += other.amount;
        self.amount_times_own_probability += other.amount_times_own_probability;
        self.amount_without_probability += other.amount_without_probability;
    }
}

/// The key deals are grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    stage: String,
    /// "" where a deal has no currency.
    currency: String,
    /// `YYYY-MM` of the close date; None where there is none.
    close_month: Option<String>,
}

/// Deals added up by stage, currency and close month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DealGroups(BTreeMap<GroupKey, DealSums>);

impl DealGroups {
    /// Adds a group of deals (a row of a store's aggregate query).
    pub fn add(&mut self, stage: &str, currency: &str, close_date: Option<&str>, sums: DealSums) {
        let key = GroupKey {
            stage: stage.to_string(),
            currency: currency.to_string(),
            close_month: close_date.map(|d| d.chars().take(7).collect()),
        };
        self.0.entry(key).or_default().add(sums);
    }

    /// Adds one deal (read from its document, as it stood at some time).
    pub fn add_deal(&mut self, deal: &Record) {
        let amount = deal.get("amount").and_then(|v| v.as_int()).unwrap_or(0);
        let own = deal.get("probability").and_then(|v| v.as_int());
        let sums = DealSums {
            count: 1,
            amount,
            amount_times_own_probability: own.map_or(0, |p| amount as i128 * p as i128),
            amount_without_probability: if own.is_none() { amount } else { 0 },
        };
        self.add(
            deal.text("stage").unwrap_or_default(),
            deal.text("currency").unwrap_or_default(),
            deal.text("close_date"),
            sums,
        );
    }

    /// Deals per stage, in pipeline order (stages no longer in it last).
    pub fn stage_summary(&self, pipeline: &Pipeline) -> Vec<StageSummary> {
        let mut summary = empty_summary(pipeline);
        for (key, sums) in &self.0 {
            add_to_summary(
                &mut summary,
                key.stage.clone(),
                key.currency.clone(),
                sums.count,
                sums.amount,
            );
        }
        summary
    }
}

/// Count, amount and weighted amount (amount × probability) of some deals
/// in one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub count: usize,
    /// Minor units.
    pub amount: i64,
    /// Minor units × percent; see [`Totals::weighted`].
    weighted_percent: i128,
}

impl Totals {
    /// The weighted amount in minor units, rounded half away from zero.
    pub fn weighted(&self) -> i64 {
        let w = self.weighted_percent;
        let rounded = if w >= 0 {
            (w + 50) / 100
        } else {
            (w - 50) / 100
        };
        rounded.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    fn add(&mut self, sums: &DealSums, stage_probability: i64) {
        self.count += sums.count;
        self.amount = self.amount.saturating_add(sums.amount);
        self.weighted_percent += sums.amount_times_own_probability
            + sums.amount_without_probability as i128 * stage_probability as i128;
    }
}

/// By currency ("" for deals without one).
pub type ByCurrency = BTreeMap<String, Totals>;

/// One stage of the pipeline and its deals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFigures {
    pub stage: String,
    pub outcome: StageOutcome,
    /// The probability (percent) its deals count at unless they set one.
    pub probability: i64,
    pub currencies: ByCurrency,
}

/// Open deals expected to close in one month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastMonth {
    /// `YYYY-MM`; None for deals without a close date.
    pub month: Option<String>,
    pub currencies: ByCurrency,
}

/// What a dashboard shows of the deals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// Every stage in pipeline order, closed ones included.
    pub stages: Vec<StageFigures>,
    /// Open deals only.
    pub open: ByCurrency,
    /// Open deals by close month, earliest first, those without a date last.
    pub forecast: Vec<ForecastMonth>,
    /// The quarter `won` and `lost` count, e.g. "2026 Q4".
    pub quarter: String,
    /// Deals won with a close date in the quarter.
    pub won: ByCurrency,
    /// Deals lost with a close date in the quarter.
    pub lost: ByCurrency,
}

impl PipelineReport {
    /// The report for `today`'s quarter.
    pub fn new(pipeline: &Pipeline, groups: &DealGroups, today: time::Date) -> PipelineReport {
        let year = today.year();
        let first = (u8::from(today.month()) - 1) / 3 * 3 + 1;
        let quarter_months: Vec<String> = (first..first + 3)
            .map(|m| format!("{year:04}-{m:02}"))
            .collect();
        let figures = |stage: &str| StageFigures {
            stage: stage.to_string(),
            outcome: pipeline.outcome(stage),
            probability: pipeline.probability(stage),
            currencies: ByCurrency::new(),
        };
        let mut stages: Vec<StageFigures> = pipeline.stages().iter().map(|s| figures(s)).collect();
        let mut open = ByCurrency::new();
        let mut forecast: BTreeMap<(bool, String), ByCurrency> = BTreeMap::new();
        let (mut won, mut lost) = (ByCurrency::new(), ByCurrency::new());
        for (key, sums) in &groups.0 {
            let i = match stages.iter().position(|s| s.stage == key.stage) {
                Some(i) => i,
                None => {
                    stages.push(figures(&key.stage));
                    stages.len() - 1
                }
            };
            let (outcome, probability) = (stages[i].outcome, stages[i].probability);
            let add = |totals: &mut ByCurrency| {
                totals
                    .entry(key.currency.clone())
                    .or_default()
                    .add(sums, probability)
            };
            add(&mut stages[i].currencies);
            let in_quarter = key
                .close_month
                .as_ref()
                .is_some_and(|m| quarter_months.contains(m));
            match outcome {
                StageOutcome::Open => {
                    add(&mut open);
                    let month = key.close_month.clone();
                    // Months sort as text; deals without a date go last.
                    add(forecast
                        .entry((month.is_none(), month.unwrap_or_default()))
                        .or_default());
                }
                StageOutcome::Won if in_quarter => add(&mut won),
                StageOutcome::Lost if in_quarter => add(&mut lost),
                _ => {}
            }
        }
        PipelineReport {
            stages,
            open,
            forecast: forecast
                .into_iter()
                .map(|((undated, month), currencies)| ForecastMonth {
                    month: (!undated).then_some(month),
                    currencies,
                })
                .collect(),
            quarter: format!("{year} Q{}", first / 3 + 1),
            won,
            lost,
        }
    }
}

/// How deals move through the open stages, from each deal's stage history
/// (every stage change is kept in its document): how many reached each
/// stage, moved on from it, were lost from it or still sit there, and how
/// long they stayed in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageFlow {
    stages: BTreeMap<String, FlowSums>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FlowSums {
    reached: usize,
    moved_on: usize,
    lost: usize,
    open_here: usize,
    stays: usize,
    stay_ms: i128,
}

impl StageFlow {
    /// Adds one deal: the stages it was in, oldest first, each with the
    /// time it entered it (see `RecordDoc::field_timeline`).
    ///
    /// A deal reached an open stage if it ever was in it or in a later
    /// stage of the pipeline that is not lost (skipping a stage counts as
    /// passing it); it moved on from the stages before the furthest one it
    /// reached; from that furthest stage it was lost (if it is lost now),
    /// or it is still open there. A stay is the time from entering a stage
    /// to entering the next one; the stage a deal is in now is not a stay
    /// yet.
    pub fn add_deal(&mut self, pipeline: &Pipeline, timeline: &[(i64, String)]) {
        let open: Vec<&String> = pipeline
            .stages()
            .iter()
            .filter(|s| pipeline.outcome(s) == StageOutcome::Open)
            .collect();
        for pair in timeline.windows(2) {
            let ((entered, stage), (left, _)) = (&pair[0], &pair[1]);
            if pipeline.outcome(stage) == StageOutcome::Open {
                let sums = self.stages.entry(stage.clone()).or_default();
                sums.stays += 1;
                sums.stay_ms += (left - entered).max(0) as i128;
            }
        }
        // How far along the open stages the deal got (won: past them all).
        let furthest = timeline
            .iter()
            .filter_map(|(_, stage)| match pipeline.outcome(stage) {
                StageOutcome::Won => Some(open.len()),
                StageOutcome::Lost => None,
                StageOutcome::Open => open.iter().position(|s| *s == stage),
            })
            .max();
        let Some(furthest) = furthest else {
            return;
        };
        let now = timeline.last().map(|(_, s)| pipeline.outcome(s));
        for (i, stage) in open.iter().enumerate().take(furthest + 1) {
            let sums = self.stages.entry(stage.to_string()).or_default();
            sums.reached += 1;
            if i < furthest {
                sums.moved_on += 1;
            } else if now == Some(StageOutcome::Lost) {
                sums.lost += 1;
            } else {
                sums.open_here += 1;
            }
        }
    }

    /// One row per open stage, in pipeline order.
    pub fn conversions(&self, pipeline: &Pipeline) -> Vec<StageConversion> {
        pipeline
            .stages()
            .iter()
            .filter(|s| pipeline.outcome(s) == StageOutcome::Open)
            .map(|stage| {
                let sums = self.stages.get(stage).copied().unwrap_or_default();
                StageConversion {
                    stage: stage.clone(),
                    reached: sums.reached,
                    moved_on: sums.moved_on,
                    lost: sums.lost,
                    open_here: sums.open_here,
                    average_stay_ms: (sums.stays > 0)
                        .then(|| (sums.stay_ms / sums.stays as i128) as i64),
                }
            })
            .collect()
    }
}

/// How deals went through one open stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageConversion {
    pub stage: String,
    /// Deals that were in this stage or got past it.
    pub reached: usize,
    /// Of those, deals that went on to a later stage (won included).
    pub moved_on: usize,
    /// Deals lost with this as the furthest stage they reached.
    pub lost: usize,
    /// Deals still open with this as the furthest stage they reached.
    pub open_here: usize,
    /// Average time deals stayed in the stage before moving (ms); None
    /// until one has left it.
    pub average_stay_ms: Option<i64>,
}

impl StageConversion {
    /// Percent of the deals decided here (moved on or lost) that moved on.
    pub fn conversion_percent(&self) -> Option<usize> {
        let decided = self.moved_on + self.lost;
        (decided > 0).then(|| self.moved_on * 100 / decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn sums(count: usize, amount: i64, own: Option<i64>) -> DealSums {
        DealSums {
            count,
            amount,
            amount_times_own_probability: own.map_or(0, |p| amount as i128 * p as i128),
            amount_without_probability: if own.is_none() { amount } else { 0 },
        }
    }

    #[test]
    fn open_pipeline_and_forecast_leave_out_closed_deals_and_never_mix_currencies() {
        let mut g = DealGroups::default();
        g.add("lead", "EUR", Some("2026-12-15"), sums(2, 100_000, None));
        g.add(
            "proposal",
            "EUR",
            Some("2026-12-01"),
            sums(1, 50_000, Some(90)),
        );
        g.add("proposal", "GBP", None, sums(1, 30_000, None));
        g.add("won", "EUR", Some("2026-11-03"), sums(1, 70_000, None));
        g.add("won", "EUR", Some("2026-09-30"), sums(1, 99_900, None));
        g.add("lost", "EUR", Some("2026-10-10"), sums(3, 900_000, None));
        let r = PipelineReport::new(&Pipeline::default(), &g, date!(2026 - 12 - 01));

        assert_eq!(r.quarter, "2026 Q4");
        let eur = r.open["EUR"];
        assert_eq!((eur.count, eur.amount), (3, 150_000));
        // lead at 20% of 1000 + 90% of 500 (its own probability)
        assert_eq!(eur.weighted(), 20_000 + 45_000);
        assert_eq!(r.open["GBP"].weighted(), 18_000);
        assert!(!r.open.contains_key("") && r.open.len() == 2);

        let months: Vec<Option<&str>> = r.forecast.iter().map(|m| m.month.as_deref()).collect();
        assert_eq!(months, [Some("2026-12"), None]);
        assert_eq!(r.forecast[0].currencies["EUR"].count, 3);
        assert_eq!(r.forecast[1].currencies["GBP"].amount, 30_000);

        // September is last quarter.
        assert_eq!(r.won["EUR"].amount, 70_000);
        assert_eq!(r.lost["EUR"].count, 3);
        let stage = |name: &str| r.stages.iter().find(|s| s.stage == name).unwrap();
        assert_eq!(stage("won").currencies["EUR"].count, 2);
        assert_eq!(stage("lost").outcome, StageOutcome::Lost);
        assert!(stage("negotiation").currencies.is_empty());
    }

    #[test]
    fn a_stage_no_longer_in_the_pipeline_is_listed_last_and_open() {
        let mut g = DealGroups::default();
        g.add("dreaming", "", None, sums(1, 0, None));
        let r = PipelineReport::new(&Pipeline::default(), &g, date!(2026 - 01 - 01));
        assert_eq!(r.quarter, "2026 Q1");
        assert_eq!(r.stages.last().unwrap().stage, "dreaming");
        assert_eq!(r.open[""].count, 1);
        let summary = g.stage_summary(&Pipeline::default());
        assert_eq!(summary.last().unwrap().stage, "dreaming");
    }

    fn flow(deals: &[&[(i64, &str)]]) -> Vec<StageConversion> {
        let pipeline = Pipeline::default();
        let mut flow = StageFlow::default();
        for deal in deals {
            let timeline: Vec<(i64, String)> =
                deal.iter().map(|(t, s)| (*t, s.to_string())).collect();
            flow.add_deal(&pipeline, &timeline);
        }
        flow.conversions(&pipeline)
    }

    #[test]
    fn stage_flow_counts_who_reached_moved_on_or_was_lost_and_how_long_they_stayed() {
        const DAY: i64 = 86_400_000;
        let rows = flow(&[
            // lead 2 days, qualified 4 days, won
            &[(0, "lead"), (2 * DAY, "qualified"), (6 * DAY, "won")],
            // lead 4 days, then lost
            &[(0, "lead"), (4 * DAY, "lost")],
            // created at proposal (passed lead and qualified), still there
            &[(0, "proposal")],
            // qualified, back to lead, lost: got as far as qualified
            &[(0, "qualified"), (DAY, "lead"), (3 * DAY, "lost")],
        ]);
        let row = |stage: &str| rows.iter().find(|r| r.stage == stage).unwrap().clone();
        let lead = row("lead");
        assert_eq!(
            (lead.reached, lead.moved_on, lead.lost, lead.open_here),
            (4, 3, 1, 0)
        );
        assert_eq!(lead.conversion_percent(), Some(75));
        // stays in lead: 2, 4 and 2 days
        assert_eq!(lead.average_stay_ms, Some(8 * DAY / 3));
        let qualified = row("qualified");
        assert_eq!(
            (qualified.reached, qualified.moved_on, qualified.lost),
            (3, 2, 1)
        );
        assert_eq!(qualified.average_stay_ms, Some((4 * DAY + DAY) / 2));
        let proposal = row("proposal");
        assert_eq!((proposal.reached, proposal.open_here), (2, 1));
        assert_eq!(proposal.average_stay_ms, None, "nobody has left it yet");
        assert_eq!(row("negotiation").reached, 1, "the won deal passed it");
        assert_eq!(rows.len(), 4, "open stages only");
    }

    #[test]
    fn weighted_amounts_round_half_away_from_zero() {
        let mut t = Totals::default();
        t.add(&sums(1, 5, None), 10); // 0.5 minor units
        assert_eq!(t.weighted(), 1);
        let mut t = Totals::default();
        t.add(&sums(1, 4, None), 10);
        assert_eq!(t.weighted(), 0);
    }
}
