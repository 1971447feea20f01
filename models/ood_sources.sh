#!/usr/bin/env bash
# The non-lesion set behind the "not a lesion" gate, from Debian packages (reproducible on a fresh
# machine): everyday photos by category (animals, plants and food, objects, people, places,
# rooms, documents), textures and wallpapers, cartoons, plus synthetic images. Downloads and
# extracts into WORK (outside the work tree), then `python -m dermtrain ood-set` splits them into
# dev (fitting) and test (reported) halves by image hash.
#   PY=.venv/bin/python OUT=~/.cache/dermcam-ood/set bash models/ood_sources.sh
# Never used: the reserved sample sets (scikit-image, matplotlib, scikit-learn, Debian's
# desktop-base, GIMP's patterns, test images inside crates); ood-set refuses those paths.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
WORK=${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/dermcam-ood}
OUT=${OUT:-$WORK/set}
PKGS="gcompris-qt-data tuxpaint-stamps-default opencv-doc gnome-backgrounds mate-backgrounds
ukui-wallpapers lomiri-wallpapers colobot-common-textures plasma-workspace-wallpapers"
mkdir -p "$WORK/debs" "$WORK/x"
for p in $PKGS; do
  ls "$WORK/debs/${p}"_*.deb > /dev/null 2>&1 || (cd "$WORK/debs" && apt-get download "$p")
  [ -d "$WORK/x/$p" ] || { mkdir -p "$WORK/x/$p" && dpkg-deb -x "$WORK"/debs/"${p}"_*.deb "$WORK/x/$p"; }
done
X=$WORK/x
T=$X/tuxpaint-stamps-default/usr/share/tuxpaint/stamps
G=$X/gcompris-qt-data/usr/share/gcompris-qt/rcc
CV=$X/opencv-doc/usr/share/doc/opencv-doc/examples
rm -rf "$OUT"
"$PY" -m dermtrain ood-set --out "$OUT" --max-per-folder 300 \
  "animals=$T/animals" "animals=$G/explore_farm_animals.rcc" "animals=$G/explore_world_animals.rcc" \
  "plants-food=$T/plants" "plants-food=$T/food" \
  "objects=$T/household" "objects=$T/vehicles" "objects=$T/hobbies" "objects=$T/clothes" \
  "objects=$T/sports" "objects=$T/medical" "objects=$G/categorization.rcc" \
  "people=$T/people" "people=$G/explore_world_music.rcc" "people=$G/lang.rcc" \
  "places=$G/explore_monuments.rcc" "places=$T/town" "places=$T/naturalforces" \
  "art=$G/paintings.rcc" "cartoons=$T/symbols" "cartoons=$T/seasonal" "cartoons=$G/babyshapes.rcc" \
  "cartoons=$G/erase.rcc" "cartoons=$G/details.rcc" \
  "scenes=$CV/data" "documents=$CV/text" \
  "wallpapers=$X/gnome-backgrounds" "wallpapers=$X/mate-backgrounds" "wallpapers=$X/ukui-wallpapers" \
  "wallpapers=$X/lomiri-wallpapers" "wallpapers=$X/plasma-workspace-wallpapers" \
  "textures=$X/colobot-common-textures"
