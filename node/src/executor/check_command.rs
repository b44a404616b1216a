//! Running a `command` health check of a task: the task's user, environment and working
//! directory, as its own process group, killed (the whole group) at the check's timeout.
//! The check's output is not logged; its first line becomes the failure's note.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_scheduler::AttemptId;
use tokio::io::AsyncReadExt;

use super::launch::resolve_program;
use super::{Executor, Inner, TaskSpec, name_of, signal_group};

/// Most bytes of a check's output kept (for the note).
const OUTPUT_KEPT: usize = 512;

/// A check command of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckCommand {
    /// Program: a path, or a name looked up on the task's `PATH`.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// The task's environment (the `SHOAL_*` task variables are added as for the task).
    pub env: BTreeMap<String, String>,
    /// The task's working directory; its task directory when `None`.
    pub workdir: Option<String>,
    /// The task's user, if the job names one.
    pub user: Option<String>,
}

impl Executor {
    /// Runs `check` for `task` and waits at most `timeout`: `Ok(())` when it exited 0, else
    /// why not (`exit 2: not ready`, `timed out after 500 ms`). On the timeout its process
    /// group is killed.
    pub async fn run_check(
        &self,
        task: &AttemptId,
        check: CheckCommand,
        timeout: Duration,
    ) -> Result<(), String> {
        let inner = self.inner.clone();
        let name = name_of(task).map_err(|e| e.to_string())?;
        let command = tokio::task::spawn_blocking(move || prepare(&inner, &name, &check))
            .await
            .map_err(|e| format!("check did not start: {e}"))??;
        run(command, timeout).await
    }
}

/// The command, ready to spawn (resolving the program reads the file system).
fn prepare(
    inner: &Arc<Inner>,
    name: &super::disk_name::DiskName,
    check: &CheckCommand,
) -> Result<tokio::process::Command, String> {
    let account = inner.users.for_task(check.user.as_deref())?;
    let dir = inner.task_dir(name);
    let workdir = check
        .workdir
        .as_ref()
        .map_or_else(|| dir.clone(), Into::into);
    let spec = TaskSpec {
        command: check.command.clone(),
        args: check.args.clone(),
        env: check.env.clone(),
        ..TaskSpec::default()
    };
    let env = inner.task_env(name, &spec, &dir);
    let program = resolve_program(&check.command, env.get(OsStr::new("PATH")), &workdir)?;
    // Run as another user, a bare name is searched again by that user (std's child calls
    // `execvp` after switching): what the agent found may lie where the user cannot reach
    // (root's `PATH` leads through root's home). The search above names a missing command.
    let program = if account.is_some() && !check.command.contains('/') {
        std::path::PathBuf::from(&check.command)
    } else {
        program
    };
    let mut command = tokio::process::Command::new(program);
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
    }
    command
        .args(&check.args)
        .env_clear()
        .envs(&env)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(command)
}

async fn run(mut command: tokio::process::Command, timeout: Duration) -> Result<(), String> {
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the check: {e}"))?;
    let pgid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let waited = tokio::time::timeout(timeout, async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(OUTPUT_KEPT as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(OUTPUT_KEPT as u64).read_to_end(&mut err).await;
            }
        };
        let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
        (status, out, err)
    })
    .await;
    match waited {
        Ok((Ok(status), out, err)) if status.success() => {
            let _ = (out, err);
            Ok(())
        }
        Ok((Ok(status), out, err)) => {
            let code = status.code().map_or_else(
                || format!("killed by signal {}", status.signal().unwrap_or(0)),
                |c| format!("exit {c}"),
            );
            let text = first_line(&err).or_else(|| first_line(&out));
            Err(match text {
                Some(t) => format!("{code}: {t}"),
                None => code,
            })
        }
        Ok((Err(e), _, _)) => Err(format!("cannot wait for the check: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                signal_group(pgid, Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Err(format!("timed out after {} ms", timeout.as_millis()))
        }
    }
}

/// The first non-empty line of `bytes`, trimmed.
fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}
