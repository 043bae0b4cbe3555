//! Child processes of this same binary under one supervisor: `strait cluster` runs the nodes
//! of a site with it, `strait up` runs two sites and a mirror.
//!
//! Every child's stdout and stderr are forwarded line by line, prefixed with `[label]`, through
//! one bounded queue written by a thread of its own. A child is *up* once a line of its stdout
//! matches its ready parser. The supervisor never restarts a child: one that dies after
//! startup is reported with the command that starts it again, and the others keep running.
//! Stopping sends SIGTERM, waits, then SIGKILLs what is left. Each child runs in a process
//! group of its own, so a terminal's Ctrl-C reaches the supervisor alone and the children stop
//! in the supervisor's order. On Linux every child also gets SIGTERM when the supervisor dies,
//! even by SIGKILL.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A child's output line longer than this is forwarded in pieces, so a runaway line cannot
/// grow the supervisor's memory.
const OUTPUT_LINE_BYTES_MAX: usize = 64 * 1024;
/// Lines waiting to be written to this process's stdout / stderr. When the queue is full the
/// readers wait, and with them the children's own writes, instead of memory growing.
const OUTPUT_LINES_QUEUED_MAX: usize = 1024;
/// Events (ready, exited) not yet handled by the supervisor.
const EVENTS_QUEUED_MAX: usize = 64;
/// How often waiting for the children is reported during startup.
const PROGRESS_INTERVAL_MS: u64 = 5_000;
/// How long a child that got SIGKILL may take to be reaped.
const KILL_WAIT_MS: u64 = 5_000;
/// How long a child's output is still forwarded after it exited, before its exit is reported.
const LAST_WORDS_WAIT_MS: u64 = 1_000;
/// How long, at the end, the output queue gets to drain.
const OUTPUT_DRAIN_WAIT_MS: u64 = 2_000;

/// Recognises a child's ready line and returns what to report about it (e.g. its address).
pub type ReadyParser = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One child process to start: `<this binary> <args>`.
pub struct ChildSpec {
    /// Prefix of its output lines, `[label]`; unique per supervisor (e.g. `node-1`).
    pub label: String,
    /// How messages name it (e.g. `node 1`).
    pub display: String,
    /// Arguments after the binary (e.g. `broker --config F`).
    pub args: Vec<OsString>,
    /// Said after the pid in the "started" line (e.g. `config F, data dir D`).
    pub details: String,
    /// Its ready line.
    pub ready: ReadyParser,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// What a child's tasks tell the supervisor.
#[derive(Debug)]
enum Event {
    /// The child printed its ready line; `report` is what the parser returned.
    Ready { label: String, report: String },
    /// The child's process ended.
    Exited {
        label: String,
        status: std::io::Result<ExitStatus>,
    },
}

/// What the supervisor tells a child's watcher.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// SIGTERM: clean shutdown.
    Terminate,
    /// SIGKILL.
    Kill,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Starting,
    Ready(String),
    /// Sent SIGTERM. A child that was not up yet may have no handler for it and die of it,
    /// which is expected; a child that was up must exit 0.
    Stopping {
        was_up: bool,
    },
    Exited,
}

/// A child process under supervision.
struct Supervised {
    display: String,
    /// The command line that starts it, for the "start it again" hint.
    command_line: String,
    orders: mpsc::Sender<Order>,
    state: State,
}

/// A line for this process's stdout or stderr.
struct OutLine {
    to_stderr: bool,
    text: String,
}

/// Writes every line of the supervisor and its children, in the order they were queued, from
/// a thread of its own (a slow terminal or pipe blocks that thread, not the runtime).
struct Output {
    lines: mpsc::Sender<OutLine>,
    writer: std::thread::JoinHandle<()>,
}

