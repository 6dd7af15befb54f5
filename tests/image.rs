//! Images built by real tools (umoci, skopeo) and by hand: stockade's trees equal umoci's,
//! every input form gives the same tree, the layer store shares and collects layers, platform
//! selection follows nested indexes, and an image's config runs in a sandbox.

mod common;
#[path = "common/oci.rs"]
mod oci;

use std::path::{Path, PathBuf};
use std::process::Command;

use oci::{Comp, LayerBuilder, LayerSpec};
use stockade::image::{Image, ImageError, ImageSource, LayerStore, Platform};
use stockade::{IdMap, Namespaces, Sandbox};

fn run(script: &str, dir: &Path) {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().expect("run sh");
    assert!(
        out.status.success(),
        "{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether every program in `needed` is on `PATH`; if not, records the skip of `test`.
fn tools(test: &str, needed: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for t in needed {
        if !std::env::split_paths(&path).any(|dir| common::have(&dir.join(t).to_string_lossy())) {
            common::skip(test, &format!("{t} is not installed (.ci/run installs it)"));
            return false;
        }
    }
    true
}

/// An OCI layout `oci` under `dir` with three layers made by `umoci repack`: files, links,
/// set-uid, FIFO, xattrs, read-only and mode-0000 directories (and a device as root), then
/// deletions, replacements and a directory recreated with new content. Tag `v3`.
fn umoci_image(dir: &Path) {
    let rootless = if common::is_root() { "" } else { "--rootless" };
    let bb = common::busybox();
    run(
        &format!(
            "umoci init --layout oci && umoci new --image oci:v1 && umoci unpack {rootless} --image oci:v1 b1"
        ),
        dir,
    );
    let r = dir.join("b1/rootfs");
    run(
        &format!(
            "set -e; mkdir -p bin etc data/keep data/gone ro z app/sub
            cp {bb} bin/busybox; ln -s busybox bin/sh; ln bin/busybox bin/hard
            printf 'root:x:0:0::/root:/bin/sh\\napp:x:1000:1000::/app:/bin/sh\\n' > etc/passwd
            printf 'root:x:0:\\napp:x:1000:\\nextra:x:2000:app\\n' > etc/group
            echo secret > bin/suid; chmod 4755 bin/suid; mkfifo data/fifo
            echo a > data/keep/a; echo b > data/gone/b; echo x > ro/x; chmod 0555 ro
            echo z > z/z; chmod 0000 z; echo s > app/sub/s; ln -s /etc/passwd app/abs; ln -s ../../etc app/sub/rel
            echo t > data/xattr",
            bb = bb.display()
        ),
        &r,
    );
    assert!(oci::set_xattr(&r.join("data/xattr"), "user.note", b"hello"));
    if common::is_root() {
        run("mknod dev-null c 1 3 && chown 1000:1000 app/sub/s", &r);
    }
    run("umoci repack --image oci:v2 b1 && chmod -R u+rwX b1 && rm -rf b1", dir);
    run(&format!("umoci unpack {rootless} --image oci:v2 b2"), dir);
    run(
        "set -e; cd b2/rootfs; rm -rf data/gone; rm data/keep/a; echo changed > data/keep/new
        rm -rf app/sub; echo file > app/sub; chmod 0700 bin/suid; mkdir -p new/deep; echo d > new/deep/d",
        dir,
    );
    run("umoci repack --image oci:v2b b2 && chmod -R u+rwX b2 && rm -rf b2", dir);
    run(&format!("umoci unpack {rootless} --image oci:v2b b3"), dir);
    run(
        "set -e; cd b3/rootfs; rm -rf data/keep; mkdir data/keep; echo fresh > data/keep/fresh; rm app/sub; mkdir app/sub",
        dir,
    );
    run("umoci repack --image oci:v3 b3 && chmod -R u+rwX b3 && rm -rf b3", dir);
    run(
        "umoci config --image oci:v3 --config.user app --config.workingdir /app --config.env GREETING=hi --config.entrypoint /bin/sh --config.cmd -c --config.cmd 'echo $GREETING from $(pwd) as $(id -u):$(id -g)'",
        dir,
    );
}

#[test]
fn flattened_tree_equals_umoci_unpack_of_the_same_image() {
    if !tools("flattened_tree_equals_umoci_unpack_of_the_same_image", &["umoci"]) {
        return;
    }
    let tmp = common::tempdir();
    umoci_image(tmp.path());
    let rootless = if common::is_root() { "" } else { "--rootless" };
    run(&format!("umoci unpack {rootless} --image oci:v3 ref"), tmp.path());

    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("v3"), &Platform::host()).unwrap();
    assert_eq!(image.layers().len(), 3, "one layer per repack (umoci new makes none)");
    let rootfs = image.unpack(tmp.path().join("mine")).unwrap();
    assert_eq!(rootfs.layers(), [tmp.path().join("mine/rootfs").canonicalize().unwrap()]);

    // Owners compare only as root: rootless, both unpack as the caller.
    let theirs = oci::tree(&tmp.path().join("ref/rootfs"), common::is_root());
    let ours = oci::tree(&tmp.path().join("mine/rootfs"), common::is_root());
    let names: Vec<_> = ours.keys().collect();
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "same paths");
    for (path, mine) in &ours {
        assert_eq!(Some(mine), theirs.get(path), "{path:?} differs from umoci's (paths: {names:?})");
    }
    // The changes of the upper layers are there.
    assert!(!tmp.path().join("mine/rootfs/data/gone").exists());
    assert_eq!(std::fs::read(tmp.path().join("mine/rootfs/data/keep/fresh")).unwrap(), b"fresh\n");
    assert!(!tmp.path().join("mine/rootfs/data/keep/new").exists());
    assert_eq!(oci::xattr_get(&tmp.path().join("mine/rootfs/data/xattr"), "user.note"), b"hello");
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::symlink_metadata(tmp.path().join("mine/rootfs").join(p)).unwrap().permissions(),
        ) & 0o7777
    };
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("z"), 0);
    assert_eq!(mode("bin/suid"), 0o700);
    assert_eq!(mode("../"), 0o700, "the unpack destination is private");
}

