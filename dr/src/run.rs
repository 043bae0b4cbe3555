//! Running a plan.
//!
//! A dry run runs every guard for real (they only read), predicts the loss a failover would
//! cause now from the running mirror, and reports every step with what it would do; nothing
//! is changed. A run ([`execute`]) takes the flow's lock in the journal, re-checks the guards,
//! runs the steps in order (each with its timeout and its retries, exponential backoff
//! between attempts), journals every change of state before acting on it, undoes the
//! completed steps newest first if the playbook says `rollback`, verifies, and reports.
//! [`resume`] continues a run that was interrupted (its process killed): guards again,
//! completed steps never repeated, the interrupted step repeated only if its action is
//! idempotent.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actions;
pub use crate::clock::{now_ms, rfc3339};
use crate::exec::{self, Context, GroupCheck, PartitionLag, TailReport};
use crate::journal::{
    AuditLine, Journal, JournalError, Lock, ResumeFrom, RunRecord, RunState, StepRecord, StepState,
};
use crate::playbook::{OnFailure, Plan, Planned, PlannedCheck, PlannedStep, PlaybookError, Value};

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
    /// Every mirrored group's offset per partition, as the last verification found it.
    pub groups: Vec<GroupCheck>,
    /// A failback's partitions: the divergent tail of each, where it was archived (the
    /// truncation ledger) and what the target took meanwhile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tails: Vec<TailReport>,
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
    // A failback's prediction: each partition's divergent tail and what the target took.
    let mut tails = Vec::new();
    let archive_step = plan
        .steps
        .iter()
        .find(|s| s.planned.action.name == "archive_divergent_tail");
    if let Some(step) = archive_step {
        let predict = Planned {
            action: actions::action("predict_divergence")
                .expect("predict_divergence is registered"),
            args: step
                .planned
                .args
                .iter()
                .filter(|(k, _)| k.as_str() != "archive_dir")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let at = now_ms();
        let clock = Instant::now();
        let (outcome, detail) = match exec::execute(&predict, ctx).await {
            Ok(o) => {
                tails = o.tails;
                (StepOutcome::Succeeded, o.detail)
            }
            Err(e) => (StepOutcome::Failed, e.to_string()),
        };
        steps.push(StepReport {
            kind: "prediction",
            name: "divergent tails to archive and cut, records to restore".into(),
            action: "predict_divergence",
            started_at: rfc3339(at),
            duration_ms: clock.elapsed().as_millis() as u64,
            attempts: 1,
            outcome,
            detail,
        });
    }
    // The loss a failover would cause now, where the playbook names a mirror and a flow.
    let (mut partitions, mut rpo_records, mut rpo_seconds) = (Vec::new(), None, None);
    if let (None, Some(Value::String(config)), Some(Value::String(flow))) = (
        archive_step,
        plan.params.get("mirror_config"),
        plan.params.get("flow"),
    ) {
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
        groups: Vec::new(),
        tails,
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
        if let Some(ms) = self.rto_ms {
            writeln!(f, "  RTO: {ms} ms (run start to the target taking writes)")?;
        }
        if let Some(r) = self.rpo_records {
            let what = if self.outcome == RunOutcome::DryRun {
                "predicted loss"
            } else {
                "RPO"
            };
            writeln!(
                f,
                "  {what}: {r} records, {:.1} s",
                self.rpo_seconds.unwrap_or(0.0)
            )?;
        }
        if !self.groups.is_empty() {
            let verified = self.groups.iter().filter(|g| g.verified).count();
            writeln!(
                f,
                "  group offsets: {verified} of {} on the target are the exact translations",
                self.groups.len()
            )?;
        }
        for t in self
            .tails
            .iter()
            .filter(|t| t.divergent_records > 0 || t.target_records > 0)
        {
            writeln!(
                f,
                "    {}/{}: divergent tail {}..{} ({} records){}; {} records from the target",
                t.topic,
                t.partition,
                t.divergent_from,
                t.divergent_to,
                t.divergent_records,
                match (&t.file, &t.sha256) {
                    (Some(file), Some(sum)) => format!(", archived in {file} (sha256 {sum})"),
                    _ => String::new(),
                },
                t.target_records
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

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The playbook names actions strait cannot execute yet.
    #[error("playbook `{playbook}` cannot run yet: strait has no executor for {actions}; `--dry-run` checks its guards and predicts the loss without changing anything")]
    NotExecutable {
        /// The playbook.
        playbook: String,
        /// The actions without an executor.
        actions: String,
    },
    /// The journal failed or refused (a lock held by another run).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The playbook could not be loaded or planned again (on resume).
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    /// The run cannot be resumed.
    #[error("run {run_id}: {reason}")]
    NotResumable {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
}

/// Who runs, and how approvals are given.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// For the executors.
    pub ctx: Context,
    /// Approve every step that asks (`--yes`).
    pub yes: bool,
    /// Who runs it (audit).
    pub operator: String,
    /// Where (audit).
    pub host: String,
}

struct Driver<'a> {
    plan: &'a Plan,
    journal: &'a Journal,
    opts: &'a RunOptions,
    record: RunRecord,
    reports: Vec<StepReport>,
    rto_ms: Option<u64>,
    rpo: Option<(i64, f64, Vec<PartitionLag>)>,
    groups: Vec<GroupCheck>,
    tails: Vec<TailReport>,
}

impl<'a> Driver<'a> {
    fn new(plan: &'a Plan, journal: &'a Journal, opts: &'a RunOptions, record: RunRecord) -> Self {
        Driver {
            plan,
            journal,
            opts,
            record,
            reports: Vec::new(),
            rto_ms: None,
            rpo: None,
            groups: Vec::new(),
            tails: Vec::new(),
        }
    }

    fn audit(&self, event: &str, step: Option<&str>, outcome: Option<&str>, detail: Option<&str>) {
        let line = AuditLine {
            time: rfc3339(now_ms()),
            event,
            run_id: &self.record.run_id,
            playbook: &self.record.playbook,
            params: &self.record.given,
            operator: &self.opts.operator,
            host: &self.opts.host,
            step,
            outcome,
            detail,
        };
        // The journal holds the state; a failed audit write is said, not fatal.
        if let Err(e) = self.journal.audit(&line) {
            eprintln!("strait runbook: audit log: {e}");
        }
    }

    fn save(&self) -> Result<(), RunError> {
        Ok(self.journal.save(&self.record)?)
    }

    /// Runs every check of `checks`; false if one failed.
    async fn checks(
        &mut self,
        kind: &'static str,
        checks: &[crate::playbook::PlannedCheck],
    ) -> bool {
        let mut ok = true;
        for c in checks {
            let at = now_ms();
            let clock = Instant::now();
            let (outcome, detail) = match exec::execute(&c.planned, &self.opts.ctx).await {
                Ok(o) => (StepOutcome::Succeeded, o.detail),
                Err(e) => {
                    ok = false;
                    (StepOutcome::Failed, e.to_string())
                }
            };
            let word = if ok { "succeeded" } else { "failed" };
            self.audit(kind, Some(&c.name), Some(word), Some(&detail));
            self.reports.push(StepReport {
                kind,
                name: c.name.clone(),
                action: c.planned.action.name,
                started_at: rfc3339(at),
                duration_ms: clock.elapsed().as_millis() as u64,
                attempts: 1,
                outcome,
                detail,
            });
            if !ok {
                break;
            }
        }
        ok
    }

    /// One action with its timeout and retries; the journal counts the attempts. The outer
    /// error is the journal's (the run cannot go on safely), the inner one the action's.
    async fn attempt_all(
        &mut self,
        index: Option<usize>,
        step: &PlannedStep,
        planned: &Planned,
    ) -> Result<Result<exec::Outcome, String>, RunError> {
        use backoff::backoff::Backoff;
        let mut backoff = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(step.retry.initial_backoff_ms))
            .with_max_interval(Duration::from_millis(step.retry.max_backoff_ms))
            .with_multiplier(2.0)
            .with_randomization_factor(0.0)
            .with_max_elapsed_time(None)
            .build();
        let mut last = String::new();
        for attempt in 1..=step.retry.attempts {
            if let Some(i) = index {
                self.record.steps[i].attempts += 1;
                self.save()?;
            }
            let timeout = Duration::from_millis(step.timeout_ms);
            match tokio::time::timeout(timeout, exec::execute(planned, &self.opts.ctx)).await {
                Ok(Ok(outcome)) => return Ok(Ok(outcome)),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("timed out after {} ms", step.timeout_ms),
            }
            if attempt < step.retry.attempts {
                let wait = backoff.next_backoff().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
            }
        }
        Ok(Err(last))
    }

    fn approved(&self, step: &PlannedStep) -> Result<(), String> {
        if !step.approval {
            return Ok(());
        }
        if self.opts.yes {
            self.audit(
                "approval",
                Some(&step.name),
                Some("approved"),
                Some("--yes"),
            );
            return Ok(());
        }
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "step `{}` needs approval: run from a terminal, or with --yes",
                step.name
            ));
        }
        print!(
            "approve step `{}` ({})? [y/N] ",
            step.name, step.planned.action.about
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            self.audit(
                "approval",
                Some(&step.name),
                Some("approved"),
                Some("terminal"),
            );
            Ok(())
        } else {
            self.audit(
                "approval",
                Some(&step.name),
                Some("refused"),
                Some("terminal"),
            );
            Err(format!("step `{}` was not approved", step.name))
        }
    }

    /// Guards, then the steps from `from`, then the verifications.
    async fn drive(mut self, from: usize, retry_first: bool) -> Result<Report, RunError> {
        // A guard with `until` is left out once that step has started: the run itself made
        // it false (a resume after the flow was stopped on purpose).
        let guards: Vec<PlannedCheck> = self
            .plan
            .guards
            .iter()
            .filter(|g| {
                g.until
                    .is_none_or(|s| self.record.steps[s].state == StepState::Pending)
            })
            .cloned()
            .collect();
        if !self.checks("guard", &guards).await {
            if self.record.resumes > 0 {
                // Steps may already have changed things: the run stays open (and keeps its
                // lock) for a person to put the guard right and resume again.
                self.save()?;
                self.audit(
                    "resume",
                    None,
                    Some("guard_failed"),
                    Some("the run stays open: make the guard hold, then resume again"),
                );
                self.reports.push(StepReport {
                    kind: "resume",
                    name: "the run stays open".into(),
                    action: "resume",
                    started_at: rfc3339(now_ms()),
                    duration_ms: 0,
                    attempts: 0,
                    outcome: StepOutcome::Skipped,
                    detail: format!(
                        "a guard failed on resume; the lock stays with run {}: make the guard hold, then `strait runbook resume {}` again",
                        self.record.run_id, self.record.run_id
                    ),
                });
                return Ok(self.report(RunOutcome::Failed));
            }
            return self.finish(RunState::Failed, Some("a guard failed"));
        }
        for i in from..self.plan.steps.len() {
            let step = self.plan.steps[i].clone();
            if let Err(why) = self.approved(&step) {
                self.record.steps[i].state = StepState::Failed;
                self.record.steps[i].detail = why.clone();
                self.save()?;
                self.report_step(i, 0, StepOutcome::Failed);
                return self.fail(i, &why).await;
            }
            let at = now_ms();
            self.record.steps[i].state = StepState::Started;
            self.record.steps[i].started_ms = Some(at);
            self.save()?;
            let retried = retry_first && i == from;
            self.audit(
                "step_start",
                Some(&step.name),
                None,
                retried.then_some("repeated after an interruption (idempotent)"),
            );
            let clock = Instant::now();
            let result = self.attempt_all(Some(i), &step, &step.planned).await?;
            self.record.steps[i].ended_ms = Some(now_ms());
            match result {
                Ok(outcome) => {
                    self.record.steps[i].state = StepState::Completed;
                    self.record.steps[i].detail = outcome.detail.clone();
                    self.save()?;
                    self.audit(
                        "step_end",
                        Some(&step.name),
                        Some("succeeded"),
                        Some(&outcome.detail),
                    );
                    // The target taking writes: a failover's mirror topics released, or a
                    // failback's old source opened.
                    if matches!(
                        step.planned.action.name,
                        "release_mirror_topics" | "unfence_topics"
                    ) {
                        // From the run's start, across resumes.
                        self.rto_ms = Some(now_ms().saturating_sub(self.record.started_ms));
                    }
                    if !outcome.groups.is_empty() {
                        self.groups = outcome.groups.clone();
                    }
                    if !outcome.tails.is_empty() {
                        self.tails = outcome.tails.clone();
                    }
                    // What could not be copied: the lag the mirror reports when the source
                    // is gone, or 0 everywhere once a drain reached the source's end.
                    if matches!(
                        step.planned.action.name,
                        "record_rpo" | "predict_loss" | "wait_for_zero_lag"
                    ) {
                        let records = outcome
                            .partitions
                            .iter()
                            .filter_map(|l| l.lag_records)
                            .sum();
                        let seconds = outcome
                            .partitions
                            .iter()
                            .filter_map(|l| l.lag_seconds)
                            .fold(0.0f64, f64::max);
                        self.rpo = Some((records, seconds, outcome.partitions));
                    }
                    self.report_step(
                        i,
                        clock.elapsed().as_millis() as u64,
                        StepOutcome::Succeeded,
                    );
                }
                Err(why) => {
                    self.record.steps[i].state = StepState::Failed;
                    self.record.steps[i].detail = why.clone();
                    self.save()?;
                    self.audit("step_end", Some(&step.name), Some("failed"), Some(&why));
                    self.report_step(i, clock.elapsed().as_millis() as u64, StepOutcome::Failed);
                    return self.fail(i, &why).await;
                }
            }
        }
        if !self.checks("verify", &self.plan.verify.clone()).await {
            return self.finish(RunState::Failed, Some("a verification failed"));
        }
        self.finish(RunState::Succeeded, None)
    }

    fn report_step(&mut self, i: usize, duration_ms: u64, outcome: StepOutcome) {
        let r = &self.record.steps[i];
        self.reports.push(StepReport {
            kind: "step",
            name: r.name.clone(),
            action: self.plan.steps[i].planned.action.name,
            started_at: rfc3339(r.started_ms.unwrap_or_else(now_ms)),
            duration_ms,
            attempts: r.attempts,
            outcome,
            detail: r.detail.clone(),
        });
    }

    /// Step `i` failed: roll back or stop, as the playbook says.
    async fn fail(mut self, i: usize, why: &str) -> Result<Report, RunError> {
        if self.plan.on_failure == OnFailure::Stop {
            return self.finish(RunState::Failed, Some(why));
        }
        // Journalled before the first undo: a resume continues the rollback.
        self.record.state = RunState::RollingBack;
        self.save()?;
        // The failed step may have half happened (a fence set on some topics, a stop
        // recorded but not finished): its undo runs first when its action is idempotent,
        // since undoing what did not happen is then harmless. It stays `Failed` in the
        // journal, so a resume repeats this undo and goes on with the others.
        let failed = self.plan.steps[i].clone();
        if let (Some(undo), true) = (failed.undo.clone(), failed.planned.action.idempotent) {
            // Its failure is in the report and the audit; the step stays `Failed` either way.
            let _ = self.undo(&failed, &undo).await?;
        }
        for j in (0..i).rev() {
            let step = self.plan.steps[j].clone();
            if !matches!(
                self.record.steps[j].state,
                StepState::Completed | StepState::Undoing
            ) {
                continue;
            }
            let Some(undo) = step.undo.clone() else {
                continue;
            };
            self.record.steps[j].state = StepState::Undoing;
            self.save()?;
            match self.undo(&step, &undo).await? {
                Ok(()) => self.record.steps[j].state = StepState::Undone,
                Err(detail) => {
                    // Left as it was: the report and the journal say the undo failed.
                    self.record.steps[j].state = StepState::Completed;
                    self.record.steps[j].detail = detail;
                }
            }
            self.save()?;
        }
        self.finish(RunState::RolledBack, Some(why))
    }

    /// Runs `undo` for `step`, audits and reports it; the error is the report's detail.
    async fn undo(
        &mut self,
        step: &PlannedStep,
        undo: &Planned,
    ) -> Result<Result<(), String>, RunError> {
        let at = now_ms();
        let clock = Instant::now();
        let (outcome, detail) = match self.attempt_all(None, step, undo).await? {
            Ok(o) => (StepOutcome::Succeeded, o.detail),
            Err(e) => (StepOutcome::Failed, format!("undo failed: {e}")),
        };
        let ok = outcome == StepOutcome::Succeeded;
        self.audit(
            "undo",
            Some(&step.name),
            Some(if ok { "succeeded" } else { "failed" }),
            Some(&detail),
        );
        self.reports.push(StepReport {
            kind: "undo",
            name: step.name.clone(),
            action: undo.action.name,
            started_at: rfc3339(at),
            duration_ms: clock.elapsed().as_millis() as u64,
            attempts: 1,
            outcome,
            detail: detail.clone(),
        });
        Ok(if ok { Ok(()) } else { Err(detail) })
    }

    fn finish(mut self, state: RunState, why: Option<&str>) -> Result<Report, RunError> {
        self.record.state = state;
        self.record.ended_ms = Some(now_ms());
        self.save()?;
        let word = match state {
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::RolledBack => "rolled_back",
            RunState::RollingBack => "rolling_back",
            RunState::Running => "running",
        };
        self.audit("run_end", None, Some(word), why);
        self.journal
            .unlock(&self.record.lock_key, &self.record.run_id)?;
        let _ = self.journal.trim();
        Ok(self.report(match state {
            RunState::Succeeded => RunOutcome::Succeeded,
            RunState::RolledBack => RunOutcome::RolledBack,
            _ => RunOutcome::Failed,
        }))
    }

    fn report(self, outcome: RunOutcome) -> Report {
        let (rpo_records, rpo_seconds, partitions) = match self.rpo {
            Some((r, s, p)) => (Some(r), Some(s), p),
            None => (None, None, Vec::new()),
        };
        Report {
            run_id: self.record.run_id.clone(),
            playbook: self.record.playbook.clone(),
            params: self
                .plan
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            started_at: rfc3339(self.record.started_ms),
            ended_at: rfc3339(now_ms()),
            outcome,
            steps: self.reports,
            rto_ms: self.rto_ms,
            rpo_records,
            rpo_seconds,
            partitions,
            groups: self.groups,
            tails: self.tails,
        }
    }
}

