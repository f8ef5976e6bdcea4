#!/usr/bin/env bash
# Run Orthanc + its DICOMweb plugin in the foreground on port 8042, as the STOW-RS benchmark peer.
#
#   apt-get install -y orthanc orthanc-dicomweb   # Debian; not started as a service
#   benchmarks/orthanc.sh [DIR]                   # DIR defaults to a new mktemp dir under /tmp
#   python benchmarks/stow.py http://127.0.0.1:8042/dicom-web --server-pid "$(pgrep -x Orthanc)" --big
#
# Storage, index, config and log go under DIR; delete it afterwards. Everything not set below keeps Orthanc's
# defaults (SyncStorageArea=true i.e. fsync per file, StorageCompression=false, HttpThreadsCount=50, ...).
set -euo pipefail

dir=${1:-$(mktemp -d /tmp/orthanc.XXXXXX)}
mkdir -p "$dir/storage" "$dir/index"
dir=$(cd "$dir" && pwd)

plugin=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -m1 '/plugins/libOrthancDicomWeb\.so$' || true)
plugin=${plugin:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}

cat >"$dir/orthanc.json" <<EOF
{
  "Name": "orthanc-stow-bench",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "HttpPort": 8042,
  "RemoteAccessAllowed": true,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": false,
  "Plugins": ["$plugin"],
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/"
  }
}
EOF

echo "orthanc: config $dir/orthanc.json, DICOMweb root http://127.0.0.1:8042/dicom-web" >&2
exec Orthanc "$dir/orthanc.json"
