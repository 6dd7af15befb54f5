//! Hostile images (docs/security.md, section C): every hostile name, link, whiteout, type and
//! stream is either refused with a typed [`ImageError`] or confined to the target directory,
//! and a host tree next to the target (`host/`, with a sentinel file and directory reachable by
//! absolute and `../` paths) is never changed. Cases run flattened (`Image::unpack`) and, where
//! the layout differs, in the layer store (`LayerStore::prepare`, overlayfs format).
//!
//! The suite runs as root and as uid 65534 (`tests/run-all`); devices, owners and `trusted.*`
//! attributes differ between the two and are checked per mode.

mod common;
#[path = "common/oci.rs"]
mod oci;

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use oci::{Comp, Entry, LayerBuilder, LayerSpec};
use stockade::image::{Image, ImageError, ImageSource, LayerStore, Platform, Rootfs, UnpackLimits};

type Snapshot = Vec<(String, u32, Vec<u8>)>;

/// A temporary directory holding a host tree to protect (`host/`), image layouts
/// (`layout<n>/`), flattened destinations (`out<n>/rootfs`) and layer stores (`store<n>/`).
struct Fx {
    _tmp: common::TempDir,
    base: PathBuf,
    before: Snapshot,
    owner: (u32, u32),
    n: Cell<u32>,
}

impl Fx {
    fn new() -> Fx {
        let tmp = common::tempdir();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let host = base.join("host");
        fs::create_dir_all(host.join("etc")).unwrap();
        fs::create_dir_all(host.join("dir")).unwrap();
        fs::write(host.join("etc/passwd"), "SENTINEL").unwrap();
        fs::write(host.join("dir/keep"), "KEEP").unwrap();
        for (p, mode) in
            [("", 0o755), ("etc", 0o755), ("dir", 0o755), ("etc/passwd", 0o644), ("dir/keep", 0o644)]
        {
            fs::set_permissions(host.join(p), fs::Permissions::from_mode(mode)).unwrap();
        }
        let before = common::snapshot(&host);
        let meta = fs::metadata(host.join("etc/passwd")).unwrap();
        Fx { _tmp: tmp, base, before, owner: (meta.uid(), meta.gid()), n: Cell::new(0) }
    }

    fn next(&self, what: &str) -> PathBuf {
        self.n.set(self.n.get() + 1);
        self.base.join(format!("{what}{}", self.n.get()))
    }

    /// The host file that must never change (`host/etc/passwd`, "SENTINEL", mode 0644).
    fn file(&self) -> PathBuf {
        self.base.join("host/etc/passwd")
    }

    /// The host directory that must never change (`host/dir`, mode 0755, holding `keep`).
    fn dir(&self) -> PathBuf {
        self.base.join("host/dir")
    }

    fn abs(&self, p: &Path) -> String {
        p.display().to_string()
    }

    /// `p` (absolute) without its leading slash: where an absolute name lands in a rootfs.
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix("/").unwrap().display().to_string()
    }

    /// A `../` chain long enough to climb from any rootfs here to `/`, then `p`.
    fn climb(&self, p: &Path) -> String {
        format!("{}{}", "../".repeat(12).trim_end_matches('/'), p.display())
    }

    /// Asserts the host tree unchanged (types, modes, contents, link counts, owner) and that
    /// nothing appeared in the temporary directory outside the targets.
    #[track_caller]
    fn check_host(&self) {
        assert_eq!(common::snapshot(&self.base.join("host")), self.before, "the host tree changed");
        let meta = fs::metadata(self.file()).unwrap();
        assert_eq!(meta.nlink(), 1, "the sentinel file gained a hard link");
        assert_eq!((meta.uid(), meta.gid()), self.owner, "the sentinel file changed owner");
        assert_eq!(fs::metadata(self.dir().join("keep")).unwrap().nlink(), 1);
        for e in fs::read_dir(&self.base).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                ["host", "out", "store", "layout"].iter().any(|p| name.starts_with(p)),
                "unexpected {name:?} next to the targets"
            );
            if name.starts_with("out") {
                let inner: Vec<_> = fs::read_dir(e.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
                assert!(
                    inner.iter().all(|n| n == "rootfs"),
                    "unexpected entries in {name} next to rootfs: {inner:?}"
                );
            }
        }
    }

    /// Writes an OCI layout with these layers. A layer whose `digest` is overridden to a
    /// well-formed digest gets its `tamper_blob` stored under that digest too.
    fn layout(&self, specs: &[LayerSpec]) -> PathBuf {
        let dir = self.next("layout");
        oci::write_image(&dir, "hostile", specs, serde_json::json!({}));
        for s in specs {
            if let (Some(blob), Some(d)) = (&s.tamper_blob, &s.digest)
                && let Some(hex) = d.strip_prefix("sha256:")
                && hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                fs::write(dir.join("blobs/sha256").join(hex), blob).unwrap();
            }
        }
        dir
    }

    fn image_of(&self, specs: &[LayerSpec]) -> Result<Image, ImageError> {
        let dir = self.layout(specs);
        ImageSource::open(&dir)?.image(Some("hostile"), &Platform::host())
    }

    /// An image of gzip layers, bottom first.
    fn image(&self, layers: &[&LayerBuilder]) -> Image {
        self.image_of(&specs(layers)).expect("build image")
    }

    /// Flattens `image` into a new `out<n>`; returns the rootfs path and the result. A failed
    /// unpack must have removed its destination; a successful one made it mode 0700.
    fn unpack_image(&self, image: &Image, limits: UnpackLimits) -> (PathBuf, Result<Rootfs, ImageError>) {
        let dest = self.next("out");
        let result = image.unpack_with(&dest, limits);
        match &result {
            Err(_) => assert!(!dest.exists(), "a failed unpack left {}", dest.display()),
            Ok(r) => {
                assert_eq!(fs::symlink_metadata(&dest).unwrap().mode() & 0o7777, 0o700, "destination mode");
                assert_eq!(r.layers(), [dest.join("rootfs")]);
            }
        }
        (dest.join("rootfs"), result)
    }

    fn unpack(&self, layers: &[&LayerBuilder]) -> (PathBuf, Result<Rootfs, ImageError>) {
        self.unpack_image(&self.image(layers), UnpackLimits::default())
    }

    /// Prepares `image` in a new store `store<n>`; a failure must leave `layers/` and `tmp/`
    /// empty.
    fn prepare_image(&self, image: &Image, limits: UnpackLimits) -> Result<Rootfs, ImageError> {
        let dir = self.next("store");
        let store = LayerStore::open(&dir).unwrap().with_limits(limits);
        let result = store.prepare(image);
        if result.is_err() {
            // The failing layer (always the top one in these tests) is not in the store, nor
            // anything half-done; verified layers below it may stay.
            let (top, below) = image.layers().split_last().unwrap();
            assert!(!store.contains(top.diff_id()), "a failed prepare stored the failing layer");
            let below: Vec<String> = below.iter().map(|l| l.diff_id().hex().to_owned()).collect();
            for e in fs::read_dir(dir.join("layers")).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(below.contains(&name), "a failed prepare left layer {name}");
            }
            let left: Vec<_> = fs::read_dir(dir.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(left.is_empty(), "a failed prepare left {left:?}");
        }
        result
    }

    fn prepare(&self, layers: &[&LayerBuilder]) -> Result<Rootfs, ImageError> {
        self.prepare_image(&self.image(layers), UnpackLimits::default())
    }
}

fn specs(layers: &[&LayerBuilder]) -> Vec<LayerSpec> {
    layers.iter().map(|l| LayerSpec::new(l.tar())).collect()
}

fn layer(build: impl FnOnce(&mut LayerBuilder)) -> LayerBuilder {
    let mut l = LayerBuilder::new();
    build(&mut l);
    l
}

fn entry(name: impl AsRef<[u8]>, kind: u8, f: impl FnOnce(&mut Entry)) -> Entry {
    let mut e = Entry::new(name, kind);
    f(&mut e);
    e
}

/// Asserts a refusal of an entry: `ImageError::Entry`, whose message contains `needle`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, ImageError>, needle: &str) {
    match result {
        Err(e @ ImageError::Entry { .. }) => {
            assert!(e.to_string().contains(needle), "the refusal does not mention {needle:?}: {e}")
        }
        other => panic!("expected ImageError::Entry mentioning {needle:?}, got {other:?}"),
    }
}

/// For escapes that may be refused or confined: `Some` when the unpack succeeded, `None` when
/// an entry was refused; anything else fails the test.
#[track_caller]
fn confined_or_refused(result: Result<Rootfs, ImageError>) -> Option<Rootfs> {
    match result {
        Ok(r) => Some(r),
        Err(ImageError::Entry { .. }) => None,
        Err(e) => panic!("expected success or ImageError::Entry, got {e:?}"),
    }
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    String::from_utf8(fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))).unwrap()
}

fn lmeta(p: impl AsRef<Path>) -> fs::Metadata {
    let p = p.as_ref();
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn mode(p: impl AsRef<Path>) -> u32 {
    lmeta(p).mode() & 0o7777
}

fn kind(p: impl AsRef<Path>) -> &'static str {
    let t = lmeta(p).file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else {
        "other"
    }
}

fn exists(p: impl AsRef<Path>) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// The paths of a tree with their kinds, e.g. `["a file", "d dir"]`.
fn listing(root: &Path) -> Vec<String> {
    oci::tree(root, false).into_iter().map(|(p, v)| format!("{} {}", p.display(), v.0)).collect()
}

fn is_whiteout(p: impl AsRef<Path>) -> bool {
    let m = lmeta(p);
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", oci::sha256_hex(data))
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn entry_named_dotdot_is_refused() {
    let fx = Fx::new();
    for name in ["../x", "/../x", "./../x", "a/../../x", "a/b/../../../x", "..", "../", "a/.."] {
        for kind in [b'0', b'5'] {
            let l = layer(|l| {
                l.file("ok", "ok").entry(entry(name, kind, |e| {
                    e.data = if kind == b'0' { b"EVIL".to_vec() } else { Vec::new() }
                }));
            });
            refused(fx.unpack(&[&l]).1, &format!("{name:?}"));
            refused(fx.prepare(&[&l]), &format!("{name:?}"));
        }
    }
    fx.check_host();
}

#[test]
fn absolute_names_land_inside_the_rootfs() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("/abs/f", "ABS")
            .file(fx.abs(&fx.file()), "EVIL")
            .dir_mode(format!("{}/", fx.abs(&fx.dir())), 0o700)
            .file(format!("{}/keep", fx.abs(&fx.dir())), "EVIL");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(read(root.join("abs/f")), "ABS");
        assert_eq!(read(root.join(fx.rel(&fx.file()))), "EVIL");
        assert_eq!(read(root.join(fx.rel(&fx.dir())).join("keep")), "EVIL");
        assert_eq!(mode(root.join(fx.rel(&fx.dir()))), 0o700);
    }
    fx.check_host();
}

