//! `strait runbook`: the playbooks of `dr-playbooks/`, listed, shown, planned and dry-run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use strait_dr::actions;
use strait_dr::playbook::{self, Playbook};

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
    /// Run a playbook. Today only with --dry-run: every guard runs for real (guards only
    /// read: site health and reachability, the running mirror's flow), the records a
    /// failover now would not have copied are predicted per partition from the running
    /// mirror, and every step is printed with what it would change. Nothing is changed.
    /// Exits non-zero if a guard fails.
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
    },
}

/// Runs `strait runbook`, printing to stdout.
pub async fn run(args: RunbookArgs) -> anyhow::Result<()> {
    if let RunbookCommand::Run {
        name,
        params,
        dry_run,
        report,
        mirror_http,
    } = &args.command
    {
        let plan = playbook::find(&args.playbooks, name)?.plan(&given(params)?)?;
        if !dry_run {
            let unavailable: Vec<&str> = plan.unavailable().into_iter().collect();
            anyhow::bail!(
                "running playbooks for real is not built yet (journal, resume and the executors of {}); `--dry-run` checks the guards and predicts the loss without changing anything",
                if unavailable.is_empty() { "its actions".to_string() } else { unavailable.join(", ") }
            );
        }
        let ctx = strait_dr::exec::Context {
            mirror_http: *mirror_http,
        };
        let result = strait_dr::run::dry_run(&plan, &ctx).await;
        print!("{result}");
        if let Some(path) = report {
            let json = serde_json::to_vec_pretty(&result).context("encoding the report")?;
            std::fs::write(path, json)
                .with_context(|| format!("writing the report to {}", path.display()))?;
        }
        if result.outcome != strait_dr::run::RunOutcome::DryRun {
            anyhow::bail!(
                "run {} of {}: a guard failed (see above); nothing was changed",
                result.run_id,
                result.playbook
            );
        }
        return Ok(());
    }
    print!("{}", render(&args)?);
    Ok(())
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
        RunbookCommand::Run { .. } => anyhow::bail!("`run` is not rendered"),
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
