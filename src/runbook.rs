//! `strait runbook`: the playbooks of `dr-playbooks/`, listed, shown, planned, run (or dry-run)
//! and resumed, and the journal's history.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use strait_dr::actions;
use strait_dr::exec::Context as ExecContext;
use strait_dr::journal::Journal;
use strait_dr::playbook::{self, Playbook};
use strait_dr::run::{Report, RunOptions, RunOutcome};

/// Arguments of `strait runbook`.
#[derive(Debug, clap::Args)]
pub struct RunbookArgs {
    /// The directory of the playbooks.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "dr-playbooks",
        env = "STRAIT_PLAYBOOKS",
        global = true
    )]
    pub playbooks: PathBuf,
    /// The runs' journal (one file per run and per lock) and audit log (audit.jsonl). Default: `runbooks/` under the
    /// data directory of the mirror config (the playbook's `mirror_config` parameter for
    /// `run`, `--mirror` for `resume` and `history`).
    #[arg(long, value_name = "DIR", env = "STRAIT_JOURNAL", global = true)]
    pub journal: Option<PathBuf>,
    /// The mirror config whose data directory holds the journal when --journal is not given.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "configs/mirror-a-to-b.yaml",
        global = true
    )]
    pub mirror: PathBuf,
    /// Who runs it, for the audit log (default: $USER).
    #[arg(long, value_name = "NAME", global = true)]
    pub operator: Option<String>,
    #[command(subcommand)]
    pub command: RunbookCommand,
}