#[test]
fn docker_archive_oci_archive_and_zstd_copies_unpack_to_the_same_tree() {
    if !tools("docker_archive_oci_archive_and_zstd_copies_unpack_to_the_same_tree", &["umoci", "skopeo"]) {
        return;
    }
    let tmp = common::tempdir();
    umoci_image(tmp.path());
    run(
        "set -e
        skopeo --insecure-policy copy -q oci:oci:v3 docker-archive:docker.tar:example/app:v3
        skopeo --insecure-policy copy -q oci:oci:v3 oci-archive:oci.tar:v3
        skopeo --insecure-policy copy -q --dest-compress-format zstd --dest-compress oci:oci:v3 oci:zstd:v3",
        tmp.path(),
    );
    let expected = {
        let image =
            ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("v3"), &Platform::host()).unwrap();
        image.unpack(tmp.path().join("expected")).unwrap();
        oci::tree(&tmp.path().join("expected/rootfs"), true)
    };
    for (source, reference) in
        [("docker.tar", "example/app:v3"), ("docker.tar", "v3"), ("oci.tar", "v3"), ("zstd", "v3")]
    {
        let image = ImageSource::open(tmp.path().join(source))
            .unwrap()
            .image(Some(reference), &Platform::host())
            .unwrap();
        if source == "zstd" {
            assert!(
                image.layers().iter().any(|l| l.media_type().ends_with("+zstd")),
                "skopeo wrote zstd layers"
            );
        }
        let dest = tmp.path().join(format!("out-{source}-{}", reference.replace('/', "_")));
        let rootfs = image.unpack(&dest).unwrap();
        assert_eq!(oci::tree(&dest.join("rootfs"), true), expected, "{source}:{reference}");
        assert_eq!(rootfs.config().user.as_deref(), Some("app"));
    }
    let missing =
        ImageSource::open(tmp.path().join("docker.tar")).unwrap().image(Some("nope"), &Platform::host());
    assert!(
        matches!(&missing, Err(ImageError::NotFound { available, .. }) if available.contains("example/app:v3")),
        "{missing:?}"
    );
}

/// Images `a` and `b` in an OCI layout at `dir`: a shared gzip base of 300 files, then each its
/// own layer (`b`'s is zstd and whites out `usr/lib/f0`).
fn two_images_sharing_a_base(dir: &Path) -> (Image, Image) {
    let mut base = LayerBuilder::new();
    base.dir("usr").dir("usr/lib");
    for i in 0..300 {
        base.file(format!("usr/lib/f{i}"), format!("base file {i}\n").repeat(20));
    }
    let base = LayerSpec::new(base.tar());
    let mut a = LayerBuilder::new();
    a.file("a", "only in a");
    let mut b = LayerBuilder::new();
    b.file("b", "only in b").file("usr/lib/.wh.f0", "");
    oci::write_image(dir, "a", &[base.clone(), LayerSpec::new(a.tar())], serde_json::json!({}));
    oci::write_image(dir, "b", &[base, LayerSpec::new(b.tar()).comp(Comp::Zstd)], serde_json::json!({}));
    let source = ImageSource::open(dir).unwrap();
    let image = |name| source.image(Some(name), &Platform::host()).unwrap();
    (image("a"), image("b"))
}

#[test]
fn concurrent_prepares_of_images_sharing_a_base_store_it_once() {
    let tmp = common::tempdir();
    let (a, b) = two_images_sharing_a_base(&tmp.path().join("oci"));
    assert_eq!(a.layers()[0].diff_id(), b.layers()[0].diff_id());
    let store_dir = tmp.path().join("store");
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| LayerStore::open(&store_dir).unwrap().prepare(&a).unwrap());
        let tb = s.spawn(|| LayerStore::open(&store_dir).unwrap().prepare(&b).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(ra.layers()[0], rb.layers()[0], "one directory for the shared base");
    assert_eq!(
        ra.report().layers_unpacked + rb.report().layers_unpacked,
        3,
        "base unpacked once: {:?} {:?}",
        ra.report(),
        rb.report()
    );
    assert_eq!(std::fs::read_dir(store_dir.join("layers")).unwrap().count(), 3);
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);

    // Prepared again: everything is reused, nothing unpacked.
    let again = LayerStore::open(&store_dir).unwrap().prepare(&a).unwrap();
    assert_eq!((again.report().layers_unpacked, again.report().layers_reused), (0, 2));

    // b's whiteout is a 0/0 character device in its own layer; the base keeps the file.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(rb.layers()[1].join("usr/lib/f0")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(rb.layers()[0].join("usr/lib/f0").is_file());
}

#[test]
fn preparing_never_waits_for_a_live_rootfs_that_uses_the_same_layer() {
    // The race this guards: B finds the shared base missing, A renames it into place and takes
    // its lease (a live Rootfs), then B locks the base to unpack it. Recreated by hand: A's
    // Rootfs stays alive while its base is moved out of layers/.
    let tmp = common::tempdir();
    let (a, b) = two_images_sharing_a_base(&tmp.path().join("oci"));
    let store_dir = tmp.path().join("store");
    let ra = LayerStore::open(&store_dir).unwrap().prepare(&a).unwrap();
    std::fs::rename(&ra.layers()[0], tmp.path().join("aside")).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done
            .send(LayerStore::open(&store_dir).unwrap().prepare(&b).map(|rb| rb.report().layers_unpacked));
    });
    let unpacked = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("prepare still waiting after 2 minutes: blocked behind the live Rootfs")
        .unwrap();
    assert_eq!(unpacked, 2, "the base again, and b's own layer");
    drop(ra);
}