#[test]
fn dot_and_slash_names_are_normalised() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.dir_mode("./d/", 0o750)
            .file("d//f", "F")
            .file("./d/./g", "G")
            .dir("e//h//")
            .file("/./e/h/./i", "I")
            .dir_mode("//./e/", 0o711);
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(listing(&root), ["d dir", "d/f file", "d/g file", "e dir", "e/h dir", "e/h/i file"]);
        assert_eq!(
            (read(root.join("d/f")), read(root.join("d/g")), read(root.join("e/h/i"))),
            ("F".into(), "G".into(), "I".into())
        );
        assert_eq!(
            (mode(root.join("d")), mode(root.join("e")), mode(root.join("e/h"))),
            (0o750, 0o711, 0o755)
        );
    }
    fx.check_host();
}

#[test]
fn root_entry_that_is_a_symlink_or_file_is_refused() {
    // umoci CVE-2021-29136: a root entry that is a symlink would redirect every later entry.
    let fx = Fx::new();
    let dir = fx.abs(&fx.dir());
    for name in ["./", "/", ".", "//./"] {
        let cases: Vec<Entry> = vec![
            entry(name, b'2', |e| e.link = dir.clone().into_bytes()),
            entry(name, b'2', |e| e.link = b"../../host/dir".to_vec()),
            entry(name, b'2', |e| e.link = fx.climb(&fx.dir()).into_bytes()),
            entry(name, b'0', |e| e.data = b"FILE".to_vec()),
            entry(name, b'1', |e| e.link = b"x".to_vec()),
            entry(name, b'6', |_| {}),
        ];
        for root_entry in cases {
            let l = layer(|l| {
                l.file("x", "x").entry(root_entry.clone()).file("evil", "EVIL").file("keep", "EVIL");
            });
            refused(fx.unpack(&[&l]).1, "root");
            refused(fx.prepare(&[&l]), "root");
        }
    }
    // A directory root entry is fine and sets the root's metadata.
    let l = layer(|l| {
        l.entry(entry("./", b'5', |e| {
            e.mode = 0o750;
            e.mtime = 1_234_567_890;
        }))
        .file("f", "F");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    assert_eq!((mode(&root), lmeta(&root).mtime()), (0o750, 1_234_567_890));
    assert_eq!(read(root.join("f")), "F");
    fx.check_host();
}

#[test]
fn over_long_names_are_refused() {
    let fx = Fx::new();
    let long_path = format!("{}f", "a/".repeat(2500));
    let long_component = "x".repeat(256);
    let nested = format!("d/{}/f", "y".repeat(256));
    for name in [long_path.as_str(), &long_component, &nested] {
        let l = layer(|l| {
            l.file("ok", "ok").file(name, "EVIL");
        });
        let needle = if name.len() > 4096 { "longer than 4096" } else { "longer than 255" };
        refused(fx.unpack(&[&l]).1, needle);
        refused(fx.prepare(&[&l]), needle);
    }
    // Hardlink targets are names too.
    let l = layer(|l| {
        l.file("ok", "ok").hardlink("h", &long_path);
    });
    refused(fx.unpack(&[&l]).1, "longer than 4096");
    // Depth is bounded on its own (removal of a failed unpack recurses once per level).
    let deep = format!("{}/f", "b/".repeat(1000).trim_end_matches('/'));
    let l = layer(|l| {
        l.file(&deep, "deep");
    });
    refused(fx.unpack(&[&l]).1, "nest deeper than 256");
    refused(fx.prepare(&[&l]), "nest deeper than 256");
    // The limits themselves are fine: a 255-byte component in a long path.
    let fine = format!("{}/{}", "b/".repeat(200).trim_end_matches('/'), "z".repeat(255));
    let l = layer(|l| {
        l.file(&fine, "FINE");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    assert_eq!(read(root.join(&fine)), "FINE");
    fx.check_host();
}

#[test]
fn nul_bytes_in_names_and_link_targets_are_refused() {
    let fx = Fx::new();
    let cases = [
        entry("placeholder", b'0', |e| {
            e.pax = vec![("path".into(), b"a\0b".to_vec())];
            e.data = b"EVIL".to_vec();
        }),
        entry("placeholder", b'5', |e| e.pax = vec![("path".into(), b"dir\0/x".to_vec())]),
        entry("s", b'2', |e| e.pax = vec![("linkpath".into(), b"target\0/etc".to_vec())]),
        entry("h", b'1', |e| e.pax = vec![("linkpath".into(), b"ok\0x".to_vec())]),
    ];
    for e in cases {
        let l = layer(|l| {
            l.file("ok", "ok").entry(e.clone());
        });
        refused(fx.unpack(&[&l]).1, "NUL");
        refused(fx.prepare(&[&l]), "NUL");
    }
    fx.check_host();
}

#[test]
fn duplicate_entries_last_wins_without_leftovers() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file_mode("a", "1", 0o600)
            .file_mode("a", "22", 0o640)
            .file("b", "x")
            .dir("b/")
            .dir("c/")
            .file("c/k", "k")
            .dir("c/sub/")
            .file("c/sub/deep", "deep")
            .file("c", "C")
            .symlink("s", "a")
            .file("s", "S")
            .file("t", "T")
            .symlink("t", "a")
            .dir("u/")
            .file("u/child", "child")
            .symlink("u", "a")
            .file("v", "V")
            .hardlink("v", "a");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(
            listing(&root),
            ["a file", "b dir", "c file", "s file", "t symlink", "u symlink", "v file"]
        );
        assert_eq!((read(root.join("a")), mode(root.join("a"))), ("22".into(), 0o640));
        assert_eq!((read(root.join("c")), read(root.join("s"))), ("C".into(), "S".into()));
        assert_eq!(fs::read_link(root.join("t")).unwrap(), Path::new("a"));
        assert_eq!(lmeta(root.join("v")).ino(), lmeta(root.join("a")).ino());
    }
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Symlinks
// ---------------------------------------------------------------------------------------------

/// Writes through the symlink `l -> target` (in one layer): a file, an overwrite of the host's
/// `keep`, a directory and a hardlink. Refused or confined; with `inside` created first in
/// the image, the link resolves there and the writes must land there.
fn write_through(fx: &Fx, target: &str, inside: &str) {
    let hostile = |l: &mut LayerBuilder| {
        l.symlink("l", target)
            .file("l/evil", "EVIL")
            .file("l/keep", "EVIL")
            .dir("l/newdir")
            .file("x", "x")
            .hardlink("l/hl", "x");
    };
    let l = layer(|l| hostile(l));
    let (root, r) = fx.unpack(&[&l]);
    if confined_or_refused(r).is_some() {
        assert_eq!(read(root.join(inside).join("evil")), "EVIL");
    }
    if let Some(r) = confined_or_refused(fx.prepare(&[&l])) {
        assert_eq!(read(r.layers()[0].join(inside).join("evil")), "EVIL");
    }
    // With the link's target present inside the image, the writes land there.
    let l = layer(|l| {
        l.dir(format!("{inside}/"));
        hostile(l);
    });
    for root in
        [fx.unpack(&[&l]).1.unwrap().layers()[0].clone(), fx.prepare(&[&l]).unwrap().layers()[0].clone()]
    {
        let at = root.join(inside);
        assert_eq!((read(at.join("evil")), read(at.join("keep"))), ("EVIL".into(), "EVIL".into()));
        assert_eq!(kind(at.join("newdir")), "dir");
        assert_eq!(lmeta(at.join("hl")).ino(), lmeta(root.join("x")).ino());
        assert_eq!(kind(root.join("l")), "symlink");
    }
    fx.check_host();
}

#[test]
fn writes_through_absolute_symlink_stay_inside() {
    let fx = Fx::new();
    write_through(&fx, &fx.abs(&fx.dir()), &fx.rel(&fx.dir()));
}

#[test]
fn writes_through_relative_dotdot_symlink_stay_inside() {
    let fx = Fx::new();
    write_through(&fx, "../../host/dir", "host/dir");
    write_through(&fx, &fx.climb(&fx.dir()), &fx.rel(&fx.dir()));
}

#[test]
fn writes_through_symlink_chains_stay_inside() {
    let fx = Fx::new();
    let dir = fx.abs(&fx.dir());
    type Chain<'a> = Box<dyn Fn(&mut LayerBuilder) + 'a>;
    let chains: Vec<(Chain, &str, String)> = vec![
        // a -> /chain/b (absolute), chain/b -> ../c (relative), c -> <host dir> (absolute).
        (
            Box::new(|l: &mut LayerBuilder| {
                l.symlink("c", &dir).dir("chain").symlink("chain/b", "../c").symlink("a", "/chain/b");
            }),
            "a",
            fx.rel(&fx.dir()),
        ),
        // r1 -> r2 -> ../../host, written as r1/dir/...
        (
            Box::new(|l: &mut LayerBuilder| {
                l.symlink("r2", "../../host").symlink("r1", "r2");
            }),
            "r1/dir",
            "host/dir".into(),
        ),
        // deep/x/y -> ../../../../../../.. (climbs past the root), p -> deep/x/y<host dir>.
        (
            Box::new(|l: &mut LayerBuilder| {
                l.dir("deep/x")
                    .symlink("deep/x/y", "../../../../../../..")
                    .symlink("p", format!("deep/x/y{dir}"));
            }),
            "p",
            fx.rel(&fx.dir()),
        ),
    ];
    for (chain, via, inside) in &chains {
        let l = layer(|l| {
            chain(l);
            l.file(format!("{via}/evil"), "EVIL").file(format!("{via}/keep"), "EVIL");
        });
        let (root, r) = fx.unpack(&[&l]);
        if confined_or_refused(r).is_some() {
            assert_eq!(read(root.join(inside).join("evil")), "EVIL");
        }
        confined_or_refused(fx.prepare(&[&l]));
        // With the chain's end present inside the image, the writes land there.
        let l = layer(|l| {
            l.dir(format!("{inside}/"));
            chain(l);
            l.file(format!("{via}/evil"), "EVIL");
        });
        let (root, r) = fx.unpack(&[&l]);
        r.unwrap();
        assert_eq!(read(root.join(inside).join("evil")), "EVIL");
        fx.check_host();
    }
    // A loop is an error, never a write elsewhere.
    let l = layer(|l| {
        l.symlink("loop1", "loop2").symlink("loop2", "/loop1").file("loop1/x", "EVIL");
    });
    let (_, r) = fx.unpack(&[&l]);
    assert!(matches!(r, Err(ImageError::Entry { .. } | ImageError::Io { .. })), "{r:?}");
    fx.check_host();
}

#[test]
fn writes_through_symlink_from_lower_layer_stay_inside() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.symlink("l", fx.abs(&fx.dir())).symlink("r", "../../host/dir").symlink("c", fx.climb(&fx.dir()));
    });
    let upper = layer(|l| {
        l.file("l/evil", "EVIL").file("r/evil", "EVIL").file("c/keep", "EVIL").dir_mode("r/sub", 0o777);
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    if confined_or_refused(r).is_some() {
        assert_eq!(read(root.join(fx.rel(&fx.dir())).join("evil")), "EVIL");
    }
    // In the store each layer is its own directory: the upper layer's `l` is a plain directory.
    let r = fx.prepare(&[&lower, &upper]).unwrap();
    assert_eq!(read(r.layers()[1].join("l/evil")), "EVIL");
    assert_eq!(kind(r.layers()[0].join("l")), "symlink");
    fx.check_host();
}

#[test]
fn file_over_symlink_replaces_link_without_truncating_target() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.symlink("f", fx.abs(&fx.file()))
            .file("f", "")
            .symlink("g", "../../host/etc/passwd")
            .file_mode("g", "new", 0o600)
            .symlink("k", fx.climb(&fx.dir().join("keep")))
            .entry(entry("k", b'0', |e| e.mode = 0o777));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!((kind(root.join("f")), read(root.join("f"))), ("file", String::new()));
        assert_eq!(
            (kind(root.join("g")), read(root.join("g")), mode(root.join("g"))),
            ("file", "new".into(), 0o600)
        );
        assert_eq!((kind(root.join("k")), mode(root.join("k"))), ("file", 0o777));
    }
    // The link in a lower layer, the empty file in the next.
    let lower = layer(|l| {
        l.symlink("h", fx.climb(&fx.file())).symlink("a", fx.abs(&fx.file()));
    });
    let upper = layer(|l| {
        l.file_mode("h", "", 0o600).file("a", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!((kind(root.join("h")), lmeta(root.join("h")).len(), mode(root.join("h"))), ("file", 0, 0o600));
    assert_eq!((kind(root.join("a")), lmeta(root.join("a")).len()), ("file", 0));
    fx.check_host();
}

#[test]
fn symlinks_named_dotdot_or_empty_are_refused() {
    let fx = Fx::new();
    let dir = fx.abs(&fx.dir());
    for name in ["..", "a/..", "../x", "a/../.."] {
        let l = layer(|l| {
            l.dir("a").symlink(name, &dir).file(format!("{name}/evil"), "EVIL");
        });
        refused(fx.unpack(&[&l]).1, "`..`");
        refused(fx.prepare(&[&l]), "`..`");
    }
    // An empty name is the root itself.
    let l = layer(|l| {
        l.symlink("", &dir).file("evil", "EVIL");
    });
    refused(fx.unpack(&[&l]).1, "root");
    refused(fx.prepare(&[&l]), "root");
    // An empty target.
    let l = layer(|l| {
        l.symlink("e", "");
    });
    refused(fx.unpack(&[&l]).1, "\"e\"");
    fx.check_host();
}

#[test]
fn directory_over_symlink_becomes_a_real_directory() {
    // tar-rs 2026 advisory: a directory entry over a symlink must not chmod the link's target.
    let fx = Fx::new();
    let dir = fx.abs(&fx.dir());
    let l = layer(|l| {
        l.symlink("d", &dir)
            .dir_mode("d", 0o700)
            .file("d/x", "x")
            .symlink("e", "../../host/dir")
            .dir_mode("e/", 0o777)
            .symlink("f", fx.climb(&fx.dir()))
            .entry(entry("f", b'5', |e| {
                e.mode = 0o700;
                e.mtime = 1_000_000_000;
            }));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(
            (kind(root.join("d")), mode(root.join("d")), read(root.join("d/x"))),
            ("dir", 0o700, "x".into())
        );
        assert_eq!((kind(root.join("e")), mode(root.join("e"))), ("dir", 0o777));
        assert_eq!(
            (kind(root.join("f")), mode(root.join("f")), lmeta(root.join("f")).mtime()),
            ("dir", 0o700, 1_000_000_000)
        );
    }
    // Across layers.
    let lower = layer(|l| {
        l.symlink("d", &dir);
    });
    let upper = layer(|l| {
        l.dir_mode("d", 0o700).file("d/y", "y");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(
        (kind(root.join("d")), mode(root.join("d")), read(root.join("d/y"))),
        ("dir", 0o700, "y".into())
    );
    fx.check_host();
}

#[test]
fn magic_proc_links_are_never_followed() {
    let fx = Fx::new();
    let dir = fx.abs(&fx.dir());
    let file = fx.abs(&fx.file());
    let cases: Vec<LayerBuilder> = vec![
        layer(|l| {
            l.symlink("p", "/proc/self/root")
                .file(format!("p{dir}/evil"), "EVIL")
                .file(format!("p{dir}/keep"), "EVIL");
        }),
        layer(|l| {
            l.symlink("t", "/proc/thread-self/root").dir(format!("t{dir}/newdir"));
        }),
        layer(|l| {
            l.symlink("q", format!("/proc/self/root{dir}")).file("q/evil", "EVIL");
        }),
        layer(|l| {
            l.symlink("q", format!("../../../../../../proc/self/root{dir}")).file("q/keep", "EVIL");
        }),
        layer(|l| {
            l.symlink("p", "/proc/self/root").hardlink("h", format!("p{file}"));
        }),
        layer(|l| {
            l.symlink("f", format!("/proc/self/root{file}")).file("f", "");
        }),
    ];
    for l in &cases {
        if confined_or_refused(fx.unpack(&[l]).1).is_some() {
            fx.check_host();
        }
        confined_or_refused(fx.prepare(&[l]));
    }
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Hardlinks
// ---------------------------------------------------------------------------------------------

#[test]
fn hardlinks_leaving_the_root_are_refused_or_resolved_inside() {
    let fx = Fx::new();
    let file = fx.abs(&fx.file());
    for target in [file.clone(), "../../host/etc/passwd".into(), fx.climb(&fx.file()), format!("/..{file}")] {
        let l = layer(|l| {
            l.file("ok", "ok").hardlink("h", &target);
        });
        let (root, r) = fx.unpack(&[&l]);
        if confined_or_refused(r).is_some() {
            assert_ne!(lmeta(root.join("h")).ino(), lmeta(fx.file()).ino());
        }
        confined_or_refused(fx.prepare(&[&l]));
        fx.check_host();
    }
    // An absolute linkname resolves inside the image.
    let l = layer(|l| {
        l.file(&file, "INSIDE").hardlink("h", &file);
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        let inside = root.join(fx.rel(&fx.file()));
        assert_eq!(lmeta(root.join("h")).ino(), lmeta(&inside).ino());
        assert_eq!((read(root.join("h")), lmeta(&inside).nlink()), ("INSIDE".into(), 2));
    }
    fx.check_host();
}

#[test]
fn hardlinks_through_planted_symlink_dirs_stay_inside() {
    let fx = Fx::new();
    let etc = fx.abs(&fx.base.join("host/etc"));
    let cases = [
        layer(|l| {
            l.symlink("s", &etc).hardlink("h", "s/passwd");
        }),
        layer(|l| {
            l.symlink("r", "../../host/etc").hardlink("h", "r/passwd");
        }),
        layer(|l| {
            l.symlink("c", fx.climb(&fx.base.join("host"))).hardlink("h", "c/etc/passwd");
        }),
        layer(|l| {
            l.symlink("s", &etc).file("x", "x").hardlink("s/passwd", "x");
        }),
    ];
    for l in &cases {
        let (root, r) = fx.unpack(&[l]);
        if confined_or_refused(r).is_some() && exists(root.join("h")) {
            assert_ne!(lmeta(root.join("h")).ino(), lmeta(fx.file()).ino());
        }
        confined_or_refused(fx.prepare(&[l]));
        fx.check_host();
    }
    // The link planted in a lower layer.
    let lower = layer(|l| {
        l.symlink("s", &etc).symlink("r", "../../host/etc");
    });
    let upper = layer(|l| {
        l.hardlink("h", "s/passwd").hardlink("h2", "r/passwd");
    });
    confined_or_refused(fx.unpack(&[&lower, &upper]).1);
    confined_or_refused(fx.prepare(&[&lower, &upper]));
    // Through a link whose target is inside the image, the hardlink resolves there.
    let l = layer(|l| {
        l.file("real/passwd", "REAL").symlink("s", "/real").hardlink("h", "s/passwd");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    assert_eq!(lmeta(root.join("h")).ino(), lmeta(root.join("real/passwd")).ino());
    assert_eq!(read(root.join("h")), "REAL");
    fx.check_host();
}

#[test]
fn hardlink_to_symlink_never_changes_the_symlink_target() {
    // containerd CVE-2021-32760: chmod/chown applied to a hardlinked symlink followed it.
    let fx = Fx::new();
    let file = fx.abs(&fx.file());
    let lower = layer(|l| {
        l.symlink("s", &file)
            .entry(entry("h", b'1', |e| {
                e.link = b"s".to_vec();
                e.mode = 0o777;
                e.uid = 1234;
                e.gid = 1234;
            }))
            .entry(entry("h2", b'1', |e| {
                e.link = b"h".to_vec();
                e.mode = 0o4777;
            }))
            .symlink("r", "../../host/etc/passwd")
            .entry(entry("hr", b'1', |e| {
                e.link = b"r".to_vec();
                e.mode = 0o777;
            }));
    });
    let upper = layer(|l| {
        l.file_mode("h", "X", 0o777).dir_mode("s", 0o777).entry(entry("hr", b'0', |e| e.mode = 0o6777));
    });
    let (root, r) = fx.unpack(&[&lower]);
    r.unwrap();
    let store = fx.prepare(&[&lower]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        for link in ["h", "h2"] {
            assert_eq!(kind(root.join(link)), "symlink");
            assert_eq!(fs::read_link(root.join(link)).unwrap(), fx.file());
            assert_eq!(lmeta(root.join(link)).ino(), lmeta(root.join("s")).ino());
        }
    }
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(
        (kind(root.join("h")), mode(root.join("h")), read(root.join("h"))),
        ("file", 0o777, "X".into())
    );
    assert_eq!((kind(root.join("s")), kind(root.join("h2"))), ("dir", "symlink"));
    fx.prepare(&[&lower, &upper]).unwrap();
    fx.check_host();
}

#[test]
fn hardlink_to_a_later_entry_is_refused() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.hardlink("h", "later").file("later", "L");
    });
    refused(fx.unpack(&[&l]).1, "\"h\": hardlink target \"later\" does not exist");
    refused(fx.prepare(&[&l]), "\"h\"");
    for (name, target) in [("self", "self"), ("d/x", "d"), ("root", "./")] {
        let l = layer(|l| {
            l.dir("d").file("ok", "ok").hardlink(name, target);
        });
        refused(fx.unpack(&[&l]).1, &format!("{name:?}"));
        refused(fx.prepare(&[&l]), &format!("{name:?}"));
    }
    fx.check_host();
}

#[test]
fn hardlink_over_a_lower_layer_file_relinks_it() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("a", "AAA").file("b", "BBB").hardlink("b2", "b");
    });
    let upper = layer(|l| {
        l.hardlink("b", "a");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(lmeta(root.join("b")).ino(), lmeta(root.join("a")).ino());
    assert_eq!((read(root.join("b")), lmeta(root.join("a")).nlink()), ("AAA".into(), 2));
    // The old inode lives on under its other name only.
    assert_eq!((read(root.join("b2")), lmeta(root.join("b2")).nlink()), ("BBB".into(), 1));
    // In the store a hardlink's target must be in the same layer.
    refused(fx.prepare(&[&lower, &upper]), "in this layer");
    fx.check_host();
}

#[test]
fn hardlink_whose_parents_have_no_entries_works() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("x/y/t", "T").hardlink("p/q/h", "x/y/t").hardlink("/r/s/h2", "/./x//y/t");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        let ino = lmeta(root.join("x/y/t")).ino();
        assert_eq!((lmeta(root.join("p/q/h")).ino(), lmeta(root.join("r/s/h2")).ino()), (ino, ino));
        assert_eq!((mode(root.join("p")), mode(root.join("p/q"))), (0o755, 0o755));
    }
    fx.check_host();
}

#[test]
fn hardlink_entries_never_chmod_or_chown_the_shared_inode() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("t", b'0', |e| {
            e.data = b"T".to_vec();
            e.mode = 0o640;
            e.uid = 1000;
            e.gid = 1001;
            e.mtime = 1_500_000_000;
        }))
        .entry(entry("h", b'1', |e| {
            e.link = b"t".to_vec();
            e.mode = 0o777;
            e.uid = 2000;
            e.gid = 2001;
            e.mtime = 1_700_000_000;
        }))
        .entry(entry("h2", b'1', |e| {
            e.link = b"h".to_vec();
            e.mode = 0o4755;
        }));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        let m = lmeta(root.join("t"));
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.nlink()), (0o640, 1_500_000_000, 3));
        assert_eq!(lmeta(root.join("h")).ino(), m.ino());
        if common::is_root() {
            assert_eq!((m.uid(), m.gid()), (1000, 1001));
        } else {
            assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
        }
    }
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Whiteouts
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_whiteouts_are_refused() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("a", "a").dir("d").file("d/x", "x");
    });
    for name in [".wh..", ".wh...", ".wh.", "d/.wh..", "d/.wh...", "d/.wh.", "d/.wh..wh.x"] {
        let l = layer(|l| {
            l.file(name, "");
        });
        refused(fx.unpack(&[&lower, &l]).1, "malformed whiteout");
        refused(fx.prepare(&[&lower, &l]), "malformed whiteout");
    }
    fx.check_host();
}

