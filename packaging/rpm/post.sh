# %post of @PACKAGE@: the empty data directory @DATAROOT@/main; no cluster, nothing started.
[ -d /var/lib/pgedge ] || install -d -m 0755 -o postgres -g postgres /var/lib/pgedge
[ -d @DATAROOT@ ] || install -d -m 0755 -o postgres -g postgres @DATAROOT@
[ -e @DATAROOT@/main ] || install -d -m 0700 -o postgres -g postgres @DATAROOT@/main
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
