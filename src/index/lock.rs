//! The writers' lock of an index file: an OS advisory lock on the side file `.NAME.lock`,
//! held by every read-modify-write of index `NAME` (`lookalike index`, with or without
//! `--add`) from before it reads the old index until the new one has replaced it. Two
//! writers therefore run one after the other and neither loses the other's rows.
//!
//! Readers take no lock: a write replaces the file by an atomic rename, so a reader sees
//! the old index or the new one, never a torn file, and never waits. The lock is the
//! operating system's (`flock` on Unix, `LockFileEx` on Windows): a writer that crashes or
//! is killed releases it with its life, so no stale lock ever blocks the next writer. The
//! side file itself stays (removing it would let two writers lock two different files).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a writer does when another holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait until the other writer is done.
    Block,
    /// Fail at once with [`Error::IndexLocked`].
    NoWait,
}

/// The exclusive right to rewrite one index file; released on drop.
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
    path: PathBuf,
}

impl WriteLock {
    /// The side file that carries the lock of index `index`: `.NAME.lock` beside it.
    pub fn lock_path(index: &Path) -> Result<PathBuf> {
        let name = index
            .file_name()
            .ok_or_else(|| Error::InvalidArgument(format!("{} names no index file", index.display())))?;
        let mut lock_name = std::ffi::OsString::from(".");
        lock_name.push(name);
        lock_name.push(".lock");
        Ok(index.with_file_name(lock_name))
    }

    /// Takes the lock of index `index` (which need not exist yet). When another writer holds
    /// it, `on_wait` hears the lock file's path before this call blocks (with
    /// [`Wait::Block`]), or the call fails with [`Error::IndexLocked`] (with
    /// [`Wait::NoWait`]).
    pub fn acquire(index: &Path, wait: Wait, on_wait: impl FnOnce(&Path)) -> Result<Self> {
        let path = Self::lock_path(index)?;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) if wait == Wait::NoWait => {
                return Err(Error::IndexLocked { index: index.to_path_buf(), lock: path });
            }
            Err(fs4::TryLockError::WouldBlock) => {
                on_wait(&path);
                fs4::FileExt::lock(&file).map_err(|e| Error::io(&path, e))?;
            }
            Err(fs4::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        Ok(Self { _file: file, path })
    }

    /// The side file holding the lock.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_or_fails_and_a_dropped_lock_frees_it() {
        let dir = std::env::temp_dir().join(format!("lookalike-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = dir.join("photos.safetensors");
        let first = WriteLock::acquire(&index, Wait::NoWait, |_| panic!("nobody holds it yet")).unwrap();
        assert_eq!(first.path(), dir.join(".photos.safetensors.lock"));
        let err = WriteLock::acquire(&index, Wait::NoWait, |_| {}).unwrap_err();
        assert!(matches!(err, Error::IndexLocked { .. }), "{err}");
        assert!(err.to_string().contains("photos.safetensors"), "{err}");

        let (told, got) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn({
            let index = index.clone();
            move || {
                let _lock = WriteLock::acquire(&index, Wait::Block, |lock| told.send(lock.to_path_buf()).unwrap())?;
                Ok::<_, Error>(std::time::Instant::now())
            }
        });
        let heard = got.recv().unwrap();
        assert_eq!(heard, first.path());
        let released = std::time::Instant::now();
        drop(first);
        let acquired = waiter.join().unwrap().unwrap();
        assert!(acquired >= released, "the waiter got the lock while the first writer held it");
        // Free again once every holder is gone.
        drop(WriteLock::acquire(&index, Wait::NoWait, |_| panic!("still held")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