/// Whether some of `path`'s data has no place on disk yet (delayed allocation: written to the
/// page cache only), by `FS_IOC_FIEMAP` without its sync flag.
fn awaits_write_back(path: &Path) -> bool {
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; 64],
    }
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
    let file = std::fs::File::open(path).unwrap();
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX,
        flags: 0,
        mapped_extents: 0,
        extent_count: 64,
        reserved: 0,
        extents: [Extent::default(); 64],
    };
    // SAFETY: FIEMAP fills at most `extent_count` extents of the struct passed, which lives
    // across the call; the descriptor is open.
    let ret = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), FS_IOC_FIEMAP, &mut map) };
    assert_eq!(ret, 0, "FIEMAP on {}: {}", path.display(), std::io::Error::last_os_error());
    map.extents[..map.mapped_extents as usize].iter().any(|e| e.flags & FIEMAP_EXTENT_DELALLOC != 0)
}

#[test]
fn with_sync_a_layer_is_on_disk_before_it_is_in_place() {
    let tmp = common::tempdir();
    let mut data = vec![0u8; 4 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut l = LayerBuilder::new();
    l.file("big", &data);
    oci::write_image(&tmp.path().join("oci"), "s", &[LayerSpec::new(l.tar())], serde_json::json!({}));
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("s"), &Platform::host()).unwrap();
    // Control first (a sync flushes the whole file system): without it the data waits in the
    // page cache, where a power loss takes it.
    let plain = LayerStore::open(tmp.path().join("plain")).unwrap().prepare(&image).unwrap();
    if !awaits_write_back(&plain.layers()[0].join("big")) {
        return common::skip(
            "with_sync_a_layer_is_on_disk_before_it_is_in_place",
            "this file system allocates at write time (no delayed allocation to observe)",
        );
    }
    let synced =
        LayerStore::open(tmp.path().join("synced")).unwrap().with_sync(true).prepare(&image).unwrap();
    assert!(!awaits_write_back(&synced.layers()[0].join("big")), "the layer's data is not on disk");
    assert_eq!(std::fs::read(synced.layers()[0].join("big")).unwrap(), data);
}

/// `image_run --unpack-only` preparing `layout:reference` in `store`: a real embedding program,
/// killed (SIGKILL) when dropped.
struct Unpacker(std::process::Child);

impl Unpacker {
    fn start(store: &Path, layout: &Path, reference: &str) -> Unpacker {
        let example =
            std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/image_run");
        assert!(example.exists(), "{} missing: `cargo test` builds the examples", example.display());
        let child = Command::new(example)
            .args(["--unpack-only", "--store"])
            .arg(store)
            .arg(format!("{}:{reference}", layout.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Unpacker(child)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), signal).unwrap();
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to a minute) until the store's `tmp/` holds an entry for the layer `diff_id`.
fn tmp_entry_of(store: &Path, diff_id: &stockade::image::Digest) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir(store.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{}.", diff_id.hex())));
        if let Some(path) = found {
            return path;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no unpack of {diff_id} started in {}",
            store.display()
        );
        std::thread::yield_now();
    }
}

#[test]
fn the_next_prepare_removes_what_a_killed_unpack_left_but_not_a_live_unpack() {
    let tmp = common::tempdir();
    let layout = tmp.path().join("oci");
    // Layers of many files, so that unpacking them takes a while.
    let many = |tag: &str| {
        let mut l = LayerBuilder::new();
        l.dir("d");
        for i in 0..20_000 {
            l.file(format!("d/{tag}{i}"), format!("{tag} {i}\n"));
        }
        LayerSpec::new(l.tar()).comp(Comp::Zstd)
    };
    let mut small = LayerBuilder::new();
    small.file("small", "s");
    for (tag, spec) in [("killed", many("k")), ("live", many("l")), ("small", LayerSpec::new(small.tar()))] {
        oci::write_image(&layout, tag, &[spec], serde_json::json!({}));
    }
    let source = ImageSource::open(&layout).unwrap();
    let image = |tag| source.image(Some(tag), &Platform::host()).unwrap();
    let (killed, live) = (image("killed"), image("live"));
    let store = tmp.path().join("store");
    LayerStore::open(&store).unwrap();

    let unpacker = Unpacker::start(&store, &layout, "killed");
    let left = tmp_entry_of(&store, killed.layers()[0].diff_id());
    drop(unpacker); // SIGKILL, mid-unpack
    assert!(left.is_dir(), "the unpack finished before it was killed: make its layer bigger");

    // A live unpack of another layer, stopped (its locks held) while the next prepare runs.
    let running = Unpacker::start(&store, &layout, "live");
    let its_own = tmp_entry_of(&store, live.layers()[0].diff_id());
    running.signal(nix::sys::signal::Signal::SIGSTOP);
    assert!(its_own.is_dir(), "the live unpack finished before it was stopped: make its layer bigger");

    LayerStore::open(&store).unwrap().prepare(&image("small")).unwrap();
    assert!(!left.exists(), "the killed unpack's {} is still there", left.display());
    assert!(its_own.is_dir(), "the live unpack's {} was removed", its_own.display());

    running.signal(nix::sys::signal::Signal::SIGCONT);
    let mut running = running;
    let status = running.0.wait().unwrap();
    assert!(status.success(), "the live unpack failed: {status}");
    let layer = store.join("layers").join(live.layers()[0].diff_id().hex());
    assert_eq!(std::fs::read_dir(layer.join("d")).unwrap().count(), 20_000, "the live unpack is incomplete");
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    assert!(!store.join("layers").join(killed.layers()[0].diff_id().hex()).exists());
}

