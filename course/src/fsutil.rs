//! Small file-tree helpers: list, compare, hash, copy and mirror folders.
//!
//! Mirroring writes only files whose content changed, because cargo decides
//! what to rebuild by modification time: rewriting an unchanged file would
//! rebuild its crate for nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Every file under `dir`, as paths relative to it, sorted. A missing folder
/// has no files.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut out, &|_| false);
    out.sort();
    out
}

fn walk(base: &Path, rel: &Path, out: &mut Vec<PathBuf>, skip: &dyn Fn(&Path) -> bool) {
    let Ok(entries) = fs::read_dir(base.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        if skip(&rel) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(base, &rel, out, skip),
            Ok(t) if t.is_file() => out.push(rel),
            _ => {}
        }
    }
}

/// Whether two folders hold the same files with the same contents.
pub fn dirs_equal(a: &Path, b: &Path) -> bool {
    let files = list_files(a);
    files == list_files(b)
        && files
            .iter()
            .all(|f| fs::read(a.join(f)).ok() == fs::read(b.join(f)).ok())
}

/// A 64-bit FNV-1a hash of the files (names and contents) under each path,
/// in order. Used to cache grading results by the sources they came from.
pub fn hash_paths(paths: &[PathBuf]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for p in paths {
        if p.is_file() {
            feed(p.to_string_lossy().as_bytes());
            feed(&fs::read(p).unwrap_or_default());
            continue;
        }
        for f in list_files(p) {
            feed(f.to_string_lossy().as_bytes());
            feed(&[0]);
            feed(&fs::read(p.join(&f)).unwrap_or_default());
        }
    }
    h
}

/// Copies the folder `from` to `to` (which must not exist yet).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for f in list_files(from) {
        if let Some(parent) = to.join(&f).parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from.join(&f), to.join(&f))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` unless it already holds exactly them; returns
/// whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes)?;
    Ok(true)
}

/// Makes `to` hold exactly the files of `from`, skipping relative paths for
/// which `skip` is true (on both sides). Unchanged files are not touched.
/// Returns how many files were written or removed.
pub fn mirror(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> io::Result<usize> {
    let mut wanted = Vec::new();
    walk(from, Path::new(""), &mut wanted, skip);
    let mut changed = 0;
    for f in &wanted {
        if write_if_changed(&to.join(f), &fs::read(from.join(f))?)? {
            changed += 1;
        }
    }
    let wanted: std::collections::HashSet<_> = wanted.into_iter().collect();
    let mut present = Vec::new();
    walk(to, Path::new(""), &mut present, skip);
    for f in present {
        if !wanted.contains(&f) {
            fs::remove_file(to.join(&f))?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_writes_changes_only_and_removes_extras() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("x.rs"), "x").unwrap();
        fs::write(a.join("sub/y.rs"), "y").unwrap();
        assert_eq!(mirror(&a, &b, &|_| false).unwrap(), 2);
        assert!(dirs_equal(&a, &b));
        assert_eq!(mirror(&a, &b, &|_| false).unwrap(), 0, "nothing changed");
        fs::write(b.join("extra.rs"), "e").unwrap();
        fs::write(a.join("x.rs"), "x2").unwrap();
        assert_eq!(mirror(&a, &b, &|_| false).unwrap(), 2);
        assert!(dirs_equal(&a, &b));
        assert!(!b.join("extra.rs").exists());
    }

    #[test]
    fn hash_changes_with_content_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        fs::write(d.join("a"), "1").unwrap();
        let h1 = hash_paths(std::slice::from_ref(&d));
        fs::write(d.join("a"), "2").unwrap();
        let h2 = hash_paths(std::slice::from_ref(&d));
        assert_ne!(h1, h2);
        assert_eq!(h2, hash_paths(&[d]));
    }
}