/// What `strait runbook` does.
#[derive(Debug, clap::Subcommand)]
pub enum RunbookCommand {
    /// Check every playbook and list them with their descriptions. A playbook with a
    /// mistake (unknown key, unknown action, missing argument, type error, a cycle among
    /// its steps) is reported with file, line and column, and the command exits non-zero.
    List,
    /// Print a playbook: its parameters (type, default, range), guards, steps (timeout,
    /// retries, undo, approval) and verifications, with what each action does.
    Show {
        /// The playbook's name (its file's name without .yaml).
        name: String,
    },
    /// Resolve a playbook for the given parameters and print the steps in the order they
    /// would run, each with its arguments, timeout, retries, undo and approval. Reads no
    /// cluster and changes nothing.
    Plan {
        /// The playbook's name.
        name: String,
        /// A parameter's value, e.g. --param flow=a-to-b (repeat for more).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Run a playbook: take the flow's lock, check the guards, run the steps in order (each
    /// with its timeout and retries), roll back or stop on a failure as the playbook says,
    /// verify, and report. Every change of state is journalled before it happens, so a run
    /// whose process dies can be resumed. With --dry-run: every guard runs for real (they
    /// only read), the records a failover now would not have copied are predicted per
    /// partition, every step is printed with what it would change, and nothing is changed.
    /// Exits non-zero unless the run succeeded (or was a dry run whose guards passed). A
    /// playbook that names an action strait cannot execute yet is refused before anything.
    Run {
        /// The playbook's name.
        name: String,
        /// A parameter's value, e.g. --param flow=a-to-b (repeat for more).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Check and predict, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also write the run's report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// The running mirror's HTTP address, instead of the mirror config's `http`.
        #[arg(long, value_name = "HOST:PORT")]
        mirror_http: Option<std::net::SocketAddr>,
        /// Approve every step that asks for approval (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Continue a run that was interrupted (its process killed): the guards are checked
    /// again, completed steps are not repeated, the interrupted step is repeated only if its
    /// action is idempotent (otherwise the run stops and says what to check).
    Resume {
        /// The run's id (from its report, the audit log or `history`).
        run_id: String,
        /// Approve every step that asks for approval.
        #[arg(long)]
        yes: bool,
        /// Also write the run's report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// The running mirror's HTTP address, instead of the mirror config's `http`.
        #[arg(long, value_name = "HOST:PORT")]
        mirror_http: Option<std::net::SocketAddr>,
    },
    /// List the runs in the journal, oldest first: id, playbook, state, start, steps done.
    History,
}

/// Runs `strait runbook`, printing to stdout.
pub async fn run(args: RunbookArgs) -> anyhow::Result<()> {
    let opts = |mirror_http: Option<std::net::SocketAddr>, yes: bool| RunOptions {
        ctx: ExecContext { mirror_http },
        yes,
        operator: args
            .operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_string()),
        host: hostname(),
    };
    match &args.command {
        RunbookCommand::Run {
            name,
            params,
            dry_run,
            report,
            mirror_http,
            yes,
        } => {
            let given = given(params)?;
            let plan = playbook::find(&args.playbooks, name)?.plan(&given)?;
            let opts = opts(*mirror_http, *yes);
            let result = if *dry_run {
                strait_dr::run::dry_run(&plan, &opts.ctx).await
            } else {
                // Before the journal is opened: a refused run leaves nothing behind.
                strait_dr::run::check_executable(&plan)?;
                let dir = journal_dir(&args, plan.params.get("mirror_config"))?;
                let journal = Journal::open(&dir)?;
                strait_dr::run::execute(&plan, &given, &args.playbooks, &journal, &opts).await?
            };
            finish(result, report.as_deref())
        }
        RunbookCommand::Resume {
            run_id,
            yes,
            report,
            mirror_http,
        } => {
            let journal = Journal::open(&journal_dir(&args, None)?)?;
            let result =
                strait_dr::run::resume(run_id, &journal, &opts(*mirror_http, *yes)).await?;
            finish(result, report.as_deref())
        }
        RunbookCommand::History => {
            let journal = Journal::open(&journal_dir(&args, None)?)?;
            for r in journal.history()? {
                let done = r
                    .steps
                    .iter()
                    .filter(|s| s.state == strait_dr::journal::StepState::Completed)
                    .count();
                println!(
                    "{}  {:<18} {:<11} {}  {done}/{} steps{}  by {}@{}",
                    r.run_id,
                    r.playbook,
                    format!("{:?}", r.state).to_lowercase(),
                    strait_dr::run::rfc3339(r.started_ms),
                    r.steps.len(),
                    if r.resumes > 0 {
                        format!(", resumed {}x", r.resumes)
                    } else {
                        String::new()
                    },
                    r.operator,
                    r.host
                );
            }
            Ok(())
        }
        _ => {
            print!("{}", render(&args)?);
            Ok(())
        }
    }
}

/// Prints the report, writes it as JSON if asked, and fails unless it succeeded.
fn finish(result: Report, report: Option<&std::path::Path>) -> anyhow::Result<()> {
    print!("{result}");
    if let Some(path) = report {
        let json = serde_json::to_vec_pretty(&result).context("encoding the report")?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    match result.outcome {
        RunOutcome::Succeeded | RunOutcome::DryRun => Ok(()),
        RunOutcome::Failed => {
            let at = result
                .steps
                .iter()
                .find(|s| s.outcome == strait_dr::run::StepOutcome::Failed)
                .map(|s| format!(" at {} `{}`", s.kind, s.name))
                .unwrap_or_default();
            anyhow::bail!(
                "run {} of {} failed{at} (see above)",
                result.run_id,
                result.playbook
            )
        }
        RunOutcome::RolledBack => anyhow::bail!(
            "run {} of {} failed and was rolled back (see above)",
            result.run_id,
            result.playbook
        ),
    }
}

/// The journal's directory: --journal, else `runbooks/` in the mirror config's data dir.
fn journal_dir(
    args: &RunbookArgs,
    mirror_config: Option<&strait_dr::playbook::Value>,
) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.journal {
        return Ok(dir.clone());
    }
    let config = match mirror_config {
        Some(strait_dr::playbook::Value::String(path)) => PathBuf::from(path),
        _ => args.mirror.clone(),
    };
    let mirror = strait_mirror::config::MirrorConfig::load(&config)?;
    let data_dir = mirror.data_dir.with_context(|| {
        format!(
            "{} has no data_dir to keep the runbook journal under; give --journal DIR",
            config.display()
        )
    })?;
    Ok(data_dir.join("runbooks"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

fn given(params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut given = BTreeMap::new();
    for pair in params {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--param `{pair}`: expected KEY=VALUE"))?;
        if given.insert(k.to_string(), v.to_string()).is_some() {
            anyhow::bail!("--param {k} is given twice");
        }
    }
    Ok(given)
}

/// What `strait runbook` prints.
pub fn render(args: &RunbookArgs) -> anyhow::Result<String> {
    let dir = &args.playbooks;
    match &args.command {
        RunbookCommand::List => {
            let all = playbook::load_dir(dir)?;
            if all.is_empty() {
                anyhow::bail!("no playbooks (*.yaml) in {}", dir.display());
            }
            let width = all.keys().map(String::len).max().unwrap_or(0);
            Ok(all
                .values()
                .map(|p| format!("{:width$}  {}\n", p.name, p.description))
                .collect())
        }
        RunbookCommand::Show { name } => Ok(show(&playbook::find(dir, name)?)),
        RunbookCommand::Plan { name, params } => Ok(playbook::find(dir, name)?
            .plan(&given(params)?)?
            .to_string()),
        RunbookCommand::Run { .. } | RunbookCommand::Resume { .. } | RunbookCommand::History => {
            anyhow::bail!("this subcommand is not rendered")
        }
    }
}

fn show(p: &Playbook) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", p.name, p.path.display());
    let _ = writeln!(out, "{}", p.description);
    let _ = writeln!(out, "parameters:");
    for (name, param) in &p.params {
        let kind = actions::Kind::from(param.kind).name();
        let default = match &param.default {
            Some(d) => serde_yaml::to_string(d)
                .map(|s| format!("default {}", s.trim_end()))
                .unwrap_or_default(),
            None => "required".to_string(),
        };
        let mut range = String::new();
        if param.min.is_some() || param.max.is_some() {
            range = format!(
                ", {}..={}",
                param.min.map_or(String::new(), |m| m.to_string()),
                param.max.map_or(String::new(), |m| m.to_string())
            );
        }
        if let Some(choices) = &param.choices {
            range = format!(", one of {}", choices.join(", "));
        }
        let _ = writeln!(
            out,
            "  {name}: {kind}, {default}{range}: {}",
            param.description
        );
    }
    let describe = |out: &mut String, action: &str| {
        if let Some(a) = actions::action(action) {
            let _ = writeln!(out, "      ({})", a.about);
        }
    };
    let _ = writeln!(out, "guards:");
    for g in &p.guards {
        let _ = writeln!(out, "  - {}: {}", g.name, g.check);
        describe(&mut out, &g.check);
    }
    let _ = writeln!(out, "steps, in the order they run:");
    for (n, &i) in p.order.iter().enumerate() {
        let s = &p.steps[i];
        let _ = writeln!(
            out,
            "  {}. {}: {} (timeout {} ms{}{})",
            n + 1,
            s.name,
            s.action,
            s.timeout_ms,
            s.retry
                .map(|r| format!(", {} attempts", r.attempts))
                .unwrap_or_default(),
            if s.approval { ", needs approval" } else { "" }
        );
        describe(&mut out, &s.action);
        if let Some(u) = &s.undo {
            let _ = writeln!(out, "      undo: {}", u.action);
        }
    }
    let _ = writeln!(out, "verify:");
    for v in &p.verify {
        let _ = writeln!(out, "  - {}: {}", v.name, v.check);
    }
    let _ = writeln!(
        out,
        "on failure: {}",
        match p.on_failure {
            playbook::OnFailure::Rollback => "rollback",
            playbook::OnFailure::Stop => "stop",
        }
    );
    out
}

/// What `strait failover` and `strait failback` share: the mirror, the flow and how the
/// run goes.
#[derive(Debug, clap::Args)]
pub struct FrontArgs {
    /// The running mirror's config.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "configs/mirror-a-to-b.yaml"
    )]
    pub mirror: PathBuf,
    /// The flow (default: the config's only enabled flow).
    #[arg(long, value_name = "NAME")]
    pub flow: Option<String>,
    /// Check the guards and predict what a run would copy, lose, archive or restore; change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Approve the steps that ask for approval (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Also write the run's report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The running mirror's HTTP address, instead of the mirror config's `http`.
    #[arg(long, value_name = "HOST:PORT")]
    pub mirror_http: Option<std::net::SocketAddr>,
    /// The directory of the playbooks.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "dr-playbooks",
        env = "STRAIT_PLAYBOOKS"
    )]
    pub playbooks: PathBuf,
    /// The runs' journal (default: `runbooks/` under the mirror's data directory).
    #[arg(long, value_name = "DIR", env = "STRAIT_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Who runs it, for the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
}