#[test]
fn gc_removes_only_layers_no_recorded_image_uses() {
    let tmp = common::tempdir();
    let (a, b) = two_images_sharing_a_base(&tmp.path().join("oci"));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    store.prepare(&a).unwrap();
    store.prepare(&b).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.layers_removed, report.layers_kept), (0, 3));

    store.forget(&b).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.layers_removed, report.layers_kept), (1, 2));
    assert!(store.contains(a.layers()[0].diff_id()) && store.contains(a.layers()[1].diff_id()));
    assert!(!store.contains(b.layers()[1].diff_id()));

    store.forget(&a).unwrap();
    assert_eq!(store.gc().unwrap().layers_removed, 2);
    assert_eq!(std::fs::read_dir(tmp.path().join("store/layers")).unwrap().count(), 0);
}

/// An OCI layout at `dir` with one image for this machine, tagged `host` (its index entry names
/// no platform, as umoci and skopeo write it), and the tag `multi`: a nested index listing the
/// same manifest for `linux/<other>/v8` first, then for this machine. Returns the manifest's
/// descriptor.
fn multi_platform_layout(dir: &Path, other: &str) -> serde_json::Value {
    let mut l = LayerBuilder::new();
    l.file("which", "host");
    oci::write_image(dir, "host", &[LayerSpec::new(l.tar())], serde_json::json!({}));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let host_manifest = index["manifests"][0].clone();
    let host_arch = Platform::host().to_string().split('/').nth(1).unwrap().to_owned();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": host_manifest["mediaType"], "digest": host_manifest["digest"], "size": host_manifest["size"],
             "platform": {"os": "linux", "architecture": other, "variant": "v8"}},
            {"mediaType": host_manifest["mediaType"], "digest": host_manifest["digest"], "size": host_manifest["size"],
             "platform": {"os": "linux", "architecture": host_arch}},
        ]
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let hex = oci::sha256_hex(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let mut top = index;
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"), "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    host_manifest
}

/// An architecture other than this machine's.
fn other_arch() -> &'static str {
    if Platform::host().to_string() == "linux/arm64" { "s390x" } else { "arm64" }
}

#[test]
fn platform_is_selected_through_nested_indexes() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("oci");
    let host_manifest = multi_platform_layout(&dir, other_arch());
    let host = Platform::host();
    let source = ImageSource::open(&dir).unwrap();
    let image = source.image(Some("multi"), &host).unwrap();
    assert_eq!(image.id().to_string(), host_manifest["digest"].as_str().unwrap());
    // The other platform's entry points at a manifest whose config says the host's
    // architecture, so asking for it finds nothing.
    let err = source.image(Some("multi"), &Platform::new("linux", other_arch())).unwrap_err();
    assert!(matches!(err, ImageError::PlatformNotFound { .. }), "{err}");
    let err = source.image(Some("latest"), &host).unwrap_err();
    assert!(matches!(&err, ImageError::NotFound { available, .. } if available.contains("multi")), "{err}");
}

#[test]
fn a_platform_the_image_lacks_is_reported_with_the_platforms_it_has() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("oci");
    multi_platform_layout(&dir, other_arch());
    let host = Platform::host();
    let other = Platform::new("linux", other_arch()).variant("v8");
    let absent = Platform::new("plan9", "386");
    let source = ImageSource::open(&dir).unwrap();
    // From the nested index's entries, and from the config when the index names no platform.
    for (reference, has) in [("multi", vec![other, host.clone()]), ("host", vec![host.clone()])] {
        let err = source.image(Some(reference), &absent).unwrap_err();
        assert!(
            matches!(&err, ImageError::PlatformNotFound { reference: Some(r), wanted, available, .. }
                if r == reference && *wanted == absent.to_string() && *available == has),
            "{err:?}"
        );
        let listed: Vec<String> = has.iter().map(Platform::to_string).collect();
        assert!(err.to_string().contains(&format!("(only for: {})", listed.join(", "))), "{err}");
    }
    let err = source.image(Some("multi"), &absent).unwrap_err().to_string();
    assert!(err.contains(&format!("linux/{}/v8", other_arch())) && err.contains("plan9/386"), "{err}");

    // Archives made by skopeo, named with a tag: the config says the platform.
    if !tools("a_platform_the_image_lacks_is_reported_with_the_platforms_it_has", &["skopeo"]) {
        return;
    }
    run(
        "set -e
        skopeo --insecure-policy copy -q oci:oci:host docker-archive:docker.tar:deb:latest
        skopeo --insecure-policy copy -q oci:oci:host oci-archive:oci.tar:deb:latest",
        tmp.path(),
    );
    for archive in ["docker.tar", "oci.tar"] {
        let source = ImageSource::open(tmp.path().join(archive)).unwrap();
        assert!(source.image(Some("deb:latest"), &host).is_ok(), "{archive}");
        let err = source.image(Some("deb:latest"), &absent).unwrap_err();
        assert!(
            matches!(&err, ImageError::PlatformNotFound { available, .. } if *available == [host.clone()]),
            "{archive}: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("image deb:latest in {:?}", tmp.path().join(archive))),
            "{err}"
        );
    }
}

/// A one-layer image holding busybox, `/etc/passwd` and `/etc/group`, with `config`.
fn busybox_image(dir: &Path, config: serde_json::Value) -> stockade::image::Rootfs {
    busybox_image_with(dir, config, |_| {})
}

