//! Hand-built layers and OCI image layouts for the image tests: exact tar headers (including
//! hostile ones no well-behaved tool writes) wrapped in a real layout with real digests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer as raw tar bytes, entry by entry.
#[derive(Default, Clone)]
pub struct LayerBuilder {
    out: Vec<u8>,
}

/// Options of one entry.
#[derive(Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
    /// PAX records placed in an `x` header before the entry.
    pub pax: Vec<(String, Vec<u8>)>,
    /// Overrides the ustar size field (the data written is still `data`).
    pub header_size: Option<u64>,
}

impl Entry {
    pub fn new(name: impl AsRef<[u8]>, kind: u8) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            data: Vec::new(),
            link: Vec::new(),
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            pax: Vec::new(),
            header_size: None,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(&s.as_bytes()[s.len() - field.len()..]);
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    fn header(&mut self, name: &[u8], kind: u8, size: u64, e: &Entry) {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], e.uid.min(0o7777777));
        octal(&mut h[116..124], e.gid.min(0o7777777));
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], e.mtime);
        h[156] = kind;
        let l = e.link.len().min(100);
        h[157..157 + l].copy_from_slice(&e.link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], u64::from(e.dev.0));
        octal(&mut h[337..345], u64::from(e.dev.1));
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.out.extend_from_slice(&h);
    }

    fn data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
    }

    /// Appends `e`, with a PAX header first when it has records or a name over 100 bytes.
    pub fn entry(&mut self, e: Entry) -> &mut Self {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if e.uid > 0o7777777 {
            pax.push(("uid".into(), e.uid.to_string().into_bytes()));
        }
        if e.gid > 0o7777777 {
            pax.push(("gid".into(), e.gid.to_string().into_bytes()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                // "<len> <key>=<value>\n", where len counts itself.
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len != rest + len.to_string().len() {
                    len = rest + len.to_string().len();
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let meta = Entry::new("PaxHeader", b'x');
            self.header(b"PaxHeader", b'x', body.len() as u64, &meta);
            self.data(&body);
        }
        let size = e.header_size.unwrap_or(e.data.len() as u64);
        self.header(&e.name.clone(), e.kind, size, &e);
        let data = e.data.clone();
        self.data(&data);
        self
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(name, b'0');
        e.data = data.as_ref().to_vec();
        self.entry(e)
    }

    pub fn file_mode(&mut self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        let mut e = Entry::new(name, b'0');
        e.data = data.as_ref().to_vec();
        e.mode = mode;
        self.entry(e)
    }

    pub fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.entry(Entry::new(name, b'5'))
    }

    pub fn dir_mode(&mut self, name: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        let mut e = Entry::new(name, b'5');
        e.mode = mode;
        self.entry(e)
    }

    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(name, b'2');
        e.link = target.as_ref().to_vec();
        e.mode = 0o777;
        self.entry(e)
    }

    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(name, b'1');
        e.link = target.as_ref().to_vec();
        self.entry(e)
    }

    /// The finished tar stream (with its two zero end blocks).
    pub fn tar(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

pub fn media_type(comp: Comp) -> &'static str {
    match comp {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// One layer of a hand-built image: its tar and how it is stored, with ways to lie about it.
#[derive(Clone)]
pub struct LayerSpec {
    pub tar: Vec<u8>,
    pub comp: Comp,
    /// Replaces the blob actually stored (after the descriptor is computed from the real one).
    pub tamper_blob: Option<Vec<u8>>,
    pub media_type: Option<String>,
    pub digest: Option<String>,
    pub size: Option<i64>,
    pub diff_id: Option<String>,
}

impl LayerSpec {
    pub fn new(tar: Vec<u8>) -> LayerSpec {
        LayerSpec {
            tar,
            comp: Comp::Gzip,
            tamper_blob: None,
            media_type: None,
            digest: None,
            size: None,
            diff_id: None,
        }
    }
    pub fn comp(mut self, comp: Comp) -> LayerSpec {
        self.comp = comp;
        self
    }
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// Writes (or adds to) an OCI layout at `dir` with one image tagged `reference`; returns the
/// manifest digest. `config` is merged into the image config's `config` object.
pub fn write_image(dir: &Path, reference: &str, layers: &[LayerSpec], config: serde_json::Value) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let blob = compress(&l.tar, l.comp);
        let digest = put_blob(dir, &blob);
        if let Some(t) = &l.tamper_blob {
            std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), t).unwrap();
        }
        descriptors.push(serde_json::json!({
            "mediaType": l.media_type.clone().unwrap_or_else(|| media_type(l.comp).to_owned()),
            "digest": l.digest.clone().unwrap_or(digest),
            "size": l.size.unwrap_or(blob.len() as i64),
        }));
        diff_ids.push(l.diff_id.clone().unwrap_or_else(|| format!("sha256:{}", sha256_hex(&l.tar))));
    }
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(dir, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put_blob(dir, &manifest_bytes);
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": reference},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_digest
}

/// A file system tree as comparable data: path → (kind, mode, uid, gid, content or link
/// target, device number, sorted xattrs).
pub type Tree = BTreeMap<PathBuf, (String, u32, u32, u32, Vec<u8>, u64, Vec<(String, Vec<u8>)>)>;

pub fn tree(root: &Path, owners: bool) -> Tree {
    let mut out = Tree::new();
    walk(root, root, owners, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, owners: bool, out: &mut Tree) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            ("symlink", std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", with_access(&path, &meta, 0o400, || std::fs::read(&path).unwrap()))
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else if ft.is_char_device() {
            ("char", Vec::new())
        } else {
            ("other", Vec::new())
        };
        let (uid, gid) = if owners { (meta.uid(), meta.gid()) } else { (0, 0) };
        let mut xattrs = Vec::new();
        if !ft.is_symlink() {
            for name in xattr_names(&path) {
                if name.starts_with("user.rootlesscontainers") {
                    continue; // umoci --rootless bookkeeping
                }
                xattrs.push((name.clone(), xattr_get(&path, &name)));
            }
            xattrs.sort();
        }
        let rel = path.strip_prefix(root).unwrap().to_owned();
        out.insert(
            rel,
            (kind.into(), meta.permissions().mode() & 0o7777, uid, gid, content, meta.rdev(), xattrs),
        );
        if ft.is_dir() {
            with_access(&path, &meta, 0o500, || walk(root, &path, owners, out));
        }
    }
}

/// Runs `f` with the owner's `bits` added to `path`'s mode when they are missing (a rootless
/// test owns the trees it reads, and its 0000 directories must be read too), then restores it.
fn with_access<T>(path: &Path, meta: &std::fs::Metadata, bits: u32, f: impl FnOnce() -> T) -> T {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & bits == bits || meta.uid() != nix::unistd::geteuid().as_raw() {
        return f();
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | bits)).unwrap();
    let out = f();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    out
}

pub fn xattr_names(path: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: test code; `c` is NUL-terminated and `buf` is a live buffer of the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

pub fn xattr_get(path: &Path, name: &str) -> Vec<u8> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: test code; both strings are NUL-terminated and `buf` is live.
    let len = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Vec::new();
    }
    buf.truncate(len as usize);
    buf
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: test code; both strings are NUL-terminated and `value` is live.
    unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
}
