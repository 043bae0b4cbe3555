//! Running a plan. So far the dry run: every guard runs for real (they only read), the loss a
//! failover would cause now is predicted from the running mirror, and every step is reported
//! with what it would do; nothing is changed. The report has the shape every run will have.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::actions;
use crate::exec::{self, Context, PartitionLag};
use crate::playbook::{Plan, Planned, Value};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every step and verification succeeded.
    Succeeded,
    /// A guard, step or verification failed.
    Failed,
    /// A step failed and the completed steps were undone.
    RolledBack,
    /// A dry run whose guards passed.
    DryRun,
}

/// How one guard, step or verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed.
    Failed,
    /// A dry run: it would run.
    WouldRun,
    /// Not reached.
    Skipped,
}

/// One line of the report's `steps`.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `guard`, `step`, `verify` or `prediction`.
    pub kind: &'static str,
    /// Its name in the playbook.
    pub name: String,
    /// The action.
    pub action: &'static str,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// How it went.
    pub outcome: StepOutcome,
    /// What it found or would do.
    pub detail: String,
}

/// The report of a run (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's id.
    pub run_id: String,
    /// The playbook.
    pub playbook: String,
    /// Every parameter's value.
    pub params: BTreeMap<String, String>,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// End (RFC 3339, UTC).
    pub ended_at: String,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Guards, prediction, steps and verifications, in order.
    pub steps: Vec<StepReport>,
    /// From the run's start to the target's first accepted write (not for a dry run).
    pub rto_ms: Option<u64>,
    /// Records that could not be copied (a dry run: would not be, if it ran now).
    pub rpo_records: Option<i64>,
    /// Age of the oldest record that could not be copied.
    pub rpo_seconds: Option<f64>,
    /// Every partition of the flow as the mirror reports it.
    pub partitions: Vec<PartitionLag>,
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-from-civil, inverted.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn describe(p: &Planned) -> String {
    let args: Vec<String> = p.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}({})", p.action.name, args.join(", "))
}

/// A dry run of `plan`: guards run, the loss is predicted, steps are described. Changes
/// nothing.
pub async fn dry_run(plan: &Plan, ctx: &Context) -> Report {
    let started_ms = now_ms();
    let mut steps = Vec::new();
    let mut failed = false;
    for g in &plan.guards {
        let at = now_ms();
        let clock = Instant::now();
        let result = exec::execute(&g.planned, ctx).await;
        let (outcome, detail) = match result {
            Ok(o) => (StepOutcome::Succeeded, o.detail),
            Err(e) => {
                failed = true;
                (StepOutcome::Failed, e.to_string())
            }
        };
        steps.push(StepReport {
            kind: "guard",
            name: g.name.clone(),
            action: g.planned.action.name,
            started_at: rfc3339(at),
            duration_ms: clock.elapsed().as_millis() as u64,
            attempts: 1,
            outcome,
            detail,
        });
    }
    // The loss a failover would cause now, where the playbook names a mirror and a flow.
    let (mut partitions, mut rpo_records, mut rpo_seconds) = (Vec::new(), None, None);
    if let (Some(Value::String(config)), Some(Value::String(flow))) =
        (plan.params.get("mirror_config"), plan.params.get("flow"))
    {
        let predict = Planned {
            action: actions::action("predict_loss").expect("predict_loss is registered"),
            args: BTreeMap::from([
                ("mirror_config".to_string(), Value::String(config.clone())),
                ("flow".to_string(), Value::String(flow.clone())),
            ]),
        };
        let at = now_ms();
        let clock = Instant::now();
        let (outcome, detail) = match exec::execute(&predict, ctx).await {
            Ok(o) => {
                rpo_records = Some(o.partitions.iter().filter_map(|l| l.lag_records).sum());
                rpo_seconds = Some(
                    o.partitions
                        .iter()
                        .filter_map(|l| l.lag_seconds)
                        .fold(0.0f64, f64::max),
                );
                partitions = o.partitions;
                (StepOutcome::Succeeded, o.detail)
            }
            // A prediction that cannot be made fails no guard, but says why.
            Err(e) => (StepOutcome::Failed, e.to_string()),
        };
        steps.push(StepReport {
            kind: "prediction",
            name: "records a failover now would not have copied".into(),
            action: "predict_loss",
            started_at: rfc3339(at),
            duration_ms: clock.elapsed().as_millis() as u64,
            attempts: 1,
            outcome,
            detail,
        });
    }
    for s in &plan.steps {
        let mut detail = if s.planned.action.read_only {
            format!(
                "would check: {}: {}",
                s.planned.action.about,
                describe(&s.planned)
            )
        } else {
            format!("would {}: {}", s.planned.action.about, describe(&s.planned))
        };
        if let Some(u) = &s.undo {
            detail.push_str(&format!("; undone by {}", describe(u)));
        }
        if s.approval {
            detail.push_str("; asks for approval");
        }
        steps.push(StepReport {
            kind: "step",
            name: s.name.clone(),
            action: s.planned.action.name,
            started_at: rfc3339(now_ms()),
            duration_ms: 0,
            attempts: 0,
            outcome: if failed {
                StepOutcome::Skipped
            } else {
                StepOutcome::WouldRun
            },
            detail,
        });
    }
    Report {
        run_id: uuid::Uuid::new_v4().to_string(),
        playbook: plan.playbook.clone(),
        params: plan
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        started_at: rfc3339(started_ms),
        ended_at: rfc3339(now_ms()),
        outcome: if failed {
            RunOutcome::Failed
        } else {
            RunOutcome::DryRun
        },
        steps,
        rto_ms: None,
        rpo_records,
        rpo_seconds,
        partitions,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "FAILED",
            RunOutcome::RolledBack => "ROLLED BACK",
            RunOutcome::DryRun => "dry run (nothing changed)",
        };
        writeln!(f, "run {} of {}: {outcome}", self.run_id, self.playbook)?;
        writeln!(f, "  {} .. {}", self.started_at, self.ended_at)?;
        for s in &self.steps {
            let mark = match s.outcome {
                StepOutcome::Succeeded => "ok  ",
                StepOutcome::Failed => "FAIL",
                StepOutcome::WouldRun => "plan",
                StepOutcome::Skipped => "skip",
            };
            writeln!(
                f,
                "  [{mark}] {:<10} {} ({} ms): {}",
                s.kind, s.name, s.duration_ms, s.detail
            )?;
        }
        if let Some(r) = self.rpo_records {
            writeln!(
                f,
                "  predicted loss: {r} records, {:.1} s",
                self.rpo_seconds.unwrap_or(0.0)
            )?;
        }
        for p in self.partitions.iter().filter(|p| p.lag_records != Some(0)) {
            writeln!(
                f,
                "    {}/{}: source end {}, mirrored to {}, lag {} records",
                p.topic,
                p.partition,
                p.source_end_offset.map_or("?".into(), |v| v.to_string()),
                p.mirrored_offset.map_or("?".into(), |v| v.to_string()),
                p.lag_records.map_or("?".into(), |v| v.to_string()),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_649_217_479), "2026-12-07T13:13:37.479Z");
    }
}
