#!/usr/bin/env bash
# Run Orthanc + its DICOMweb plugin in the foreground on port 8042, as the benchmarks' peer (DICOM port optional).
#
#   apt-get install -y orthanc orthanc-dicomweb   # Debian; not started as a service
#   benchmarks/orthanc.sh [--dicom PORT [--modality AET@HOST:PORT ...] [--worklists WL_DIR]] [DIR]
#   (DIR: a new mktemp dir under /tmp)
#   python benchmarks/stow.py http://127.0.0.1:8042/dicom-web --server-pid "$(pgrep -x Orthanc)" --big
#
# Storage, index, config and log go under DIR; delete it afterwards. Everything not set below keeps Orthanc's
# defaults (SyncStorageArea=true i.e. fsync per file, StorageCompression=false, HttpThreadsCount=50, ...).
# Its DICOM server is off unless --dicom PORT turns it on (AE title ORTHANC) for the DIMSE benchmark (dimse.py);
# each --modality is a DICOM node it knows, allowed every operation (C-FIND, C-GET and C-MOVE need that) and a
# C-MOVE destination. --worklists serves the worklist files in WL_DIR with Orthanc's ModalityWorklists plugin
# (worklist.py --write-wl writes them).
set -euo pipefail

dicom_port=
modalities=()
worklists=
while [ $# -gt 0 ]; do
    case $1 in
        --dicom) dicom_port=$2; shift 2 ;;
        --worklists) worklists=$(cd "$2" && pwd); shift 2 ;;
        --modality) modalities+=("$2"); shift 2 ;;
        -*) echo "orthanc.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ -z "$dicom_port" ] && [ ${#modalities[@]} -gt 0 ]; then
    echo "orthanc.sh: --modality needs --dicom PORT" >&2; exit 2
fi
dicom='"DicomServerEnabled": false,'
if [ -n "$dicom_port" ]; then
    nodes=
    for node in "${modalities[@]}"; do  # AET@HOST:PORT
        aet=${node%%@*} address=${node#*@}
        nodes+="${nodes:+, }\"$aet\": {\"AET\": \"$aet\", \"Host\": \"${address%:*}\", \"Port\": ${address##*:}}"
    done
    dicom="\"DicomServerEnabled\": true,
  \"DicomAet\": \"ORTHANC\",
  \"DicomPort\": $dicom_port,
  \"DicomModalities\": {$nodes},"
fi

dir=${1:-$(mktemp -d /tmp/orthanc.XXXXXX)}
mkdir -p "$dir/storage" "$dir/index"
dir=$(cd "$dir" && pwd)

plugin=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -m1 '/plugins/libOrthancDicomWeb\.so$' || true)
plugin=${plugin:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
plugins="\"$plugin\""
worklist_config=
if [ -n "$worklists" ]; then
    plugins+=", \"/usr/share/orthanc/plugins/libModalityWorklists.so\""
    worklist_config="\"Worklists\": {\"Enable\": true, \"Database\": \"$worklists\"},"
fi

cat >"$dir/orthanc.json" <<EOF
{
  "Name": "orthanc-stow-bench",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "HttpPort": 8042,
  "RemoteAccessAllowed": true,
  "AuthenticationEnabled": false,
  $dicom
  $worklist_config
  "Plugins": [$plugins],
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/"
  }
}
EOF

echo "orthanc: config $dir/orthanc.json, DICOMweb root http://127.0.0.1:8042/dicom-web${dicom_port:+, DICOM ORTHANC@127.0.0.1:$dicom_port}" >&2
exec Orthanc "$dir/orthanc.json"
