#!/usr/bin/env bash
# ffmpeg is a system tool (video and audio extraction). Install it when we can, otherwise say so.
set -u
command -v ffmpeg >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "fastssl: installing ffmpeg with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) >/dev/null 2>&1 \
    && exit 0
fi
echo "fastssl: ffmpeg not found and could not be installed; video/audio features need it" \
     "(Debian/Ubuntu: sudo apt-get install ffmpeg)" >&2
exit 0
