//! Image unpack in-process (criterion): flattening a synthetic two-layer image, and the root
//! file system ready from layers already in the store (the target is under 10 ms).
//! The side-by-side comparison with umoci and GNU tar is `benches/image-side-by-side.sh`.
//!
//! `cargo bench --features image --bench image`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stockade::image::{ImageSource, LayerStore, Platform};

#[path = "../tests/common/oci.rs"]
mod oci;

fn image(dir: &std::path::Path) {
    let mut base = oci::LayerBuilder::new();
    for d in 0..40 {
        base.dir(format!("usr/share/d{d}"));
        for f in 0..50 {
            base.file(format!("usr/share/d{d}/f{f}"), format!("{d}/{f} ").repeat(1000));
        }
    }
    let mut top = oci::LayerBuilder::new();
    top.file("usr/share/d0/.wh.f0", "").file("etc/config", "x".repeat(100));
    oci::write_image(
        dir,
        "bench",
        &[oci::LayerSpec::new(base.tar()), oci::LayerSpec::new(top.tar())],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    );
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    image(&tmp.path().join("oci"));
    let source = ImageSource::open(tmp.path().join("oci")).unwrap();
    let img = source.image(Some("bench"), &Platform::host()).unwrap();

    let mut g = c.benchmark_group("image");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("flat_unpack_2000_files_16MB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let dest = tmp.path().join(format!("flat{i}"));
                let start = Instant::now();
                img.unpack(&dest).unwrap();
                total += start.elapsed();
                std::fs::remove_dir_all(&dest).unwrap();
            }
            total
        })
    });
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    store.prepare(&img).unwrap();
    g.bench_function("rootfs_ready_from_cached_layers", |b| {
        b.iter(|| {
            // From the image source on disk: index, manifest and config read and verified.
            let img = source.image(Some("bench"), &Platform::host()).unwrap();
            store.prepare(&img).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
