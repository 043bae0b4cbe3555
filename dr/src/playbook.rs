//! Playbooks: YAML files in `dr-playbooks/`, loaded and checked before anything runs.
//!
//! ```yaml
//! name: planned-failover
//! description: Move applications from site a to site b with nothing lost.
//! params:
//!   flow: { type: string, default: a-to-b, description: the flow to fail over }
//! guards:                       # re-checked before the first step and on every resume
//!   - name: the flow runs
//!     check: flow_running       # a read-only action
//!     with: { mirror_config: "${mirror_config}", flow: "${flow}" }
//! steps:
//!   - name: fence the source
//!     action: fence_topics
//!     with: { ... }
//!     timeout_ms: 10000
//!     retry: { attempts: 3, initial_backoff_ms: 200, max_backoff_ms: 2000 }
//!     undo: { action: unfence_topics, with: { ... } }
//!     approval: false
//!     after: [other step]       # optional; the order is the file's unless `after` says more
//! verify: [ ... ]               # read-only checks after the last step
//! on_failure: rollback          # or stop
//! ```
//!
//! A value `"${p}"` is parameter `p` with its type; `${p}` inside longer text is replaced in a
//! string. Everything a playbook can get wrong is refused at load with the file, line, column
//! and reason: an unknown key, an unknown action or argument, a missing argument, a value of
//! the wrong type, a reference to a parameter that does not exist, a guard that is not
//! read-only, a step named twice, and a cycle among the steps' `after` lists. A plan
//! ([`Playbook::plan`]) then checks the given parameters (unknown, missing, type, range).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strait_yaml::position::{position_of, Step as PathStep};

use crate::actions::{self, Action, Kind};

/// Bounds on what a playbook may ask for.
pub const STEPS_MAX: usize = 100;
/// The longest a step may be given (a day).
pub const STEP_TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// The most attempts a retry policy may ask for.
pub const RETRY_ATTEMPTS_MAX: u32 = 20;
/// The longest wait between attempts.
pub const RETRY_BACKOFF_MS_MAX: u64 = 10 * 60 * 1000;
/// Playbook files larger than this are refused unread.
pub const PLAYBOOK_BYTES_MAX: u64 = 1 << 20;

/// Why a playbook or a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid playbook.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 if unknown.
        line: usize,
        /// 1-based column, 0 if unknown.
        column: usize,
        /// What is wrong and, where it helps, what would be right.
        reason: String,
    },
    /// The parameters given to a plan do not fit the playbook.
    #[error("playbook `{playbook}`: {reason}")]
    Params {
        /// The playbook's name.
        playbook: String,
        /// What is wrong.
        reason: String,
    },
    /// No playbook of that name in the directory.
    #[error("no playbook `{name}` in {dir} (there: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
        /// The names there.
        known: String,
    },
}

/// What happens when a step fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Undo every completed step, newest first.
    Rollback,
    /// Stop where it is, for a person to decide.
    Stop,
}

/// A parameter's declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ParamKind,
    /// Its value when none is given; without one the parameter must be given.
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    /// What it means.
    pub description: String,
    /// Smallest value (integers).
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest value (integers).
    #[serde(default)]
    pub max: Option<i64>,
    /// The only values allowed (strings).
    #[serde(default)]
    pub choices: Option<Vec<String>>,
}

/// A parameter's type as playbooks spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// true or false.
    Boolean,
}

impl From<ParamKind> for Kind {
    fn from(k: ParamKind) -> Kind {
        match k {
            ParamKind::String => Kind::String,
            ParamKind::Integer => Kind::Integer,
            ParamKind::Boolean => Kind::Boolean,
        }
    }
}

/// Arguments as written: literal values or parameter references.
pub type With = BTreeMap<String, serde_yaml::Value>;

/// A guard or a verification: a read-only action that must succeed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What it makes sure of.
    pub name: String,
    /// The action.
    pub check: String,
    /// Its arguments.
    #[serde(default)]
    pub with: With,
    /// Guards only: the step whose start makes this guard no longer apply on a resume (the
    /// run itself made it false, e.g. `the flow runs` once `stop the flow` has started).
    #[serde(default)]
    pub until: Option<String>,
}