/// [`busybox_image`] with more entries in its layer.
fn busybox_image_with(
    dir: &Path,
    config: serde_json::Value,
    more: impl FnOnce(&mut LayerBuilder),
) -> stockade::image::Rootfs {
    let mut l = LayerBuilder::new();
    let mut bb = oci::Entry::new("bin/busybox", b'0');
    bb.data = std::fs::read(common::busybox()).unwrap();
    bb.mode = 0o755;
    l.dir("bin")
        .entry(bb)
        .symlink("bin/sh", "busybox")
        .symlink("bin/id", "busybox")
        .symlink("bin/pwd", "busybox");
    l.dir("etc")
        .file("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        .file("etc/group", "root:x:0:\napp:x:1000:\nwheel:x:10:app\n");
    let mut home = oci::Entry::new("home/app", b'5');
    home.uid = 1000;
    home.gid = 1000;
    l.dir("home").entry(home);
    more(&mut l);
    oci::write_image(&dir.join("oci"), "app", &[LayerSpec::new(l.tar())], config);
    let image = ImageSource::open(dir.join("oci")).unwrap().image(Some("app"), &Platform::host()).unwrap();
    LayerStore::open(dir.join("store")).unwrap().prepare(&image).unwrap()
}

/// As root, ids 0-65535 map to themselves so the image's owners and `User` hold; rootless,
/// only the caller is mapped (to root).
fn image_sandbox(rootfs: &stockade::image::Rootfs, as_image_user: bool) -> Sandbox {
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::USER | Namespaces::PID | Namespaces::MOUNT | Namespaces::UTS | Namespaces::IPC)
        .image(rootfs);
    common::overlay_as_supported(&mut b);
    if common::is_root() {
        b.uid_map([IdMap::new(0, 0, 65536)]).gid_map([IdMap::new(0, 0, 65536)]);
    }
    if !as_image_user {
        b.user(0, 0);
    }
    b.build().expect("build image sandbox")
}