#[test]
fn whiteout_of_a_symlink_removes_the_link_not_its_target() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.symlink("l", fx.abs(&fx.file()))
            .symlink("m", fx.abs(&fx.dir()))
            .symlink("r", "../../host/etc/passwd")
            .symlink("rd", "../../host/dir")
            .file("keep", "keep");
    });
    let upper = layer(|l| {
        l.file(".wh.l", "").file(".wh.m", "").file(".wh.r", "").file(".wh.rd", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(listing(&root), ["keep file"]);
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    for name in ["l", "m", "r", "rd"] {
        assert!(is_whiteout(store.layers()[1].join(name)), "{name} is no whiteout in the store");
        assert_eq!(kind(store.layers()[0].join(name)), "symlink");
    }
    fx.check_host();
}

#[test]
fn whiteouts_through_a_symlinked_directory_stay_inside() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.symlink("s", fx.abs(&fx.dir()))
            .symlink("r", "../../host/dir")
            .symlink("e", fx.abs(&fx.base.join("host/etc")));
    });
    let upper = layer(|l| {
        l.file("s/.wh.keep", "")
            .file("r/.wh.keep", "")
            .file("s/.wh..wh..opq", "")
            .file("r/.wh..wh..opq", "")
            .file("e/.wh.passwd", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    if confined_or_refused(r).is_some() {
        assert_eq!((kind(root.join("s")), kind(root.join("r"))), ("symlink", "symlink"));
    }
    if let Some(r) = confined_or_refused(fx.prepare(&[&lower, &upper])) {
        assert!(is_whiteout(r.layers()[1].join("s/keep")));
        assert!(is_whiteout(r.layers()[1].join("e/passwd")));
    }
    fx.check_host();
}

#[test]
fn whiteout_prefix_in_a_directory_component_is_an_ordinary_name() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("d/f", "F");
    });
    let upper = layer(|l| {
        l.file(".wh.d/g", "G").file("a/.wh.b/c", "C").dir(".wh.e/f/");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(
        listing(&root),
        [
            ".wh.d dir",
            ".wh.d/g file",
            ".wh.e dir",
            ".wh.e/f dir",
            "a dir",
            "a/.wh.b dir",
            "a/.wh.b/c file",
            "d dir",
            "d/f file"
        ]
    );
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    assert_eq!(
        listing(&store.layers()[1]),
        [".wh.d dir", ".wh.d/g file", ".wh.e dir", ".wh.e/f dir", "a dir", "a/.wh.b dir", "a/.wh.b/c file"]
    );
    fx.check_host();
}

#[test]
fn whiteout_of_a_missing_path_is_fine() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("x", "x");
    });
    let upper = layer(|l| {
        l.file(".wh.nothere", "").file("nodir/.wh.x", "").file("nodir2/.wh..wh..opq", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(listing(&root), ["x file"]);
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    assert!(is_whiteout(store.layers()[1].join("nothere")));
    assert!(is_whiteout(store.layers()[1].join("nodir/x")));
    fx.check_host();
}

#[test]
fn opaque_marker_after_new_children_keeps_them() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("d/old", "old")
            .file("d/sub/oldsub", "o")
            .file("d/keep", "OLD")
            .file("e/x", "x")
            .dir("d/gone/deeper");
    });
    let upper = layer(|l| {
        l.dir("d/")
            .file("d/new", "new")
            .file("d/keep", "NEW")
            .dir("d/sub2/")
            .file("d/sub2/n", "n")
            .dir("d/sub/")
            .file("d/sub/newsub", "ns")
            .file("d/.wh..wh..opq", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(
        listing(&root),
        [
            "d dir",
            "d/keep file",
            "d/new file",
            "d/sub dir",
            "d/sub/newsub file",
            "d/sub2 dir",
            "d/sub2/n file",
            "e dir",
            "e/x file"
        ]
    );
    assert_eq!(read(root.join("d/keep")), "NEW");
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    let d = store.layers()[1].join("d");
    assert_eq!(oci::xattr_get(&d, "user.overlay.opaque"), b"y");
    if common::is_root() {
        assert_eq!(oci::xattr_get(&d, "trusted.overlay.opaque"), b"y");
    }
    assert_eq!(
        listing(&d),
        ["keep file", "new file", "sub dir", "sub/newsub file", "sub2 dir", "sub2/n file"]
    );
    fx.check_host();
}

#[test]
fn opaque_marker_keeps_new_children_of_a_lower_subdirectory() {
    // The new child's parent `d/sub` has no entry in the upper layer: it exists from the lower
    // layer. The opaque marker hides `d/sub/oldsub` but must keep `d/sub/newsub`.
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("d/sub/oldsub", "o").file("d/old", "old");
    });
    let upper = layer(|l| {
        l.file("d/sub/newsub", "ns").file("d/.wh..wh..opq", "");
    });
    // The store gets this right: the upper layer holds `d` (opaque) with `sub/newsub`.
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    let d = store.layers()[1].join("d");
    assert_eq!(oci::xattr_get(&d, "user.overlay.opaque"), b"y");
    assert_eq!(listing(&d), ["sub dir", "sub/newsub file"]);
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    fx.check_host();
    assert_eq!(listing(&root), ["d dir", "d/sub dir", "d/sub/newsub file"]);
}