/// How a step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff_ms: u64,
    /// The longest wait.
    pub max_backoff_ms: u64,
}

impl Retry {
    /// No retry: one attempt.
    pub const ONCE: Retry = Retry {
        attempts: 1,
        initial_backoff_ms: 0,
        max_backoff_ms: 0,
    };
}

/// What undoes a step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    /// The action.
    pub action: String,
    /// Its arguments.
    #[serde(default)]
    pub with: With,
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Its name, unique in the playbook.
    pub name: String,
    /// The action.
    pub action: String,
    /// Its arguments.
    #[serde(default)]
    pub with: With,
    /// How long one attempt may take.
    pub timeout_ms: u64,
    /// How it is retried (one attempt if absent).
    #[serde(default)]
    pub retry: Option<Retry>,
    /// What undoes it on rollback.
    #[serde(default)]
    pub undo: Option<Undo>,
    /// Whether a person must approve it (on the terminal, or `--yes`).
    #[serde(default)]
    pub approval: bool,
    /// Steps that must complete before it.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A playbook as loaded and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Its name (also its file's stem).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its parameters, by name.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// Preconditions.
    #[serde(default)]
    pub guards: Vec<Check>,
    /// The steps, in the file's order.
    pub steps: Vec<StepSpec>,
    /// Postconditions.
    #[serde(default)]
    pub verify: Vec<Check>,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// The file it came from.
    #[serde(skip)]
    pub path: PathBuf,
    /// The steps' indexes in the order they run (`after` respected, else the file's order).
    #[serde(skip)]
    pub order: Vec<usize>,
}

/// A concrete value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text.
    String(String),
    /// A whole number.
    Integer(i64),
    /// true or false.
    Boolean(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s}"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::String(_) => Kind::String,
            Value::Integer(_) => Kind::Integer,
            Value::Boolean(_) => Kind::Boolean,
        }
    }

    fn from_yaml(v: &serde_yaml::Value) -> Option<Value> {
        match v {
            serde_yaml::Value::String(s) => Some(Value::String(s.clone())),
            serde_yaml::Value::Number(n) => n.as_i64().map(Value::Integer),
            serde_yaml::Value::Bool(b) => Some(Value::Boolean(*b)),
            _ => None,
        }
    }

    /// Parses `text` (from `--param k=v`) as `kind`.
    fn parse(text: &str, kind: Kind) -> Option<Value> {
        match kind {
            Kind::String => Some(Value::String(text.to_string())),
            Kind::Integer => text.parse().ok().map(Value::Integer),
            Kind::Boolean => text.parse().ok().map(Value::Boolean),
        }
    }
}

