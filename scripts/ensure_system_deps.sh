#!/usr/bin/env bash
# Headless MuJoCo rendering needs EGL + Mesa (llvmpipe). Most images ship them; install them where they are missing.
set -euo pipefail
# (libGL: LIBERO's dependencies import OpenCV's GUI build, which links it)
if ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libEGL_mesa.so.0' && ldconfig -p | grep -q 'libGL.so.1'; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: EGL/Mesa libraries are missing; install libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 (Debian/Ubuntu names)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 >/dev/null
