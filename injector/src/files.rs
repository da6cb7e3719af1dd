//! Noticing that files on disk changed. Kubernetes updates a mounted ConfigMap or Secret by
//! swapping a symlink, cert-manager rewrites files in place: either way the inode, size or
//! modification time of the file the path resolves to changes. Checking costs one `stat` per
//! file, cheap enough to do on every request or handshake, so a change is seen by the very
//! next one, with no watcher thread and no polling delay.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// The identity of a file's current content, as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// `None` when the file cannot be read (missing, or a mount not there yet).
    pub fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// The stamps of several files, for things made of more than one (a key pair).
    pub fn of_all<const N: usize>(paths: [&Path; N]) -> [Option<Stamp>; N] {
        paths.map(Stamp::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_changes_the_stamp() {
        let dir = std::env::temp_dir().join(format!("skiff-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        assert_eq!(Stamp::of(&file), None);
        std::fs::write(&file, "one").unwrap();
        let first = Stamp::of(&file).unwrap();
        assert_eq!(Stamp::of(&file), Some(first), "stable while unchanged");
        // Replaced by rename, as Kubernetes and atomic writers do: a new inode.
        let tmp = dir.join("f.tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_ne!(Stamp::of(&file), Some(first));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
