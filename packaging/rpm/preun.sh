# appsnap %preun (counterpart of %systemd_preun). $1: 0 = erase, 1 = upgrade.
# Stopping the unit runs its ExecStopPost, `appsnap thaw --all`; without a
# running systemd, thaw directly, since the binary is about to go away.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now appsnap.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable appsnap.service >/dev/null 2>&1 || :
        /usr/bin/appsnap thaw --all || :
    fi
fi