#[test]
fn whiteout_of_a_path_added_earlier_in_the_same_layer_keeps_it() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("a", "old").file("s", "old");
    });
    let upper = layer(|l| {
        l.file("a", "new")
            .file(".wh.a", "")
            .symlink("s", "a")
            .file(".wh.s", "")
            .file("n", "n")
            .file(".wh.n", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(listing(&root), ["a file", "n file", "s symlink"]);
    assert_eq!(read(root.join("a")), "new");
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    assert_eq!(listing(&store.layers()[1]), ["a file", "n file", "s symlink"]);
    fx.check_host();
}

#[test]
fn overlay_xattrs_in_layers_are_never_applied_raw() {
    let fx = Fx::new();
    let x = |k: &str, v: &str| (format!("SCHILY.xattr.{k}"), v.as_bytes().to_vec());
    let lower = layer(|l| {
        l.file("d/lower", "l");
    });
    let upper = layer(|l| {
        l.entry(entry("d", b'5', |e| {
            e.pax = vec![x("user.overlay.opaque", "y"), x("trusted.overlay.opaque", "y")]
        }))
        .entry(entry("f", b'0', |e| {
            e.pax =
                vec![x("user.overlay.redirect", "/d"), x("trusted.overlay.origin", "o"), x("user.ok", "1")];
        }))
        .entry(entry("g", b'0', |e| e.pax = vec![x("user.overlay.metacopy", "")]));
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    let flat = r.unwrap();
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    for (root, report) in [(root, flat.report()), (store.layers()[1].clone(), store.report())] {
        for p in ["d", "f", "g"] {
            let names = oci::xattr_names(&root.join(p));
            assert!(!names.iter().any(|n| n.contains("overlay.")), "{p} has {names:?}");
        }
        assert_eq!(oci::xattr_get(&root.join("f"), "user.ok"), b"1");
        assert!(report.skipped_xattrs >= 5, "{report:?}");
        for (p, name) in [
            ("d", "user.overlay.opaque"),
            ("d", "trusted.overlay.opaque"),
            ("f", "user.overlay.redirect"),
            ("f", "trusted.overlay.origin"),
            ("g", "user.overlay.metacopy"),
        ] {
            assert!(
                report
                    .skipped_xattr_list
                    .iter()
                    .any(|(path, why)| path == Path::new(p) && why.starts_with(name)),
                "{p} {name} not reported: {:?}",
                report.skipped_xattr_list
            );
        }
    }
    let (root, _) = fx.unpack(&[&lower, &upper]);
    assert_eq!(read(root.join("d/lower")), "l");
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

#[test]
fn type_changes_across_layers_only_merge_dir_over_dir() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.file("fd", "file")
            .dir("df/")
            .file("df/c", "c")
            .dir("ds/")
            .file("ds/c", "c")
            .symlink("sd", "target")
            .symlink("sf", "target")
            .file("fs", "file")
            .dir("dd/")
            .file("dd/lower", "lower")
            .dir("target/")
            .file("target/t", "t")
            .symlink("ss", "target");
    });
    let upper = layer(|l| {
        l.dir("fd/")
            .file("fd/n", "n")
            .file("df", "F")
            .symlink("ds", "target")
            .dir("sd/")
            .file("sd/n", "n")
            .file("sf", "SF")
            .symlink("fs", "target")
            .dir_mode("dd/", 0o750)
            .file("dd/upper", "upper")
            .symlink("ss", "fd");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    assert_eq!(
        listing(&root),
        [
            "dd dir",
            "dd/lower file",
            "dd/upper file",
            "df file",
            "ds symlink",
            "fd dir",
            "fd/n file",
            "fs symlink",
            "sd dir",
            "sd/n file",
            "sf file",
            "ss symlink",
            "target dir",
            "target/t file"
        ]
    );
    assert_eq!(
        (read(root.join("df")), read(root.join("sf")), mode(root.join("dd"))),
        ("F".into(), "SF".into(), 0o750)
    );
    assert_eq!(fs::read_link(root.join("ss")).unwrap(), Path::new("fd"));
    // A file replacing a directory does not leave its children for a directory after it.
    let third = layer(|l| {
        l.dir("df/").file("df/new", "new");
    });
    let (root, r) = fx.unpack(&[&lower, &upper, &third]);
    r.unwrap();
    assert!(!exists(root.join("df/c")));
    assert_eq!(read(root.join("df/new")), "new");
    fx.check_host();
}

#[test]
fn missing_parent_directories_are_created() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("a/b/c/f", "F").dir_mode("x/y/", 0o700).symlink("m/n/l", "../../a").entry(entry(
            "p/q/fifo",
            b'6',
            |_| {},
        ));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        for d in ["a", "a/b", "a/b/c", "x", "m", "m/n", "p", "p/q"] {
            assert_eq!((kind(root.join(d)), mode(root.join(d))), ("dir", 0o755), "{d}");
        }
        assert_eq!(mode(root.join("x/y")), 0o700);
        assert_eq!(read(root.join("m/n/l/b/c/f")), "F");
        assert_eq!(kind(root.join("p/q/fifo")), "fifo");
    }
    fx.check_host();
}

#[test]
fn restrictive_directory_modes_are_applied_after_their_children() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.dir_mode("z/", 0o000)
            .file("z/f", "zf")
            .dir_mode("z/sub/", 0o555)
            .file("z/sub/g", "g")
            .dir_mode("r/", 0o555)
            .file("r/f", "rf")
            .dir_mode("r/w/", 0o000);
    });
    let upper = layer(|l| {
        l.file("r/f2", "rf2").file("z/sub/h", "h");
    });
    let (root, r) = fx.unpack(&[&l, &upper]);
    r.unwrap();
    let store = fx.prepare(&[&l, &upper]).unwrap();
    for (root, flat) in [(root, true), (store.layers()[0].clone(), false)] {
        assert_eq!((mode(root.join("z")), mode(root.join("r"))), (0o000, 0o555), "{}", root.display());
        // Open up to look inside (as nobody the modes apply to us too).
        fs::set_permissions(root.join("z"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!((mode(root.join("z/sub")), mode(root.join("r/w"))), (0o555, 0o000));
        assert_eq!(
            (read(root.join("z/f")), read(root.join("z/sub/g")), read(root.join("r/f"))),
            ("zf".into(), "g".into(), "rf".into())
        );
        if flat {
            // The upper layer wrote into the lower layer's 0555 and 0000 directories.
            assert_eq!((read(root.join("z/sub/h")), read(root.join("r/f2"))), ("h".into(), "rf2".into()));
        }
    }
    // The store's upper layer holds only its own files, in directories it implied.
    let top = &store.layers()[1];
    assert_eq!(listing(top), ["r dir", "r/f2 file", "z dir", "z/sub dir", "z/sub/h file"]);
    fx.check_host();
}

#[test]
fn directory_mtimes_match_their_headers_after_children_are_written() {
    let fx = Fx::new();
    let dir = |name: &str, mtime: u64| entry(name, b'5', |e| e.mtime = mtime);
    let l = layer(|l| {
        l.entry(dir("m/", 1_234_567_890))
            .file("m/f", "f")
            .entry(dir("m/sub/", 1_111_111_111))
            .file("m/sub/g", "g")
            .symlink("m/sub/l", "g")
            .entry(entry("m/sub/p", b'6', |_| {}))
            .entry(dir("m/sub/deeper/", 1_000_000_001))
            .file("m/sub/deeper/x", "x")
            .hardlink("m/sub/deeper/h", "m/f")
            .entry(dir("z/", 1_500_000_000))
            .entry(entry("z/f", b'0', |e| e.mtime = 1_600_000_001));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        for (p, t) in [
            ("m", 1_234_567_890),
            ("m/sub", 1_111_111_111),
            ("m/sub/deeper", 1_000_000_001),
            ("z", 1_500_000_000),
            ("z/f", 1_600_000_001),
        ] {
            assert_eq!(lmeta(root.join(p)).mtime(), t, "{p}");
        }
    }
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Special files
// ---------------------------------------------------------------------------------------------

#[test]
fn devices_are_created_exactly_as_root_and_reported_rootless() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("dev/null", b'3', |e| {
            e.dev = (1, 3);
            e.mode = 0o666;
        }))
        .entry(entry("dev/loop9", b'4', |e| {
            e.dev = (7, 9);
            e.mode = 0o660;
            e.uid = 0;
            e.gid = 6;
        }))
        .file("dev/ok", "ok");
    });
    let (root, r) = fx.unpack(&[&l]);
    let flat = r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for (stored, root, report) in
        [(false, root, flat.report()), (true, store.layers()[0].clone(), store.report())]
    {
        if common::is_root() {
            let m = lmeta(root.join("dev/null"));
            assert!(m.file_type().is_char_device());
            assert_eq!((m.rdev(), m.mode() & 0o7777, m.uid()), (libc::makedev(1, 3), 0o666, 0));
            let m = lmeta(root.join("dev/loop9"));
            assert!(m.file_type().is_block_device());
            assert_eq!((m.rdev(), m.mode() & 0o7777, m.gid()), (libc::makedev(7, 9), 0o660, 6));
            assert_eq!(report.skipped_devices, 0);
        } else {
            // Nothing there: in the store, a whiteout hides what lower layers had.
            for dev in ["dev/null", "dev/loop9"] {
                assert!(if stored { is_whiteout(root.join(dev)) } else { !exists(root.join(dev)) }, "{dev}");
            }
            assert_eq!(report.skipped_devices, 2);
            assert_eq!(report.skipped_device_list, [PathBuf::from("dev/null"), PathBuf::from("dev/loop9")]);
        }
        assert_eq!(read(root.join("dev/ok")), "ok");
    }
    fx.check_host();
}

