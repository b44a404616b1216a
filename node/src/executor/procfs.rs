//! What `/proc` says about a process: its state, process group and start time.
//!
//! A pid alone does not name a process across time: the kernel reuses pids. A pid plus its start
//! time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) plus the boot id does, so the
//! executor records all three at spawn and compares them before it signals or adopts anything.

use std::io::Read;
use std::path::Path;

/// The fields of `/proc/<pid>/stat` the executor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// One of `R S D Z T t X I ...`; `Z` and `X` mean the process is already dead.
    pub state: char,
    /// Process group id.
    pub pgrp: u32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

impl Stat {
    /// Whether the process still runs (a zombie has exited; only its status is left).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist (or /proc is unreadable).
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = read_small(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    parse_stat(&text)
}

/// Reads a small kernel file (`/proc`, cgroupfs) whole, bytes that are not UTF-8 replaced:
/// `open`, `read` until end of file, `close`. `std::fs::read_to_string` first asks the file's
/// size (`statx`, and `lseek`), which such files report as 0 or 4096, then grows its buffer
/// from 32 bytes: a `/proc/<pid>/stat` took eight system calls where this takes four, and a
/// launch reads several such files.
pub(crate) fn read_small(path: &Path) -> std::io::Result<String> {
    read_small_from(std::fs::File::open(path)?)
}

/// [`read_small`] of a file already open.
pub(crate) fn read_small_from(mut file: std::fs::File) -> std::io::Result<String> {
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    // Not UTF-8 is not an error: the kernel cuts a process name to 15 bytes, which can split a
    // character, and `parse_stat` reads the fields after the name's last `)` anyway. (A name
    // cut that way used to make `stat` fail, so the process looked gone.)
    Ok(match String::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Parses a stat line. The command name (field 2) may contain spaces and parentheses, so the
/// fixed fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, pgrp field 5, starttime field 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is alive and is the same process that started at `start_time`.
pub(crate) fn is_same_live_process(pid: u32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.is_live() && s.start_time == start_time)
}

/// Live (non-zombie) members of process group `pgid`, sorted. Scans all of `/proc`, so it is
/// only used on the kill path and in tests, never per normal exit.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.is_live()))
        .collect();
    members.sort_unstable();
    members
}

/// This boot's id; pids and start times from another boot name nothing.
pub(crate) fn boot_id() -> Option<String> {
    read_trimmed(Path::new("/proc/sys/kernel/random/boot_id"))
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                pgrp: 4242,
                start_time: 987_654
            }
        );
        assert!(stat.is_live());
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for line in ["", ")", "1 (x)", "1 (x) Z", "1 (x) Z 1 notanumber"] {
            assert_eq!(parse_stat(line), None, "{line:?}");
        }
    }

    #[test]
    fn read_small_reads_files_of_any_size_whole() {
        let dir = std::env::temp_dir().join(format!("shoal-read-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for size in [0, 1, 511, 512, 513, 1024, 5000] {
            let text: String = (0..size)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let path = dir.join(format!("f{size}"));
            std::fs::write(&path, &text).unwrap();
            assert_eq!(read_small(&path).unwrap(), text, "{size} bytes");
        }
        // Bytes that are not UTF-8 (a process name cut inside a character) come back replaced,
        // and a stat line holding them still parses.
        let cut = dir.join("cut");
        std::fs::write(
            &cut,
            b"42 (abcdefghijklmn\xc3) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0",
        )
        .unwrap();
        let text = read_small(&cut).unwrap();
        assert_eq!(
            parse_stat(&text).map(|s| (s.pgrp, s.start_time)),
            Some((42, 777)),
            "{text}"
        );
        // A kernel file that reports no size: read to its end all the same.
        let me = read_small(Path::new("/proc/self/status")).unwrap();
        assert!(me.lines().any(|l| l.starts_with("Pid:")), "{me}");
        assert!(read_small(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id();
        let stat = stat(me).unwrap();
        assert!(is_same_live_process(me, stat.start_time));
        assert!(!is_same_live_process(me, stat.start_time + 1));
    }
}
