#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made by qemu-img and qemu-io: small images of every
# layout the decoder knows (small clusters, so that each run of a target stays fast), and
# small VHDs (make_vhd_seeds.py), and the JSON qemu-img prints of the images. Usage:
# make_corpus.sh DIR (fills DIR/header, DIR/decoder, DIR/chain, DIR/vhd and DIR/json).
set -euo pipefail
out=$(realpath -m "$1")
here=$(dirname "$(realpath "$0")")
mkdir -p "$out/header" "$out/decoder" "$out/chain" "$out/json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
i=0
add() {  # add NAME: img.qcow2 becomes a seed of the qcow2 targets, its JSON of the json one
  i=$((i + 1))
  local c
  qemu-img info --output=json img.qcow2 > "$out/json/$i-$1-info"
  qemu-img map --output=json img.qcow2 > "$out/json/$i-$1-map"
  c=$(sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p' "$out/json/$i-$1-info")
  head -c "$c" img.qcow2 > "$out/header/$i-$1"
  cp img.qcow2 "$out/chain/$i-$1"
  # Decoder seeds: two feedings' control bytes (front to back in 4 KiB, and shuffled in
  # 512 B with early completion), then the image.
  { printf '\x00\xff\x0f\x00\x02\xff\x01\x07'; cat img.qcow2; } > "$out/decoder/$i-$1"
  { printf '\x11\xff\x0f\x00\x01\x00\x02\x03'; cat img.qcow2; } > "$out/decoder/$i-$1-early"
}
raw() { truncate -s "$1" raw && for o in $2; do
  dd if=/dev/urandom of=raw bs=512 count=3 seek="$o" conv=notrunc status=none; done; }
raw 256K "1 40 300"
for c in 512 1K 4K 16K; do
  qemu-img convert -q -f raw -O qcow2 -o cluster_size=$c raw img.qcow2 && add "plain-$c"
  qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=$c raw img.qcow2 && add "zlib-$c"
  qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=$c,compression_type=zstd raw img.qcow2 &&
    add "zstd-$c"
done
qemu-img convert -q -f raw -O qcow2 -o compat=0.10,cluster_size=512 raw img.qcow2 && add v2
for r in 1 64; do
  qemu-img convert -q -f raw -O qcow2 -o refcount_bits=$r,cluster_size=1K raw img.qcow2 &&
    add "refcount-$r"
done
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16K img.qcow2 256K
qemu-io -c 'write -P 1 1K 3K' -c 'write -z 20K 1K' -c 'write -P 2 100K 40K' img.qcow2 > /dev/null
add extended-l2
qemu-img create -q -f qcow2 -o cluster_size=1K img.qcow2 128K
qemu-io -c 'write -P 3 0 8K' -c 'write -z 2K 2K' -c 'write -z -u 4K 1K' img.qcow2 > /dev/null
add zeros
qemu-img snapshot -c s1 img.qcow2 && qemu-io -c 'write -P 4 1K 2K' img.qcow2 > /dev/null
add snapshot
qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 64K
qemu-io -c 'write -P 5 0 2K' img.qcow2 > /dev/null && qemu-img resize -q img.qcow2 1M
qemu-io -c 'write -P 6 900K 1K' img.qcow2 > /dev/null
add resized
qemu-img create -q -f qcow2 -o cluster_size=1K,preallocation=metadata img.qcow2 32K && add prealloc
qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 0 && add empty
/usr/bin/python3 "$here/make_vhd_seeds.py" "$out/vhd"
qemu-img create -q -f vpc -o subformat=dynamic img.vhd 64K && cp img.vhd "$out/vhd/qemu-dynamic"
qemu-img create -q -f vpc -o subformat=fixed img.vhd 64K && cp img.vhd "$out/vhd/qemu-fixed"
# read_headers' JSON (qcow-stream-tool's), clusters as indices and as [first, last] pairs.
printf '{"virtual_size": 1048576, "cluster_bits": 16, "data_clusters": [0, 3, 15]}' \
  > "$out/json/read-headers-indices"
printf '{"virtual_size": 1048576, "cluster_bits": 12, "data_clusters": [[0, 7], [100, 255]]}' \
  > "$out/json/read-headers-pairs"
echo "seeds: $(ls "$out/header" | wc -l) header, $(ls "$out/decoder" | wc -l) decoder," \
  "$(ls "$out/chain" | wc -l) chain, $(ls "$out/vhd" | wc -l) vhd, $(ls "$out/json" | wc -l) json" \
  "in $out"