#[test]
fn a_device_skipped_rootless_still_replaces_the_lower_file() {
    if common::is_root() {
        return common::skip(
            "a_device_skipped_rootless_still_replaces_the_lower_file",
            "root creates the device (devices_are_created_exactly_as_root_and_reported_rootless)",
        );
    }
    let fx = Fx::new();
    let lower = layer(|l| {
        l.dir("dev").file("dev/x", "lower file").dir("dev/d").file("dev/d/f", "lower tree");
    });
    let upper = layer(|l| {
        l.entry(entry("dev/x", b'3', |e| e.dev = (1, 3))).entry(entry("dev/d", b'4', |e| e.dev = (7, 1)));
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    assert_eq!(r.unwrap().report().skipped_devices, 2);
    assert!(!exists(root.join("dev/x")) && !exists(root.join("dev/d")), "the lower entries show through");
    let store = fx.prepare(&[&lower, &upper]).unwrap();
    assert!(is_whiteout(store.layers()[1].join("dev/x")) && is_whiteout(store.layers()[1].join("dev/d")));
    fx.check_host();
}

#[test]
fn device_numbers_out_of_range_are_refused() {
    let fx = Fx::new();
    for (kind, dev) in
        [(b'3', (4096, 0)), (b'4', (4096, 1)), (b'3', (1, 1 << 20)), (b'3', (0o7777777, 0o7777777))]
    {
        let l = layer(|l| {
            l.file("ok", "ok").entry(entry("dev/bad", kind, |e| e.dev = dev));
        });
        refused(fx.unpack(&[&l]).1, "out of range");
        refused(fx.prepare(&[&l]), "\"dev/bad\"");
    }
    // The largest valid numbers are fine.
    let l = layer(|l| {
        l.entry(entry("dev/max", b'3', |e| e.dev = (4095, (1 << 20) - 1)));
    });
    let (root, r) = fx.unpack(&[&l]);
    let r = r.unwrap();
    if common::is_root() {
        assert_eq!(lmeta(root.join("dev/max")).rdev(), libc::makedev(4095, (1 << 20) - 1));
    } else {
        assert_eq!(r.report().skipped_device_list, [PathBuf::from("dev/max")]);
    }
    fx.check_host();
}

#[test]
fn fifos_are_created() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("run/fifo", b'6', |e| {
            e.mode = 0o640;
            e.mtime = 1_400_000_000;
        }));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        let m = lmeta(root.join("run/fifo"));
        assert!(m.file_type().is_fifo());
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_400_000_000));
    }
    fx.check_host();
}

#[test]
fn unknown_entry_types_are_refused() {
    let fx = Fx::new();
    for t in [b'Z', b'A', b'V', b'M'] {
        let l = layer(|l| {
            l.file("ok", "ok").entry(entry("weird", t, |e| e.data = b"data".to_vec()));
        });
        refused(fx.unpack(&[&l]).1, "\"weird\": unsupported entry type");
        refused(fx.prepare(&[&l]), "\"weird\"");
    }
    fx.check_host();
}

#[test]
fn setuid_bits_are_preserved_and_the_destination_is_private() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file_mode("bin/su", "su", 0o4755)
            .file_mode("bin/sg", "sg", 0o2755)
            .dir_mode("tmp/", 0o1777)
            .dir_mode("shared/", 0o2775);
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    assert_eq!(mode(root.parent().unwrap()), 0o700);
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(
            [
                mode(root.join("bin/su")),
                mode(root.join("bin/sg")),
                mode(root.join("tmp")),
                mode(root.join("shared"))
            ],
            [0o4755, 0o2755, 0o1777, 0o2775]
        );
    }
    fx.check_host();
}

