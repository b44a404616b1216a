//! Starting a task's process without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`, the
//! way glibc's `posix_spawn` and Go's `forkExec` start processes, with the steps `posix_spawn`
//! cannot do (switching to the task's user, entering its cgroups) done in the child by raw
//! system calls. This module and `src/main.rs` hold the workspace's `unsafe` code.
//!
//! Why: std's `Command` falls back to `fork` as soon as a uid or a `pre_exec` hook is set, and a
//! `fork` copies the agent's page tables (it grows with the agent's tables: tens of MiB) only for
//! the child to drop them again at `execve`. Profiles of a batch of `true` tasks put two thirds
//! of the agent's CPU in `copy_page_range` and `exit_mmap` (`BENCHMARKS.md`, issue 17). With
//! `CLONE_VM` the child borrows the agent's memory until it calls `execve`, and `CLONE_VFORK`
//! suspends the spawning thread (a thread of the executor's pool) until then.
//!
//! The rules of a child that shares its parent's memory, and how they are kept:
//! - Everything it needs is built before the clone (C strings, pointer arrays, open files); the
//!   child makes system calls only: no allocation, no lock, no Rust runtime.
//! - Credentials change with the raw `setgroups`/`setgid`/`setuid` system calls, which act on the
//!   calling process alone. glibc's wrappers would ask every thread of the *agent* to switch
//!   (they signal the threads they know, and the child sees the agent's thread list).
//! - All signals are blocked around the clone, so no handler of the agent runs on the child's
//!   stack; the child resets every signal to its default action (its handler table is its own
//!   copy: no `CLONE_SIGHAND`), then unblocks them just before `execve`, as `posix_spawn` does.
//!   Unlike std's `fork` path it resets ignored signals too, not only `SIGPIPE`: a task starts
//!   the same however its agent was launched (`nohup` ignores `SIGHUP`).
//! - Likewise for descriptors: its descriptor table is its own copy (no `CLONE_FILES`), and
//!   just before `execve` it closes everything above stdio (`close_range`), so a descriptor the
//!   agent inherited without close-on-exec (from a shell, a supervisor) never reaches a task.
//!   Standard input is `/dev/null`, opened once by the executor and lent to every launch.
//! - Where `execve` of the command is refused (`EACCES`, `ENOENT`, ...), it tries the
//!   command's later places on the task's `PATH` that the parent listed, as `execvp` does:
//!   the agent searched as itself, and the task's user may not reach what it found.
//! - It reports a failed step by storing the `errno` in memory the parent reads after it
//!   resumes, then exits with 127 without running any exit handler.
//!
//! The child's pid comes with a pidfd (`CLONE_PIDFD`, Linux 5.2; polling it needs 5.3), which
//! [`TaskChild::wait`] awaits: readable once the process has exited, then reaped by pid.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The child's stack while it runs until `execve`: it calls a handful of system calls.
const CHILD_STACK_BYTES: usize = 64 * 1024;

thread_local! {
    /// The stack this thread's spawns lend their child: the thread is suspended while the child
    /// runs on it (`CLONE_VFORK`), so one per thread is enough, and a spawn never overlaps
    /// another of the same thread.
    static CHILD_STACK: std::cell::RefCell<Option<Box<[u8]>>> = const { std::cell::RefCell::new(None) };
}

/// What a task's process is started with.
pub(super) struct Plan<'a> {
    /// An absolute or relative path (the command was resolved on the task's `PATH` before).
    pub program: &'a Path,
    /// Where else the command is on the task's `PATH`, after `program`, in order: tried when
    /// `execve` of `program` is refused as `execvp` goes on (the task's user may not reach
    /// what the agent found). Empty when the command is a path, or the agent's user runs it.
    pub fallbacks: &'a [std::path::PathBuf],
    pub args: &'a [String],
    pub env: Vec<(&'a OsStr, &'a OsStr)>,
    pub workdir: &'a Path,
    /// `None`: keep the agent's user.
    pub user: Option<(u32, u32)>,
    pub stdin: BorrowedFd<'a>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// `cgroup.procs` files the child writes `0` to before `exec`, as the task user (opened by
    /// the agent; see `entry.rs`).
    pub cgroup_procs: &'a [RawFd],
}

/// A started process: its pid and a pidfd to wait on.
pub(super) struct TaskChild {
    pid: u32,
    pidfd: Option<OwnedFd>,
    polled: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

/// A failed spawn: the step that failed and its OS error.
#[derive(Debug)]
pub(super) struct SpawnError {
    pub step: Step,
    pub error: io::Error,
}

/// Where a spawn failed. Numbers are what the child stores; 0 means it reached `execve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Building the arguments (a NUL byte) or the clone itself.
    Prepare = 1,
    Stdio = 2,
    ProcessGroup = 3,
    Credentials = 4,
    Workdir = 5,
    Cgroup = 6,
    Exec = 7,
    Limits = 8,
}