#[test]
fn image_config_env_entrypoint_cmd_workdir_and_user_apply() {
    let tmp = common::tempdir();
    let rootfs = busybox_image(
        tmp.path(),
        serde_json::json!({
            "Env": ["PATH=/bin", "GREETING=hello"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING; pwd; id -u; id -g; id -G"],
            "WorkingDir": "/home/app",
            "User": "app",
        }),
    );
    let user = rootfs.user().unwrap();
    assert_eq!(
        (user.uid, user.gid, user.groups.clone()),
        (1000, 1000, vec![10]),
        "resolved in the image's /etc/passwd and /etc/group"
    );
    if !common::is_root() {
        common::skip(
            "image_config_env_entrypoint_cmd_workdir_and_user_apply (running as the image user)",
            "rootless maps only the caller's uid, so uid 1000 cannot be mapped",
        );
        let out = image_sandbox(&rootfs, false).image_command().output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n/home/app\n0\n0\n0\n");
        return;
    }
    let out = image_sandbox(&rootfs, true).image_command().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n/home/app\n1000\n1000\n1000 10\n");
}

#[test]
fn image_config_is_overridable_per_command() {
    let tmp = common::tempdir();
    let rootfs = busybox_image(
        tmp.path(),
        serde_json::json!({"Env": ["PATH=/bin", "GREETING=hello"], "Cmd": ["/bin/sh", "-c", "echo image cmd"], "WorkingDir": "/home/app"}),
    );
    let sandbox = image_sandbox(&rootfs, false);
    let out = sandbox.image_command().output().unwrap();
    assert_eq!(out.stdout, b"image cmd\n");
    let out = sandbox
        .image_command_args(["/bin/sh", "-c", "echo $GREETING; pwd"])
        .env("GREETING", "overridden")
        .current_dir("/etc")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "overridden\n/etc\n");
    // Plain commands get the image's Env and WorkingDir too; PATH finds `sh` inside.
    let out = sandbox.command("sh").args(["-c", "echo $GREETING $(pwd)"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello /home/app\n");
}

#[test]
fn a_missing_image_working_dir_is_created_inside_the_sandbox_only() {
    let tmp = common::tempdir();
    // The image's /escape names a host directory, which the image holds too: it must resolve
    // to the image's copy, inside the sandbox's root.
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let in_image: Vec<PathBuf> =
        host.ancestors().skip(1).take_while(|p| *p != Path::new("/")).map(Path::to_owned).collect();
    let rootfs = busybox_image_with(
        tmp.path(),
        serde_json::json!({
            "Env": ["PATH=/bin"],
            "User": "app",
            "WorkingDir": "/escape/made/deep",
            "Cmd": ["/bin/sh", "-c", "pwd; busybox stat -c '%a %u' . ..; id -u"],
        }),
        |l| {
            for dir in in_image.iter().rev().chain([&host]) {
                l.dir(dir.strip_prefix("/").unwrap().as_os_str().as_encoded_bytes());
            }
            l.symlink("escape", host.as_os_str().as_encoded_bytes());
        },
    );
    let layers = common::snapshot(&tmp.path().join("store/layers"));
    // As root the payload is the image's uid 1000, which can enter the root-owned directories;
    // rootless only uid 0 is mapped.
    let as_image_user = common::is_root();
    let out = image_sandbox(&rootfs, as_image_user).image_command().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let uid = if as_image_user { 1000 } else { 0 };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}/made/deep\n755 0\n755 0\n{uid}\n", host.display()),
        "created at the link's target inside the sandbox, 0755 and owned by its root"
    );
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "created on the host");
    assert_eq!(common::snapshot(&tmp.path().join("store/layers")), layers, "stored layers changed");
    // A session's commands start there too: made at its start, and again by a command that
    // finds it missing (with its own credentials, inside the session).
    let session = image_sandbox(&rootfs, as_image_user).start().unwrap();
    let pwd = |session: &stockade::Session| {
        let out = session.command("/bin/sh").args(["-c", "pwd"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(pwd(&session), format!("{}/made/deep\n", host.display()));
    let removed =
        session.command("/bin/sh").args(["-c", "cd / && rmdir /escape/made/deep"]).status().unwrap();
    if removed.success() {
        assert_eq!(pwd(&session), format!("{}/made/deep\n", host.display()), "made again");
    }
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "created on the host");
    drop(session);
    // Reset: a new writable layer over the image (a file written before is gone), the working
    // directory made again for the new holder. (As the image's root, which may write anywhere.)
    let mut session = image_sandbox(&rootfs, false).start().unwrap();
    let wrote = session.command("/bin/sh").args(["-c", "echo x > /mark"]).status().unwrap();
    assert!(wrote.success());
    session.reset().unwrap();
    let seen = session.command("/bin/sh").args(["-c", "cat /mark 2>/dev/null; pwd"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        format!("{}/made/deep\n", host.display()),
        "after a reset"
    );
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "created on the host");
    assert_eq!(common::snapshot(&tmp.path().join("store/layers")), layers, "stored layers changed");
    drop(session);

    // Whatever the embedding program's umask (a process-wide setting: shown with the example
    // program in its own process).
    let example =
        std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/image_run");
    assert!(example.exists(), "{} missing: `cargo test` builds the examples", example.display());
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"umask 077 && exec "$0" --store "$1" "$2" -- /bin/busybox stat -c %a . .."#)
        .arg(&example)
        .arg(tmp.path().join("store-umask"))
        .arg(format!("{}:app", tmp.path().join("oci").display()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "755\n755\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_run_takes_a_path_and_a_reference_that_both_hold_colons() {
    let tmp = common::tempdir();
    let layout = tmp.path().join("dir:with:colons/oci");
    let mut l = LayerBuilder::new();
    l.file("f", "f");
    oci::write_image(&layout, "deb:latest", &[LayerSpec::new(l.tar())], serde_json::json!({}));
    run(&format!("tar -C '{}' -cf x.tar .", layout.display()), tmp.path());
    let id = ImageSource::open(&layout)
        .unwrap()
        .image(Some("deb:latest"), &Platform::host())
        .unwrap()
        .id()
        .clone();
    let image_run = |source: &str| {
        let example =
            std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/image_run");
        let out = Command::new(example)
            .args(["--unpack-only", "--store", "store", source])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let layout = layout.display().to_string();
    for source in ["x.tar:deb:latest", &format!("{layout}:deb:latest"), &layout, "x.tar"] {
        let (code, said) = image_run(source);
        assert!(code == Some(0) && said.contains(&format!("image {id}:")), "{source}: {code:?} {said}");
    }
    // The whole REF is looked up, not its tail.
    let (code, said) = image_run("x.tar:deb:nope");
    assert!(
        code == Some(125) && said.contains("no image deb:nope") && said.contains("deb:latest"),
        "{code:?} {said}"
    );
}

#[test]
fn a_working_dir_that_cannot_be_created_or_a_missing_given_one_is_a_typed_error() {
    use stockade::{Error, Stage};
    let tmp = common::tempdir();
    let rootfs =
        busybox_image(tmp.path(), serde_json::json!({"Env": ["PATH=/bin"], "WorkingDir": "/etc/passwd/x"}));
    let sandbox = image_sandbox(&rootfs, false);
    let err = sandbox.command("/bin/pwd").output().unwrap_err();
    assert!(
        matches!(&err, Error::Setup { stage: Stage::CreateWorkingDir { dir }, source }
            if dir == Path::new("/etc/passwd/x") && source.raw_os_error() == Some(libc::ENOTDIR)),
        "{err}"
    );
    // A directory the caller gives must exist, as with std::process::Command.
    let err = sandbox.command("/bin/pwd").current_dir("/missing").output().unwrap_err();
    assert!(
        matches!(&err, Error::Setup { stage: Stage::Chdir { dir }, source }
            if dir == Path::new("/missing") && source.raw_os_error() == Some(libc::ENOENT)),
        "{err}"
    );
    let out = sandbox.command("/bin/busybox").args(["ls", "/"]).current_dir("/").output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listing.contains("etc\n") && !listing.contains("missing"), "{listing}");
}

#[test]
fn writes_in_an_image_sandbox_leave_the_stored_layers_unchanged() {
    let tmp = common::tempdir();
    let rootfs = busybox_image(tmp.path(), serde_json::json!({"Env": ["PATH=/bin"]}));
    let before = common::snapshot(&tmp.path().join("store/layers"));
    let sandbox = image_sandbox(&rootfs, false);
    let out =
        common::sh_ok(&sandbox, "echo x > /etc/passwd; rm /bin/id; mkdir /new; cat /etc/passwd; ls /bin");
    assert_eq!(out, "x\nbusybox\npwd\nsh\n");
    assert_eq!(common::snapshot(&tmp.path().join("store/layers")), before);
}

#[test]
fn image_user_is_looked_up_in_the_merged_view_of_the_layers() {
    let tmp = common::tempdir();
    let passwd = |uid: u32| format!("root:x:0:0::/:/bin/sh\napp:x:{uid}:{uid}::/:/bin/sh\n");
    let mut base = LayerBuilder::new();
    base.dir("etc")
        .file("etc/passwd", passwd(1000))
        .dir("usr")
        .dir("usr/etc")
        .file("usr/etc/passwd", passwd(3000));
    let base = base.tar();
    let upper =
        |build: &dyn Fn(&mut LayerBuilder) -> &mut LayerBuilder| build(&mut LayerBuilder::new()).tar();
    let cases: [(&str, Vec<u8>, Option<u32>); 6] = [
        // /etc merges: the base's passwd shows through, the upper layer's group joins it.
        ("merged", upper(&|l| l.dir("etc").file("etc/group", "root:x:0:\nwheel:x:10:app\n")), Some(1000)),
        ("whiteout", upper(&|l| l.file(".wh.etc", "")), None),
        ("opaque", upper(&|l| l.dir("etc").file("etc/.wh..wh..opq", "").file("etc/hosts", "x\n")), None),
        ("symlink", upper(&|l| l.symlink("etc", "usr/etc")), Some(3000)),
        // Resolved inside the image, like the kernel's lookup in the sandbox's root.
        ("dotdot", upper(&|l| l.symlink("etc", "../../../../usr/./etc/")), Some(3000)),
        ("loop", upper(&|l| l.symlink("etc", "etc2").symlink("etc2", "/etc")), None),
    ];
    for (name, top, uid) in cases {
        let oci = tmp.path().join(name);
        oci::write_image(
            &oci,
            name,
            &[LayerSpec::new(base.clone()), LayerSpec::new(top)],
            serde_json::json!({"User": "app"}),
        );
        let image = ImageSource::open(&oci).unwrap().image(Some(name), &Platform::host()).unwrap();
        let stored = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image);
        let flat = image.unpack(tmp.path().join(format!("{name}-flat")));
        for (how, rootfs) in [("stored", stored), ("flat", flat)] {
            match (uid, rootfs) {
                (Some(uid), Ok(r)) => {
                    assert_eq!(r.user().map(|u| u.uid), Some(uid), "{name} {how}");
                    let groups = if name == "merged" { vec![10] } else { vec![] };
                    assert_eq!(r.user().unwrap().groups, groups, "{name} {how}");
                }
                (None, Err(ImageError::User { user, .. })) => assert_eq!(user, "app", "{name} {how}"),
                (_, other) => panic!("{name} {how}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_directory_entry_replaces_the_xattrs_of_the_lower_directory() {
    let tmp = common::tempdir();
    let dir_with = |name: &str, value: &[u8]| {
        let mut e = oci::Entry::new("d", b'5');
        e.pax.push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        e
    };
    let mut lower = LayerBuilder::new();
    lower.entry(dir_with("user.lower", b"1")).file("d/f", "f\n");
    let mut upper = LayerBuilder::new();
    upper.entry(dir_with("user.upper", b"2"));
    oci::write_image(
        &tmp.path().join("oci"),
        "x",
        &[LayerSpec::new(lower.tar()), LayerSpec::new(upper.tar())],
        serde_json::json!({}),
    );
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("x"), &Platform::host()).unwrap();
    let flat = image.unpack(tmp.path().join("flat")).unwrap();
    let d = flat.layers()[0].join("d");
    // (Directory metadata is set once, after all layers: the last entry's is the one set.)
    assert_eq!(oci::xattr_names(&d), ["user.upper"], "as overlayfs shows the topmost directory's");
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"f\n", "the contents still merge");
    assert!(flat.report().skipped_xattr_list.is_empty(), "{:?}", flat.report());
    // In the store each layer keeps its own; overlayfs shows the top one's.
    let stored = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image).unwrap();
    assert_eq!(oci::xattr_names(&stored.layers()[1].join("d")), ["user.upper"]);
    assert_eq!(oci::xattr_names(&stored.layers()[0].join("d")), ["user.lower"]);
}

#[test]
fn unknown_image_user_is_a_typed_error() {
    let tmp = common::tempdir();
    let mut l = LayerBuilder::new();
    l.file("etc/passwd", "root:x:0:0::/:/bin/sh\n");
    oci::write_image(
        &tmp.path().join("oci"),
        "u",
        &[LayerSpec::new(l.tar())],
        serde_json::json!({"User": "ghost"}),
    );
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("u"), &Platform::host()).unwrap();
    let err = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image).unwrap_err();
    assert!(matches!(&err, ImageError::User { user, .. } if user == "ghost"), "{err}");
}

#[test]
fn image_user_lookup_never_opens_special_files() {
    let tmp = common::tempdir();
    // A FIFO as /etc/passwd: opening it for reading would block forever.
    let mut l = LayerBuilder::new();
    l.dir("etc").entry(oci::Entry::new("etc/passwd", b'6'));
    oci::write_image(
        &tmp.path().join("oci"),
        "u",
        &[LayerSpec::new(l.tar())],
        serde_json::json!({"User": "0:0"}),
    );
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("u"), &Platform::host()).unwrap();
    let rootfs = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image).unwrap();
    assert_eq!(rootfs.user().map(|u| (u.uid, u.gid)), Some((0, 0)));
    let err = LayerStore::open(tmp.path().join("store2")).unwrap().prepare(&{
        let mut l = LayerBuilder::new();
        l.dir("etc").entry(oci::Entry::new("etc/passwd", b'6'));
        oci::write_image(
            &tmp.path().join("oci2"),
            "u",
            &[LayerSpec::new(l.tar())],
            serde_json::json!({"User": "app"}),
        );
        ImageSource::open(tmp.path().join("oci2")).unwrap().image(Some("u"), &Platform::host()).unwrap()
    });
    assert!(matches!(&err, Err(ImageError::User { .. })), "{err:?}");
}