/// Arguments of `strait failover`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["planned", "forced"])))]
pub struct FailoverArgs {
    /// Both sites are up: fence the source, drain to lag 0, sync and verify every group,
    /// stop the flow, open the target (dr-playbooks/planned-failover.yaml). Nothing is lost,
    /// duplicated, re-read or skipped.
    #[arg(long)]
    pub planned: bool,
    /// The source is gone: check that it is unreachable, stop the flow, commit the last
    /// translated group offsets on the target, open it, and report what may be lost
    /// (dr-playbooks/forced-failover.yaml).
    #[arg(long)]
    pub forced: bool,
    #[command(flatten)]
    pub front: FrontArgs,
    /// For --forced: how long no node of the source may answer before it counts as gone.
    #[arg(long, value_name = "MS")]
    pub source_timeout_ms: Option<u64>,
    /// For --forced, with --yes: fail over even if the source answers (it is up but
    /// unusable). Both sites may then take writes: stop the source's producers yourself.
    #[arg(long)]
    pub allow_split_brain: bool,
}

/// Arguments of `strait failback`.
#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    #[command(flatten)]
    pub front: FrontArgs,
    /// Where the source's divergent tail is archived (a directory per flow, one JSON-lines
    /// file per partition with its .sha256).
    #[arg(long, value_name = "DIR", default_value = "failback-archive")]
    pub archive_dir: PathBuf,
    /// How long the target's consumers may take to stop once its mirror topics are fenced.
    #[arg(long, value_name = "MS")]
    pub consumers_wait_ms: Option<u64>,
}

