#!/usr/bin/env bash
# Image unpack, side by side in one run (see ../shared/docs/benchmarks.md, "Image unpack"):
#   stockade flat unpack  vs  umoci unpack  vs  GNU tar -xzf of the same layer blobs
# then, with the layer store: a second image sharing the base (only its new layer costs), and
# the root file system ready from cached layers.
#
# The image is built once with umoci from host files (/usr/lib/python3.11 and /usr/share/doc
# in the base layer; image 'top' adds a layer with /usr/lib/python3 and deletions), gzip
# layers as umoci writes them.
# Needs root, umoci, hyperfine, python3. Usage: benches/image-side-by-side.sh [RUNS]
# STOCKADE_BENCH_DIR picks the file system (default /var/tmp/stockade-image-bench, on disk);
# each timed run starts after `sync` and a settle time (STOCKADE_BENCH_SETTLE seconds, default
# 10 on disk, 0 on tmpfs): ext4 allocates inodes slowly right after thousands were deleted
# (`recently_deleted` dominates a profile otherwise), and every run follows a deletion.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
work=${STOCKADE_BENCH_DIR:-/var/tmp/stockade-image-bench}
cargo build -q --release --features image --example image_run
bin=$PWD/target/release/examples/image_run

if [ ! -e "$work/oci/index.json" ]; then
  mkdir -p "$work"; cd "$work"; rm -rf oci b
  umoci init --layout oci
  umoci new --image oci:empty
  umoci unpack --image oci:empty b >/dev/null
  mkdir -p b/rootfs/usr/lib b/rootfs/usr/share
  cp -a /usr/lib/python3.11 b/rootfs/usr/lib/
  cp -a /usr/share/doc b/rootfs/usr/share/
  umoci repack --image oci:base b
  rm -rf b
  umoci unpack --image oci:base b >/dev/null
  cp -a /usr/lib/python3 b/rootfs/usr/lib/
  rm -rf b/rootfs/usr/share/doc/[a-c]*
  umoci repack --image oci:top b
  rm -rf b
  cd - >/dev/null
fi

# The layer blobs of an image, bottom first, and their uncompressed size and entry count.
layers() {
  python3 - "$work/oci" "$1" <<'PY'
import json, sys
d, ref = sys.argv[1], sys.argv[2]
idx = json.load(open(f"{d}/index.json"))
m = next(m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
man = json.load(open(f"{d}/blobs/sha256/{m['digest'][7:]}"))
print(" ".join(f"{d}/blobs/sha256/{l['digest'][7:]}" for l in man["layers"]))
PY
}
base_layers=$(layers base)
bytes=0; files=0
for b in $base_layers; do
  bytes=$((bytes + $(gzip -dc "$b" | wc -c)))
  files=$((files + $(tar -tzf "$b" | wc -l)))
done
echo "== image 'base': $(echo "$base_layers" | wc -w) layers, $((bytes / 1048576)) MiB uncompressed, $files entries"

settle=${STOCKADE_BENCH_SETTLE:-$( [ "$(stat -f -c %T "$work")" = tmpfs ] && echo 0 || echo 10 )}
out=$work/out
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/unpack.json" \
  --prepare "rm -rf $out; sync; sleep $settle" \
  -n stockade "$bin --flat $out --unpack-only $work/oci:base" \
  -n umoci "umoci unpack --image $work/oci:base $out" \
  -n tar "mkdir -p $out/rootfs && for b in $base_layers; do tar -xzf \$b -C $out/rootfs; done"
rm -rf "$out"

store=$work/store
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/store.json" \
  --prepare "rm -rf $store && $bin --store $store --unpack-only $work/oci:base 2>/dev/null; rm -rf $out; sync; sleep $settle" \
  -n "store: second image sharing the base (new layer only)" "$bin --store $store --unpack-only $work/oci:top"
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/sync.json" \
  --prepare "rm -rf $store; sync; sleep $settle" \
  -n "store: both images' layers from nothing (two at a time)" "$bin --store $store --unpack-only $work/oci:top" \
  -n "store: the same, each layer flushed to disk first (--sync)" "$bin --store $store --sync --unpack-only $work/oci:top"
hyperfine --style basic --warmup 3 --runs 50 -N \
  -n "store: rootfs ready from cached layers (process start included)" "$bin --store $store --unpack-only $work/oci:top"

python3 - "$work/unpack.json" "$bytes" "$files" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, f = int(sys.argv[2]), int(sys.argv[3])
s = r["stockade"]["median"]
for name, x in r.items():
    m = x["median"]
    print(f"{name:9} median {m*1000:8.1f} ms  {b/m/1e6:7.1f} MB/s  {f/m:9.0f} files/s  {m/s:5.2f}x stockade")
print(f"stockade is {r['umoci']['median']/s:.2f}x faster than umoci and takes {s/r['tar']['median']:.2f}x the time of tar -xzf")
PY
