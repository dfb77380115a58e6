#!/usr/bin/env bash
# Download an official SAM / MobileSAM checkpoint, check its size and sha256, print the conf values.
# Usage: bash scripts/download_sam.sh MODEL_TYPE [DEST_DIR]   (DEST_DIR default: checkpoints/)
# The table below must match SAM_URLS / SAM_FILE_SIZES / SAM_SHA256 in sam_utils/sam_model.py
# (tests/test_segmenters.py checks it).
set -euo pipefail

usage() {
  cat >&2 <<EOF
usage: bash scripts/download_sam.sh MODEL_TYPE [DEST_DIR]
  MODEL_TYPE: vit_h (2.4 GB, the paper's), vit_l (1.2 GB), vit_b (358 MB), vit_t (MobileSAM, 39 MB;
              needs: .venv/bin/pip install mobilesam-mirror)
  DEST_DIR:   where to put the file (default: checkpoints/)
EOF
  exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in
  vit_h) url=https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth; size=2564550879
         sha=a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e ;;
  vit_l) url=https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth; size=1249524607
         sha=3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622 ;;
  vit_b) url=https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth; size=375042383
         sha=ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912 ;;
  vit_t) url=https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt; size=40728226
         sha=6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f ;;
  *) echo "unknown model type '$1'" >&2; usage ;;
esac

dest=${2:-checkpoints}
mkdir -p "$dest"
file="$dest/$(basename "$url")"

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }

if [ -f "$file" ] && [ "$(file_size "$file")" = "$size" ]; then
  echo "[download_sam] $file already present ($size bytes)"
else
  echo "[download_sam] downloading $url -> $file ($size bytes)"
  tmp="$file.part"
  if command -v curl >/dev/null; then
    curl -L --fail --retry 3 --progress-bar -C - -o "$tmp" "$url"
  elif command -v wget >/dev/null; then
    wget --progress=bar:force -c -O "$tmp" "$url"
  else
    echo "[download_sam] need curl or wget to download $url" >&2; exit 1
  fi
  got=$(file_size "$tmp")
  if [ "$got" != "$size" ]; then
    echo "[download_sam] $tmp has $got bytes, expected $size: incomplete download; run again to resume" >&2
    exit 1
  fi
  mv "$tmp" "$file"
fi

if command -v sha256sum >/dev/null; then
  echo "[download_sam] checking sha256"
  if ! echo "$sha  $file" | sha256sum -c --quiet -; then
    echo "[download_sam] $file has a wrong sha256 (expected $sha): delete it and run again" >&2
    exit 1
  fi
fi

path=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
echo "[download_sam] ready. In the conf: sam_model_type = $1, sam_checkpoint = $path"
