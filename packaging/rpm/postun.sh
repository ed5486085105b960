# %postun of @PACKAGE@: on erase, removes the data directories only if they are empty; cluster
# data and the postgres account stay.
if [ "$1" -eq 0 ]; then
    rmdir @DATAROOT@/main @DATAROOT@ /var/lib/pgedge 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
