//! Index / manifest / `docker save` manifest.json parsing and selection on arbitrary JSON.
//!
//! The input is split at the first 0xff byte into an index (or `manifest.json`) and a
//! manifest blob; `MANIFEST` and `MSIZE` in the first part are replaced by the manifest blob's
//! real digest and size so that the fuzzer gets past digest checks into the manifest. Whatever
//! the input, selection returns an image or a typed error, never panics, and writes nothing.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use stockade::image::{ImageSource, Platform};

fuzz_target!(|data: &[u8]| {
    let work = common::setup();
    let layout = work.join("oci");
    let (first, second) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let manifest_digest = common::put_blob(&layout, second);
    let text = String::from_utf8_lossy(first)
        .replace("MANIFEST", &manifest_digest)
        .replace("MSIZE", &second.len().to_string());
    std::fs::write(layout.join("index.json"), &text).unwrap();
    // The same bytes as a docker save manifest.json in a second source.
    let docker = work.join("oci-docker");
    std::fs::create_dir_all(docker.join("blobs/sha256")).unwrap();
    std::fs::write(docker.join("manifest.json"), &text).unwrap();
    for source in [&layout, &docker] {
        if let Ok(source) = ImageSource::open(source) {
            for reference in [None, Some("latest"), Some("fuzz")] {
                if let Ok(image) = source.image(reference, &Platform::new("linux", "amd64")) {
                    let _ = image.layers().len();
                }
            }
        }
    }
    std::fs::remove_dir_all(&docker).unwrap();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let _ = std::fs::remove_file(layout.join("index.json"));
});
