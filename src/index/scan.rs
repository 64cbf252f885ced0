//! The image files of a folder tree, each real file once.
//!
//! Links to folders are not followed unless asked ([`ScanOptions::follow_links`]); when
//! they are, a folder reached again (a loop, or two links to one folder) is walked once.
//! A file reached under several names (a link to a file, a hard link, a folder seen through
//! two links) is listed once, under its first name that is not a link. Whatever is passed
//! over is listed with the reason, never dropped silently.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How [`scan_folder_with`] walks.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Walk into links to folders (loops and repeated folders are walked once).
    pub follow_links: bool,
    /// Files an index already holds (`index --add`): left out under every name, without
    /// being listed, so a second name of one of them is not taken for a new file.
    pub indexed: HashSet<FileId>,
}

/// The images of a folder tree and what was passed over.
#[derive(Debug, Default)]
pub struct FolderScan {
    /// Image files (jpg, jpeg, png; any case), sorted, each with the name of its first-level
    /// sub-folder as label (`None` for files directly in the folder): the name as text, with
    /// backslashes, control characters and bytes that are not UTF-8 escaped (`\\`, `\n`,
    /// `\xNN`), so each folder is a class of its own and every label prints on one line.
    pub files: Vec<(PathBuf, Option<String>)>,
    /// Paths passed over, with the reason: links not followed, loops, unreadable folders,
    /// broken links, second names of a file already listed.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Image files under `dir` (see [`FolderScan`]), walked as `options` say. An unreadable
/// `dir` itself is an error; anything below it that cannot be read is skipped and listed.
pub fn scan_folder_with(dir: &Path, options: ScanOptions) -> Result<FolderScan> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{} is not a folder", dir.display())));
    }
    let mut scan = FolderScan::default();
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new(); // (path, reached through a link to a file)
    let mut folders_seen: HashMap<FileId, PathBuf> = HashMap::new();
    let mut walk = walkdir::WalkDir::new(dir).follow_links(options.follow_links).sort_by_file_name().into_iter();
    while let Some(next) = walk.next() {
        let entry = match next {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
                if e.depth() == 0 {
                    return Err(Error::io(dir, e.into()));
                }
                let why = match e.loop_ancestor() {
                    Some(ancestor) => {
                        format!("a link to {}, a folder that holds it (a loop): not followed", ancestor.display())
                    }
                    None if path.is_symlink() => match std::fs::metadata(&path) {
                        Err(target) => format!("a link that leads nowhere ({target})"),
                        Ok(_) => format!("cannot be read: {e}"),
                    },
                    None => {
                        format!("cannot be read: {}", e.io_error().map_or_else(|| e.to_string(), |io| io.to_string()))
                    }
                };
                scan.skipped.push((path, why));
                continue;
            }
        };
        let path = entry.path();
        let file_type = entry.file_type();
        if file_type.is_symlink() && entry.depth() > 0 {
            // Not following links: say what each link was and whether it was taken.
            match std::fs::metadata(path) {
                Ok(target) if target.is_dir() => scan
                    .skipped
                    .push((path.to_path_buf(), "a link to a folder: not followed (--follow-links follows it)".into())),
                Ok(target) if target.is_file() && is_image_name(path) => candidates.push((path.to_path_buf(), true)),
                Err(e) if is_image_name(path) => {
                    scan.skipped.push((path.to_path_buf(), format!("a link that leads nowhere ({e})")))
                }
                _ => {}
            }
        } else if file_type.is_dir() {
            // Only followed links make a folder reachable twice; the root counts as seen.
            if let Some(id) = FileId::of(path) {
                if let Some(first) = folders_seen.get(&id) {
                    let why = format!("the same folder as {}: walked once", first.display());
                    scan.skipped.push((path.to_path_buf(), why));
                    walk.skip_current_dir();
                } else {
                    folders_seen.insert(id, path.to_path_buf());
                }
            }
        } else if file_type.is_file() && is_image_name(path) {
            candidates.push((path.to_path_buf(), entry.path_is_symlink()));
        }
    }
    keep_each_file_once(candidates, &options.indexed, &mut scan);
    for (path, label) in &mut scan.files {
        *label = label_of(path, dir);
    }
    scan.files.sort();
    scan.skipped.sort();
    Ok(scan)
}

/// Image files under `dir` with default options (links to folders not followed); what
/// [`scan_folder_with`] passes over is not returned.
pub fn scan_folder(dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    Ok(scan_folder_with(dir, ScanOptions::default())?.files)
}

/// Whether `path` names a JPEG or PNG file (jpg, jpeg, png; any case).
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// The first-level sub-folder of `path` below `dir`, as one line of text: the name as it is
/// unless it holds a backslash, a control character or bytes that are not UTF-8, which are
/// escaped ([`super::paths::display`]), so two folders never share a label.
fn label_of(path: &Path, dir: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let mut parts = rel.components();
    let first = parts.next().map(|c| super::paths::display(Path::new(c.as_os_str())));
    if parts.next().is_some() {
        first
    } else {
        None
    }
}

/// Each real file once: of the names that reach it, the first that is not a link, else the
/// first; the others are listed as skipped.
fn keep_each_file_once(mut candidates: Vec<(PathBuf, bool)>, indexed: &HashSet<FileId>, scan: &mut FolderScan) {
    candidates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut kept: HashMap<FileId, PathBuf> = HashMap::new();
    for (path, _) in candidates {
        match FileId::of(&path) {
            Some(id) if indexed.contains(&id) => {}
            Some(id) => match kept.get(&id) {
                Some(first) => scan.skipped.push((path, format!("the same file as {}", first.display()))),
                None => {
                    kept.insert(id, path.clone());
                    scan.files.push((path, None));
                }
            },
            None => scan.skipped.push((path, "cannot be read".into())),
        }
    }
}

/// What makes two names one file: device and inode on Unix (so hard links are one file),
/// the resolved path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileId {
    #[cfg(unix)]
    /// Device and inode numbers.
    Inode(u64, u64),
    #[cfg(not(unix))]
    Resolved(PathBuf),
}

impl FileId {
    /// The file `path` names (links followed); `None` where it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok()?;
            Some(FileId::Inode(meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            std::fs::canonicalize(path).ok().map(FileId::Resolved)
        }
    }
}