#[test]
fn owner_ids_out_of_range_are_refused() {
    let fx = Fx::new();
    let cases = [
        entry("u", b'0', |e| e.uid = 4_294_967_295),
        entry("g", b'0', |e| e.gid = 4_294_967_295),
        entry("u", b'5', |e| e.uid = 4_294_967_296 + 5),
        entry("g", b'2', |e| {
            e.link = b"x".to_vec();
            e.gid = 1 << 40;
        }),
    ];
    for e in cases {
        let name = String::from_utf8(e.name.clone()).unwrap();
        let what = if name == "u" { "uid" } else { "gid" };
        let l = layer(|l| {
            l.file("ok", "ok").entry(e.clone());
        });
        refused(fx.unpack(&[&l]).1, &format!("{name:?}: {what} "));
        refused(fx.prepare(&[&l]), &format!("{name:?}"));
    }
    // The largest valid id is fine.
    let l = layer(|l| {
        l.entry(entry("big", b'0', |e| {
            e.uid = 4_294_967_294;
            e.gid = 4_294_967_294;
        }));
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    if common::is_root() {
        assert_eq!(lmeta(root.join("big")).uid(), 4_294_967_294);
    }
    fx.check_host();
}

#[test]
fn xattr_edge_cases_are_tolerated_and_reported() {
    let fx = Fx::new();
    let x = |k: &str, v: &[u8]| (format!("SCHILY.xattr.{k}"), v.to_vec());
    let big = vec![b'v'; 70_000];
    let l = layer(|l| {
        l.entry(entry("f", b'0', |e| {
            e.pax = vec![
                x("foo", b"bar"),
                x("user.big", &big),
                x("user.ok", b"1"),
                x("trusted.t", b"t"),
                x("user.empty", b""),
            ];
        }))
        .entry(entry("d", b'5', |e| e.pax = vec![x("nonamespace", b"x"), x("user.dirok", b"2")]))
        .entry(entry("l", b'2', |e| {
            e.link = b"f".to_vec();
            e.pax = vec![x("user.onlink", b"3")];
        }));
    });
    let (root, r) = fx.unpack(&[&l]);
    let flat = r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for (root, report) in [(root, flat.report()), (store.layers()[0].clone(), store.report())] {
        assert_eq!(oci::xattr_get(&root.join("f"), "user.ok"), b"1");
        assert!(oci::xattr_names(&root.join("f")).contains(&"user.empty".to_string()));
        assert_eq!(oci::xattr_get(&root.join("d"), "user.dirok"), b"2");
        assert!(!oci::xattr_names(&root.join("f")).contains(&"user.big".to_string()));
        let reported = |p: &str, name: &str| {
            report.skipped_xattr_list.iter().any(|(path, why)| path == Path::new(p) && why.starts_with(name))
        };
        for (p, name) in [("f", "foo"), ("f", "user.big"), ("d", "nonamespace"), ("l", "")] {
            assert!(reported(p, name), "{p} {name} not reported: {:?}", report.skipped_xattr_list);
        }
        if common::is_root() {
            assert_eq!(oci::xattr_get(&root.join("f"), "trusted.t"), b"t");
            assert_eq!(report.skipped_xattrs, 4, "{:?}", report.skipped_xattr_list);
        } else {
            assert!(reported("f", "trusted.t"), "{:?}", report.skipped_xattr_list);
            assert_eq!(report.skipped_xattrs, 5, "{:?}", report.skipped_xattr_list);
        }
    }
    fx.check_host();
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

#[test]
fn pax_size_wins_over_the_ustar_size_field() {
    // Go's archive/tar and libarchive take the PAX `size` record over the header field.
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("f", b'0', |e| {
            e.header_size = Some(0);
            e.pax = vec![("size".into(), b"5".to_vec())];
            e.data = b"hello".to_vec();
        }))
        .file("next", "N")
        .entry(entry("g", b'0', |e| {
            e.header_size = Some(1);
            e.pax = vec![("size".into(), b"600".to_vec())];
            e.data = noise(600, 7);
        }))
        .file("last", "L");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let store = fx.prepare(&[&l]).unwrap();
    for root in [root, store.layers()[0].clone()] {
        assert_eq!(
            (read(root.join("f")), read(root.join("next")), read(root.join("last"))),
            ("hello".into(), "N".into(), "L".into())
        );
        assert_eq!(fs::read(root.join("g")).unwrap(), noise(600, 7));
        assert_eq!(listing(&root), ["f file", "g file", "last file", "next file"]);
    }
    fx.check_host();
}

/// A layer of some incompressible files (so that cutting its blob cuts real data).
fn bulky() -> LayerBuilder {
    layer(|l| {
        l.dir("d");
        for i in 0..8 {
            l.file(format!("d/f{i}"), noise(20_000, i));
        }
    })
}

/// A layer spec whose descriptor (digest and size) matches `blob`, a damaged form of `tar`.
fn damaged(tar: Vec<u8>, comp: Comp, blob: Vec<u8>) -> LayerSpec {
    let mut s = LayerSpec::new(tar).comp(comp);
    s.digest = Some(digest_of(&blob));
    s.size = Some(blob.len() as i64);
    s.tamper_blob = Some(blob);
    s
}

/// Unpacks and prepares the image of `specs`; both must fail with an error `ok` accepts.
#[track_caller]
fn fails_cleanly(fx: &Fx, specs: &[LayerSpec], limits: UnpackLimits, ok: impl Fn(&ImageError) -> bool) {
    let image = fx.image_of(specs).expect("image");
    let (_, r) = fx.unpack_image(&image, limits);
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("unpack: unexpected result {other:?}"),
    }
    match fx.prepare_image(&image, limits) {
        Err(e) if ok(&e) => {}
        other => panic!("prepare: unexpected result {other:?}"),
    }
}

#[test]
fn truncated_blobs_fail_cleanly_even_when_their_digest_matches() {
    let fx = Fx::new();
    let tar = bulky().tar();
    for comp in [Comp::Gzip, Comp::Zstd, Comp::None] {
        let blob = oci::compress(&tar, comp);
        for cut in [blob.len() / 2, blob.len() - 4, 700] {
            let spec = damaged(tar.clone(), comp, blob[..cut].to_vec());
            fails_cleanly(&fx, &[spec], UnpackLimits::default(), |e| match e {
                ImageError::Format { .. } => true,
                // An uncompressed tar cut at a block boundary reads as a shorter archive: the
                // diff_id catches it.
                ImageError::Mismatch { what, .. } => comp == Comp::None && what.contains("diff_id"),
                _ => false,
            });
        }
    }
    // A plain truncation (the descriptor still describes the whole blob) is a size error.
    let blob = oci::compress(&tar, Comp::None);
    let mut spec = LayerSpec::new(tar.clone()).comp(Comp::None);
    spec.tamper_blob = Some(blob[..blob.len() / 2].to_vec());
    fails_cleanly(&fx, &[spec], UnpackLimits::default(), |e| matches!(e, ImageError::Size { .. }));
    fx.check_host();
}

#[test]
fn trailing_garbage_after_a_blob_fails_cleanly() {
    let fx = Fx::new();
    let tar = bulky().tar();
    for comp in [Comp::Gzip, Comp::Zstd] {
        let mut blob = oci::compress(&tar, comp);
        blob.extend_from_slice(b"GARBAGE!");
        let spec = damaged(tar.clone(), comp, blob);
        fails_cleanly(&fx, &[spec], UnpackLimits::default(), |e| matches!(e, ImageError::Format { .. }));
    }
    // Trailing bytes the descriptor does not cover: a size error.
    let mut blob = oci::compress(&tar, Comp::None);
    blob.extend_from_slice(b"GARBAGE!");
    let mut spec = LayerSpec::new(tar.clone()).comp(Comp::None);
    spec.tamper_blob = Some(blob);
    fails_cleanly(&fx, &[spec], UnpackLimits::default(), |e| matches!(e, ImageError::Size { .. }));
    fx.check_host();
}

#[test]
fn compressed_blob_longer_or_shorter_than_its_descriptor_is_a_size_error() {
    // `ImageError::Size` is documented for a blob "longer or shorter than its descriptor says
    // (truncated, or trailing data)". For compressed blobs the decompressor's complaint about
    // the cut stream must not hide that.
    let fx = Fx::new();
    let tar = bulky().tar();
    let mut wrong = Vec::new();
    for comp in [Comp::Gzip, Comp::Zstd] {
        let blob = oci::compress(&tar, comp);
        let len = blob.len() as i64;
        let mut cases = Vec::new();
        for d in [-4, -100] {
            let mut spec = LayerSpec::new(tar.clone()).comp(comp);
            spec.size = Some(len + d);
            cases.push((format!("{comp:?}: descriptor size {d:+}"), spec));
        }
        let mut spec = LayerSpec::new(tar.clone()).comp(comp);
        spec.tamper_blob = Some(blob[..blob.len() / 2].to_vec());
        cases.push((format!("{comp:?}: blob cut in half"), spec));
        let mut spec = LayerSpec::new(tar.clone()).comp(comp);
        spec.tamper_blob = Some([&blob[..], b"GARBAGE!"].concat());
        cases.push((format!("{comp:?}: 8 bytes of trailing garbage"), spec));
        for (label, spec) in cases {
            let image = fx.image_of(&[spec]).unwrap();
            let (_, r) = fx.unpack_image(&image, UnpackLimits::default());
            let p = fx.prepare_image(&image, UnpackLimits::default());
            for r in [r.map(drop), p.map(drop)] {
                match r {
                    Err(ImageError::Size { .. }) => {}
                    Err(e) => wrong.push(format!("{label}: {e}")),
                    Ok(()) => panic!("{label}: accepted"),
                }
            }
        }
    }
    fx.check_host();
    assert!(wrong.is_empty(), "not reported as ImageError::Size:\n{}", wrong.join("\n"));
}

#[test]
fn decompression_bombs_are_bounded_by_max_bytes() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("zeros", vec![0u8; 10 << 20]);
    });
    let mut limits = UnpackLimits::default();
    limits.max_bytes = 1 << 20;
    for comp in [Comp::Gzip, Comp::Zstd, Comp::None] {
        let spec = LayerSpec::new(l.tar()).comp(comp);
        if comp != Comp::None {
            assert!(oci::compress(&l.tar(), comp).len() < 100 << 10, "not much of a bomb");
        }
        fails_cleanly(
            &fx,
            &[spec],
            limits,
            |e| matches!(e, ImageError::Limit { limit, .. } if *limit == 1 << 20),
        );
    }
    // Within the limit it unpacks.
    limits.max_bytes = 11 << 20;
    let (root, r) = fx.unpack_image(&fx.image(&[&l]), limits);
    r.unwrap();
    assert_eq!(lmeta(root.join("zeros")).len(), 10 << 20);
    fx.check_host();
}

