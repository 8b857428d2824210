# shellcheck shell=bash
# scripts/replica.sh, part: the image. `build`: debootstrap + packages + pm2 + the stand-in's npm
# packages -> base-<key>.tar.zst; `golden`: base + stand-in sources + "before" fixture ->
# golden-<key>.img. A key changes when what went into the image changed; only the current one is kept.

sha() { sha256sum | cut -c1-12; }
base_key() {
  { echo "$BUILD_REV $SUITE $BASE_PACKAGES $EXTRA_PACKAGES pm2@$PM2_VERSION"; cat "$REPO/replica/backend/package.json"; } | sha
}
golden_key() {
  { base_key; cat "$SELF" "$REPO"/scripts/replica/*.sh
    (cd "$REPO" && find replica -type f ! -path '*/node_modules/*' -print0 | sort -z | xargs -0 sha256sum); } | sha
}
TARBALL() { echo "$W/base-$(base_key).tar.zst"; }
GOLDEN() { echo "$W/golden-$(golden_key).img"; }

# --- registries: the ones this host already uses (never hard-coded) --------------------------------
apt_sources() {  # "URI SUITE..." lines from deb822 .sources and classic .list files
  awk '/^[[:space:]]*$/ { if (u && s) print u, s; u = s = ""; next }
       /^URIs:/ { u = $2 } /^Suites:/ { $1 = ""; s = $0 }
       END { if (u && s) print u, s }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
  sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { print $2, $3 }' || true
}
debian_mirror() {  # $1: suite to look for (bookworm or bookworm-security)
  apt_sources | awk -v want="$1" '{ for (i = 2; i <= NF; i++) if ($i == want) { print $1; exit } }' || true
}

build() {
  local B=$W/build-$NAME tarball t0=$SECONDS mirror security npm_registry
  tarball=$(TARBALL)
  mirror=${DEBIAN_MIRROR:-$(debian_mirror "$SUITE")}
  security=${DEBIAN_SECURITY_MIRROR:-$(debian_mirror "$SUITE-security")}
  npm_registry=${NPM_REGISTRY:-$(if command -v npm >/dev/null; then npm config get registry 2>/dev/null || true; fi)}
  [ -n "$mirror" ] || die "no Debian mirror found in this host's apt sources: set DEBIAN_MIRROR"
  mkdir -p "$W" && rm -rf "$B"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY" -C serverfix-replica
  say "build: debootstrap $SUITE (~90 s, log $W/build.log)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$B" "$mirror" >"$W/build.log" 2>&1 ||
    { tail -20 "$W/build.log" >&2; die "debootstrap failed (log $W/build.log)"; }
  { echo "deb $mirror $SUITE main"; echo "deb $mirror $SUITE-updates main"
    if [ -n "$security" ]; then echo "deb $security $SUITE-security main"; fi; } > "$B/etc/apt/sources.list"
  install -d -m700 "$B/root/.ssh" && install -m600 "$KEY.pub" "$B/root/.ssh/authorized_keys"
  printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' > "$B/etc/ssh/sshd_config.d/10-replica.conf"
  chroot "$B" systemctl mask -q console-getty.service getty@tty1.service
  # a TLS-intercepting proxy's CAs, if this host has any: npm in the guest must trust them too
  cp /usr/local/share/ca-certificates/*.crt "$B/usr/local/share/ca-certificates/" 2>/dev/null || true
  install -d "$B$APP" && cp "$REPO/replica/backend/package.json" "$B$APP/"
  say "build: nodejs, npm, python3-venv, pm2@$PM2_VERSION (global, as on the server), the stand-in's npm packages (~60 s)"
  ( own_cgroup "build-$NAME"
    exec "${NSPAWN[@]}" -D "$B" --setenv=npm_config_registry="$npm_registry" \
      --setenv=NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt sh -ec "
      update-ca-certificates >/dev/null 2>&1
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $EXTRA_PACKAGES >/dev/null
      [ -n \"\$npm_config_registry\" ] || unset npm_config_registry
      npm install -g --no-fund --no-audit --no-progress --loglevel=error pm2@$PM2_VERSION >/dev/null
      pm2 startup systemd -u root --hp /root >/dev/null
      cd $APP && npm install --omit=dev --no-fund --no-audit --no-progress --loglevel=error >/dev/null
      rm -f package-lock.json
      pm2 kill >/dev/null 2>&1 || true
      apt-get clean; rm -rf /var/lib/apt/lists/* /root/.npm /root/.pm2" ) >>"$W/build.log" 2>&1 ||
    { drop_cgroup "build-$NAME"; tail -20 "$W/build.log" >&2; die "package install in the guest failed (log $W/build.log)"; }
  drop_cgroup "build-$NAME"
  [ -f "$B/etc/systemd/system/pm2-root.service" ] || die "pm2 startup systemd wrote no pm2-root.service (log $W/build.log)"
  : > "$B/etc/machine-id"   # a fresh machine-id at every boot
  say "build: packing $tarball"
  { tar --numeric-owner --xattrs --xattrs-include='*' -C "$B" -cf - . | zstd -T0 -3 -q -f -o "$tarball.tmp" &&
    mv "$tarball.tmp" "$tarball"; } || die "packing the image failed"
  rm -rf "$B"
  find "$W" -maxdepth 1 -name 'base-*.tar.zst' ! -path "$tarball" -delete   # only the current one is kept
  say "build: done in $((SECONDS - t0)) s"
}

golden() {
  local tarball golden S t0=$SECONDS rc=0
  tarball=$(TARBALL); golden=$(GOLDEN)
  if [ ! -f "$tarball" ]; then build; fi
  say "golden: $golden"
  S=$(mktemp -d /dev/shm/serverfix-golden.XXXXXX)   # tmpfs: unpacking 40k small files on ext4 is slow here
  zstd -dc "$tarball" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$S" -xf - ||
    { rm -rf "$S"; die "unpacking $tarball failed"; }
  cp -r "$REPO/replica/backend/src" "$REPO/replica/backend/tools" "$REPO/replica/backend/package.json" "$S$APP/"
  install -m 0640 "$REPO/replica/fixture/backend.env" "$S$APP/.env"
  echo "$NAME" > "$S/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$NAME" > "$S/etc/hosts"
  # the "before" state: both apps started by hand under pm2 and saved, as the server's operator did.
  # A bare environment, so pm2 stores no queue keys in its dump (they would shadow the .env).
  ( own_cgroup "golden-$NAME"
    exec "${NSPAWN[@]}" -D "$S" --private-network env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
      PM2_HOME=/root/.pm2 sh -ec "cd $APP
      pm2 start src/server.js --name intranet-backend
      pm2 start tools/prisma-studio-standin.js --name prisma-studio
      sleep 2
      pm2 save
      pm2 kill
      rm -f /root/.pm2/logs/* /root/.pm2/pm2.log" ) >"$W/golden.log" 2>&1 || rc=$?
  drop_cgroup "golden-$NAME"
  [ $rc = 0 ] || { rm -rf "$S"; tail -20 "$W/golden.log" >&2; die "saving the pm2 processes failed (log $W/golden.log)"; }
  { rm -f "$golden.tmp" && truncate -s "$IMG_SIZE" "$golden.tmp" && mkfs.ext4 -q -F -L sf-replica -d "$S" "$golden.tmp" &&
    mv "$golden.tmp" "$golden"; } || rc=$?
  rm -rf "$S"
  [ $rc = 0 ] || die "making the ext4 image failed"
  find "$W" -maxdepth 1 -name 'golden-*.img*' ! -path "$golden" -delete
  say "golden: done in $((SECONDS - t0)) s"
}
