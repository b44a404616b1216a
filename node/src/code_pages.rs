//! Gives back the agent's program pages that only its start used.
//!
//! An idle agent runs a few hundred kilobytes of its code, but its resident set holds most of
//! the program: starting (argument parsing, keys and certificates, the store's recovery, the
//! first joins) touches code all over the binary, and every page fault maps the 64 KiB of
//! cached file around the page it needs (the kernel's fault-around). At N = 32 that was 11.5
//! of the binary's 13.2 MiB of text, 15.7 of an 18.7 MiB resident set (BENCHMARKS.md, "A
//! smaller agent").
//!
//! [`release`] unmaps the resident pages of the code of the program and of its libraries, and
//! of the program's read-only data, where they still equal the file (not writable, no private
//! copy): they stay in the page cache, and the code the agent runs next faults back in (a
//! minor fault, from the cache). What remains resident is what the agent uses, plus the
//! fault-around of each page it touches. Writable mappings, read-only ones with a private
//! copy (the relocated `RELRO` data) and other files' data are never touched.

use std::io;
use std::path::{Path, PathBuf};

/// What one [`release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings of the program whose pages were given back.
    pub mappings: usize,
    /// Their resident bytes before (as `/proc/self/smaps` counted them).
    pub resident_bytes: u64,
}

/// One mapping of `/proc/self/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    executable: bool,
    path: Option<PathBuf>,
    rss_kib: u64,
    anonymous_kib: u64,
}

impl Mapping {
    /// Code of any file (the program, the C library), or the program's read-only data;
    /// never written, and no page of it copied: every resident page equals the file, so
    /// dropping it loses nothing.
    fn releasable_for(&self, program: &Path) -> bool {
        let Some(path) = self.path.as_deref() else {
            return false;
        };
        (self.executable || path == program)
            && !self.writable
            && self.anonymous_kib == 0
            && self.rss_kib > 0
    }
}

/// Unmaps the resident pages of unmodified code and program data (see the module doc).
pub fn release() -> io::Result<Released> {
    let program = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for mapping in parse_smaps(&smaps)
        .iter()
        .filter(|m| m.releasable_for(&program))
    {
        drop_pages(mapping.start, mapping.end - mapping.start)?;
        released.mappings += 1;
        released.resident_bytes += mapping.rss_kib * 1024;
    }
    Ok(released)
}

/// `madvise(MADV_DONTNEED)` on a read-only private file mapping: its pages are unmapped and
/// fault back in from the page cache unchanged when used.
#[allow(unsafe_code)]
fn drop_pages(start: usize, len: usize) -> io::Result<()> {
    // SAFETY: the range is one whole mapping of the program file that is not writable and has
    // no private (anonymous) page, read from smaps just before: discarding its pages changes
    // no byte any code can read, since each faults back in from the same file. Nothing in
    // this process maps or unmaps the program's own segments.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The mappings of an smaps text, with the fields [`release`] reads.
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(mapping) = parse_header(line) {
            mappings.push(mapping);
            continue;
        }
        let Some(last) = mappings.last_mut() else {
            continue;
        };
        let mut fields = line.split_whitespace();
        let (Some(key), Some(kib)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(kib) = kib.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => last.rss_kib = kib,
            "Anonymous:" => last.anonymous_kib = kib,
            _ => {}
        }
    }
    mappings
}

/// A mapping's header line: `start-end perms offset dev inode [path]`.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms) = (fields.next()?, fields.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    if perms.len() != 4 || end <= start {
        return None;
    }
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields
        .next()
        .map(str::trim_start)
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from);
    Some(Mapping {
        start,
        end,
        writable: perms.as_bytes()[1] == b'w',
        executable: perms.as_bytes()[2] == b'x',
        path,
        rss_kib: 0,
        // Unknown until its line is read: counted as copied, so a mapping whose smaps entry
        // lacks the line is never released.
        anonymous_kib: u64::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5581a0000000-5581a0200000 r--p 00000000 fe:01 1234                       /usr/bin/shoal
Size:               2048 kB
Rss:                1800 kB
Anonymous:             0 kB
5581a0200000-5581a0f00000 r-xp 00200000 fe:01 1234                       /usr/bin/shoal
Size:              13312 kB
Rss:               11776 kB
Anonymous:             0 kB
5581a0f00000-5581a0f80000 r--p 00f00000 fe:01 1234                       /usr/bin/shoal
Size:                512 kB
Rss:                 512 kB
Anonymous:           508 kB
5581a0f80000-5581a0f90000 rw-p 00f80000 fe:01 1234                       /usr/bin/shoal
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 99                         /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 900 kB
Anonymous:             0 kB
7f0000100000-7f0000180000 r--p 00000000 fe:01 98                         /usr/lib/locale/data
Size:                512 kB
Rss:                 512 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
Size:               1024 kB
Rss:                 100 kB
Anonymous:           100 kB
5581a1000000-5581a1001000 r--p 00000000 fe:01 1234                       /usr/bin/shoal
Size:                  4 kB
Rss:                   4 kB
";

    #[test]
    fn only_the_programs_unmodified_read_only_mappings_are_released() {
        let program = Path::new("/usr/bin/shoal");
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings.len(), 8);
        let released: Vec<_> = mappings
            .iter()
            .filter(|m| m.releasable_for(program))
            .map(|m| (m.start, m.rss_kib))
            .collect();
        // The program's headers and read-only data, its code and the C library's code; not
        // the relocated RELRO (private copies), not writable data, not anonymous memory, and
        // not a mapping whose smaps entry says nothing of private copies.
        assert_eq!(
            released,
            vec![
                (0x5581a0000000, 1800),
                (0x5581a0200000, 11776),
                (0x7f0000000000, 900)
            ]
        );
    }

    #[test]
    fn a_path_with_spaces_is_read_whole() {
        let line = "7f00-7f10 r-xp 00000000 fe:01 7                          /opt/my tools/shoal";
        let mapping = parse_header(line).unwrap();
        assert_eq!(
            mapping.path.as_deref(),
            Some(Path::new("/opt/my tools/shoal"))
        );
        assert!(!mapping.writable);
    }

    #[test]
    fn this_program_gives_back_its_pages_and_still_runs() {
        // This test binary's own code and read-only data: after the release every byte of
        // a read-only string reads the same and the code still runs.
        const TEXT: &str = "a read-only string in the program's data";
        let before = TEXT.as_bytes().to_vec();
        let released = release().unwrap();
        assert!(released.mappings >= 1, "{released:?}");
        assert_eq!(std::hint::black_box(TEXT).as_bytes(), &before[..]);
        assert_eq!(parse_smaps(SMAPS).len(), 8);
    }
}