/// A checked argument: a literal, a parameter, or text with parameters in it.
enum ArgValue<'a> {
    Literal(Value),
    Param(&'a str),
    Text(Vec<TextPart<'a>>),
}

enum TextPart<'a> {
    Plain(&'a str),
    Param(&'a str),
}

/// Splits `s` at `${name}` references; `Err` names a malformed one.
fn text_parts(s: &str) -> Result<Vec<TextPart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if at > 0 {
            parts.push(TextPart::Plain(&rest[..at]));
        }
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{s}`"))?;
        let name = &after[..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`${{{name}}}` is not a parameter reference"));
        }
        parts.push(TextPart::Param(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(TextPart::Plain(rest));
    }
    Ok(parts)
}

fn arg_value(v: &serde_yaml::Value) -> Result<ArgValue<'_>, String> {
    if let serde_yaml::Value::String(s) = v {
        let parts = text_parts(s)?;
        return Ok(match parts.as_slice() {
            [TextPart::Param(p)] => ArgValue::Param(p),
            _ if parts.iter().any(|p| matches!(p, TextPart::Param(_))) => ArgValue::Text(parts),
            _ => ArgValue::Literal(Value::String(s.clone())),
        });
    }
    Value::from_yaml(v)
        .map(ArgValue::Literal)
        .ok_or_else(|| "a value must be a string, a whole number or a boolean".to_string())
}

/// Where something of the playbook is, as a path into the document.
fn key(k: &str) -> PathStep {
    PathStep::Key(k.to_string())
}

impl Playbook {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
        let read_error = |source| PlaybookError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > PLAYBOOK_BYTES_MAX {
            return Err(PlaybookError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                column: 0,
                reason: format!("{len} bytes; a playbook may have at most {PLAYBOOK_BYTES_MAX}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Playbook::parse(&text, path)
    }

    /// Parses and checks YAML `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Playbook, PlaybookError> {
        let invalid = |at: Option<(usize, usize)>, reason: String| {
            let (line, column) = at.unwrap_or((0, 0));
            PlaybookError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                reason,
            }
        };
        strait_yaml::limits::check(text)
            .map_err(|e| invalid(Some((e.line, e.column)), e.reason))?;
        let mut playbook: Playbook = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| {
            let steps: Vec<PathStep> = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(PathStep::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(PathStep::Key(key.clone())),
                    _ => None,
                })
                .collect();
            let inner = e.into_inner();
            let at = position_of(text, &steps)
                .or_else(|| inner.location().map(|l| (l.line(), l.column())));
            let message = inner.to_string();
            // serde_yaml appends its own position; ours is in front.
            let reason = match message.rfind(" at line ") {
                Some(i) if inner.location().is_some() => message[..i].to_string(),
                _ => message,
            };
            invalid(at, reason)
        })?;
        playbook.path = path.to_path_buf();
        playbook
            .check()
            .map_err(|(at, reason)| invalid(position_of(text, &at), reason))?;
        Ok(playbook)
    }

    /// Every rule serde cannot express; `Err` has the path of the node at fault.
    fn check(&mut self) -> Result<(), (Vec<PathStep>, String)> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                vec![key("name")],
                format!(
                    "playbook name `{}` must be letters, digits, `-` and `_`",
                    self.name
                ),
            ));
        }
        if let Some(stem) = self.path.file_stem().and_then(|s| s.to_str()) {
            if stem != self.name {
                return Err((
                    vec![key("name")],
                    format!(
                        "playbook `{}` is in a file named `{stem}`; name and file must match",
                        self.name
                    ),
                ));
            }
        }
        for (name, param) in &self.params {
            let at = || vec![key("params"), key(name)];
            let kind = Kind::from(param.kind);
            if let (Some(min), Some(max)) = (param.min, param.max) {
                if min > max {
                    return Err((
                        at(),
                        format!("parameter `{name}`: min {min} is above max {max}"),
                    ));
                }
            }
            if let Some(default) = &param.default {
                match Value::from_yaml(default) {
                    Some(v) if v.kind() == kind => {
                        self.check_param_value(name, &v).map_err(|reason| {
                            (vec![key("params"), key(name), key("default")], reason)
                        })?
                    }
                    _ => {
                        return Err((
                            vec![key("params"), key(name), key("default")],
                            format!("parameter `{name}` is {} but its default is not", kind.a()),
                        ))
                    }
                }
            }
            if (param.min.is_some() || param.max.is_some()) && kind != Kind::Integer {
                return Err((
                    at(),
                    format!("parameter `{name}`: min and max are for integers"),
                ));
            }
            if param.choices.is_some() && kind != Kind::String {
                return Err((at(), format!("parameter `{name}`: choices are for strings")));
            }
        }
        if self.steps.is_empty() {
            return Err((
                vec![key("steps")],
                "a playbook needs at least one step".into(),
            ));
        }
        if self.steps.len() > STEPS_MAX {
            return Err((
                vec![key("steps")],
                format!("{} steps; at most {STEPS_MAX}", self.steps.len()),
            ));
        }
        for (section, checks) in [("guards", &self.guards), ("verify", &self.verify)] {
            for (i, c) in checks.iter().enumerate() {
                let at = |k: &str| vec![key(section), PathStep::Index(i), key(k)];
                let action = known_action(&c.check).map_err(|r| (at("check"), r))?;
                if !action.read_only {
                    return Err((
                        at("check"),
                        format!(
                            "`{}` changes things; a {} must be a read-only action",
                            c.check,
                            if section == "guards" {
                                "guard"
                            } else {
                                "verification"
                            }
                        ),
                    ));
                }
                self.check_args(
                    action,
                    &c.with,
                    &[key(section), PathStep::Index(i)],
                    "check",
                )?;
                if let Some(until) = &c.until {
                    if section != "guards" {
                        return Err((at("until"), "only a guard may have `until`".into()));
                    }
                    if !self.steps.iter().any(|s| &s.name == until) {
                        return Err((at("until"), format!("no step named `{until}`")));
                    }
                }
            }
        }
        let mut names = BTreeMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = |k: &str| vec![key("steps"), PathStep::Index(i), key(k)];
            if names.insert(step.name.as_str(), i).is_some() {
                return Err((at("name"), format!("a second step named `{}`", step.name)));
            }
            let action = known_action(&step.action).map_err(|r| (at("action"), r))?;
            self.check_args(
                action,
                &step.with,
                &[key("steps"), PathStep::Index(i)],
                "action",
            )?;
            if step.timeout_ms == 0 || step.timeout_ms > STEP_TIMEOUT_MS_MAX {
                return Err((
                    at("timeout_ms"),
                    format!("timeout_ms must be 1 to {STEP_TIMEOUT_MS_MAX}"),
                ));
            }
            if let Some(r) = &step.retry {
                if r.attempts > 1 && !action.idempotent {
                    return Err((
                        at("retry"),
                        format!(
                            "`{}` is not idempotent: a step that timed out may have taken effect, so it is never retried (attempts must be 1)",
                            step.action
                        ),
                    ));
                }
                if r.attempts == 0 || r.attempts > RETRY_ATTEMPTS_MAX {
                    return Err((
                        at("retry"),
                        format!("retry.attempts must be 1 to {RETRY_ATTEMPTS_MAX}"),
                    ));
                }
                if r.max_backoff_ms > RETRY_BACKOFF_MS_MAX
                    || r.initial_backoff_ms > r.max_backoff_ms
                {
                    return Err((
                        at("retry"),
                        format!("retry needs initial_backoff_ms <= max_backoff_ms <= {RETRY_BACKOFF_MS_MAX}"),
                    ));
                }
            }
            if let Some(undo) = &step.undo {
                let undo_at = vec![key("steps"), PathStep::Index(i), key("undo")];
                let action = known_action(&undo.action).map_err(|r| {
                    let mut p = undo_at.clone();
                    p.push(key("action"));
                    (p, r)
                })?;
                self.check_args(action, &undo.with, &undo_at, "action")?;
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            for (j, before) in step.after.iter().enumerate() {
                if !names.contains_key(before.as_str()) {
                    return Err((
                        vec![
                            key("steps"),
                            PathStep::Index(i),
                            key("after"),
                            PathStep::Index(j),
                        ],
                        format!(
                            "step `{}` comes after `{before}`, which is not a step",
                            step.name
                        ),
                    ));
                }
            }
        }
        self.order = self.run_order(&names)?;
        Ok(())
    }

    /// The steps in the order they run: each after everything its `after` names, otherwise
    /// in the file's order; a cycle is refused naming its steps.
    fn run_order(
        &self,
        names: &BTreeMap<&str, usize>,
    ) -> Result<Vec<usize>, (Vec<PathStep>, String)> {
        let n = self.steps.len();
        let deps: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|s| s.after.iter().map(|a| names[a.as_str()]).collect())
            .collect();
        // Kahn's algorithm, always taking the first ready step in file order.
        let mut done = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let next = (0..n).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
            match next {
                Some(i) => {
                    done[i] = true;
                    order.push(i);
                }
                None => {
                    // Every step left waits on another step left: walk back to a cycle.
                    let start = (0..n).find(|&i| !done[i]).expect("a step is left");
                    let mut path = vec![start];
                    let mut at = start;
                    loop {
                        at = *deps[at]
                            .iter()
                            .find(|&&d| !done[d])
                            .expect("a step left waits on a step left");
                        if let Some(pos) = path.iter().position(|&p| p == at) {
                            let cycle: Vec<&str> = path[pos..]
                                .iter()
                                .chain(std::iter::once(&at))
                                .map(|&i| self.steps[i].name.as_str())
                                .collect();
                            return Err((
                                vec![key("steps"), PathStep::Index(at), key("after")],
                                format!(
                                    "the steps' `after` lists form a cycle: {}",
                                    cycle.join(" after ")
                                ),
                            ));
                        }
                        path.push(at);
                    }
                }
            }
        }
        Ok(order)
    }

    fn check_param_value(&self, name: &str, v: &Value) -> Result<(), String> {
        let p = &self.params[name];
        if let Value::Integer(i) = v {
            if p.min.is_some_and(|m| *i < m) || p.max.is_some_and(|m| *i > m) {
                return Err(format!(
                    "parameter `{name}` = {i} is outside {}..={}",
                    p.min.map_or("".into(), |m| m.to_string()),
                    p.max.map_or("".into(), |m| m.to_string())
                ));
            }
        }
        if let (Value::String(s), Some(choices)) = (v, &p.choices) {
            if !choices.contains(s) {
                return Err(format!(
                    "parameter `{name}` = `{s}` is not one of {}",
                    choices.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_args(
        &self,
        action: &Action,
        with: &With,
        at: &[PathStep],
        head: &str,
    ) -> Result<(), (Vec<PathStep>, String)> {
        let at_key = |k: &str| {
            let mut p = at.to_vec();
            p.push(key("with"));
            p.push(key(k));
            p
        };
        for (name, value) in with {
            let Some(arg) = action.arg(name) else {
                let known: Vec<&str> = action.args.iter().map(|a| a.name).collect();
                return Err((
                    at_key(name),
                    format!(
                        "`{}` has no argument `{name}` (its arguments: {})",
                        action.name,
                        known.join(", ")
                    ),
                ));
            };
            let kind = match arg_value(value).map_err(|r| (at_key(name), r))? {
                ArgValue::Literal(v) => v.kind(),
                ArgValue::Param(p) => match self.params.get(p) {
                    Some(param) => Kind::from(param.kind),
                    None => return Err((at_key(name), self.no_such_param(p))),
                },
                ArgValue::Text(parts) => {
                    for part in parts {
                        if let TextPart::Param(p) = part {
                            if !self.params.contains_key(p) {
                                return Err((at_key(name), self.no_such_param(p)));
                            }
                        }
                    }
                    Kind::String
                }
            };
            if kind != arg.kind {
                return Err((
                    at_key(name),
                    format!(
                        "`{}`'s argument `{name}` is {}, not {}",
                        action.name,
                        arg.kind.a(),
                        kind.a()
                    ),
                ));
            }
        }
        for arg in action.args.iter().filter(|a| a.required) {
            if !with.contains_key(arg.name) {
                let mut p = at.to_vec();
                p.push(key(if with.is_empty() { head } else { "with" }));
                return Err((
                    p,
                    format!(
                        "`{}` needs the argument `{}` ({})",
                        action.name, arg.name, arg.about
                    ),
                ));
            }
        }
        Ok(())
    }

    fn no_such_param(&self, p: &str) -> String {
        let known: Vec<&str> = self.params.keys().map(String::as_str).collect();
        format!(
            "`${{{p}}}` names no parameter (parameters: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    /// The plan for `given` parameter values (`--param k=v`): every parameter typed and in
    /// range, every argument resolved, the steps in the order they run.
    pub fn plan(&self, given: &BTreeMap<String, String>) -> Result<Plan, PlaybookError> {
        let refuse = |reason: String| PlaybookError::Params {
            playbook: self.name.clone(),
            reason,
        };
        for name in given.keys() {
            if !self.params.contains_key(name) {
                return Err(refuse(self.no_such_param(name).replacen(
                    "names no parameter",
                    "is given but is no parameter",
                    1,
                )));
            }
        }
        let mut params = BTreeMap::new();
        for (name, param) in &self.params {
            let kind = Kind::from(param.kind);
            let value = match given.get(name) {
                Some(text) => Value::parse(text, kind).ok_or_else(|| {
                    refuse(format!(
                        "parameter `{name}` is {}; `{text}` is not",
                        kind.a()
                    ))
                })?,
                None => match &param.default {
                    Some(d) => Value::from_yaml(d).expect("defaults are checked at load"),
                    None => {
                        return Err(refuse(format!(
                        "parameter `{name}` ({}) has no default: give it with --param {name}=...",
                        param.description
                    )))
                    }
                },
            };
            self.check_param_value(name, &value).map_err(refuse)?;
            params.insert(name.clone(), value);
        }
        let resolve = |action: &'static Action, with: &With| -> Planned {
            let args = with
                .iter()
                .map(|(k, v)| {
                    let value = match arg_value(v).expect("arguments are checked at load") {
                        ArgValue::Literal(v) => v,
                        ArgValue::Param(p) => params[p].clone(),
                        ArgValue::Text(parts) => Value::String(
                            parts
                                .iter()
                                .map(|p| match p {
                                    TextPart::Plain(s) => s.to_string(),
                                    TextPart::Param(p) => params[*p].to_string(),
                                })
                                .collect(),
                        ),
                    };
                    (k.clone(), value)
                })
                .collect();
            Planned { action, args }
        };
        let check = |c: &Check| PlannedCheck {
            name: c.name.clone(),
            planned: resolve(actions::action(&c.check).expect("checked at load"), &c.with),
            until: c.until.as_ref().map(|u| {
                self.order
                    .iter()
                    .position(|&i| &self.steps[i].name == u)
                    .expect("checked at load")
            }),
        };
        let steps = self
            .order
            .iter()
            .map(|&i| {
                let s = &self.steps[i];
                PlannedStep {
                    name: s.name.clone(),
                    planned: resolve(
                        actions::action(&s.action).expect("checked at load"),
                        &s.with,
                    ),
                    timeout_ms: s.timeout_ms,
                    retry: s.retry.unwrap_or(Retry::ONCE),
                    undo: s.undo.as_ref().map(|u| {
                        resolve(
                            actions::action(&u.action).expect("checked at load"),
                            &u.with,
                        )
                    }),
                    approval: s.approval,
                }
            })
            .collect();
        let guards = self.guards.iter().map(check).collect();
        let verify = self.verify.iter().map(check).collect();
        Ok(Plan {
            playbook: self.name.clone(),
            params,
            guards,
            steps,
            verify,
            on_failure: self.on_failure,
        })
    }
}

fn known_action(name: &str) -> Result<&'static Action, String> {
    actions::action(name).ok_or_else(|| {
        let known: Vec<&str> = actions::ACTIONS.iter().map(|a| a.name).collect();
        format!("unknown action `{name}` (known: {})", known.join(", "))
    })
}

/// An action with its arguments resolved.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The action.
    pub action: &'static Action,
    /// Its arguments.
    pub args: BTreeMap<String, Value>,
}

/// A guard or verification, resolved.
#[derive(Debug, Clone)]
pub struct PlannedCheck {
    /// What it makes sure of.
    pub name: String,
    /// The read-only action.
    pub planned: Planned,
    /// A guard that no longer applies on a resume once this step (index in run order) has
    /// started.
    pub until: Option<usize>,
}

/// A step, resolved.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Its name.
    pub name: String,
    /// What it does.
    pub planned: Planned,
    /// How long one attempt may take.
    pub timeout_ms: u64,
    /// How it is retried.
    pub retry: Retry,
    /// What undoes it.
    pub undo: Option<Planned>,
    /// Whether a person must approve it.
    pub approval: bool,
}

/// What a run of a playbook with given parameters would do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The playbook's name.
    pub playbook: String,
    /// Every parameter's value.
    pub params: BTreeMap<String, Value>,
    /// Checked before the first step and on every resume.
    pub guards: Vec<PlannedCheck>,
    /// In the order they run.
    pub steps: Vec<PlannedStep>,
    /// Checked after the last step.
    pub verify: Vec<PlannedCheck>,
    /// What a failure does.
    pub on_failure: OnFailure,
}

impl Plan {
    /// The actions the plan names that strait cannot execute yet.
    pub fn unavailable(&self) -> BTreeSet<&'static str> {
        let guards = self.guards.iter().chain(&self.verify).map(|c| &c.planned);
        let steps = self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(&s.planned).chain(s.undo.as_ref()));
        guards
            .chain(steps)
            .filter(|p| !p.action.available)
            .map(|p| p.action.name)
            .collect()
    }
}

