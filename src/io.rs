//! Atomic output files: everything lecr writes goes to a temporary file in the destination
//! folder first and is renamed into place, so a crash never leaves a half-written output.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `path` atomically: `fill` writes into a temporary file beside it, which is then
/// flushed, synced and renamed over `path`.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".lecr-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    {
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut buf).with_context(|| format!("writing {}", path.display()))?;
        buf.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    // Temporary files are private (0600); outputs get the usual permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .with_context(|| format!("renaming the temporary file to {}", path.display()))?;
    Ok(())
}

/// Writes the folder `out` atomically: `fill` writes into a temporary folder beside it, which
/// then replaces `out` (an existing `out` is moved aside first and removed after).
pub fn write_dir_atomic<F>(out: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating folder {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".lecr-new-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    fill(tmp.path())?;
    let kept = tmp.keep();
    if out.exists() {
        let old = parent.join(format!(
            ".lecr-old-{}",
            out.file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).with_context(|| format!("moving {} aside", out.display()))?;
        std::fs::rename(&kept, out)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&kept, out)
            .with_context(|| format!("renaming the new folder to {}", out.display()))?;
    }
    Ok(())
}

/// A CSV writer over `out` with the settings every lecr CSV uses.
pub fn csv_writer(out: &mut dyn Write) -> csv::Writer<&mut dyn Write> {
    csv::WriterBuilder::new().from_writer(out)
}