#[test]
fn a_store_others_can_write_or_redirect_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = common::tempdir();
    let open = tmp.path().join("open");
    LayerStore::open(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = LayerStore::open(&open).unwrap_err();
    assert!(err.to_string().contains("writable by others"), "{err}");

    let redirected = tmp.path().join("redirected");
    LayerStore::open(&redirected).unwrap();
    std::fs::remove_dir(redirected.join("layers")).unwrap();
    std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), redirected.join("layers")).unwrap();
    let err = LayerStore::open(&redirected).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn an_image_repeating_a_layer_mounts_and_runs() {
    let tmp = common::tempdir();
    let mut bb = LayerBuilder::new();
    let mut e = oci::Entry::new("bin/busybox", b'0');
    e.data = std::fs::read(common::busybox()).unwrap();
    e.mode = 0o755;
    bb.dir("bin").entry(e).symlink("bin/sh", "busybox").symlink("bin/cat", "busybox");
    let mut extra = LayerBuilder::new();
    extra.file("extra", "middle layer\n").file("bin/.wh.cat", "");
    let (bb, extra) = (LayerSpec::new(bb.tar()), LayerSpec::new(extra.tar()));
    oci::write_image(
        &tmp.path().join("oci"),
        "r",
        &[bb.clone(), extra, bb],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("r"), &Platform::host()).unwrap();
    let rootfs = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image).unwrap();
    assert_eq!(rootfs.layers().len(), 2, "the repeated layer is stacked once: {:?}", rootfs.layers());
    let sandbox = image_sandbox(&rootfs, false);
    // The top copy of the repeated layer brings `cat` back over the middle layer's whiteout.
    assert_eq!(common::sh_ok(&sandbox, "cat /extra"), "middle layer\n");
}