fn write_planned(f: &mut fmt::Formatter<'_>, p: &Planned) -> fmt::Result {
    write!(f, "{}", p.action.name)?;
    if !p.args.is_empty() {
        let args: Vec<String> = p.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "({})", args.join(", "))?;
    }
    if !p.action.available {
        write!(f, "  [not executable yet]")?;
    }
    Ok(())
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan of {}", self.playbook)?;
        writeln!(f, "parameters:")?;
        for (k, v) in &self.params {
            writeln!(f, "  {k} = {v}")?;
        }
        writeln!(f, "guards (before the first step and on every resume):")?;
        for g in &self.guards {
            write!(f, "  - {}: ", g.name)?;
            write_planned(f, &g.planned)?;
            if let Some(until) = g.until {
                write!(f, " (until `{}` has started)", self.steps[until].name)?;
            }
            writeln!(f)?;
        }
        writeln!(f, "steps:")?;
        for (i, s) in self.steps.iter().enumerate() {
            write!(f, "  {}. {}: ", i + 1, s.name)?;
            write_planned(f, &s.planned)?;
            writeln!(f)?;
            write!(
                f,
                "     timeout {} ms, {} attempt(s)",
                s.timeout_ms, s.retry.attempts
            )?;
            if s.retry.attempts > 1 {
                write!(
                    f,
                    " (backoff {} ms doubling to {} ms)",
                    s.retry.initial_backoff_ms, s.retry.max_backoff_ms
                )?;
            }
            write!(
                f,
                ", {}, {}",
                if s.planned.action.read_only {
                    "reads only"
                } else {
                    "changes things"
                },
                if s.planned.action.idempotent {
                    "idempotent"
                } else {
                    "not idempotent: an interrupted run stops here for a person to check"
                }
            )?;
            if s.approval {
                write!(f, ", needs approval")?;
            }
            writeln!(f)?;
            if let Some(u) = &s.undo {
                write!(f, "     undo: ")?;
                write_planned(f, u)?;
                writeln!(f)?;
            }
        }
        writeln!(f, "verify (after the last step):")?;
        for v in &self.verify {
            write!(f, "  - {}: ", v.name)?;
            write_planned(f, &v.planned)?;
            writeln!(f)?;
        }
        writeln!(
            f,
            "on failure: {}",
            match self.on_failure {
                OnFailure::Rollback => "roll back (undo every completed step, newest first)",
                OnFailure::Stop => "stop where it is",
            }
        )?;
        let unavailable = self.unavailable();
        if !unavailable.is_empty() {
            let names: Vec<&str> = unavailable.into_iter().collect();
            writeln!(
                f,
                "cannot run yet: strait has no executor for {}",
                names.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The playbooks of a directory (`*.yaml`), by name.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Playbook>, PlaybookError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PlaybookError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut playbooks = BTreeMap::new();
    for path in paths {
        let p = Playbook::load(&path)?;
        playbooks.insert(p.name.clone(), p);
    }
    Ok(playbooks)
}

/// The playbook called `name` in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<Playbook, PlaybookError> {
    let mut all = load_dir(dir)?;
    all.remove(name).ok_or_else(|| PlaybookError::Unknown {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        known: all.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests;
