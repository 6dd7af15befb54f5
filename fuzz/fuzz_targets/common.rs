//! Shared by the fuzz targets: an OCI layout written from fuzz input, and the invariant that
//! nothing outside the unpack destination changes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Fixed, so that the dictionary can name it: symlinks and hardlinks in the input aim here.
pub const WORK: &str = "/tmp/stockade-fuzz";

pub fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn put_blob(layout: &Path, data: &[u8]) -> String {
    let h = hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&h), data).unwrap();
    format!("sha256:{h}")
}

/// Creates the work directory once: `host/` is the sentinel tree outside every destination.
pub fn setup() -> PathBuf {
    let work = PathBuf::from(WORK);
    if !work.join("host/ready").exists() {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("host/etc")).unwrap();
        std::fs::create_dir_all(work.join("host/dir/sub")).unwrap();
        std::fs::write(work.join("host/etc/passwd"), "SENTINEL\n").unwrap();
        std::fs::write(work.join("host/dir/sub/file"), "SENTINEL\n").unwrap();
        std::os::unix::fs::symlink("../etc", work.join("host/dir/link")).unwrap();
        std::fs::write(work.join("host/ready"), "").unwrap();
    }
    std::fs::create_dir_all(work.join("oci/blobs/sha256")).unwrap();
    std::fs::write(work.join("oci/oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    work
}

/// Every path under `dir` with its type, mode, size, link count, owner and content.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u64, u64, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let data = if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
        } else if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            if m.is_dir() {
                let mut e: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
                e.sort();
                stack.extend(e);
            }
            Vec::new()
        };
        out.push((p, m.mode(), m.size(), m.nlink(), m.uid(), data));
    }
    out
}

/// The names directly in the work directory: only `host`, `oci` and the destination may exist.
pub fn work_entries(work: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(work).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Removes a destination left by an unpack, opening up mode-0000 directories.
pub fn remove(path: &Path) {
    if std::fs::symlink_metadata(path).is_err() {
        return;
    }
    let _ = std::process::Command::new("chmod").args(["-R", "u+rwx"]).arg(path).status();
    std::fs::remove_dir_all(path).unwrap();
}
