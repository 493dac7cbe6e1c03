# appsnap %post (the RPM counterpart of %systemd_post, written out because
# cargo-generate-rpm has no systemd macros). $1: 1 = install, 2 = upgrade.
# /etc/appsnap.toml is %config(noreplace): rpm keeps an edited file and
# writes the new default next to it as .rpmnew; nothing here touches it.
# The drop-in dir is created here, not shipped (cargo-generate-rpm 0.21.1
# fails on directory assets), and left alone when it exists.
install -d -m 0755 /etc/appsnap.d
systemd-tmpfiles --create /usr/lib/tmpfiles.d/appsnap.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Enabled, not started: the policy has no jobs until the operator adds one.
    systemctl --no-reload enable appsnap.service >/dev/null 2>&1 || :
fi