impl Output {
    fn start() -> anyhow::Result<Output> {
        let (lines, mut rx) = mpsc::channel::<OutLine>(OUTPUT_LINES_QUEUED_MAX);
        let writer = std::thread::Builder::new()
            .name("supervisor-output".to_string())
            .spawn(move || {
                use std::io::Write;
                while let Some(line) = rx.blocking_recv() {
                    // A closed stdout/stderr (e.g. `| head`) must not stop the supervisor;
                    // the line is lost, the children keep running.
                    let _ = if line.to_stderr {
                        writeln!(std::io::stderr().lock(), "{}", line.text)
                    } else {
                        writeln!(std::io::stdout().lock(), "{}", line.text)
                    };
                }
            })
            .context("starting the output thread")?;
        Ok(Output { lines, writer })
    }

    /// Closes the queue and waits (bounded) until the writer has written what was queued.
    async fn finish(self) {
        let Output { lines, writer } = self;
        drop(lines);
        let deadline = Instant::now() + Duration::from_millis(OUTPUT_DRAIN_WAIT_MS);
        // Readers of children that did not close their pipes may still hold a sender: wait
        // for the queue to drain, not for every sender to go.
        while !writer.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one line (up to and including `\n`) of at most `max_bytes` into `buf`; returns the
/// bytes read, 0 at end of stream.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = max_bytes.saturating_sub(buf.len());
        let window = &available[..available.len().min(room)];
        let (take, done) = match window.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (window.len(), buf.len() + window.len() >= max_bytes),
        };
        buf.extend_from_slice(&window[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

/// Forwards one output stream of a child, each line prefixed with `[label]`; on stdout it
/// also watches for the child's ready line (`ready` is `None` for stderr).
async fn forward_output<R: AsyncRead + Unpin>(
    label: String,
    stream: R,
    to_stderr: bool,
    mut ready: Option<ReadyParser>,
    lines: mpsc::Sender<OutLine>,
    events: mpsc::Sender<Event>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match read_line_bounded(&mut reader, &mut buf, OUTPUT_LINE_BYTES_MAX).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let text = format!("reading the output of {label}: {e}");
                let _ = lines.send(OutLine { to_stderr, text }).await;
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let report = ready.as_ref().and_then(|parse| parse(line));
        let text = format!("[{label}] {line}");
        let _ = lines.send(OutLine { to_stderr, text }).await;
        // After the forwarded line, so the supervisor's own "ready" line comes after it.
        if let Some(report) = report {
            ready = None;
            let label = label.clone();
            let _ = events.send(Event::Ready { label, report }).await;
        }
    }
}

/// Owns a child's process: signals it on order, reaps it, and reports its exit once its last
/// output has been forwarded.
async fn watch_child(
    label: String,
    mut child: Child,
    mut orders: mpsc::Receiver<Order>,
    readers: Vec<JoinHandle<()>>,
    events: mpsc::Sender<Event>,
) {
    let status = loop {
        tokio::select! {
            // Cancel-safe: a select that takes an order polls `wait` again next time.
            status = child.wait() => break status,
            order = orders.recv() => match order {
                Some(Order::Terminate) => {
                    // `id()` is `None` once reaped, and only this task reaps, so the pid
                    // cannot belong to another process yet.
                    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: kill(2) on our own child, not reaped yet (see above).
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                }
                Some(Order::Kill) => {
                    let _ = child.start_kill();
                }
                // The supervisor is gone; nothing will order anything any more.
                None => break child.wait().await,
            },
        }
    };
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_millis(LAST_WORDS_WAIT_MS), reader).await;
    }
    let _ = events.send(Event::Exited { label, status }).await;
}

