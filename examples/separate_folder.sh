#!/usr/bin/env bash
# Separate every WAV and FLAC in a folder into vocals + instrumental, 24-bit,
# stems next to each file (FOLDER/<name>/vocals.wav ...). The model loads once.
#   examples/separate_folder.sh ~/Music/Renders
set -euo pipefail
folder=${1:?usage: separate_folder.sh FOLDER}
shopt -s nullglob nocaseglob
files=("$folder"/*.wav "$folder"/*.flac)
if ((${#files[@]} == 0)); then
    echo "no WAV or FLAC files in $folder" >&2
    exit 1
fi
stembridge separate "${files[@]}" --stems vocals,instrumental --bit-depth 24