/// Refuses a plan that names an action strait cannot execute yet.
pub fn check_executable(plan: &Plan) -> Result<(), RunError> {
    let unavailable: Vec<&str> = plan.unavailable().into_iter().collect();
    if unavailable.is_empty() {
        Ok(())
    } else {
        Err(RunError::NotExecutable {
            playbook: plan.playbook.clone(),
            actions: unavailable.join(", "),
        })
    }
}

fn lock_key(plan: &Plan) -> String {
    match plan.params.get("flow") {
        Some(flow) => format!("flow {flow}"),
        None => format!("playbook {}", plan.playbook),
    }
}

/// Runs `plan` for real, journalled in `journal`. `given` and `playbooks_dir` are kept so a
/// resume plans the same run again.
pub async fn execute(
    plan: &Plan,
    given: &BTreeMap<String, String>,
    playbooks_dir: &std::path::Path,
    journal: &Journal,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    check_executable(plan)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let started_ms = now_ms();
    let key = lock_key(plan);
    journal.lock(
        &key,
        &Lock {
            run_id: run_id.clone(),
            playbook: plan.playbook.clone(),
            operator: opts.operator.clone(),
            host: opts.host.clone(),
            pid: std::process::id(),
            since_ms: started_ms,
        },
    )?;
    let record = RunRecord {
        run_id,
        playbook: plan.playbook.clone(),
        playbooks_dir: playbooks_dir.to_path_buf(),
        given: given.clone(),
        lock_key: key,
        operator: opts.operator.clone(),
        host: opts.host.clone(),
        started_ms,
        ended_ms: None,
        state: RunState::Running,
        steps: plan
            .steps
            .iter()
            .map(|s| StepRecord::pending(&s.name, s.planned.action.name))
            .collect(),
        resumes: 0,
    };
    let driver = Driver::new(plan, journal, opts, record);
    driver.save()?;
    driver.audit("run_start", None, None, None);
    driver.drive(0, false).await
}