/// Makes the child receive SIGTERM (a clean shutdown) when the supervisor dies, even by
/// SIGKILL, so no child outlives it unnoticed. Linux only; elsewhere children survive a killed
/// supervisor and must be stopped by hand.
///
/// The signal is tied to the *thread* that spawned the child: children must be spawned from
/// the thread that lives as long as the supervisor (the `block_on` thread), never from a
/// `spawn_blocking` thread, which exits when idle.
#[cfg(target_os = "linux")]
fn die_with_supervisor(command: &mut Command) {
    let supervisor = i32::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before prctl: the signal would never come. (ESRCH, "no such
            // process": an error value that needs no allocation here.)
            if libc::getppid() != supervisor {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_supervisor(_command: &mut Command) {}

/// How a process ended, for messages.
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("its status is unknown: {e}"),
    }
}

/// The supervisor of a group of children, and the writer of their output.
pub struct Supervisor {
    /// Prefix of the supervisor's own lines, e.g. `strait cluster`.
    tool: &'static str,
    /// The group's name in messages (e.g. `site-a`); empty for none.
    name: String,
    /// Said when a child dies and the others keep running (why they still work, or not).
    on_loss: String,
    children: BTreeMap<String, Supervised>,
    /// Labels in start order.
    order: Vec<String>,
    events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    out: Output,
    exe: std::path::PathBuf,
}

impl Supervisor {
    /// A supervisor that starts children from this same binary. `on_loss` is appended to the
    /// message about a child that died after startup (e.g. " (a quorum needs a majority)").
    pub fn new(tool: &'static str, name: &str, on_loss: &str) -> anyhow::Result<Supervisor> {
        let exe = std::env::current_exe()
            .context("locating the strait binary to start the children with")?;
        let (events_tx, events) = mpsc::channel(EVENTS_QUEUED_MAX);
        Ok(Supervisor {
            tool,
            name: name.to_string(),
            on_loss: on_loss.to_string(),
            children: BTreeMap::new(),
            order: Vec::new(),
            events,
            events_tx,
            out: Output::start()?,
            exe,
        })
    }

    /// `site-a: ` or nothing, to start a message about the group.
    fn scope(&self) -> String {
        if self.name.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.name)
        }
    }

    /// A supervisor line on stdout.
    pub async fn say(&self, text: impl std::fmt::Display) {
        let text = format!("{}: {text}", self.tool);
        let _ = self
            .out
            .lines
            .send(OutLine {
                to_stderr: false,
                text,
            })
            .await;
    }

    /// A supervisor line on stderr (something went wrong).
    pub async fn warn(&self, text: impl std::fmt::Display) {
        let text = format!("{}: {text}", self.tool);
        let _ = self
            .out
            .lines
            .send(OutLine {
                to_stderr: true,
                text,
            })
            .await;
    }

    /// Closes the output queue and waits (bounded) until what was queued is written.
    pub async fn finish(self) {
        self.out.finish().await;
    }

    /// Starts a child (from the thread the supervisor is polled on; see
    /// [`die_with_supervisor`]).
    pub async fn spawn(&mut self, spec: ChildSpec) -> anyhow::Result<()> {
        assert!(
            !self.children.contains_key(&spec.label),
            "two children labelled {}",
            spec.label
        );
        let mut command = Command::new(&self.exe);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Only if the supervisor unwinds without stopping it; `stop` is the normal way.
            .kill_on_drop(true)
            // A group of its own: Ctrl-C in a terminal signals the foreground process group,
            // which must reach only the supervisor, so that it stops the children in its own
            // order (e.g. the mirror before the sites it reads and writes).
            .process_group(0);
        die_with_supervisor(&mut command);
        let command_line = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting {}: {} {command_line}",
                spec.display,
                self.exe.display()
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let mut readers = Vec::with_capacity(2);
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(forward_output(
                spec.label.clone(),
                stdout,
                false,
                Some(spec.ready.clone()),
                self.out.lines.clone(),
                self.events_tx.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(forward_output(
                spec.label.clone(),
                stderr,
                true,
                None,
                self.out.lines.clone(),
                self.events_tx.clone(),
            )));
        }
        // Two orders at most matter (SIGTERM, then SIGKILL); a few more may queue harmlessly.
        let (orders, orders_rx) = mpsc::channel(4);
        tokio::spawn(watch_child(
            spec.label.clone(),
            child,
            orders_rx,
            readers,
            self.events_tx.clone(),
        ));
        self.say(format_args!(
            "started {} (pid {pid}): {}",
            spec.display, spec.details
        ))
        .await;
        self.children.insert(
            spec.label.clone(),
            Supervised {
                display: spec.display,
                command_line,
                orders,
                state: State::Starting,
            },
        );
        self.order.push(spec.label);
        Ok(())
    }

    fn labels_in(&self, pred: impl Fn(&State) -> bool) -> Vec<String> {
        self.order
            .iter()
            .filter(|l| self.children.get(*l).is_some_and(|c| pred(&c.state)))
            .cloned()
            .collect()
    }

    fn list(&self, labels: &[String]) -> String {
        labels
            .iter()
            .map(|l| self.children.get(l).map_or(l.as_str(), |c| &c.display))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn display(&self, label: &str) -> String {
        self.children
            .get(label)
            .map_or_else(|| label.to_string(), |c| c.display.clone())
    }

    /// Waits until every child started so far printed its ready line, and returns each one's
    /// report in start order. Fails if a child exits first, the deadline passes or a shutdown
    /// signal comes; the caller then stops the rest. `hint` says what "up" takes, in the
    /// progress and timeout messages.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        hint: &str,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut progress = tokio::time::interval_at(
            started + Duration::from_millis(PROGRESS_INTERVAL_MS),
            Duration::from_millis(PROGRESS_INTERVAL_MS),
        );
        let scope = self.scope();
        loop {
            let waiting = self.labels_in(|s| *s == State::Starting);
            if waiting.is_empty() {
                break;
            }
            tokio::select! {
                _ = shutdown.as_mut() => bail!("{scope}interrupted before everything was up"),
                _ = tokio::time::sleep_until(deadline) => bail!(
                    "{scope}{} not up within {} s (see the lines above prefixed with its name; {hint})",
                    self.list(&waiting), timeout.as_secs()
                ),
                _ = progress.tick() => {
                    let ready = self.labels_in(|s| matches!(s, State::Ready(_)));
                    self.say(format_args!(
                        "{scope}waiting for {} ({} s; up: {}); {hint}",
                        self.list(&waiting),
                        started.elapsed().as_secs(),
                        if ready.is_empty() { "none".to_string() } else { self.list(&ready) },
                    )).await;
                }
                event = self.events.recv() => match event {
                    Some(Event::Ready { label, report }) => {
                        if let Some(c) = self.children.get_mut(&label) {
                            c.state = State::Ready(report);
                        }
                    }
                    Some(Event::Exited { label, status }) => {
                        if let Some(c) = self.children.get_mut(&label) {
                            c.state = State::Exited;
                        }
                        bail!(
                            "{scope}{} exited during startup ({}); its output is above, prefixed [{label}]",
                            self.display(&label), describe(&status)
                        );
                    }
                    // Unreachable while `self` holds a sender.
                    None => bail!("{scope}lost track of the children"),
                },
            }
        }
        Ok(self
            .order
            .iter()
            .filter_map(|l| match self.children.get(l).map(|c| &c.state) {
                Some(State::Ready(report)) => Some(report.clone()),
                _ => None,
            })
            .collect())
    }

    /// Runs until a shutdown signal. A child that dies is reported, the others keep running;
    /// fails only once every child is gone.
    pub async fn supervise(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<()> {
        let scope = self.scope();
        let of = if self.name.is_empty() {
            String::new()
        } else {
            format!(" OF {}", self.name)
        };
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                event = self.events.recv() => match event {
                    Some(Event::Exited { label, status }) => {
                        let (display, command_line) = match self.children.get_mut(&label) {
                            Some(c) => {
                                c.state = State::Exited;
                                (c.display.clone(), c.command_line.clone())
                            }
                            None => (label.clone(), String::new()),
                        };
                        let alive = self.labels_in(|s| matches!(s, State::Ready(_)));
                        if alive.is_empty() {
                            bail!("{scope}{display} exited ({}) and nothing else is left", describe(&status));
                        }
                        self.warn(format_args!(
                            "{}{of} EXITED ({}); {} keep running without it{}. Its output is above, prefixed [{label}]; start it again with `strait {command_line}`",
                            display.to_uppercase(), describe(&status), self.list(&alive), self.on_loss
                        )).await;
                    }
                    Some(Event::Ready { .. }) => {}
                    None => bail!("{scope}lost track of the children"),
                },
            }
        }
    }

    /// Sends SIGTERM to the children `labels` (all, if `None`) that still run, waits up to
    /// `timeout` for them to exit, then SIGKILLs the rest. Returns what went wrong (a child
    /// that did not exit 0 or had to be killed); empty means every one stopped cleanly.
    pub async fn stop(&mut self, labels: Option<&[&str]>, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let chosen = |l: &String| labels.is_none_or(|ls| ls.contains(&l.as_str()));
        let running: Vec<String> = self
            .labels_in(|s| *s != State::Exited)
            .into_iter()
            .filter(chosen)
            .collect();
        if running.is_empty() {
            return problems;
        }
        self.say(format_args!(
            "{}stopping {} (SIGTERM: clean shutdown, up to {} s)",
            self.scope(),
            self.list(&running),
            timeout.as_secs()
        ))
        .await;
        for label in &running {
            if let Some(c) = self.children.get_mut(label) {
                c.state = State::Stopping {
                    was_up: matches!(c.state, State::Ready(_)),
                };
                let _ = c.orders.try_send(Order::Terminate);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
            let stopping: Vec<String> = self
                .labels_in(|s| matches!(s, State::Stopping { .. }))
                .into_iter()
                .filter(chosen)
                .collect();
            if stopping.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    problems.push(format!(
                        "{} did not stop within {} s after SIGTERM and got SIGKILL",
                        self.list(&stopping), timeout.as_secs()
                    ));
                    self.warn(&problems[problems.len() - 1]).await;
                    for label in &stopping {
                        if let Some(c) = self.children.get(label) {
                            let _ = c.orders.try_send(Order::Kill);
                        }
                    }
                    killed = true;
                }
                _ = tokio::time::sleep_until(deadline + Duration::from_millis(KILL_WAIT_MS)), if killed => {
                    problems.push(format!("{} still running after SIGKILL", self.list(&stopping)));
                    break;
                }
                event = self.events.recv() => match event {
                    Some(Event::Exited { label, status }) => {
                        let display = self.display(&label);
                        let before = self.children.get(&label).map(|c| c.state.clone());
                        if let Some(c) = self.children.get_mut(&label) {
                            c.state = State::Exited;
                        }
                        let was_up = match before {
                            Some(State::Stopping { was_up }) => was_up,
                            // A child outside this stop that died on its own meanwhile.
                            _ => {
                                self.warn(format_args!("{display} exited ({})", describe(&status))).await;
                                continue;
                            }
                        };
                        let clean = matches!(&status, Ok(s) if s.success());
                        if clean {
                            self.say(format_args!("{display} stopped ({})", describe(&status))).await;
                        } else if !was_up && !killed {
                            self.say(format_args!("{display} stopped before it was up ({})", describe(&status))).await;
                        } else if !killed {
                            problems.push(format!("{display} exited with {} after SIGTERM", describe(&status)));
                            self.warn(&problems[problems.len() - 1]).await;
                        }
                    }
                    Some(Event::Ready { .. }) => {}
                    None => break,
                },
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_split_and_the_rest_is_kept() {
        let text = format!("{}\nshort\nlast", "x".repeat(10));
        let mut reader = BufReader::with_capacity(3, text.as_bytes());
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_line_bounded(&mut reader, &mut buf, 4).await.unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(lines, ["xxxx", "xxxx", "xx\n", "shor", "t\n", "last"]);
    }
}
