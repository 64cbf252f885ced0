//! Atomic file replacement: write a temporary sibling, sync, rename over the target, so an
//! interrupted write never destroys an existing file.
//!
//! A writer holds an OS advisory lock on its temporary file from creation until the rename.
//! A process that dies mid-write (killed, power cut) loses that lock with its life, so the
//! next write of the same target knows the temporaries it can take: those it can lock. It
//! removes them before writing, and a crash leaves nothing behind for longer than that.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `path` through `fill`, replacing any existing file only once all bytes are on disk.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("cannot write {}: it names no file", path.display())))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temporaries(&dir, file_name);
    let (temp_path, temp) = create_locked_temporary(&dir, file_name).map_err(|e| Error::io(path, e))?;
    // Errors name the file the caller asked for, not the temporary one. The lock is held
    // (through `temp`) until after the rename, so no sweep can take the file meanwhile.
    let written = write_file(&temp, fill).and_then(|()| fs::rename(&temp_path, path)).map_err(|e| Error::io(path, e));
    if written.is_err() {
        // Best effort: the temporary file is useless now and the original is untouched.
        let _ = fs::remove_file(&temp_path);
        return written;
    }
    drop(temp);
    // Persist the rename itself; not possible on every platform, hence best effort.
    if let Ok(dir_handle) = File::open(&dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

/// `.NAME.tmp-`: the prefix of every temporary file of target `NAME`.
fn temp_prefix(file_name: &std::ffi::OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    prefix
}

/// A new temporary sibling `.NAME.tmp-PID-N`, created and locked. Unique per process and
/// per call, so concurrent writers never share one. Should a sweep of another writer have
/// removed it between creation and locking, a fresh one is made.
fn create_locked_temporary(dir: &Path, file_name: &std::ffi::OsStr) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut name = temp_prefix(file_name);
        name.push(format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let temp_path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&temp_path)?;
        fs4::FileExt::lock(&file)?;
        if temp_path.exists() {
            return Ok((temp_path, file));
        }
    }
}

/// Removes the temporaries of `file_name` in `dir` whose writer is gone: the ones whose lock
/// can be taken. Best effort: a sweep that fails leaves the file for the next one.
fn remove_stale_temporaries(dir: &Path, file_name: &std::ffi::OsStr) {
    let prefix = temp_prefix(file_name);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().starts_with(prefix.as_encoded_bytes()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::options().read(true).open(&path) else { continue };
        if fs4::FileExt::try_lock(&file).is_ok() {
            let _ = fs::remove_file(&path);
        }
    }
}

fn write_file(file: &File, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut writer = BufWriter::new(file);
    fill(&mut writer)?;
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lookalike-atomic-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stale_temporaries_go_and_live_ones_stay() {
        let dir = scratch("sweep");
        let target = dir.join("x.safetensors");
        // Left by a dead writer: nobody holds its lock.
        let stale = dir.join(".x.safetensors.tmp-999999-0");
        fs::write(&stale, b"half").unwrap();
        // Being written right now: its writer holds the lock.
        let live = dir.join(".x.safetensors.tmp-999999-1");
        let live_file = File::create(&live).unwrap();
        fs4::FileExt::lock(&live_file).unwrap();
        // Another target's temporary is not ours to touch.
        let other = dir.join(".y.safetensors.tmp-999999-0");
        fs::write(&other, b"half").unwrap();

        write_atomic(&target, |w| w.write_all(b"whole")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        assert!(!stale.exists(), "a dead writer's temporary survived the next write");
        assert!(live.exists(), "a live writer's temporary was removed");
        assert!(other.exists(), "another file's temporary was removed");
        drop(live_file);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("fail");
        let target = dir.join("x.npy");
        fs::write(&target, b"old").unwrap();
        let err = write_atomic(&target, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("x.npy"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
