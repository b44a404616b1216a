//! `shoal job run|status|list|stop|history|revert|promote` and `shoal task logs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;
use shoal_scheduler::JobSpec;

use super::client::{Api, ApiArgs};

/// `shoal job ...`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job file (TOML or JSON) and follow its placement until its tasks run.
    Run {
        /// The job file.
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
        /// Return as soon as the job is accepted.
        #[arg(long)]
        detach: bool,
    },
    /// One job: its status and every task.
    Status {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/jobs/ID`.
        #[arg(long)]
        json: bool,
    },
    /// Every job.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/jobs`.
        #[arg(long)]
        json: bool,
    },
    /// Stop a job: every task it started is killed.
    Stop {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A job's kept versions (the newest 10), oldest first, with their rollouts.
    History {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the JSON of `GET /v1/jobs/ID/versions`.
        #[arg(long)]
        json: bool,
    },
    /// Go back to a kept version: its spec and epoch become a new version, rolled out under
    /// the job's `[update]` block without canaries.
    Revert {
        /// Job id.
        id: String,
        /// The version to go back to (see `shoal job history`).
        #[arg(value_name = "VERSION")]
        to: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Accept the healthy canaries of a job's current deployment: the rest of its tasks
    /// are replaced.
    Promote {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `shoal task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Print a task's output (from whichever node runs it).
    Logs {
        /// Job id.
        job: String,
        /// Slot number.
        slot: u32,
        #[command(flatten)]
        api: ApiArgs,
        /// Print standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing new output until Ctrl-C; when the slot restarts, go on with the new
        /// attempt's output from its start (said on stderr).
        #[arg(long, short)]
        follow: bool,
        /// The output of attempt N of the slot instead of the current one (the last 8 attempts
        /// of a slot are kept).
        #[arg(long, value_name = "N", conflicts_with = "previous")]
        attempt: Option<u32>,
        /// The output of the attempt before the current one that ran: why a restarting task
        /// failed last.
        #[arg(long)]
        previous: bool,
    },
}

/// Runs a `job` subcommand.
pub async fn run(cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Run { file, api, detach } => run_job(&file, &Api::new(&api)?, detach).await,
        JobCommand::Status { id, api, json } => {
            let body = Api::new(&api)?.get(&format!("/v1/jobs/{id}")).await?;
            if json {
                println!("{body}");
            } else {
                print!("{}", describe(&serde_json::from_str(&body)?));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { api, json } => {
            let body = Api::new(&api)?.get("/v1/jobs").await?;
            if json {
                println!("{body}");
            } else {
                print!("{}", list_table(&serde_json::from_str(&body)?));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Stop { id, api } => {
            let answer = Api::new(&api)?
                .request(reqwest::Method::DELETE, &format!("/v1/jobs/{id}"), None)
                .await?;
            let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
            if let Some(warning) = answer.get("warning").and_then(Value::as_str) {
                eprintln!("warning: {warning}");
            }
            println!("job {id} stopped; its tasks are being killed");
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::History { id, api, json } => {
            let body = Api::new(&api)?
                .get(&format!("/v1/jobs/{id}/versions"))
                .await?;
            if json {
                println!("{body}");
            } else {
                print!("{}", history_table(&serde_json::from_str(&body)?));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Revert { id, to, api } => {
            let body = serde_json::json!({ "version": to }).to_string();
            let answer = Api::new(&api)?
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/revert"),
                    Some(body),
                )
                .await?;
            let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
            if let Some(warning) = answer.get("warning").and_then(Value::as_str) {
                eprintln!("warning: {warning}");
            }
            println!("job {id} reverts to version {to}; follow it with `shoal job status {id}`");
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Promote { id, api } => {
            let answer = Api::new(&api)?
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/promote"),
                    None,
                )
                .await?;
            let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
            println!(
                "job {id} version {} promoted; its other tasks are being replaced",
                answer["version"]
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `VERSION EPOCH SUBMITTED STABLE STATUS`, oldest first.
fn history_table(versions: &Value) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["VERSION", "EPOCH", "SUBMITTED", "NODE", "STABLE", "STATUS"]);
    for v in versions.as_array().into_iter().flatten() {
        let submitted = v["submitted_ms"]
            .as_u64()
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(utc_time)
            .unwrap_or_else(|| "-".to_string());
        let current = if v["current"] == true {
            " (current)"
        } else {
            ""
        };
        t.add_row([
            format!("{}{current}", v["version"]),
            v["epoch"].as_str().unwrap_or("?").to_string(),
            submitted,
            v["node"].as_str().unwrap_or("?").to_string(),
            if v["stable"] == true { "yes" } else { "no" }.to_string(),
            v["status"].as_str().unwrap_or("?").to_string(),
        ]);
    }
    format!("{t}\n")
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of milliseconds since the Unix epoch.
pub(super) fn utc_time(ms: i64) -> Option<String> {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Parses a job file, TOML unless it ends in `.json`; errors name the file and the line.
pub fn load_spec(file: &PathBuf) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read job file {}", file.display()))?;
    let parsed = if file.extension().is_some_and(|e| e == "json") {
        JobSpec::from_json_str(&text)
    } else {
        JobSpec::from_toml_str(&text)
    };
    parsed.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

async fn run_job(file: &PathBuf, api: &Api, detach: bool) -> anyhow::Result<ExitCode> {
    let spec = load_spec(file)?;
    let body = serde_json::to_string(&spec)?;
    // The deployment before this submission, to tell a new version (whose rollout is
    // followed) from an in-place change or a resubmission, which keep the deployment.
    let before = if detach {
        None
    } else {
        api.get(&format!("/v1/jobs/{}", spec.id))
            .await
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|job| job["deployment"]["deployment"].as_str().map(str::to_string))
    };
    let answer = api
        .request(reqwest::Method::POST, "/v1/jobs", Some(body))
        .await?;
    let answer: Value = serde_json::from_str(&answer).unwrap_or_default();
    if let Some(warning) = answer.get("warning").and_then(Value::as_str) {
        eprintln!("warning: {warning}");
    }
    println!(
        "job {} accepted ({})",
        spec.id,
        super::counted(spec.count, &format!("{} task", spec.job_type.as_str()))
    );
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let submitted = Submitted {
        before,
        stamp: answer["stamp"].as_str().map(str::to_string),
        min_healthy: spec
            .update
            .as_ref()
            .map_or(Duration::ZERO, |u| Duration::from_millis(u.min_healthy_ms)),
    };
    follow_placement(&spec.id, api, &submitted).await
}

/// What `job run` knows of its submission, to find the rollout it started.
#[derive(Debug, Default)]
struct Submitted {
    /// The job's deployment before the submission (`None`: a new job, or no `[update]`).
    before: Option<String>,
    /// The stamp of the write, as the answer gave it (`None` from an agent older than the
    /// field). When the write started a deployment, this is the deployment's stamp.
    stamp: Option<String>,
    /// The spec's `[update] min_healthy_ms`: how long a healthy new task waits, by design,
    /// before its slot counts as done.
    min_healthy: Duration,
}

impl Submitted {
    /// The deployment to follow, from the first view after the submission: none for a job
    /// without `[update]`, or when the deployment is the one from before (an in-place change
    /// or the same spec again); else the write's own, or (an answer without a stamp) the
    /// first view's.
    fn deployment_to_follow(&self, job: &Value) -> Option<String> {
        let current = job["deployment"]["deployment"].as_str()?;
        if self.before.as_deref() == Some(current) {
            return None;
        }
        Some(self.stamp.clone().unwrap_or_else(|| current.to_string()))
    }
}

/// Polls the job until every task runs (or, for batch, has exited 0) and, for a job with an
/// `[update]` block, until the submitted version's rollout completes, fails or waits for a
/// promotion; a progress bar for large counts; prints why tasks wait when nothing moves.
async fn follow_placement(id: &str, api: &Api, submitted: &Submitted) -> anyhow::Result<ExitCode> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut last_progress = std::time::Instant::now();
    let mut last_done = usize::MAX;
    let mut quiet = RolloutQuiet::new(submitted.min_healthy, std::time::Instant::now());
    let mut loops = CrashLoops::default();
    let mut waiting = Waiting::default();
    let mut followed: Option<Option<String>> = None;
    loop {
        let job: Value = serde_json::from_str(&api.get(&format!("/v1/jobs/{id}")).await?)?;
        let followed = followed.get_or_insert_with(|| submitted.deployment_to_follow(&job));
        let rollout = rollout_of(&job, followed.as_deref());
        let say = |line: String| match &bar {
            Some(b) => b.println(line),
            None => println!("{line}"),
        };
        match &rollout {
            Rollout::None | Rollout::Complete => {}
            Rollout::Deploying(line) => {
                match quiet.observe(line, &job, std::time::Instant::now()) {
                    Quiet::NewLine => say(format!("  update {line}")),
                    Quiet::Moving => {}
                    Quiet::Still(for_) => eprintln!(
                        "  update {line}: no change for {} s (`shoal job status {id}` shows \
                     the tasks; Ctrl-C stops following, the update goes on)",
                        for_.as_secs()
                    ),
                }
            }
            Rollout::Waiting(line) => {
                if let Some(b) = bar {
                    b.finish();
                }
                println!("job {id}: update {line}: `shoal job promote {id}` goes on");
                return Ok(ExitCode::SUCCESS);
            }
            Rollout::Failed(line) => {
                give_up(bar, &job);
                bail!(
                    "job {id}: update {line}. `shoal job history {id}` shows the versions, \
                     `shoal task logs {id} SLOT --previous` why a task ended"
                );
            }
            Rollout::MovedOn(line) => {
                give_up(bar, &job);
                bail!(
                    "job {id} moved on before the submitted version's rollout completed: \
                     update {line} (`shoal job history {id}` shows why)"
                );
            }
        }
        let rollout_pending = matches!(rollout, Rollout::Deploying(_));
        let tasks = job["tasks"].as_array().cloned().unwrap_or_default();
        let count = tasks.len();
        let Tally {
            running,
            exited,
            failed,
            pending,
            done,
        } = Tally::of(&job);
        let status = job["status"].as_str().unwrap_or("?").to_string();
        if count > 20 {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(count as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} placed {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            b.set_position(done as u64);
            b.set_message(format!(
                "({running} running, {exited} exited, {pending} pending, {failed} failed)"
            ));
        } else if done != last_done {
            println!(
                "  {status}: {running} running, {exited} exited, {pending} pending, {failed} failed of {count}"
            );
        }
        if done != last_done {
            last_done = done;
            last_progress = std::time::Instant::now();
            waiting.moved();
        }
        if matches!(status.as_str(), "running" | "complete") && done == count && !rollout_pending {
            if let Some(b) = bar {
                b.finish();
            }
            let update = match job["deployment"]["summary"].as_str() {
                Some(line) => format!("; update {line}"),
                None => String::new(),
            };
            println!("job {id} is {status}: {running} running, {exited} exited of {count}{update}");
            return Ok(ExitCode::SUCCESS);
        }
        if matches!(status.as_str(), "failed" | "stopped") {
            give_up(bar, &job);
            bail!("job {id} is {status}");
        }
        if let Some(why) = loops.observe(&job) {
            give_up(bar, &job);
            bail!(
                "job {id} keeps failing: {why}. It stays submitted, and its tasks are started \
                 again under its [restart] policy: `shoal task logs {id} SLOT --previous` \
                 shows why the last attempt ended, `shoal job stop {id}` stops it"
            );
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            let now = std::time::Instant::now();
            let service = job["type"] == "service";
            for line in waiting.observe(service, &tasks, now) {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
            if waiting.blocked_for(now) >= Waiting::BLOCKED_EXIT {
                give_up(bar, &job);
                eprintln!(
                    "job {id} is submitted, but no node fits {pending} of its tasks now: they \
                     stay pending and are placed once one does (room frees, a node joins or \
                     changes). `shoal job status {id}` shows them, `shoal job stop {id}` \
                     withdraws the job"
                );
                return Ok(ExitCode::from(2));
            }
        }
        // A view of a large job is costly to build: poll it less often.
        let pause = if count > 1_000 { 1_000 } else { 200 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Whether a rollout `job run` follows has moved: its summary line, or any task's state,
/// health or version. A slot's new task counts as done only after `min_healthy_ms` healthy,
/// so a rollout whose tasks all turned healthy is quiet that long by design: it is said to
/// be still only after 10 s more.
#[derive(Debug)]
struct RolloutQuiet {
    line: String,
    tasks: Vec<(Value, Value, Value)>,
    since: std::time::Instant,
    patience: Duration,
}

/// What one view of a rollout shows.
#[derive(Debug, PartialEq, Eq)]
enum Quiet {
    /// A summary line not said before.
    NewLine,
    /// The line is the same; tasks moved, or not for long.
    Moving,
    /// Nothing moved for this long (said once per period).
    Still(Duration),
}

impl RolloutQuiet {
    const STILL: Duration = Duration::from_secs(10);

    fn new(min_healthy: Duration, now: std::time::Instant) -> Self {
        Self {
            line: String::new(),
            tasks: Vec::new(),
            since: now,
            patience: Self::STILL + min_healthy,
        }
    }

    fn observe(&mut self, line: &str, job: &Value, now: std::time::Instant) -> Quiet {
        let tasks: Vec<_> = job["tasks"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|t| {
                (
                    t["state"].clone(),
                    t["health"].clone(),
                    t["version"].clone(),
                )
            })
            .collect();
        let new_line = self.line != line;
        if new_line || tasks != self.tasks {
            self.line = line.to_string();
            self.tasks = tasks;
            self.since = now;
            return if new_line {
                Quiet::NewLine
            } else {
                Quiet::Moving
            };
        }
        let still = now.duration_since(self.since);
        if still < self.patience {
            return Quiet::Moving;
        }
        self.since = now;
        Quiet::Still(still)
    }
}

/// One view of a job's tasks, counted for `job run`'s progress line.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    running: usize,
    exited: usize,
    failed: usize,
    pending: usize,
    /// Tasks where `job run` wants them: running, or (batch) exited with code 0. A service's
    /// copy that exited is down until its restart, and a batch task that exited non-zero is
    /// retried or fails the job: neither is done.
    done: usize,
}

impl Tally {
    fn of(job: &Value) -> Self {
        let tasks = job["tasks"].as_array().map_or(&[][..], Vec::as_slice);
        let state = |s: &str| tasks.iter().filter(|t| t["state"] == s).count();
        let running = state("running");
        let finished = if job["type"] == "service" {
            0
        } else {
            tasks
                .iter()
                .filter(|t| t["state"] == "exited" && t["exit_code"] == 0)
                .count()
        };
        Self {
            running,
            exited: state("exited"),
            failed: state("failed"),
            pending: state("pending"),
            done: running + finished,
        }
    }
}

/// Before `job run` fails: the progress bar stops where it is, and the job is printed.
fn give_up(bar: Option<indicatif::ProgressBar>, job: &Value) {
    if let Some(b) = bar {
        b.abandon();
    }
    print!("{}", describe(job));
}

/// Where the rollout of the version `job run` submitted stands, from `GET /v1/jobs/ID`'s
/// `deployment` (each variant but `None` and `Complete` carries its summary line).
#[derive(Debug, PartialEq, Eq)]
enum Rollout {
    /// No `[update]` block.
    None,
    /// Replacing tasks.
    Deploying(String),
    /// Canaries healthy, waiting for `shoal job promote`.
    Waiting(String),
    /// Every slot done.
    Complete,
    /// Failed (and, with `auto_revert`, about to be reverted).
    Failed(String),
    /// A newer version is current: an auto-revert, a revert or another submission.
    MovedOn(String),
}

fn rollout_of(job: &Value, followed: Option<&str>) -> Rollout {
    let Some(followed) = followed else {
        return Rollout::None;
    };
    let deployment = &job["deployment"];
    let line = deployment["summary"].as_str().unwrap_or("?").to_string();
    if deployment["deployment"].as_str() != Some(followed) {
        // A newer write won: an auto-revert, a revert, another submission (or one written
        // concurrently elsewhere with a later stamp).
        return Rollout::MovedOn(line);
    }
    match deployment["status"].as_str() {
        Some("complete") => Rollout::Complete,
        // A first version (or a restart after a stop) places every slot at once and reads
        // "awaiting promotion" once its canaries are done and before the rest are: only
        // tasks still on another version wait for a promotion.
        Some("awaiting promotion") => {
            let others = job["tasks"].as_array().into_iter().flatten().any(|t| {
                t["version"]
                    .as_u64()
                    .is_some_and(|v| Some(v) != deployment["version"].as_u64())
            });
            if others {
                Rollout::Waiting(line)
            } else {
                Rollout::Deploying(line)
            }
        }
        Some("failed") => Rollout::Failed(line),
        _ => Rollout::Deploying(line),
    }
}

/// Attempts of one service slot that `job run` sees start after the one it first saw, the
/// slot not running, before it gives up on seeing the slot run: a service that restarts under
/// its `[restart]` policy forever (`attempts = 0`, the default) would otherwise be followed
/// forever.
const ATTEMPTS_BEFORE_GIVING_UP: u64 = 3;

/// What `job run` has seen of a service's slots: the attempt each was at when first seen, and
/// how its last attempt seen ending ended.
#[derive(Debug, Default)]
struct CrashLoops {
    first_attempt: std::collections::BTreeMap<u64, u64>,
    last_end: std::collections::BTreeMap<u64, String>,
}

impl CrashLoops {
    /// Takes one view of the job (`GET /v1/jobs/ID`); names the first slot of a service that
    /// is [`ATTEMPTS_BEFORE_GIVING_UP`] attempts past the one first seen and has ended (not
    /// running, not about to start). Any new attempt counts (a restart, a re-placement after
    /// a rejection or a lost node, a rolling update's replacement), so a new version that
    /// crashes at once is caught on its second restart. Batch jobs are never caught here:
    /// their retries are bounded and the job ends `failed`.
    fn observe(&mut self, job: &Value) -> Option<String> {
        if job["type"] != "service" {
            return None;
        }
        for task in job["tasks"].as_array().into_iter().flatten() {
            let Some(slot) = task["slot"].as_u64() else {
                continue;
            };
            let state = task["state"].as_str().unwrap_or("?");
            let ended = !matches!(state, "running" | "proposed");
            let end = match (task["exit_code"].as_i64(), task["detail"].as_str()) {
                (Some(code), Some(detail)) => Some(format!("exited {code}: {detail}")),
                (Some(code), None) => Some(format!("exited {code}")),
                (None, Some(detail)) => Some(format!("{state}: {detail}")),
                (None, None) => None,
            };
            if let (true, Some(end)) = (ended, end) {
                self.last_end.insert(slot, end);
            }
            // An unplaced slot is at attempt 0: its first attempt counts as started.
            let attempt = task["attempt"].as_u64().unwrap_or(0);
            let first = *self.first_attempt.entry(slot).or_insert(attempt);
            let started = attempt.saturating_sub(first);
            if started >= ATTEMPTS_BEFORE_GIVING_UP && ended {
                let last = self
                    .last_end
                    .get(&slot)
                    .map_or_else(|| format!("now {state}"), Clone::clone);
                return Some(format!(
                    "slot {slot} is at attempt {attempt}, {started} attempts after the first \
                     this command saw, and is not running (last: {last})"
                ));
            }
        }
        None
    }
}

/// Why `job run`'s pending tasks wait, once nothing has moved for 5 s: said when it changes,
/// and again after [`Waiting::REPEAT`] when it does not. And whether the job is *blocked*:
/// every pending task fails a filter on every node, and nothing of the job runs that will end
/// by itself (a service's tasks do not; a batch's do, and free room). `job run` stops
/// following a job blocked for [`Waiting::BLOCKED_EXIT`] and exits 2, as Nomad's `job run`
/// does on placement failures: a script that submits must not wait forever for a node that
/// is not there, and the job stays submitted.
#[derive(Debug, Default)]
struct Waiting {
    said: Option<(Vec<String>, std::time::Instant)>,
    blocked_since: Option<std::time::Instant>,
}

impl Waiting {
    const REPEAT: Duration = Duration::from_secs(30);
    const BLOCKED_EXIT: Duration = Duration::from_secs(5);

    /// The job moved (a task started or ended): a blocked spell before it no longer counts.
    fn moved(&mut self) {
        self.blocked_since = None;
    }

    /// How long the job has been blocked, as of the last view (zero when it is not).
    fn blocked_for(&self, now: std::time::Instant) -> Duration {
        self.blocked_since
            .map_or(Duration::ZERO, |since| now.duration_since(since))
    }

    /// Takes one view of the job's tasks at `now`; the lines to print (none when not due).
    fn observe(&mut self, service: bool, tasks: &[Value], now: std::time::Instant) -> Vec<String> {
        let pending: Vec<&Value> = tasks.iter().filter(|t| t["state"] == "pending").collect();
        let mut reasons: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for t in &pending {
            let r = t["pending_reason"]
                .as_str()
                .unwrap_or("not placed yet")
                .to_string();
            *reasons.entry(r).or_default() += 1;
        }
        let lines: Vec<String> = reasons
            .into_iter()
            .map(|(reason, n)| format!("  waiting: {n} task(s): {reason}"))
            .collect();
        let blocked = !pending.is_empty()
            && pending
                .iter()
                .all(|t| matches!(t["reason"]["kind"].as_str(), Some("no_fit" | "no_nodes")))
            && (service || !tasks.iter().any(|t| t["state"] == "running"));
        self.blocked_since = if blocked {
            self.blocked_since.or(Some(now))
        } else {
            None
        };
        let due = match &self.said {
            Some((said, at)) => *said != lines || now.duration_since(*at) >= Self::REPEAT,
            None => true,
        };
        if !due {
            return Vec::new();
        }
        self.said = Some((lines.clone(), now));
        lines
    }
}

fn describe(job: &Value) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    let tasks: Vec<&Value> = job["tasks"].as_array().into_iter().flatten().collect();
    // The PORTS column only for a job with ports: other jobs look as they always did.
    let with_ports = tasks
        .iter()
        .any(|t| t["ports"].as_object().is_some_and(|p| !p.is_empty()));
    // HEALTH for services (`docs/services.md`, §2): batch jobs look as they always did.
    let with_health = job["type"] == "service";
    // VERSION for jobs with an `[update]` block (`docs/services.md`, §4).
    let with_version = !job["deployment"].is_null();
    let mut header = vec!["SLOT", "ATTEMPT", "NODE", "STATE"];
    if with_version {
        header.push("VERSION");
    }
    if with_health {
        header.push("HEALTH");
    }
    header.push("EXIT");
    if with_ports {
        header.push("PORTS");
    }
    header.push("REASON");
    t.set_header(header);
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for task in tasks {
        let reason = if !task["pending_reason"].is_null() {
            &task["pending_reason"]
        } else if !task["health_note"].is_null() {
            &task["health_note"]
        } else {
            &task["detail"]
        };
        let mut row = vec![
            text(&task["slot"]),
            text(&task["attempt"]),
            text(&task["node"]),
            text(&task["state"]),
        ];
        if with_version {
            row.push(text(&task["version"]));
        }
        if with_health {
            row.push(health_cell(task));
        }
        row.push(text(&task["exit_code"]));
        if with_ports {
            row.push(ports_cell(&task["ports"]));
        }
        row.push(text(reason));
        t.add_row(row);
    }
    let deployment = match job["deployment"]["summary"].as_str() {
        Some(line) => format!("Update  {line}\n"),
        None => String::new(),
    };
    format!(
        "ID      {}\nType    {}\nStatus  {}\nCount   {}\n{deployment}\n{t}\n",
        text(&job["id"]),
        text(&job["type"]),
        text(&job["status"]),
        text(&job["count"])
    )
}

/// `healthy`, `unknown`, or `unhealthy (1 of 3 failures before restart)` (decision 3 of
/// `docs/services.md`: the restart counter beside the readiness).
fn health_cell(task: &Value) -> String {
    let health = task["health"].as_str().unwrap_or("unknown");
    let failures = &task["check_failures"];
    match (failures["failures"].as_u64(), failures["limit"].as_u64()) {
        (Some(n), Some(0)) => format!("{health} ({n} failures in a row, never restarted)"),
        (Some(n), Some(limit)) => format!("{health} ({n} of {limit} failures before restart)"),
        _ => health.to_string(),
    }
}

/// `{"http": 23456, "admin": 8080}` → `admin=8080,http=23456`; none: `-`.
fn ports_cell(ports: &Value) -> String {
    let cell: Vec<String> = ports
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, port)| format!("{name}={port}"))
        .collect();
    if cell.is_empty() {
        "-".to_string()
    } else {
        cell.join(",")
    }
}

fn list_table(jobs: &Value) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "ID", "TYPE", "STATUS", "COUNT", "RUNNING", "EXITED", "PENDING",
    ]);
    for job in jobs.as_array().into_iter().flatten() {
        let tasks = job["tasks"].as_array().cloned().unwrap_or_default();
        let n = |s: &str| tasks.iter().filter(|t| t["state"] == s).count().to_string();
        t.add_row([
            job["id"].as_str().unwrap_or("?").to_string(),
            job["type"].as_str().unwrap_or("?").to_string(),
            job["status"].as_str().unwrap_or("?").to_string(),
            job["count"].to_string(),
            n("running"),
            n("exited"),
            n("pending"),
        ]);
    }
    format!("{t}\n")
}

/// Runs a `task` subcommand.
pub async fn run_task(cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    let TaskCommand::Logs {
        job,
        slot,
        api,
        stderr,
        follow,
        attempt,
        previous,
    } = cmd;
    let stream = if stderr { "stderr" } else { "stdout" };
    let mut which = match (attempt, previous) {
        (Some(n), _) => format!("&attempt={n}"),
        (None, true) => "&previous=true".to_string(),
        (None, false) => String::new(),
    };
    let api = Api::new(&api)?;
    // Offsets belong to one attempt's file. An attempt asked for (by number or as the
    // previous one) is kept once known; following the current one moves on to the next attempt
    // when the slot restarts, from that attempt's start.
    let pinned = attempt.is_some() || previous;
    let mut reading: Option<u32> = None;
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        let path = format!("/v1/tasks/{job}/{slot}/logs?stream={stream}&offset={offset}{which}");
        let chunk = match api.get_bytes(&path).await {
            Ok(chunk) => chunk,
            // The slot's next attempt is current once placed, but has a log only once it
            // starts on its node: following, that is output still to come.
            Err(e) if follow && !pinned && e.to_string().contains("no log at") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let (Some(was), Some(now)) = (reading, chunk.attempt)
            && was != now
        {
            eprintln!("shoal: slot {slot} of {job} is now attempt {now}; its output follows");
            reading = Some(now);
            offset = 0;
            continue;
        }
        reading = chunk.attempt.or(reading);
        if pinned && let Some(n) = reading {
            which = format!("&attempt={n}");
        }
        let bytes = chunk.bytes;
        out.write_all(&bytes)?;
        out.flush()?;
        offset = chunk.next.unwrap_or(offset + bytes.len() as u64);
        if !follow && bytes.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if bytes.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(tasks: Value) -> Value {
        json!({"id": "web", "type": "service", "tasks": tasks})
    }

    #[test]
    fn a_rollout_waiting_out_min_healthy_is_not_said_to_be_still() {
        let t0 = std::time::Instant::now();
        let secs = Duration::from_secs;
        let job = |health: &str| {
            service(json!([
                {"state": "running", "health": health, "version": 2},
                {"state": "running", "health": health, "version": 2},
            ]))
        };
        let line = "version 2 · deploying 0/2 done · max_parallel 2";
        let mut q = RolloutQuiet::new(secs(10), t0);
        assert_eq!(q.observe(line, &job("unknown"), t0), Quiet::NewLine);
        // The checks pass at 1 s: the tasks moved, and the clock starts again.
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(1)),
            Quiet::Moving
        );
        // 10 s healthy (min_healthy_ms) and then some: what the rollout waits for by design.
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(18)),
            Quiet::Moving
        );
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(21)),
            Quiet::Still(secs(20))
        );
        // Said once per period.
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(22)),
            Quiet::Moving
        );
        // Without min_healthy_ms (no [update] seen), 10 s of nothing is still.
        let mut q = RolloutQuiet::new(Duration::ZERO, t0);
        q.observe(line, &job("healthy"), t0);
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(9)),
            Quiet::Moving
        );
        assert_eq!(
            q.observe(line, &job("healthy"), t0 + secs(10)),
            Quiet::Still(secs(10))
        );
    }

    #[test]
    fn a_task_that_exited_is_done_only_for_a_batch_and_with_code_0() {
        let tasks = json!([
            {"state": "running"},
            {"state": "exited", "exit_code": 0},
            {"state": "exited", "exit_code": 1},
            {"state": "pending"},
        ]);
        let web = Tally::of(&service(tasks.clone()));
        assert_eq!(
            web,
            Tally {
                running: 1,
                exited: 2,
                failed: 0,
                pending: 1,
                done: 1,
            },
            "a service's exited copy is down until it restarts"
        );
        let batch = Tally::of(&json!({"id": "b", "type": "batch", "tasks": tasks}));
        assert_eq!(
            batch.done, 2,
            "the batch task that exited 1 is retried: {batch:?}"
        );
    }

    #[test]
    fn waiting_is_said_when_it_changes_and_a_job_nothing_fits_is_blocked() {
        let pending = |kind: &str, text: &str| json!({"state": "pending", "pending_reason": text, "reason": {"kind": kind}});
        let running = json!({"state": "running"});
        let no_fit = vec![
            pending("no_fit", "3 fail constraint zone=eu-1"),
            pending("no_fit", "3 fail constraint zone=eu-1"),
        ];
        let t0 = std::time::Instant::now();
        let secs = Duration::from_secs;
        let mut w = Waiting::default();
        let first = w.observe(true, &no_fit, t0);
        assert_eq!(
            first,
            vec!["  waiting: 2 task(s): 3 fail constraint zone=eu-1".to_string()]
        );
        assert_eq!(w.blocked_for(t0 + secs(2)), secs(2));
        // The same a moment later: nothing said; after the repeat span: the line again.
        assert!(w.observe(true, &no_fit, t0 + secs(5)).is_empty());
        assert_eq!(w.blocked_for(t0 + secs(5)), secs(5));
        assert_eq!(w.observe(true, &no_fit, t0 + Waiting::REPEAT), first);
        // A task being placed: said at once, and no longer blocked.
        let mut moved = no_fit.clone();
        moved[1] = pending("placing", "being placed by coordinator n2");
        let later = t0 + Waiting::REPEAT + secs(1);
        assert_eq!(w.observe(true, &moved, later).len(), 2);
        assert_eq!(w.blocked_for(later), Duration::ZERO);
        // A service with copies running and the rest fitting nowhere is blocked; a batch
        // whose running tasks will end and free room is not.
        let mut partly = no_fit.clone();
        partly.push(running.clone());
        let mut service = Waiting::default();
        service.observe(true, &partly, t0);
        assert_eq!(service.blocked_for(t0 + secs(6)), secs(6));
        let mut batch = Waiting::default();
        batch.observe(false, &partly, t0);
        assert_eq!(batch.blocked_for(t0 + secs(6)), Duration::ZERO);
        // A job that moved between two blocked views starts its clock again: only views
        // taken after 5 s without progress see it, and the earlier spell is over.
        let mut again = Waiting::default();
        again.observe(true, &no_fit, t0);
        again.moved();
        again.observe(true, &no_fit, t0 + secs(10));
        assert_eq!(again.blocked_for(t0 + secs(12)), secs(2));
        // Tasks waiting for something else than room are not blocked.
        let mut other = Waiting::default();
        let lines = other.observe(true, &[pending("backoff", "retrying in 1.0 s")], t0);
        assert_eq!(
            lines,
            vec!["  waiting: 1 task(s): retrying in 1.0 s".to_string()]
        );
        assert_eq!(other.blocked_for(t0 + secs(6)), Duration::ZERO);
    }

    #[test]
    fn a_crash_looping_slot_is_named_after_three_restarts() {
        let mut loops = CrashLoops::default();
        let at = |attempt: u64, state: &str| {
            service(json!([
                {"slot": 0, "attempt": 1, "state": "running"},
                {"slot": 1, "attempt": attempt, "state": state, "exit_code": 1},
            ]))
        };
        assert_eq!(loops.observe(&at(1, "running")), None);
        assert_eq!(loops.observe(&at(2, "pending")), None);
        assert_eq!(loops.observe(&at(3, "exited")), None);
        // Three attempts on, but running or about to start at this moment: not given up on.
        assert_eq!(loops.observe(&at(4, "running")), None);
        assert_eq!(loops.observe(&at(4, "proposed")), None);
        let why = loops.observe(&at(4, "exited")).expect("slot 1 loops");
        assert!(why.contains("slot 1 is at attempt 4"), "{why}");
        assert!(why.contains("exited 1"), "{why}");
    }

    #[test]
    fn slots_are_counted_from_the_attempt_first_seen() {
        // A service that restarted 40 times before `job run` replaced its version: only the
        // attempts since count.
        let mut loops = CrashLoops::default();
        let at =
            |attempt: u64| service(json!([{"slot": 0, "attempt": attempt, "state": "pending"}]));
        assert_eq!(loops.observe(&at(40)), None);
        assert_eq!(loops.observe(&at(42)), None);
        assert!(loops.observe(&at(43)).is_some());
        // An unplaced slot starts at attempt 0.
        let mut fresh = CrashLoops::default();
        let unplaced = service(json!([{"slot": 0, "attempt": null, "state": "pending"}]));
        assert_eq!(fresh.observe(&unplaced), None);
        assert_eq!(fresh.observe(&at(2)), None);
        assert!(fresh.observe(&at(3)).is_some());
    }

    fn deployed(stamp: &str, version: u64, status: &str, tasks: &[u64]) -> Value {
        let tasks: Vec<Value> = tasks.iter().map(|v| json!({"version": v})).collect();
        json!({
            "deployment": {"deployment": stamp, "version": version, "status": status,
                           "summary": "line"},
            "tasks": tasks
        })
    }

    #[test]
    fn the_followed_rollout_is_read_from_the_deployment() {
        let line = || "line".to_string();
        let ours = Some("9.0@n1");
        let at = |status: &str| rollout_of(&deployed("9.0@n1", 2, status, &[2, 1]), ours);
        assert_eq!(at("deploying"), Rollout::Deploying(line()));
        assert_eq!(at("complete"), Rollout::Complete);
        assert_eq!(at("awaiting promotion"), Rollout::Waiting(line()));
        assert_eq!(at("failed"), Rollout::Failed(line()));
        // The auto-revert of version 2, or a write that won over ours with a later stamp
        // (whatever its version number).
        let other = |version: u64| deployed("12.0@~revert", version, "deploying", &[2]);
        assert_eq!(rollout_of(&other(3), ours), Rollout::MovedOn(line()));
        assert_eq!(rollout_of(&other(1), ours), Rollout::MovedOn(line()));
        assert_eq!(
            rollout_of(&json!({"deployment": null}), None),
            Rollout::None
        );
        // A first version with a canary: every task on it, so nothing waits for a promotion.
        let first = deployed("9.0@n1", 1, "awaiting promotion", &[1, 1, 1]);
        assert_eq!(rollout_of(&first, ours), Rollout::Deploying(line()));
    }

    #[test]
    fn an_in_place_change_follows_no_rollout() {
        let job = deployed("5.0@n1", 2, "failed", &[2]);
        let in_place = Submitted {
            before: Some("5.0@n1".into()),
            stamp: Some("9.0@n1".into()),
            ..Submitted::default()
        };
        assert_eq!(in_place.deployment_to_follow(&job), None);
        let new_version = Submitted {
            before: Some("3.0@n1".into()),
            stamp: Some("5.0@n1".into()),
            ..Submitted::default()
        };
        assert_eq!(
            new_version.deployment_to_follow(&job),
            Some("5.0@n1".into())
        );
        // An answer without a stamp (an older agent): the first view's deployment.
        let unstamped = Submitted {
            before: Some("3.0@n1".into()),
            stamp: None,
            ..Submitted::default()
        };
        assert_eq!(unstamped.deployment_to_follow(&job), Some("5.0@n1".into()));
        assert_eq!(Submitted::default().deployment_to_follow(&json!({})), None);
    }

    #[test]
    fn batch_jobs_are_left_to_their_bounded_retries() {
        let mut loops = CrashLoops::default();
        let batch = |attempt: u64| json!({"type": "batch", "tasks": [{"slot": 0, "attempt": attempt, "state": "pending"}]});
        assert_eq!(loops.observe(&batch(1)), None);
        assert_eq!(loops.observe(&batch(9)), None);
    }
}
