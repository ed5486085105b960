# %preun of @PACKAGE@: on erase, stops clusters started through the systemd template.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop '@PACKAGE@@*.service' >/dev/null 2>&1 || :
fi
exit 0
