//! The layer applier on arbitrary tar streams (as an uncompressed layer of a valid image,
//! through the public API). Invariant: whatever the input, nothing outside the destination
//! changes, and a failed unpack leaves no destination behind.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stockade::image::{ImageSource, Platform, UnpackLimits};

static BEFORE: OnceLock<Vec<(std::path::PathBuf, u32, u64, u64, u32, Vec<u8>)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let work = common::setup();
    let before = BEFORE.get_or_init(|| common::snapshot(&work.join("host")));
    let layout = work.join("oci");
    let layer = common::put_blob(&layout, data);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = common::put_blob(&layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": data.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = common::put_blob(&layout, &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "fuzz"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let image = ImageSource::open(&layout).unwrap().image(Some("fuzz"), &Platform::new("linux", "amd64")).unwrap();
    let dest = work.join("out");
    let mut limits = UnpackLimits::default();
    limits.max_bytes = 64 << 20;
    limits.max_entries = 10_000;
    let result = image.unpack_with(&dest, limits);
    if result.is_err() {
        assert!(std::fs::symlink_metadata(&dest).is_err(), "a failed unpack left {dest:?}: {result:?}");
    }
    common::remove(&dest);
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(common::work_entries(&work), ["host", "oci"], "something was created beside the destination");
    assert!(&common::snapshot(&work.join("host")) == before, "the sentinel tree outside the destination changed");
});