/// The flow named, or the config's only enabled flow.
fn chosen_flow<'c>(
    config: &'c strait_mirror::config::MirrorConfig,
    path: &std::path::Path,
    name: Option<&str>,
) -> anyhow::Result<&'c strait_mirror::config::FlowConfig> {
    let enabled: Vec<&strait_mirror::config::FlowConfig> = config.enabled_flows().collect();
    Ok(match name {
        Some(name) => config
            .flows
            .iter()
            .find(|f| f.name == name)
            .with_context(|| {
                let known: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "{}: no flow `{name}` (its flows: {})",
                    path.display(),
                    known.join(", ")
                )
            })?,
        None => match enabled.as_slice() {
            [only] => only,
            _ => anyhow::bail!(
                "{} has {} enabled flows ({}); name one with --flow",
                path.display(),
                enabled.len(),
                enabled
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    })
}

/// Runs `playbook` for the flow `front` names, with the flow's sites and `extra` as
/// parameters.
async fn run_front(front: FrontArgs, playbook: &str, extra: Vec<String>) -> anyhow::Result<()> {
    let config = strait_mirror::config::MirrorConfig::load(&front.mirror)?;
    let flow = chosen_flow(&config, &front.mirror, front.flow.as_deref())?;
    let mut params = vec![
        format!("mirror_config={}", front.mirror.display()),
        format!("flow={}", flow.name),
        format!("source_site={}", flow.source),
        format!("target_site={}", flow.target),
    ];
    params.extend(extra);
    run(RunbookArgs {
        playbooks: front.playbooks,
        journal: front.journal,
        mirror: front.mirror,
        operator: front.operator,
        command: RunbookCommand::Run {
            name: playbook.to_string(),
            params,
            dry_run: front.dry_run,
            report: front.report,
            mirror_http: front.mirror_http,
            yes: front.yes,
        },
    })
    .await
}

/// Runs `strait failover`: the planned or forced failover playbook with its parameters taken
/// from the mirror config's flow.
pub async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let mut extra = Vec::new();
    if let Some(ms) = args.source_timeout_ms {
        anyhow::ensure!(args.forced, "--source-timeout-ms goes with --forced");
        extra.push(format!("source_timeout_ms={ms}"));
    }
    if args.allow_split_brain {
        anyhow::ensure!(
            args.forced && args.front.yes,
            "--allow-split-brain goes with --forced and --yes: it lets two sites take writes"
        );
        extra.push("allow_split_brain=true".to_string());
    }
    let playbook = if args.planned {
        "planned-failover"
    } else {
        "forced-failover"
    };
    run_front(args.front, playbook, extra).await
}

/// Runs `strait failback`: the failback playbook with its parameters taken from the mirror
/// config's flow.
pub async fn failback(args: FailbackArgs) -> anyhow::Result<()> {
    let mut extra = vec![format!("archive_dir={}", args.archive_dir.display())];
    if let Some(ms) = args.consumers_wait_ms {
        extra.push(format!("consumers_wait_ms={ms}"));
    }
    run_front(args.front, "failback", extra).await
}