#[test]
fn entry_counts_are_bounded_by_max_entries() {
    let fx = Fx::new();
    let l = layer(|l| {
        for i in 0..50 {
            l.file(format!("f{i}"), "");
        }
    });
    let mut limits = UnpackLimits::default();
    limits.max_entries = 10;
    fails_cleanly(&fx, &specs(&[&l]), limits, |e| matches!(e, ImageError::Limit { limit: 10, .. }));
    // Counted over all layers of an unpack.
    let small = layer(|l| {
        for i in 0..6 {
            l.file(format!("g{i}"), "");
        }
    });
    let other = layer(|l| {
        for i in 0..6 {
            l.file(format!("h{i}"), "");
        }
    });
    let (_, r) = fx.unpack_image(&fx.image(&[&small, &other]), limits);
    assert!(matches!(r, Err(ImageError::Limit { limit: 10, .. })), "{r:?}");
    limits.max_entries = 50;
    fx.unpack_image(&fx.image(&[&l]), limits).1.unwrap();
    fx.check_host();
}

#[test]
fn header_and_name_limits_are_enforced() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("f", b'0', |e| e.pax = vec![("SCHILY.xattr.user.x".into(), vec![b'x'; 4096])]));
    });
    let mut limits = UnpackLimits::default();
    limits.max_header = 1024;
    fails_cleanly(&fx, &specs(&[&l]), limits, |e| matches!(e, ImageError::Limit { limit: 1024, .. }));
    let l = layer(|l| {
        l.file("n".repeat(100), "");
    });
    let mut limits = UnpackLimits::default();
    limits.max_path = 64;
    fails_cleanly(
        &fx,
        &specs(&[&l]),
        limits,
        |e| matches!(e, ImageError::Entry { reason, .. } if reason.contains("longer than 64")),
    );
    fx.check_host();
}

#[test]
fn blob_digest_mismatch_is_refused() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("f", "original content");
    });
    // Same length, one byte of file data changed: still a valid tar.
    let tar = l.tar();
    let mut evil = tar.clone();
    let at = evil.windows(8).position(|w| w == b"original").unwrap();
    evil[at] = b'O';
    let mut spec = LayerSpec::new(tar.clone()).comp(Comp::None);
    spec.tamper_blob = Some(evil);
    let blob_mismatch =
        |e: &ImageError| matches!(e, ImageError::Mismatch { what, .. } if !what.contains("diff_id"));
    fails_cleanly(&fx, &[spec], UnpackLimits::default(), blob_mismatch);
    // A gzip blob with a changed header (modification time): decompresses to the same tar.
    let mut blob = oci::compress(&tar, Comp::Gzip);
    blob[4..8].copy_from_slice(&[1, 2, 3, 4]);
    let mut spec = LayerSpec::new(tar.clone());
    spec.tamper_blob = Some(blob);
    fails_cleanly(&fx, &[spec], UnpackLimits::default(), blob_mismatch);
    fx.check_host();
}

/// A layer of compressible text files, like most of a Debian base layer: a flipped byte in its
/// compressed form lands in entropy-coded data, which then decodes to garbage or not at all.
fn textual() -> LayerBuilder {
    layer(|l| {
        l.dir("usr").dir("usr/share");
        for i in 0..40 {
            let text: String = (0..300).map(|j| format!("line {j} of file {i}: {}\n", j * i % 7)).collect();
            l.file(format!("usr/share/f{i}"), text);
        }
    })
}

#[test]
fn a_flipped_byte_in_a_compressed_layer_is_reported_as_a_digest_mismatch() {
    // The decompressor or the tar reader trips over the damage before the end of the blob; the
    // real fault is that the blob is not the one the manifest names.
    let fx = Fx::new();
    let tar = textual().tar();
    let mut wrong = Vec::new();
    for comp in [Comp::Gzip, Comp::Zstd] {
        let blob = oci::compress(&tar, comp);
        let named = digest_of(&blob);
        for eighth in 1..8 {
            let at = blob.len() * eighth / 8;
            let mut flipped = blob.clone();
            flipped[at] ^= 0xff;
            let has = digest_of(&flipped);
            let mut spec = LayerSpec::new(tar.clone()).comp(comp);
            spec.tamper_blob = Some(flipped);
            let image = fx.image_of(&[spec]).unwrap();
            let (_, r) = fx.unpack_image(&image, UnpackLimits::default());
            let p = fx.prepare_image(&image, UnpackLimits::default());
            for (how, r) in [("unpack", r.map(drop)), ("prepare", p.map(drop))] {
                match r {
                    Err(ImageError::Mismatch { what, expected, actual })
                        if what == format!("layer {named}")
                            && expected.to_string() == named
                            && actual.to_string() == has => {}
                    Err(e) => wrong.push(format!("{comp:?}, byte {at} of {}, {how}: {e}", blob.len())),
                    Ok(()) => panic!("{comp:?}, byte {at}, {how}: accepted"),
                }
            }
        }
    }
    fx.check_host();
    assert!(wrong.is_empty(), "not reported as the blob's digest mismatch:\n{}", wrong.join("\n"));
}

#[test]
fn a_missing_or_short_layer_blob_is_found_before_any_layer_is_unpacked() {
    let fx = Fx::new();
    let top = layer(|l| {
        l.file("top", "t");
    });
    let dir = fx.layout(&specs(&[&bulky(), &textual(), &top]));
    let image = ImageSource::open(&dir).unwrap().image(Some("hostile"), &Platform::host()).unwrap();
    let digest = image.layers()[2].digest().unwrap().clone();
    let blob = dir.join("blobs/sha256").join(digest.hex());
    let whole = fs::read(&blob).unwrap();
    for label in ["missing", "short", "a directory"] {
        fs::write(&blob, &whole).unwrap();
        match label {
            "missing" => fs::remove_file(&blob).unwrap(),
            "short" => fs::write(&blob, &whole[..whole.len() - 1]).unwrap(),
            _ => fs::remove_file(&blob).and_then(|()| fs::create_dir(&blob)).unwrap(),
        }
        let expected = |e: &ImageError| match e {
            ImageError::Io { path, source, .. } => {
                label == "missing"
                    && path.ends_with(digest.hex())
                    && source.kind() == std::io::ErrorKind::NotFound
            }
            ImageError::Size { what, expected, actual } => {
                label == "short"
                    && *what == format!("layer {digest}")
                    && *expected == whole.len() as u64
                    && *actual + 1 == *expected
            }
            ImageError::Format { what, reason } => {
                label == "a directory"
                    && what.ends_with(digest.hex())
                    && reason.contains("not a regular file")
            }
            _ => false,
        };
        let (_, flat) = fx.unpack_image(&image, UnpackLimits::default());
        let store = fx.next("store");
        let stored = LayerStore::open(&store).unwrap().prepare(&image);
        for (how, r) in [("unpack", flat.map(drop)), ("prepare", stored.map(drop))] {
            match r {
                Err(e) if expected(&e) => {}
                other => panic!("{label} blob, {how}: {other:?}"),
            }
        }
        for sub in ["layers", "tmp"] {
            let left: Vec<_> =
                fs::read_dir(store.join(sub)).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "{label} blob: the store's {sub}/ holds {left:?}");
        }
        let _ = fs::remove_dir(&blob);
    }
    // Whole again, it unpacks.
    fs::write(&blob, &whole).unwrap();
    fx.unpack_image(&image, UnpackLimits::default()).1.unwrap();
    fx.check_host();
}

#[test]
fn blob_size_mismatch_is_refused() {
    let fx = Fx::new();
    let tar = bulky().tar();
    for comp in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let len = oci::compress(&tar, comp).len() as i64;
        // (Shorter descriptors of compressed blobs: see the test after this one.)
        let deltas: &[i64] = if comp == Comp::None { &[100, 1, -1, -100] } else { &[100, 1, -1] };
        for &d in deltas {
            let mut spec = LayerSpec::new(tar.clone()).comp(comp);
            spec.size = Some(len + d);
            fails_cleanly(
                &fx,
                &[spec],
                UnpackLimits::default(),
                |e| matches!(e, ImageError::Size { expected, actual, .. } if *expected == (len + d) as u64 && *actual != *expected),
            );
        }
    }
    fx.check_host();
}

#[test]
fn diff_id_mismatch_is_refused() {
    let fx = Fx::new();
    let l = bulky();
    for comp in [Comp::Gzip, Comp::None] {
        let mut spec = LayerSpec::new(l.tar()).comp(comp);
        spec.diff_id = Some(digest_of(b"another layer"));
        fails_cleanly(
            &fx,
            &[spec],
            UnpackLimits::default(),
            |e| matches!(e, ImageError::Mismatch { what, .. } if what.contains("diff_id")),
        );
    }
    // A good bottom layer under a bad one: the flattened unpack leaves nothing at all.
    let good = LayerSpec::new(
        layer(|l| {
            l.file("good", "g");
        })
        .tar(),
    );
    let mut bad = LayerSpec::new(l.tar());
    bad.diff_id = Some(digest_of(b"x"));
    let (_, r) = fx.unpack_image(&fx.image_of(&[good, bad]).unwrap(), UnpackLimits::default());
    assert!(matches!(r, Err(ImageError::Mismatch { .. })), "{r:?}");
    fx.check_host();
}

#[test]
fn media_type_confusion_is_refused() {
    let fx = Fx::new();
    let tar = bulky().tar();
    let gz = oci::media_type(Comp::Gzip);
    for (comp, mt) in [
        (Comp::Zstd, gz),
        (Comp::Gzip, oci::media_type(Comp::Zstd)),
        (Comp::Gzip, oci::media_type(Comp::None)),
        (Comp::None, gz),
        (Comp::Zstd, oci::media_type(Comp::None)),
    ] {
        let mut spec = LayerSpec::new(tar.clone()).comp(comp);
        spec.media_type = Some(mt.into());
        fails_cleanly(
            &fx,
            &[spec],
            UnpackLimits::default(),
            |e| matches!(e, ImageError::MediaType { media_type, .. } if media_type == mt),
        );
    }
    // Not a layer media type at all: refused when the image is opened.
    for mt in [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/x-evil",
        "",
    ] {
        let mut spec = LayerSpec::new(tar.clone());
        spec.media_type = Some(mt.into());
        let r = fx.image_of(&[spec]);
        assert!(
            matches!(&r, Err(ImageError::MediaType { media_type, .. }) if media_type == mt),
            "{mt}: {r:?}"
        );
    }
    fx.check_host();
}