#[test]
fn gc_keeps_forgotten_layers_while_a_rootfs_or_sandbox_holds_them() {
    let tmp = common::tempdir();
    let (a, _) = two_images_sharing_a_base(&tmp.path().join("oci"));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let rootfs = store.prepare(&a).unwrap();
    let sandbox = {
        // (The builder holds the layers too: it goes at the end of this block.)
        let mut b = Sandbox::builder();
        b.namespaces(common::ns(Namespaces::MOUNT)).image(&rootfs);
        common::overlay_as_supported(&mut b).build().unwrap()
    };
    drop(rootfs);
    store.forget(&a).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.layers_removed, report.layers_in_use), (0, 2), "the sandbox still uses both layers");
    drop(sandbox);
    let report = store.gc().unwrap();
    assert_eq!((report.layers_removed, report.layers_in_use), (2, 0));
}

#[test]
fn stored_layers_stacked_by_overlayfs_show_the_same_tree_as_a_flat_unpack() {
    if !tools("stored_layers_stacked_by_overlayfs_show_the_same_tree_as_a_flat_unpack", &["umoci"]) {
        return;
    }
    let tmp = common::tempdir();
    umoci_image(tmp.path());
    let image =
        ImageSource::open(tmp.path().join("oci")).unwrap().image(Some("v3"), &Platform::host()).unwrap();
    image.unpack(tmp.path().join("flat")).unwrap();
    let rootfs = LayerStore::open(tmp.path().join("store")).unwrap().prepare(&image).unwrap();
    assert_eq!(rootfs.layers().len(), 3);

    // The merged view, listed from inside (whiteouts and opaque directories applied by the
    // kernel), against the flattened tree.
    let sandbox = image_sandbox(&rootfs, false);
    let listing = common::sh_ok(
        &sandbox,
        "cd / && /bin/busybox find . -xdev ! -path . ! -path ./proc ! -path ./dev -exec /bin/busybox stat -c '%n|%F|%a' {} +",
    );
    let mut inside: Vec<String> = listing
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '|');
            let (name, kind, mode) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let kind = match kind {
                "directory" => "dir",
                "regular file" | "regular empty file" => "file",
                "symbolic link" => "symlink",
                "fifo" => "fifo",
                "character special file" => "char",
                other => other,
            };
            let mode = u32::from_str_radix(mode, 8).unwrap();
            format!(
                "{} {kind} {:o}",
                name.trim_start_matches("./"),
                if kind == "symlink" { 0o777 } else { mode }
            )
        })
        .collect();
    inside.sort();
    let mut flat: Vec<String> = oci::tree(&tmp.path().join("flat/rootfs"), false)
        .into_iter()
        .map(|(p, (kind, mode, ..))| {
            format!("{} {kind} {:o}", p.display(), if kind == "symlink" { 0o777 } else { mode })
        })
        .collect();
    flat.sort();
    assert_eq!(inside, flat);
}

#[test]
fn an_image_runs_as_root_of_an_unprivileged_id_range() {
    if !common::is_root() {
        return common::skip(
            "an_image_runs_as_root_of_an_unprivileged_id_range",
            "needs root to map a range it does not own (rootless, the image's files are the caller's)",
        );
    }
    let tmp = common::tempdir();
    let rootfs = busybox_image(tmp.path(), serde_json::json!({"User": "root", "Cmd": ["/bin/sh"]}));
    // The store is private to its owner (0700): the layers are opened with the embedding
    // program's ids, before the sandbox takes the unprivileged ones.
    let ids = [IdMap::new(0, stockade::UNTRUSTED_IDS, 65536)];
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::all())
        .uid_map(ids)
        .gid_map(ids)
        .image(&rootfs)
        .mount(stockade::Mount::tmpfs("/tmp"));
    let sandbox = common::overlay_as_supported(&mut b).build().unwrap();
    let out = sandbox
        .image_command_args([
            "/bin/sh",
            "-c",
            "id -u; echo made > /tmp/x && cat /tmp/x; cat /etc/group | head -1",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {said} {}", out.status, String::from_utf8_lossy(&out.stderr));
    // Root inside; the image's files keep their host owners, which this range does not map.
    assert_eq!(said, "0\nmade\nroot:x:0:\n");
}
