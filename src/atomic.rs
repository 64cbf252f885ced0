//! Atomic file replacement: write a temporary sibling, sync, rename over the target, so an
//! interrupted write never destroys an existing file.

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
    // Unique per process and per call, so concurrent writers never share a temporary file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_path = dir.join(format!(".{}.tmp-{}-{unique}", file_name.to_string_lossy(), std::process::id()));
    // Errors name the file the caller asked for, not the temporary one.
    let written =
        write_file(&temp_path, fill).and_then(|()| fs::rename(&temp_path, path)).map_err(|e| Error::io(path, e));
    if written.is_err() {
        // Best effort: the temporary file is useless now and the original is untouched.
        let _ = fs::remove_file(&temp_path);
        return written;
    }
    // Persist the rename itself; not possible on every platform, hence best effort.
    if let Ok(dir_handle) = File::open(&dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

fn write_file(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut writer = BufWriter::new(File::create(path)?);
    fill(&mut writer)?;
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()
}