#[test]
fn malformed_digests_are_refused_before_any_path_is_built() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file("f", "f");
    });
    let tar = l.tar();
    let blob = oci::compress(&tar, Comp::Gzip);
    let hex = oci::sha256_hex(&blob);
    let malformed = |e: &ImageError| matches!(e, ImageError::Digest { .. } | ImageError::Format { .. });
    // Each bad digest names a file that exists (the real blob copied there), so only
    // validation can stop it.
    for (digest, file) in [
        ("sha256:../../x".to_string(), "x".to_string()),
        ("sha256:../../../../../../../../x".into(), "x".into()),
        ("sha256:abc".into(), "blobs/sha256/abc".into()),
        (format!("sha256:{}", hex.to_uppercase()), format!("blobs/sha256/{}", hex.to_uppercase())),
        (format!("sha256:{hex}0"), format!("blobs/sha256/{hex}0")),
        (format!("sha512:{hex}"), format!("blobs/sha512/{hex}")),
        (format!("sha256:{}/", &hex[..63]), format!("blobs/sha256/{}", &hex[..63])),
        (hex.clone(), format!("blobs/sha256/{hex}")),
    ] {
        let mut spec = LayerSpec::new(tar.clone());
        spec.digest = Some(digest.clone());
        let dir = fx.layout(&[spec]);
        fs::create_dir_all(dir.join(&file).parent().unwrap()).unwrap();
        fs::write(dir.join(&file), &blob).unwrap();
        let r = ImageSource::open(&dir).unwrap().image(Some("hostile"), &Platform::host());
        assert!(matches!(&r, Err(e) if malformed(e)), "layer digest {digest}: {r:?}");
    }
    // A malformed diff_id.
    for diff_id in ["sha256:../x", "sha256:ABC", &format!("sha256:{}", oci::sha256_hex(&tar).to_uppercase())]
    {
        let mut spec = LayerSpec::new(tar.clone());
        spec.diff_id = Some(diff_id.to_string());
        let r = fx.image_of(&[spec]);
        assert!(matches!(&r, Err(e) if malformed(e)), "diff_id {diff_id}: {r:?}");
    }
    // A malformed manifest digest in the index (the manifest copied where `..` would lead).
    let dir = fx.layout(&specs(&[&l]));
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let real = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    fs::copy(dir.join("blobs/sha256").join(&real[7..]), dir.join("m")).unwrap();
    index["manifests"][0]["digest"] = "sha256:../../m".into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let r = ImageSource::open(&dir).unwrap().image(Some("hostile"), &Platform::host());
    assert!(matches!(&r, Err(e) if malformed(e)), "manifest digest: {r:?}");
    fx.check_host();
}

#[test]
fn racing_symlink_swaps_during_extraction_change_nothing_outside() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.dir("d/");
        for s in 0..300 {
            for f in 0..10 {
                l.file(format!("d/s{s:03}/f{f}"), "data");
            }
        }
    });
    let image = fx.image(&[&l]);
    let targets = [fx.abs(&fx.dir()), "../../host/dir".to_string(), fx.climb(&fx.dir())];
    let mut raced = 0;
    for round in 0..10 {
        let dest = fx.next("out");
        let rootfs = dest.join("rootfs");
        let stop = AtomicBool::new(false);
        let swaps = AtomicU64::new(0);
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                let d = rootfs.join("d");
                let away = rootfs.join("d.away");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if fs::rename(&d, &away).is_err() {
                        std::thread::yield_now();
                        continue;
                    }
                    let _ = std::os::unix::fs::symlink(&targets[i % targets.len()], &d);
                    i += 1;
                    for _ in 0..50 {
                        std::hint::spin_loop();
                    }
                    if lmeta_opt(&d).is_some_and(|m| m.file_type().is_symlink()) {
                        let _ = fs::remove_file(&d);
                    }
                    let _ = fs::rename(&away, &d);
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            });
            let result = image.unpack(&dest);
            stop.store(true, Ordering::Relaxed);
            result
        });
        let swaps = swaps.load(Ordering::Relaxed);
        eprintln!("round {round}: {swaps} swaps, unpack: {:?}", result.as_ref().map(|r| r.report().entries));
        match &result {
            Ok(_) => {}
            Err(ImageError::Entry { .. } | ImageError::Io { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
        // Whatever happened inside, the host did not change.
        fx.check_host();
        if result.is_ok() {
            let _ = remove_dest(&dest);
        }
        if swaps > 0 {
            raced += 1;
        }
        if raced >= 3 {
            break;
        }
    }
    assert!(raced > 0, "the racing thread never got to swap the directory");
}

fn lmeta_opt(p: &Path) -> Option<fs::Metadata> {
    fs::symlink_metadata(p).ok()
}

/// Removes a finished destination (keeps later `check_host` scans short).
fn remove_dest(dest: &Path) -> std::io::Result<()> {
    common::open_up(dest);
    fs::remove_dir_all(dest)
}

#[test]
fn aufs_metadata_at_the_top_is_skipped_like_docker_does() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.file(".wh..wh.aufs", "").dir(".wh..wh.plnk").file(".wh..wh.plnk/123.456", "x").file("kept", "k");
    });
    let (root, r) = fx.unpack(&[&l]);
    r.unwrap();
    let names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["kept"]);
    fx.check_host();
}

#[test]
fn symlinks_cannot_deepen_directories_past_the_depth_limit() {
    let fx = Fx::new();
    // 200 levels by name, then a symlink to the bottom and 200 more levels through it.
    let bottom = "d/".repeat(200);
    let bottom = bottom.trim_end_matches('/');
    let below = format!("s/{}/f", "e/".repeat(200).trim_end_matches('/'));
    let l = layer(|l| {
        l.file(format!("{bottom}/x"), "x").symlink("s", format!("/{bottom}")).file(&below, "deep");
    });
    refused(fx.unpack(&[&l]).1, "nest deeper than 256");
    refused(fx.prepare(&[&l]), "nest deeper than 256");
    fx.check_host();
}

#[test]
fn gnu_sparse_entries_are_refused_before_they_expand() {
    let fx = Fx::new();
    // A sparse entry claiming a huge real size in a few bytes of stream.
    let l = layer(|l| {
        l.entry(entry("sparse", b'S', |e| e.data = b"x".to_vec()));
    });
    for result in [fx.unpack(&[&l]).1, fx.prepare(&[&l])] {
        match result {
            Err(e @ ImageError::Format { .. }) => assert!(e.to_string().contains("sparse"), "{e}"),
            other => panic!("expected a Format error naming sparse entries, got {other:?}"),
        }
    }
    fx.check_host();
}

#[test]
fn extension_headers_over_the_limit_fail_before_they_are_buffered() {
    let fx = Fx::new();
    let l = layer(|l| {
        l.entry(entry("f", b'0', |e| e.pax = vec![("comment".into(), vec![b'c'; 64 << 10])]));
    });
    let mut limits = UnpackLimits::default();
    limits.max_header = 4096;
    let image = fx.image(&[&l]);
    for result in [fx.unpack_image(&image, limits).1, fx.prepare_image(&image, limits)] {
        assert!(matches!(result, Err(ImageError::Limit { limit: 4096, .. })), "{result:?}");
    }
    fx.check_host();
}

#[test]
fn whiteout_after_new_children_hides_only_the_lower_directory_content() {
    let fx = Fx::new();
    let lower = layer(|l| {
        l.dir("a").file("a/old", "old").dir("b").file("b/old", "old");
    });
    // `a` gets a child, then is whited out; `b` is re-declared, then whited out.
    let upper = layer(|l| {
        l.file("a/new", "new").file(".wh.a", "").dir("b").file("b/new", "new").file(".wh.b", "");
    });
    let (root, r) = fx.unpack(&[&lower, &upper]);
    r.unwrap();
    for d in ["a", "b"] {
        let names: Vec<_> = fs::read_dir(root.join(d)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["new"], "{d}: only this layer's child stays");
    }
    let stored = fx.prepare(&[&lower, &upper]).unwrap();
    for d in ["a", "b"] {
        assert_eq!(
            oci::xattr_get(&stored.layers()[1].join(d), "user.overlay.opaque"),
            b"y",
            "{d} hides the lower one"
        );
    }
    fx.check_host();
}

/// An image with `User: app` and this one layer, prepared in a store and flattened.
fn with_user(dir: &Path, l: &LayerBuilder) -> [Result<Rootfs, ImageError>; 2] {
    oci::write_image(
        &dir.join("layout"),
        "u",
        &[LayerSpec::new(l.tar())],
        serde_json::json!({"User": "app"}),
    );
    let image = ImageSource::open(dir.join("layout")).unwrap().image(Some("u"), &Platform::host()).unwrap();
    [LayerStore::open(dir.join("store")).unwrap().prepare(&image), image.unpack(dir.join("out"))]
}

#[test]
fn image_user_lookup_never_reads_the_hosts_files() {
    let tmp = common::tempdir();
    let base = fs::canonicalize(tmp.path()).unwrap();
    // A host passwd that would resolve `app` if a lookup ever left the image.
    fs::create_dir_all(base.join("host/etc")).unwrap();
    fs::write(base.join("host/etc/passwd"), "app:x:4242:4242::/:/bin/sh\n").unwrap();
    let host_etc = base.join("host/etc");
    let climb = format!("{}{}", "../".repeat(12), host_etc.display());
    for (i, target) in [host_etc.display().to_string(), climb].into_iter().enumerate() {
        let dir = base.join(format!("case{i}"));
        let l = layer(|l| {
            l.symlink("etc", &target);
        });
        for result in with_user(&dir, &l) {
            match result {
                Err(ImageError::User { user, .. }) => assert_eq!(user, "app"),
                other => panic!("etc -> {target}: expected an unknown user, got {other:?}"),
            }
        }
    }
}

#[test]
fn image_user_lookup_through_endless_symlink_hops_is_a_typed_limit() {
    let tmp = common::tempdir();
    // Each link's target walks 800 directories up and down before naming the next link: a
    // lookup the kernel would do, but costly; stockade stops at a step budget.
    let mut l = LayerBuilder::new();
    l.dir("x").file("passwd", "app:x:1:1::/:/bin/sh\n");
    for i in 0..39 {
        l.symlink(format!("l{i}"), format!("{}l{}", "x/../".repeat(800), i + 1));
    }
    l.symlink("l39", "passwd").dir("etc").symlink("etc/passwd", "../l0");
    for result in with_user(tmp.path(), &l) {
        match result {
            Err(e @ ImageError::Limit { .. }) => assert!(e.to_string().contains("/etc/passwd"), "{e}"),
            other => panic!("expected ImageError::Limit, got {other:?}"),
        }
    }
}