/// Continues the interrupted run `run_id` from its journal.
pub async fn resume(
    run_id: &str,
    journal: &Journal,
    opts: &RunOptions,
) -> Result<Report, RunError> {
    let mut record = journal.load(run_id)?;
    let not = |reason: String| RunError::NotResumable {
        run_id: run_id.to_string(),
        reason,
    };
    if !matches!(record.state, RunState::Running | RunState::RollingBack) {
        return Err(not(format!(
            "it already ended ({:?}); `strait runbook history` shows it",
            record.state
        )));
    }
    if let Some(holder) = journal.holder(&record.lock_key)? {
        let alive = holder.host == opts.host
            && holder.pid != std::process::id()
            && std::path::Path::new(&format!("/proc/{}", holder.pid)).exists();
        if holder.run_id == record.run_id && alive {
            return Err(not(format!(
                "it is in progress in process {} on this host; resume only a run whose process is gone",
                holder.pid
            )));
        }
    }
    let playbook = crate::playbook::find(&record.playbooks_dir, &record.playbook)?;
    let plan = playbook.plan(&record.given)?;
    let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    let journaled: Vec<&str> = record.steps.iter().map(|s| s.name.as_str()).collect();
    if names != journaled {
        return Err(not(format!(
            "playbook `{}` changed since the run started (steps now: {}; then: {}); resume with the playbook as it was",
            record.playbook,
            names.join(", "),
            journaled.join(", ")
        )));
    }
    journal.lock(
        &record.lock_key,
        &Lock {
            run_id: record.run_id.clone(),
            playbook: record.playbook.clone(),
            operator: opts.operator.clone(),
            host: opts.host.clone(),
            pid: std::process::id(),
            since_ms: now_ms(),
        },
    )?;
    record.resumes += 1;
    let decision = record.resume_from(|i| plan.steps[i].planned.action.idempotent);
    let driver = Driver::new(&plan, journal, opts, record);
    driver.save()?;
    match decision {
        ResumeFrom::Step { index, retry } => {
            driver.audit(
                "resume",
                Some(&plan.steps[index].name),
                None,
                Some(if retry {
                    "repeating the interrupted step"
                } else {
                    "continuing"
                }),
            );
            driver.drive(index, retry).await
        }
        ResumeFrom::Verify => {
            driver.audit(
                "resume",
                None,
                None,
                Some("every step completed; verifying"),
            );
            driver.drive(plan.steps.len(), false).await
        }
        ResumeFrom::Failed { index } => {
            // Killed after a step failed: the playbook's on_failure goes on (a rollback is
            // continued without the guards, which the failed run may have made false).
            let why = format!(
                "step `{}` had failed: {}",
                plan.steps[index].name, driver.record.steps[index].detail
            );
            driver.audit(
                "resume",
                Some(&plan.steps[index].name),
                None,
                Some("continuing after the failed step (on_failure)"),
            );
            driver.fail(index, &why).await
        }
        ResumeFrom::Stop { index } => {
            let step = &plan.steps[index];
            let why = format!(
                "step `{}` ({}) was interrupted and is not idempotent: check whether it took effect ({}), then finish by hand; the run stops here",
                step.name, step.planned.action.name, step.planned.action.about
            );
            driver.audit("resume", Some(&step.name), Some("stopped"), Some(&why));
            driver.finish(RunState::Failed, Some(&why))
        }
    }
}