impl Step {
    fn from_code(code: i32) -> Step {
        match code {
            2 => Step::Stdio,
            3 => Step::ProcessGroup,
            4 => Step::Credentials,
            5 => Step::Workdir,
            6 => Step::Cgroup,
            7 => Step::Exec,
            8 => Step::Limits,
            _ => Step::Prepare,
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.step {
            Step::Prepare => "preparing the process",
            Step::Stdio => "setting up its standard input and output",
            Step::ProcessGroup => "giving it its own process group",
            Step::Credentials => "switching to the task's user",
            Step::Workdir => "entering its workdir",
            Step::Cgroup => "moving it into its cgroup",
            Step::Exec => "executing the command",
            Step::Limits => "giving it the host's descriptor limit",
        };
        write!(f, "{step}: {}", self.error)
    }
}

/// The kernel's `struct sigaction` (x86-64, arm64: handler, flags, restorer, mask); all zero is
/// `SIG_DFL` with no flags and nothing blocked.
#[derive(Default)]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Everything the child reads, laid out before the clone.
struct ChildArgs {
    program: *const libc::c_char,
    /// [`Plan::fallbacks`], null-terminated.
    fallbacks: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    workdir: *const libc::c_char,
    stdio: [RawFd; 3],
    user: Option<(libc::uid_t, libc::gid_t)>,
    drop_groups: bool,
    procs: *const RawFd,
    procs_len: usize,
    /// The descriptor limit to give the task, when the agent's own was raised (`fd_limit.rs`).
    nofile: Option<libc::rlimit64>,
    /// Written by the child on failure: the step, then the errno.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

fn c_string(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError {
        step: Step::Prepare,
        error: io::Error::new(io::ErrorKind::InvalidInput, "an argument holds a NUL byte"),
    })
}

/// `execve`'s form of a string list: pointers into `strings`, then a null pointer.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Starts `plan`'s process. Blocks the calling thread until the child has called `execve` (or
/// failed before): call it off the runtime's thread (the executor's pool).
pub(super) fn spawn(plan: Plan<'_>) -> Result<TaskChild, SpawnError> {
    let program = c_string(plan.program.as_os_str().as_bytes())?;
    let mut argv_owned = vec![program.clone()];
    for arg in plan.args {
        argv_owned.push(c_string(arg.as_bytes())?);
    }
    let envp_owned = plan
        .env
        .iter()
        .map(|(k, v)| c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<Vec<_>, _>>()?;
    let fallbacks_owned = plan
        .fallbacks
        .iter()
        .map(|p| c_string(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let fallbacks = null_terminated(&fallbacks_owned);
    let argv = null_terminated(&argv_owned);
    let envp = null_terminated(&envp_owned);
    let workdir = c_string(plan.workdir.as_os_str().as_bytes())?;
    let args = ChildArgs {
        program: program.as_ptr(),
        fallbacks: fallbacks.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        workdir: workdir.as_ptr(),
        stdio: [
            plan.stdin.as_raw_fd(),
            plan.stdout.as_raw_fd(),
            plan.stderr.as_raw_fd(),
        ],
        user: plan.user,
        drop_groups: plan.user.is_some() && nix::unistd::geteuid().is_root(),
        procs: plan.cgroup_procs.as_ptr(),
        procs_len: plan.cgroup_procs.len(),
        nofile: super::fd_limit::for_tasks(),
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
    };
    // The launch thread's own child stack, made (and zeroed) once: a fresh 64 KiB per spawn
    // was zeroed every time (1 % of a batch's launch threads).
    let cloned = CHILD_STACK.with_borrow_mut(|stack| {
        let stack = stack.get_or_insert_with(|| vec![0u8; CHILD_STACK_BYTES].into_boxed_slice());
        clone_child(&args, stack)
    });
    let (pid, pidfd) = cloned.map_err(|error| SpawnError {
        step: Step::Prepare,
        error,
    })?;
    // The child has called `execve` or exited: it no longer uses `args`, the strings or the stack.
    let step = args.failed_step.load(Ordering::Acquire);
    if step != 0 {
        let errno = args.failed_errno.load(Ordering::Acquire);
        // It exited (127) before `exec`: reap it now, nobody else will.
        let _ = waitpid(Pid::from_raw(pid), None);
        drop(pidfd);
        return Err(SpawnError {
            step: Step::from_code(step),
            error: io::Error::from_raw_os_error(errno),
        });
    }
    Ok(TaskChild {
        pid: pid.cast_unsigned(),
        pidfd: Some(pidfd),
        polled: None,
        status: None,
    })
}

/// Clones the child with all signals blocked in this thread; returns its pid and pidfd.
#[allow(unsafe_code)]
fn clone_child(args: &ChildArgs, stack: &mut [u8]) -> io::Result<(i32, OwnedFd)> {
    // Stacks grow down on every architecture Linux runs agents on; 16-byte aligned top.
    let top = stack.as_mut_ptr_range().end as usize & !15;
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: blocking every signal of this thread and restoring the old mask afterwards changes
    // nothing else; `all` and `old` are valid sigsets.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs `child_main` on `stack` (ours, alive until the clone returns, and
    // unused by this thread, which is suspended until the child execs or exits: CLONE_VFORK).
    // `args` outlives that too, and the child only reads it and stores into its atomics.
    // `child_main` makes system calls only (see the module comment). With CLONE_PIDFD the
    // kernel stores the pidfd into `pidfd` (the `parent_tid` argument).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            std::ptr::from_ref(args).cast_mut().cast(),
            &mut pidfd as *mut libc::c_int,
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: see above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(error);
    }
    if pidfd < 0 {
        // Kernels before 5.2 ignore CLONE_PIDFD: the child runs, but could not be awaited.
        // Nothing may run untracked: stop it (it is at most a few instructions into its
        // command) and reap it.
        let child = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel gives no pidfd for a new process (Linux 5.3 or newer is needed)",
        ));
    }
    // SAFETY: the kernel gave us this descriptor (close-on-exec) and nothing else owns it.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child, until `execve`. System calls only; a failed step stores its errno and exits.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `clone_child` passed, alive while the parent waits.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let fail = |step: Step| fail(args, step);
    // SAFETY (whole block): each call is a system call on values prepared by the parent; none
    // allocates or takes a lock.
    unsafe {
        // Every signal back to its default action: the agent's handlers (their table is the
        // child's own copy) and whatever the agent ignores (Rust ignores SIGPIPE; a launcher may
        // have ignored others), as a task started by a fresh init would see them. The raw call
        // also reaches the two real-time signals glibc keeps for itself.
        let default = KernelSigaction::default();
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &raw const default,
                    std::ptr::null_mut::<KernelSigaction>(),
                    size_of::<u64>(),
                );
            }
        }
        for (target, fd) in args.stdio.iter().enumerate() {
            let target = target as RawFd;
            if *fd == target {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(target, libc::F_SETFD, 0) != 0 {
                    fail(Step::Stdio);
                }
            } else if libc::dup2(*fd, target) < 0 {
                fail(Step::Stdio);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(Step::ProcessGroup);
        }
        if let Some((uid, gid)) = args.user {
            if args.drop_groups
                && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
            {
                fail(Step::Credentials);
            }
            if libc::syscall(libc::SYS_setgid, gid) != 0 {
                fail(Step::Credentials);
            }
            if libc::syscall(libc::SYS_setuid, uid) != 0 {
                fail(Step::Credentials);
            }
        }
        if libc::chdir(args.workdir) != 0 {
            fail(Step::Workdir);
        }
        if let Some(limit) = &args.nofile
            && libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                std::ptr::from_ref(limit),
                std::ptr::null_mut::<libc::rlimit64>(),
            ) != 0
        {
            fail(Step::Limits);
        }
        for i in 0..args.procs_len {
            let fd = *args.procs.add(i);
            // "0" names the writer itself.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(Step::Cgroup);
            }
        }
        // Nothing but stdio crosses `execve`: descriptors the agent inherited without
        // close-on-exec (from a shell, a supervisor) are closed here. Linux 5.9; on older
        // kernels only close-on-exec protects them.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // Signals reach the child from here on, with their default actions.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        // Refused: on to the command's later places on the `PATH`, as `execvp` does, for the
        // errors that say "not here, or not for you"; EACCES wins if any place gave it.
        let errno = || *libc::__errno_location();
        let mut denied = errno() == libc::EACCES;
        let mut next = args.fallbacks;
        while !(*next).is_null()
            && matches!(
                errno(),
                libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV
            )
        {
            libc::execve(*next, args.argv, args.envp);
            denied |= errno() == libc::EACCES;
            next = next.add(1);
        }
        if denied
            && matches!(
                errno(),
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV
            )
        {
            *libc::__errno_location() = libc::EACCES;
        }
    }
    fail(Step::Exec)
}

