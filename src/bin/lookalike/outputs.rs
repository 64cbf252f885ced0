//! Checks of an output path before any work: a command that would fail at its last step,
//! or replace one of its own inputs, is refused first.

use std::path::{Path, PathBuf};

use lookalike::{Error, Result};

/// Refuses an output path that is a directory before any work: renaming the finished file
/// over it would fail only at the end, with the misleading "Not a directory".
pub(crate) fn check_output(output: &Path) -> Result<()> {
    if output.is_dir() {
        return Err(Error::InvalidArgument(format!("output {} is a directory; give a file path", output.display())));
    }
    // A missing folder would fail only when the file is written, after all the work.
    let folder = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "output {}: its folder {} does not exist",
            output.display(),
            folder.display()
        )));
    }
    Ok(())
}

/// Where `path` leads: canonical, for a file that may not exist yet through its folder.
fn resolved(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().or_else(|| {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(folder.canonicalize().ok()?.join(path.file_name()?))
    })
}

/// Refuses an output that would replace one of the command's inputs, before any work: one of
/// `files`, an existing file inside one of `data_folders` (the data it reads), or an image
/// inside one of `image_folders` (what an image walk reads). Paths are compared where they
/// lead, so links and `..` do not hide an input.
pub(crate) fn check_not_input(
    output: &Path, files: &[&Path], data_folders: &[&Path], image_folders: &[&Path],
) -> Result<()> {
    let Some(target) = resolved(output) else { return Ok(()) };
    let refuse = |what: String| {
        Err(Error::InvalidArgument(format!(
            "output {} would replace {what}: give another output path",
            output.display()
        )))
    };
    for file in files {
        if resolved(file).as_ref() == Some(&target) {
            return refuse(format!("the input {}", file.display()));
        }
    }
    let inside = |folder: &Path| folder.canonicalize().is_ok_and(|f| target.starts_with(f));
    for folder in data_folders {
        if inside(folder) && (target.exists() || lookalike::index::is_image_name(&target)) {
            return refuse(format!("a file of the input data {}", folder.display()));
        }
    }
    for folder in image_folders {
        if inside(folder) && lookalike::index::is_image_name(&target) {
            return refuse(format!("an image under the input folder {}", folder.display()));
        }
    }
    Ok(())
}
