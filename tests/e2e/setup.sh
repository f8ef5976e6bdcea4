#!/usr/bin/env bash
# Installs what tests/test_ohif.py needs on a clean Debian machine, from package registries only: Debian's chromium,
# nginx,
# playwright-core (no browser download) and the prebuilt OHIF viewer from the npm package @ohif/app (its dist/).
# .ci/run calls it; run it once by hand to run the end-to-end test locally. Re-running it is cheap.
set -euo pipefail
cd "$(dirname "$0")"

OHIF_VERSION=3.13.2
# npm's dist.integrity of @ohif/app@3.13.2 (`npm view @ohif/app@3.13.2 dist.integrity`)
OHIF_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="

# nginx runs deploy/viewer/nginx.conf in the deployed-viewer test (the docker compose viewer without containers), and
# deploy/proxy/nginx.conf in front of three replicas in tests/test_replicas.py.
if ! command -v chromium >/dev/null || ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
    "${apt[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium nginx-light >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error

if [ "$(cat ohif/VERSION 2>/dev/null)" != "$OHIF_VERSION" ]; then
    rm -rf ohif ohif.tmp
    mkdir ohif.tmp
    tarball=$(cd ohif.tmp && npm pack --silent "@ohif/app@$OHIF_VERSION")
    actual=$(node -e 'const c = require("crypto"), fs = require("fs");
        console.log("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "ohif.tmp/$tarball")
    if [ "$actual" != "$OHIF_INTEGRITY" ]; then
        echo "@ohif/app@$OHIF_VERSION: integrity $actual, expected $OHIF_INTEGRITY" >&2
        exit 1
    fi
    tar -xzf "ohif.tmp/$tarball" -C ohif.tmp package/dist
    mv ohif.tmp/package/dist ohif.tmp/dist
    rm -rf "ohif.tmp/$tarball" ohif.tmp/package
    echo "$OHIF_VERSION" >ohif.tmp/VERSION
    mv ohif.tmp ohif
fi