/// Records the failed step and its errno for the parent, and leaves.
#[allow(unsafe_code)]
fn fail(args: &ChildArgs, step: Step) -> ! {
    // Reads errno: no allocation.
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL);
    args.failed_errno.store(errno, Ordering::Release);
    args.failed_step.store(step as i32, Ordering::Release);
    // SAFETY: leaves without running the agent's exit handlers or flushing its buffers.
    unsafe { libc::_exit(127) }
}

impl TaskChild {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit and reaps it. Cancel-safe: the status is kept once read.
    #[allow(unsafe_code)]
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if self.polled.is_none() {
            let fd = self.pidfd.take().expect("pidfd kept until polled");
            // SAFETY: an `OwnedFd` keeps its descriptor open and the same until it is dropped,
            // which only the `AsyncFd` can do now.
            let polled = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            self.polled = Some(polled.map_err(io::Error::from)?);
        }
        let polled = self.polled.as_ref().expect("set above");
        loop {
            let mut ready = polled.readable().await?;
            match waitpid(
                Pid::from_raw(self.pid.cast_signed()),
                Some(WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Ok(*self.status.insert(ExitStatus::from_raw(code << 8)));
                }
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    let raw = signal as i32 | if core { 0x80 } else { 0 };
                    return Ok(*self.status.insert(ExitStatus::from_raw(raw)));
                }
                Ok(_) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
